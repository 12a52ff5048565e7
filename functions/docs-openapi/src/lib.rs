//! `GET /openapi.json`: the API's OpenAPI 3.1 document, which is `openapi.yaml` as JSON (converted at
//! build time; a test keeps the two equal). Public, cacheable, behind the rate limiter like every
//! route but `/health`.

use api::http::{public_response, respond};
use lambda_http::{Body, Request, Response};

/// The document, as `build.rs` wrote it.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// How long browsers and shared caches may keep the document (it changes only with a deploy).
pub const MAX_AGE_SECS: u64 = 300;

pub async fn handle(request: Request) -> Response<Body> {
    respond(request, |request| async move {
        public_response(&request, OPENAPI_JSON, "application/json", MAX_AGE_SECS)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request};
    use lambda_http::http::{StatusCode, header};

    #[tokio::test]
    async fn the_document_served_is_openapi_yaml_as_json() {
        // Given the repository's openapi.yaml, when /openapi.json is asked for,
        let response = handle(request(include_str!("../../../events/docs-openapi.json"))).await;
        // then it answers that same document, publicly cacheable, as JSON.
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert!(
            response.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .starts_with("public")
        );
        let yaml: serde_json::Value = serde_yaml::from_str(include_str!("../../../openapi.yaml")).unwrap();
        assert_eq!(json_of(&response), yaml);
        assert_eq!(json_of(&response)["openapi"].as_str().unwrap().get(..3), Some("3.1"));
    }

    #[tokio::test]
    async fn a_client_that_holds_the_document_gets_304() {
        let first = handle(request(include_str!("../../../events/docs-openapi.json"))).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let mut again = request(include_str!("../../../events/docs-openapi.json"));
        again.headers_mut().insert(header::IF_NONE_MATCH, etag.parse().unwrap());
        assert_eq!(handle(again).await.status(), StatusCode::NOT_MODIFIED);
    }
}
