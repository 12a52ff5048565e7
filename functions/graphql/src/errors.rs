//! The one mapping from the API's errors to GraphQL errors: `extensions.code` (docs/api.md "GraphQL") and
//! `extensions.status`, the status REST answers for the same error.

use api::ApiError;
use async_graphql::{ErrorExtensionValues, Pos, ServerError, Value};
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};

/// Code of an over-limit document (`cost::LIMITS`), refused before anything is read.
pub const QUERY_TOO_COMPLEX: &str = "query-too-complex";
/// Code of a query the schema refuses (syntax, unknown fields, wrong argument types), as REST's 400.
pub const VALIDATION: &str = "validation";

/// The `extensions.code` of an API error.
fn code_of(error: &ApiError) -> &'static str {
    match error {
        // The HTTP layer answers a body it cannot read as a problem; resolvers never see these.
        ApiError::Validation(_)
        | ApiError::BadRequest(_)
        | ApiError::Unprocessable(_)
        | ApiError::PayloadTooLarge { .. }
        | ApiError::UnsupportedMediaType
        | ApiError::NotAcceptable(_) => VALIDATION,
        ApiError::Unauthorized(_) => "unauthorized",
        ApiError::Forbidden => "forbidden",
        ApiError::NotFound(_) => "not-found",
        ApiError::Conflict(_) => "conflict",
        ApiError::RateLimited { .. } | ApiError::LoginThrottled { .. } => "rate-limited",
        ApiError::Unavailable(_) => "unavailable",
        ApiError::Internal(_) => "internal",
    }
}

/// The GraphQL error of `error` (logged here, as REST logs its problems): the public detail as the
/// message, the code, the REST status and, for validation, the fields like the problem's `errors`.
pub fn graphql_error(error: &ApiError) -> async_graphql::Error {
    error.log();
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code_of(error));
    extensions.set("status", error.status().as_u16());
    if let ApiError::Validation(fields) = error {
        let fields: Vec<Value> = fields
            .iter()
            .map(|field| {
                let mut entry = async_graphql::indexmap::IndexMap::new();
                entry.insert(async_graphql::Name::new("field"), Value::from(field.field.as_str()));
                entry.insert(async_graphql::Name::new("message"), Value::from(field.message.as_str()));
                Value::Object(entry)
            })
            .collect();
        extensions.set("errors", Value::List(fields));
    }
    async_graphql::Error {
        message: error.detail(),
        source: None,
        extensions: Some(extensions),
    }
}

/// A resolver's result on the API's rules, as GraphQL reports it.
pub trait OrGraphqlError<T> {
    fn or_gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGraphqlError<T> for Result<T, ApiError> {
    fn or_gql(self) -> async_graphql::Result<T> {
        self.map_err(|error| graphql_error(&error))
    }
}

/// A request-level error (refused before execution) with `code` and `status`.
pub fn request_error(message: &str, code: &'static str, status: u16) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    extensions.set("status", status);
    error.extensions = Some(extensions);
    error
}

/// Errors the executor made itself (a query that does not parse or validate, a variable of the wrong
/// type) carry no code: they are the client's invalid input, `validation` with REST's 400.
pub fn with_codes(mut errors: Vec<ServerError>) -> Vec<ServerError> {
    for error in &mut errors {
        let extensions = error.extensions.get_or_insert_with(ErrorExtensionValues::default);
        if extensions.get("code").is_none() {
            extensions.set("code", VALIDATION);
            extensions.set("status", 400);
        }
    }
    errors
}

/// A request refused before the schema ran (over the rate limit): the REST status and headers
/// (`Retry-After`), with a GraphQL body whose one error carries the code (`rate-limited`).
pub fn refusal(error: &ApiError, _correlation_id: &str) -> Response<Body> {
    let body = async_graphql::Response::from_errors(vec![graphql_error(error).into_server_error(Pos::default())]);
    let mut response = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let ApiError::RateLimited { retry_after_secs } = error {
        headers.insert(header::RETRY_AFTER, (*retry_after_secs).into());
    }
    if error.status() == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
