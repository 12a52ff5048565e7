//! The WebSocket edge: API Gateway WebSocket route events (`$connect`, `$disconnect`, `$default`) in,
//! a status out. API Gateway completes the handshake only when `$connect` answers 2xx, so a refused
//! token is refused with the [`ApiError`]'s status and problem body, like a REST request; the body
//! reaches the logs, and the client sees the handshake fail.

use std::future::Future;

use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::{HeaderValue, header};
use lambda_runtime::layers::OpenTelemetryFaasTrigger;
use lambda_runtime::{LambdaEvent, service_fn};

use crate::ApiError;
use crate::auth::{Identity, TokenService};

/// A WebSocket route event as API Gateway sends it.
pub type SocketEvent = ApiGatewayWebsocketProxyRequest;
/// What a WebSocket route function answers.
pub type SocketResponse = ApiGatewayProxyResponse;

/// The query parameter `$connect` reads the access token from (browsers cannot set headers on a
/// WebSocket handshake).
pub const TOKEN_PARAMETER: &str = "token";

/// One socket event, as the route handlers read it.
pub struct SocketRequest {
    event: SocketEvent,
}

impl SocketRequest {
    pub fn new(event: SocketEvent) -> Self {
        Self { event }
    }

    /// API Gateway's id of the connection (what the management API posts to).
    pub fn connection_id(&self) -> Result<&str, ApiError> {
        self.event
            .request_context
            .connection_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ApiError::BadRequest("The event names no connection.".into()))
    }

    /// `$connect`, `$disconnect`, `$default` (or a custom route key).
    pub fn route(&self) -> &str {
        self.event.request_context.route_key.as_deref().unwrap_or("$default")
    }

    /// The caller, from the verified `?token=` of the handshake.
    pub fn identity(&self, tokens: &TokenService) -> Result<Identity, ApiError> {
        let token = self
            .event
            .query_string_parameters
            .first(TOKEN_PARAMETER)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized("Connect with ?token=<access token>."))?;
        tokens.verify(token)
    }

    /// The frame a client sent (`$default`), if any.
    pub fn body(&self) -> Option<&str> {
        self.event.body.as_deref()
    }

    /// API Gateway's id of this event, which serves as its correlation id.
    pub fn correlation_id(&self) -> String {
        self.event
            .request_context
            .request_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }
}

/// Runs one socket event through `handler`: a span with the correlation id, errors logged and
/// answered with their status and problem body, success answered 200 with no body.
pub async fn respond<F, Fut>(event: SocketEvent, handler: F) -> SocketResponse
where
    F: FnOnce(SocketRequest) -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let request = SocketRequest::new(event);
    let correlation_id = request.correlation_id();
    wiring::telemetry::set_correlation_id(&correlation_id);
    let span = tracing::info_span!(
        "socket",
        "otel.name" = format!("{} {}", wiring::telemetry::service_name(), request.route()),
        "otel.kind" = "server",
        correlation_id = %correlation_id,
        route = %request.route(),
        status = tracing::field::Empty,
    );
    let outcome = tracing::Instrument::instrument(handler(request), span.clone()).await;
    let response = match outcome {
        Ok(()) => {
            let mut accepted = SocketResponse::default();
            accepted.status_code = 200;
            accepted
        }
        Err(error) => {
            span.in_scope(|| error.log());
            problem_response(&error, &correlation_id)
        }
    };
    span.record("status", response.status_code);
    response
}

/// The error's status and its RFC 9457 body, as the REST edge would answer it.
fn problem_response(error: &ApiError, correlation_id: &str) -> SocketResponse {
    let http = error.to_response(correlation_id);
    let body = match http.body() {
        lambda_http::Body::Text(text) => Some(Body::Text(text.clone())),
        lambda_http::Body::Binary(bytes) => String::from_utf8(bytes.clone()).ok().map(Body::Text),
        lambda_http::Body::Empty => None,
        _ => None,
    };
    let mut response = SocketResponse::default();
    response.status_code = i64::from(http.status().as_u16());
    response.body = body;
    response.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The Lambda runtime for a WebSocket route function: every event into `handler`.
pub async fn serve<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(SocketEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SocketResponse> + Send,
{
    lambda_runtime::Runtime::new(service_fn(move |event: LambdaEvent<SocketEvent>| {
        let response = handler(event.payload);
        async move { Ok::<SocketResponse, lambda_http::Error>(response.await) }
    }))
    .layer(wiring::telemetry::invocation_layer(OpenTelemetryFaasTrigger::Http))
    .run()
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::testing::tokens;
    use domain::{Role, UserId};

    fn connect_event(query: serde_json::Value) -> SocketEvent {
        serde_json::from_value(serde_json::json!({
            "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "conn-1", "requestId": "req-1", "connectedAt": 1_796_558_400_000_u64, "requestTimeEpoch": 1_796_558_400_000_u64},
            "queryStringParameters": query,
            "isBase64Encoded": false
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_verified_token_names_the_caller() {
        // Given a handshake carrying a token issued to a user
        let user = UserId::generate();
        let token = tokens().issue(&user, Role::Customer).unwrap().access_token;
        let request = SocketRequest::new(connect_event(serde_json::json!({ "token": token })));
        // Then the identity is that user's, and the connection is named
        assert_eq!(request.identity(&tokens()).unwrap().user_id, user);
        assert_eq!(request.connection_id().unwrap(), "conn-1");
        assert_eq!(request.route(), "$connect");
    }

    #[tokio::test]
    async fn a_handshake_without_a_good_token_is_refused_with_a_problem() {
        for query in [serde_json::Value::Null, serde_json::json!({ "token": "not-a-token" })] {
            // Given a handshake without a token, or with a bad one
            let event = connect_event(query);
            // When it is answered
            let response = respond(event, |request| async move { request.identity(&tokens()).map(|_| ()) }).await;
            // Then it is refused 401 with a problem body that names the correlation id
            assert_eq!(response.status_code, 401);
            let Some(Body::Text(body)) = response.body else {
                panic!("no problem body")
            };
            let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["status"], 401);
            assert_eq!(problem["correlation_id"], "req-1");
        }
    }
}
