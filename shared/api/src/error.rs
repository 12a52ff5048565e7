//! The one error type of every HTTP function, and its RFC 9457 problem response.
//! Causes are logged with the correlation id; the caller only ever sees the public part.

use lambda_http::{Body, Response, http::StatusCode};
use serde::Serialize;

use domain::DomainError;
use domain::validation::{FieldError, FieldErrors};
use store::orders::StepError;
use store::{BoxError, StoreError};
use wiring::telemetry::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request validation failed")]
    Validation(FieldErrors),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The resource exists only in an encoding the request does not accept.
    #[error("not acceptable: {0}")]
    NotAcceptable(&'static str),
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// Sign-in refused for a while after repeated failures (for the email or the client's address).
    #[error("too many failed logins")]
    LoginThrottled { retry_after_secs: u64 },
    #[error("dependency unavailable")]
    Unavailable(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::single(field, message))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::LoginThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the caller is told about this error (the problem's `detail`): nothing internal.
    pub fn detail(&self) -> String {
        self.public_parts().2
    }

    /// (type slug, title, detail) as shown to the caller: nothing internal.
    fn public_parts(&self) -> (&'static str, &'static str, String) {
        match self {
            Self::Validation(_) => (
                "validation-error",
                "Invalid request",
                "One or more fields are invalid.".into(),
            ),
            Self::BadRequest(detail) => ("bad-request", "Bad request", detail.clone()),
            Self::Unauthorized(detail) => ("unauthorized", "Unauthorized", (*detail).into()),
            Self::Forbidden => (
                "forbidden",
                "Forbidden",
                "Your role does not allow this operation.".into(),
            ),
            Self::NotFound(what) => ("not-found", "Not found", format!("The {what} does not exist.")),
            Self::Conflict(detail) => ("conflict", "Conflict", detail.clone()),
            Self::PayloadTooLarge { limit_bytes } => (
                "payload-too-large",
                "Payload too large",
                format!("The request body exceeds {limit_bytes} bytes."),
            ),
            Self::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                "Send the body as application/json.".into(),
            ),
            Self::NotAcceptable(detail) => ("not-acceptable", "Not acceptable", (*detail).into()),
            Self::Unprocessable(detail) => ("unprocessable", "Unprocessable request", detail.clone()),
            Self::RateLimited { retry_after_secs } => (
                "rate-limited",
                "Too many requests",
                format!("Retry after {retry_after_secs} seconds."),
            ),
            Self::LoginThrottled { retry_after_secs } => (
                "too-many-failed-logins",
                "Too many failed logins",
                format!("Too many failed sign-in attempts; retry after {retry_after_secs} seconds."),
            ),
            Self::Unavailable(_) => (
                "service-unavailable",
                "Service unavailable",
                "A dependency is unavailable; try again shortly.".into(),
            ),
            Self::Internal(_) => (
                "internal-error",
                "Internal server error",
                "An unexpected error occurred; quote the correlation id when reporting it.".into(),
            ),
        }
    }

    /// Logs the cause (server side only) at a level that matches who is at fault.
    pub fn log(&self) {
        match self {
            Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(error = %self, cause = %error_chain(cause.as_ref()), "request failed");
            }
            other => tracing::info!(error = %other, "request refused"),
        }
    }

    pub fn to_response(&self, correlation_id: &str) -> Response<Body> {
        let (slug, title, detail) = self.public_parts();
        let status = self.status();
        let problem = Problem {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail,
            correlation_id,
            errors: match self {
                Self::Validation(errors) => Some(errors.iter().cloned().collect()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            lambda_http::http::header::CONTENT_TYPE,
            lambda_http::http::HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Self::Unauthorized(_) => {
                headers.insert(
                    lambda_http::http::header::WWW_AUTHENTICATE,
                    lambda_http::http::HeaderValue::from_static("Bearer"),
                );
            }
            Self::RateLimited { retry_after_secs } | Self::LoginThrottled { retry_after_secs } => {
                headers.insert(lambda_http::http::header::RETRY_AFTER, (*retry_after_secs).into());
            }
            _ => {}
        }
        response
    }
}

/// RFC 9457 problem details, plus the correlation id and per-field errors.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    correlation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<FieldError>>,
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        Self::Validation(errors)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            other => Self::Internal(Box::new(other)),
        }
    }
}

/// A rule of the shop refusing an operation is a conflict with the resource's current state.
impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        Self::Conflict(error.to_string())
    }
}

impl From<StepError> for ApiError {
    fn from(error: StepError) -> Self {
        match error {
            StepError::Refused(rule) => rule.into(),
            StepError::Gone => Self::NotFound("order"),
            StepError::Contended => Self::Conflict("The order is changing concurrently; try again.".into()),
            StepError::Store(store) => store.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_of(error: ApiError) -> (u16, serde_json::Value) {
        let response = error.to_response("cid-1");
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        (response.status().as_u16(), body)
    }

    #[test]
    fn internal_causes_never_reach_the_caller() {
        let (status, body) = problem_of(ApiError::internal("table shop-users: ResourceNotFoundException"));
        assert_eq!(status, 500);
        let text = body.to_string();
        assert!(!text.contains("shop-users"), "{text}");
        assert_eq!(body["correlation_id"], "cid-1");
        assert_eq!(body["type"], "/problems/internal-error");
    }

    #[test]
    fn validation_problems_list_each_field() {
        let mut errors = FieldErrors::default();
        errors.push("email", "must be a valid email address");
        let (status, body) = problem_of(ApiError::Validation(errors));
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "email");
        assert_eq!(body["status"], 400);
        assert!(body["title"].is_string() && body["detail"].is_string());
    }

    #[test]
    fn rate_limited_problems_say_when_to_retry() {
        let response = ApiError::RateLimited { retry_after_secs: 7 }.to_response("c");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
    }
}
