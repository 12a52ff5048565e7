//! End-to-end: `GET /openapi.json` is the repository's openapi.yaml, and `GET /docs` serves the
//! interactive reference with its own (gzip-compressed) assets (the page itself is checked in a browser by
//! `scripts/page_checks.py`, beside this suite).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{Api, assert_problem};

#[tokio::test]
async fn the_deployed_openapi_document_is_openapi_yaml() {
    // Given the deployed stack and the repository's openapi.yaml
    let api = Api::from_env();
    let yaml: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap(),
    )
    .unwrap();

    // When anyone asks for /openapi.json, without a token
    let reply = api.get("/openapi.json", None).await;

    // Then it is that document, as JSON, publicly cacheable
    assert_eq!(reply.expect(200), &yaml, "{}", reply.describe());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply.header("cache-control").unwrap_or_default().starts_with("public"),
        "{}",
        reply.describe()
    );
    assert!(reply.header("etag").is_some(), "{}", reply.describe());
}

#[tokio::test]
async fn the_docs_page_and_its_assets_come_from_the_api_itself() {
    let api = Api::from_env();

    // When a browser asks for /docs
    let page = api.get("/docs", None).await;

    // Then it gets HTML that may load only what this API serves
    assert_eq!(page.status, 200, "{}", page.describe());
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(
        !page.text.contains("http://") && !page.text.contains("https://"),
        "{}",
        page.text
    );
    // And every asset the page names is served to a browser, gzip-compressed, with its type
    for (asset, content_type) in [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("docs.js", "text/javascript; charset=utf-8"),
    ] {
        assert!(page.text.contains(&format!("docs/{asset}")), "the page names {asset}");
        let path = format!("/docs/{asset}");
        let reply = api
            .get_with(&path, None, &[("accept-encoding", "gzip, deflate, br")])
            .await;
        assert_eq!(reply.status, 200, "{asset}: {}", reply.status);
        assert_eq!(reply.header("content-type"), Some(content_type), "{asset}");
        assert_eq!(reply.header("content-encoding"), Some("gzip"), "{asset}");
        assert!(!reply.text.is_empty(), "{asset} has a body");
        // And a client that takes no gzip is told so
        let refused = api.get_with(&path, None, &[("accept-encoding", "identity")]).await;
        assert_problem(&refused, 406);
    }
}

#[tokio::test]
async fn an_unknown_docs_asset_is_a_404_problem() {
    let api = Api::from_env();
    let reply = api.get("/docs/package.json", None).await;
    assert_problem(&reply, 404);
}
