//! Request and response plumbing every HTTP function goes through: correlation ids, the request span,
//! JSON bodies, path and query parameters, bearer tokens and problem responses.

use std::future::Future;
use std::sync::Arc;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use lambda_runtime::layers::OpenTelemetryFaasTrigger;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::auth::{Identity, TokenService, bearer_token};
use crate::error::ApiError;
use crate::ratelimit::{RateLimiter, Verdict};
use domain::unix_now_millis;
use domain::validation::FieldErrors;

/// Bodies above this are refused with 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const CORRELATION_HEADER: &str = "x-correlation-id";
const MAX_CORRELATION_ID_CHARS: usize = 128;

/// An incoming API request with its correlation id.
pub struct ApiRequest {
    inner: Request,
    correlation_id: String,
}

impl ApiRequest {
    pub fn new(inner: Request) -> Self {
        let correlation_id =
            client_correlation_id(&inner).map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        Self { inner, correlation_id }
    }

    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// What a change this request makes records as its cause: its correlation id, and the trace
    /// context of the request's span (when traces are exported), so the change's event continues it.
    pub fn cause(&self) -> domain::Cause {
        wiring::telemetry::cause(&self.correlation_id)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers().get(name).and_then(|value| value.to_str().ok())
    }

    /// A path parameter of the route. Its absence means the route and the handler disagree.
    pub fn path_param(&self, name: &'static str) -> Result<String, ApiError> {
        self.inner
            .path_parameters_ref()
            .and_then(|params| params.first(name))
            .map(str::to_owned)
            .ok_or_else(|| ApiError::internal(format!("route has no path parameter {name}")))
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        self.inner
            .query_string_parameters_ref()
            .and_then(|params| params.first(name))
            .map(str::to_owned)
    }

    /// Refuses query parameters this route does not know, so a typo is not silently ignored.
    pub fn only_query_params(&self, known: &[&str]) -> Result<(), ApiError> {
        let mut errors = FieldErrors::default();
        if let Some(params) = self.inner.query_string_parameters_ref() {
            for (name, _) in params.iter() {
                if !known.contains(&name) {
                    errors.push(name, "is not a known query parameter");
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.into()) }
    }

    /// An integer query parameter within `range`, or `default` when absent.
    pub fn query_int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
        default: Option<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.query(name) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(value) if range.contains(&value) => Ok(Some(value)),
                _ => Err(ApiError::invalid_field(
                    name,
                    format!("must be an integer between {} and {}", range.start(), range.end()),
                )),
            },
        }
    }

    /// The client's address as API Gateway saw it.
    pub fn source_ip(&self) -> Option<String> {
        source_ip(&self.inner).map(str::to_owned)
    }

    /// Parses the JSON body into `T`: 413 when too large, 415 when not JSON, 400 with per-field errors
    /// when malformed, of the wrong shape, or carrying fields `T` does not accept.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let bytes = self.inner.body().as_ref();
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            });
        }
        if !self
            .header(header::CONTENT_TYPE.as_str())
            .is_some_and(is_json_media_type)
        {
            return Err(ApiError::UnsupportedMediaType);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid_field("body", "a JSON object is required"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| body_error(&error))?;
        deserializer
            .end()
            .map_err(|_| ApiError::invalid_field("body", "is not well-formed JSON"))?;
        Ok(value)
    }

    /// The caller's verified identity: 401 without a valid bearer token.
    pub fn identity(&self, tokens: &TokenService) -> Result<Identity, ApiError> {
        tokens.verify(bearer_token(self.inner.headers())?)
    }

    pub fn method(&self) -> &str {
        self.inner.method().as_str()
    }

    /// The API Gateway route this request matched (`POST /api/orders`), else method and path.
    pub fn route(&self) -> String {
        match self.inner.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) if context.route_key.is_some() => {
                context.route_key.clone().unwrap_or_default()
            }
            _ => format!("{} {}", self.method(), self.path()),
        }
    }

    pub fn path(&self) -> &str {
        self.inner.uri().path()
    }

    pub fn lambda_request_id(&self) -> String {
        self.inner
            .lambda_context_ref()
            .map(|context| context.request_id.clone())
            .unwrap_or_default()
    }
}

/// The client's address from API Gateway's request context (never from a header a client can set).
fn source_ip(request: &Request) -> Option<&str> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref(),
        _ => None,
    }
}

fn is_sane_correlation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CORRELATION_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a serde failure into a field-level 400 that names the field but never echoes internals.
fn body_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = error.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::invalid_field("body", "is not well-formed JSON");
    }
    let message = inner.to_string();
    // serde_json appends " at line L column C"; the field path says more.
    let message = message.split(" at line ").next().unwrap_or(&message);
    let path = error.path().to_string();
    let parent = if path == "." { String::new() } else { format!("{path}.") };
    if let Some(name) = backticked(message, "unknown field `") {
        // The path already ends at the unknown field.
        let field = if path == "." { name.to_owned() } else { path };
        return ApiError::invalid_field(&field, "is not an accepted field");
    }
    if let Some(name) = backticked(message, "missing field `") {
        return ApiError::invalid_field(&format!("{parent}{name}"), "is required");
    }
    let field = if path == "." { "body".to_string() } else { path };
    ApiError::invalid_field(&field, message)
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// A JSON response with the given status.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    Ok(json_bytes_response(status, bytes))
}

/// A response whose body is already JSON (e.g. a stored idempotent response).
pub fn json_bytes_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    typed_response(status, "application/json", body)
}

fn typed_response(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A public catalogue read (docs/api.md "Caching"): a strong `ETag` of the body, `304` without a body when
/// the client's `If-None-Match` already holds it, and `Cache-Control: public` for `max_age_secs`, or
/// `private, no-store` when the request carries a token (a shared cache must never keep those).
pub fn catalogue_response<T: Serialize>(
    request: &ApiRequest,
    body: &T,
    max_age_secs: u64,
) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    public_response(request, bytes, "application/json", max_age_secs)
}

/// Any public read (the catalogue, the API's documents): a strong `ETag`, `304` when the client holds
/// it already, `Cache-Control: public` for `max_age_secs`, or `private, no-store` with a token.
pub fn public_response(
    request: &ApiRequest,
    bytes: impl Into<Body> + AsRef<[u8]>,
    content_type: &'static str,
    max_age_secs: u64,
) -> Result<Response<Body>, ApiError> {
    let etag = strong_etag(bytes.as_ref());
    let cache_control = if request.header(header::AUTHORIZATION.as_str()).is_some() {
        PRIVATE_NO_STORE.to_owned()
    } else {
        format!("public, max-age={max_age_secs}, stale-while-revalidate={max_age_secs}")
    };
    let mut response = match request.header(header::IF_NONE_MATCH.as_str()) {
        Some(if_none_match) if none_match_fails(if_none_match, &etag) => {
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        }
        _ => typed_response(StatusCode::OK, content_type, bytes),
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache_control).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// What every response that is not a public catalogue read carries: it may concern a person.
pub const PRIVATE_NO_STORE: &str = "private, no-store";

/// A strong validator of exactly these bytes: 128 bits of their SHA-256, quoted.
fn strong_etag(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names `etag` (RFC 9110 13.1.2: `*`, or a list compared weakly), i.e. the
/// client already has this representation and gets a `304`.
fn none_match_fails(if_none_match: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .any(|candidate| opaque(candidate) == opaque(etag))
}

/// Runs one request through `handler` inside a span that carries the correlation id; turns errors into
/// problem responses and echoes the correlation id on every response.
pub async fn respond<F, Fut>(request: Request, handler: F) -> Response<Body>
where
    F: FnOnce(ApiRequest) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let request = ApiRequest::new(request);
    let correlation_id = request.correlation_id().to_owned();
    wiring::telemetry::set_correlation_id(&correlation_id);
    let span = tracing::info_span!(
        "request",
        "otel.name" = format!("{} {}", wiring::telemetry::service_name(), request.route()),
        "otel.kind" = "server",
        correlation_id = %correlation_id,
        request_id = %request.lambda_request_id(),
        method = %request.method(),
        path = %request.path(),
        status = tracing::field::Empty,
    );
    async move {
        let mut response = match handler(request).await {
            Ok(response) => response,
            Err(error) => {
                error.log();
                error.to_response(&correlation_id)
            }
        };
        if let Ok(value) = HeaderValue::from_str(&correlation_id) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        response
            .headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static(PRIVATE_NO_STORE));
        tracing::Span::current().record("status", response.status().as_u16());
        tracing::info!("request handled");
        response
    }
    .instrument(span)
    .await
}

/// How a route answers a request it refuses before its handler runs (over the rate limit), given the
/// error and the request's correlation id: REST routes answer a problem ([`problem`]); `/graphql`
/// answers a GraphQL body, which its clients read.
pub type RenderRefusal = fn(&ApiError, &str) -> Response<Body>;

/// The RFC 9457 problem of a refusal.
pub fn problem(error: &ApiError, correlation_id: &str) -> Response<Body> {
    error.log();
    error.to_response(correlation_id)
}

/// Serves `handler` as the Lambda function's HTTP entry point, behind the per-client rate limiter:
/// a client over its limit gets a 429 (written by `render`) without the handler running, and every
/// decided response carries the `RateLimit-*` headers. Every API route but `/health` is served this way.
pub async fn serve<F, Fut>(limiter: RateLimiter, render: RenderRefusal, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    let limiter = Arc::new(limiter);
    let handler = Arc::new(handler);
    serve_unlimited(move |request: Request| {
        let limiter = Arc::clone(&limiter);
        let handler = Arc::clone(&handler);
        async move { limited(&limiter, request, render, |request| handler(request)).await }
    })
    .await
}

/// The client's `X-Correlation-ID`, if it is one we keep (docs/api.md "Conventions").
fn client_correlation_id(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_sane_correlation_id(id))
}

/// Runs `handler` if `limiter` lets the request through, else answers what `render` writes; adds the
/// limiter's headers either way.
pub async fn limited<F, Fut>(
    limiter: &RateLimiter,
    mut request: Request,
    render: RenderRefusal,
    handler: F,
) -> Response<Body>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    // The request's correlation id is decided before the limiter's DynamoDB call, so that call's span
    // carries it too; the request then keeps it (`ApiRequest::new` reads the header back).
    if client_correlation_id(&request).is_none()
        && let Ok(generated) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
    {
        request.headers_mut().insert(CORRELATION_HEADER, generated);
    }
    if let Some(correlation_id) = client_correlation_id(&request) {
        wiring::telemetry::set_correlation_id(correlation_id);
    }
    let verdict = limiter
        .check(request.headers(), source_ip(&request), unix_now_millis())
        .await;
    let mut response = match verdict {
        Some(Verdict {
            retry_after_secs: Some(retry_after_secs),
            ..
        }) => {
            metrics::counter!("RateLimited").increment(1);
            respond(request, |request| async move {
                Ok(render(
                    &ApiError::RateLimited { retry_after_secs },
                    request.correlation_id(),
                ))
            })
            .await
        }
        _ => handler(request).await,
    };
    if let Some(verdict) = verdict {
        for (name, value) in limiter.headers(&verdict) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Serves `handler` without the rate limiter: only for `/health`, which docs/api.md "Rate limits" exempts.
pub async fn serve_unlimited<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    let service = lambda_http::Adapter::from(lambda_http::service_fn(move |request: Request| {
        let response = handler(request);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    }));
    lambda_runtime::Runtime::new(service)
        .layer(wiring::telemetry::invocation_layer(OpenTelemetryFaasTrigger::Http))
        .run()
        .await
}

/// Builds a request from an API Gateway HTTP API (payload 2.0) event, as the unit tests do with `events/`.
pub fn request_from_event(event_json: &str) -> Result<Request, lambda_http::Error> {
    Ok(lambda_http::request::from_str(event_json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str, content_type: Option<&str>) -> ApiRequest {
        let mut builder = lambda_http::http::Request::builder().method("POST").uri("/x");
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        ApiRequest::new(builder.body(Body::from(body.to_string())).unwrap())
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        count: i64,
    }

    fn field_of(error: ApiError) -> (String, String) {
        match error {
            ApiError::Validation(errors) => {
                let first = errors.into_vec().remove(0);
                (first.field, first.message)
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_body_parses() {
        let login: Login = request(
            r#"{"email":"a@b.co","count":1}"#,
            Some("application/json; charset=utf-8"),
        )
        .json()
        .unwrap();
        assert_eq!(login.count, 1);
    }

    #[test]
    fn malformed_json_is_a_400_on_the_body() {
        let error = request(r#"{"email":"#, Some("application/json"))
            .json::<Login>()
            .unwrap_err();
        assert_eq!(field_of(error).0, "body");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let error = request(r#"{"email":"a","count":1} x"#, Some("application/json"))
            .json::<Login>()
            .unwrap_err();
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn unknown_fields_are_named() {
        let error = request(r#"{"email":"a","count":1,"role":"admin"}"#, Some("application/json"))
            .json::<Login>()
            .unwrap_err();
        assert_eq!(field_of(error), ("role".into(), "is not an accepted field".into()));
    }

    #[test]
    fn missing_fields_are_named() {
        let error = request(r#"{"email":"a"}"#, Some("application/json"))
            .json::<Login>()
            .unwrap_err();
        assert_eq!(field_of(error), ("count".into(), "is required".into()));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let error = request(r#"{"email":"a","count":"1"}"#, Some("application/json"))
            .json::<Login>()
            .unwrap_err();
        let (field, message) = field_of(error);
        assert_eq!(field, "count");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn non_json_content_is_415() {
        let error = request("email=a", Some("application/x-www-form-urlencoded"))
            .json::<Login>()
            .unwrap_err();
        assert_eq!(error.status(), 415);
        assert_eq!(request("{}", None).json::<Login>().unwrap_err().status(), 415);
    }

    #[test]
    fn oversized_bodies_are_413() {
        let body = format!(r#"{{"email":"{}","count":1}}"#, "a".repeat(MAX_BODY_BYTES));
        assert_eq!(
            request(&body, Some("application/json"))
                .json::<Login>()
                .unwrap_err()
                .status(),
            413
        );
    }

    fn catalogue_read(headers: &[(&str, &str)]) -> ApiRequest {
        let mut builder = lambda_http::http::Request::builder().method("GET").uri("/api/products");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        ApiRequest::new(builder.body(Body::Empty).unwrap())
    }

    fn header_of(response: &Response<Body>, name: header::HeaderName) -> &str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn a_catalogue_read_is_public_with_a_strong_etag() {
        let response = catalogue_response(&catalogue_read(&[]), &serde_json::json!({"a": 1}), 30).unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            header_of(&response, header::CACHE_CONTROL),
            "public, max-age=30, stale-while-revalidate=30"
        );
        let etag = header_of(&response, header::ETAG);
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
            "{etag}"
        );
        // The same body always has the same tag, another body another one
        let again = catalogue_response(&catalogue_read(&[]), &serde_json::json!({"a": 1}), 30).unwrap();
        let other = catalogue_response(&catalogue_read(&[]), &serde_json::json!({"a": 2}), 30).unwrap();
        assert_eq!(header_of(&again, header::ETAG), etag);
        assert_ne!(header_of(&other, header::ETAG), etag);
    }

    #[test]
    fn a_matching_if_none_match_is_answered_304_without_a_body() {
        let body = serde_json::json!({"a": 1});
        let etag = header_of(
            &catalogue_response(&catalogue_read(&[]), &body, 30).unwrap(),
            header::ETAG,
        )
        .to_owned();
        for if_none_match in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".to_owned(),
        ] {
            let response =
                catalogue_response(&catalogue_read(&[("if-none-match", &if_none_match)]), &body, 30).unwrap();
            assert_eq!(response.status(), 304, "{if_none_match}");
            assert!(response.body().is_empty());
            assert_eq!(header_of(&response, header::ETAG), etag);
        }
        let stale = catalogue_response(&catalogue_read(&[("if-none-match", "\"old\"")]), &body, 30).unwrap();
        assert_eq!(stale.status(), 200);
    }

    #[test]
    fn a_catalogue_read_with_a_token_is_private() {
        let response = catalogue_response(
            &catalogue_read(&[("authorization", "Bearer x")]),
            &serde_json::json!({}),
            30,
        )
        .unwrap();
        assert_eq!(header_of(&response, header::CACHE_CONTROL), PRIVATE_NO_STORE);
    }

    #[tokio::test]
    async fn every_other_response_is_private_and_not_stored() {
        let request = lambda_http::http::Request::builder().body(Body::Empty).unwrap();
        let ok = respond(request, |_| async {
            json_response(StatusCode::OK, &serde_json::json!({}))
        })
        .await;
        assert_eq!(header_of(&ok, header::CACHE_CONTROL), PRIVATE_NO_STORE);
        let request = lambda_http::http::Request::builder().body(Body::Empty).unwrap();
        let problem = respond(request, |_| async {
            Err::<Response<Body>, _>(ApiError::NotFound("product"))
        })
        .await;
        assert_eq!(header_of(&problem, header::CACHE_CONTROL), PRIVATE_NO_STORE);
    }

    #[test]
    fn sane_correlation_ids_are_kept_and_others_replaced() {
        let with = |id: &str| {
            let request = lambda_http::http::Request::builder()
                .header(CORRELATION_HEADER, id)
                .body(Body::Empty)
                .unwrap();
            ApiRequest::new(request).correlation_id().to_owned()
        };
        assert_eq!(with("abc-123_x.y"), "abc-123_x.y");
        assert_ne!(with("bad id!"), "bad id!");
        assert_ne!(with(&"a".repeat(129)), "a".repeat(129));
    }

    #[tokio::test]
    async fn a_request_without_a_correlation_id_keeps_the_one_decided_before_the_limiter() {
        // Given a limited route and a request that names no correlation id,
        let limiter = crate::ratelimit::RateLimiter::new(
            std::sync::Arc::new(store::rate_counter::InMemoryWindowCounter::default()),
            crate::ratelimit::SlidingWindow {
                limit: 10,
                window_secs: 60,
            },
            crate::ratelimit::Scope::Api,
            crate::testing::tokens(),
        );
        let request = lambda_http::http::Request::builder().body(Body::Empty).unwrap();
        // when it passes the limiter (whose DynamoDB call is traced under that id),
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let response = limited(&limiter, request, problem, |request| {
            let seen = std::sync::Arc::clone(&seen);
            async move {
                let decided = request
                    .headers()
                    .get(CORRELATION_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                respond(request, |request| async move {
                    assert_eq!(decided.as_deref(), Some(request.correlation_id()));
                    *seen.lock().unwrap() = request.correlation_id().to_owned();
                    Ok(Response::new(Body::Empty))
                })
                .await
            }
        })
        .await;
        // then the handler and the response carry that same id, not a second one.
        let answered = header_of(&response, header::HeaderName::from_static(CORRELATION_HEADER)).to_owned();
        assert!(uuid::Uuid::parse_str(&answered).is_ok(), "{answered}");
        assert_eq!(*seen.lock().unwrap(), answered);
    }
}
