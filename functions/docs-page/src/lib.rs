//! `GET /docs`: the interactive API reference, Swagger UI rendering `GET /openapi.json`; and
//! `GET /docs/{asset}`: the viewer's script and style. The assets are compiled into this function
//! (`assets/`, from the npm package swagger-ui-dist), so the page works offline, with no CDN, and
//! loads nothing from anywhere but this API (its Content-Security-Policy says so to the browser).

use api::ApiError;
use api::http::{ApiRequest, public_response, respond};
use lambda_http::http::{HeaderValue, header};
use lambda_http::{Body, Request, Response};

/// How long browsers and shared caches may keep the page and its assets.
pub const MAX_AGE_SECS: u64 = 3600;

const PAGE: &str = include_str!("../assets/docs.html");

/// `{asset}` -> (content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_str!("../assets/swagger-ui.css"),
    ),
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/docs.js"),
    ),
];

/// Only this API's own scripts, styles and document; Swagger UI sets inline styles and draws
/// `data:` images.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn handle(request: Request) -> Response<Body> {
    respond(request, |request| async move { serve(&request) }).await
}

fn serve(request: &ApiRequest) -> Result<Response<Body>, ApiError> {
    let (content_type, body) = if request.route() == "GET /docs" {
        ("text/html; charset=utf-8", PAGE)
    } else {
        let name = request.path_param("asset")?;
        ASSETS
            .iter()
            .find(|(asset, ..)| *asset == name)
            .map(|(_, content_type, body)| (*content_type, *body))
            .ok_or(ApiError::NotFound("asset"))?
    };
    let mut response = public_response(request, body, content_type, MAX_AGE_SECS)?;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request};
    use lambda_http::http::StatusCode;

    fn text_of(response: &Response<Body>) -> String {
        String::from_utf8(response.body().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_page_is_html_that_loads_only_what_this_function_serves() {
        // Given the docs page, when it is asked for,
        let response = handle(request(include_str!("../../../events/docs-page.json"))).await;
        // then it is cacheable HTML under a policy that allows this API's own resources only,
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            response.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .starts_with("public")
        );
        assert!(
            response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'")
        );
        // and every script and style it names is one of the assets served beside it.
        let page = text_of(&response);
        let referenced: Vec<&str> = page
            .split(['"', '\''])
            .filter_map(|part| part.strip_prefix("docs/"))
            .collect();
        assert_eq!(referenced.len(), 3, "{page}");
        for name in referenced {
            assert!(ASSETS.iter().any(|(asset, ..)| *asset == name), "{name} is not served");
        }
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "the page loads nothing from outside"
        );
    }

    #[tokio::test]
    async fn an_asset_is_served_whole_with_its_content_type() {
        let response = handle(request(include_str!("../../../events/docs-page.asset.json"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(text_of(&response), include_str!("../assets/swagger-ui-bundle.js"));
        assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_problem() {
        let response = handle(request(include_str!("../../../events/docs-page.unknown-asset.json"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(json_of(&response)["status"], 404);
    }

    #[test]
    fn the_viewer_asks_for_the_document_beside_the_page_and_calls_no_validator() {
        let init = ASSETS.iter().find(|(asset, ..)| *asset == "docs.js").unwrap().2;
        assert!(init.contains(r#"url: "openapi.json""#));
        assert!(init.contains("validatorUrl: null"));
    }
}
