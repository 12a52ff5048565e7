//! `GET /docs`: the interactive API reference, Swagger UI rendering `GET /openapi.json`; and
//! `GET /docs/{asset}`: the viewer's script and style. The assets are compiled into this function
//! (`assets/`, from the npm package swagger-ui-dist), so the page works offline, with no CDN, and
//! loads nothing from anywhere but this API (its Content-Security-Policy says so to the browser).
//! They are stored and served gzip-compressed (`build.rs`): every browser accepts that, and a
//! client that does not gets a 406 problem.

use api::ApiError;
use api::http::{ApiRequest, public_response, respond};
use lambda_http::http::{HeaderValue, header};
use lambda_http::{Body, Request, Response};

/// How long browsers and shared caches may keep the page and its assets.
pub const MAX_AGE_SECS: u64 = 3600;

const PAGE: &str = include_str!("../assets/docs.html");

/// `{asset}` -> (content type, gzip-compressed content).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui-bundle.js.gz")),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui.css.gz")),
    ),
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/docs.js.gz")),
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
    let mut response = if request.route() == "GET /docs" {
        public_response(request, PAGE, "text/html; charset=utf-8", MAX_AGE_SECS)?
    } else {
        let name = request.path_param("asset")?;
        let (content_type, compressed) = ASSETS
            .iter()
            .find(|(asset, ..)| *asset == name)
            .map(|(_, content_type, compressed)| (*content_type, *compressed))
            .ok_or(ApiError::NotFound("asset"))?;
        if !accepts_gzip(request) {
            return Err(ApiError::NotAcceptable(
                "This asset is served gzip-compressed only; send Accept-Encoding: gzip.",
            ));
        }
        let mut response = public_response(request, compressed, content_type, MAX_AGE_SECS)?;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// Whether `Accept-Encoding` admits gzip (RFC 9110 12.5.3): named, or `*`, without `q=0`.
fn accepts_gzip(request: &ApiRequest) -> bool {
    request
        .header(header::ACCEPT_ENCODING.as_str())
        .is_some_and(|accepted| {
            accepted.split(',').any(|coding| {
                let mut parts = coding.split(';').map(str::trim);
                let name = parts.next().unwrap_or_default().to_ascii_lowercase();
                let refused = parts.any(|parameter| {
                    parameter
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                (name == "gzip" || name == "x-gzip" || name == "*") && !refused
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request};
    use lambda_http::http::StatusCode;

    fn text_of(response: &Response<Body>) -> String {
        String::from_utf8(response.body().to_vec()).unwrap()
    }

    fn accepting(encoding: &str, event: &str) -> Request {
        let mut request = request(event);
        request
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, encoding.parse().unwrap());
        request
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
    async fn an_asset_is_served_gzip_compressed_with_its_content_type() {
        // Given a browser, which accepts gzip, when it asks for the viewer's script,
        let event = include_str!("../../../events/docs-page.asset.json");
        let response = handle(accepting("gzip, deflate, br, zstd", event)).await;
        // then it gets the compressed bytes as stored, marked as such,
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
        assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let body = response.body().to_vec();
        assert_eq!(body[..2], [0x1f, 0x8b], "a gzip member");
        assert_eq!(
            body,
            include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui-bundle.js.gz"))
        );
        // which is less than a third of the script.
        assert!(body.len() * 3 < include_bytes!("../assets/swagger-ui-bundle.js").len());
    }

    #[tokio::test]
    async fn a_client_that_refuses_gzip_gets_406_and_the_reason() {
        let event = include_str!("../../../events/docs-page.asset.json");
        for refusing in [None, Some("identity"), Some("gzip;q=0, br")] {
            let response = match refusing {
                Some(encoding) => handle(accepting(encoding, event)).await,
                None => {
                    let mut silent = request(event);
                    silent.headers_mut().remove(header::ACCEPT_ENCODING);
                    handle(silent).await
                }
            };
            assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE, "{refusing:?}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
            assert!(
                json_of(&response)["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Accept-Encoding: gzip")
            );
        }
        let response = handle(accepting("*", event)).await;
        assert_eq!(response.status(), StatusCode::OK);
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
        let init = include_str!("../assets/docs.js");
        assert!(init.contains(r#"url: "openapi.json""#));
        assert!(init.contains("validatorUrl: null"));
    }
}
