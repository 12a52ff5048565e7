//! API Gateway's management API for the WebSocket stage: posting to a connection (the pusher) and
//! closing one (a client over its frame rate), with the SDK configuration's timeouts, retries and
//! fault injection (target `execute-api`).

use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;

use crate::telemetry::error_chain;

/// The management endpoint of the WebSocket API's stage: on an emulator (`AWS_ENDPOINT_URL`), the
/// path it serves it under; on AWS, the API's own host.
pub fn management_endpoint(emulator: Option<&str>, region: Option<&str>, api_id: &str, stage: &str) -> String {
    match emulator {
        Some(endpoint) => format!("{}/_aws/execute-api/{api_id}/{stage}", endpoint.trim_end_matches('/')),
        None => format!(
            "https://{api_id}.execute-api.{}.amazonaws.com/{stage}",
            region.unwrap_or("us-east-1")
        ),
    }
}

/// How a call about one connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    Done,
    /// The connection is closed already (410 Gone): forget it.
    Gone,
}

#[derive(Debug, thiserror::Error)]
#[error("the management API failed: {0}")]
pub struct ManagementError(pub String);

pub struct ManagementApi {
    client: aws_sdk_apigatewaymanagement::Client,
}

impl ManagementApi {
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: String) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build();
        Self {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(config),
        }
    }

    /// The stage's management API from the function's settings (`WEBSOCKET_API_ID`,
    /// `WEBSOCKET_STAGE`).
    pub fn from_env(sdk: &aws_config::SdkConfig, env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let endpoint = management_endpoint(
            sdk.endpoint_url(),
            sdk.region().map(|region| region.as_ref()),
            &env.required("WEBSOCKET_API_ID")?,
            &env.required("WEBSOCKET_STAGE")?,
        );
        Ok(Self::new(sdk, endpoint))
    }

    /// Sends `data` to the connection (`PostToConnection`).
    pub async fn post(&self, connection_id: &str, data: &[u8]) -> Result<Reached, ManagementError> {
        let result = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(data))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Reached::Done),
            Err(error) if matches!(error.as_service_error(), Some(PostToConnectionError::GoneException(_))) => {
                Ok(Reached::Gone)
            }
            Err(error) => Err(ManagementError(error_chain(&error))),
        }
    }

    /// Closes the connection (`DeleteConnection`).
    pub async fn close(&self, connection_id: &str) -> Result<Reached, ManagementError> {
        let result = self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Reached::Done),
            Err(error) if matches!(error.as_service_error(), Some(DeleteConnectionError::GoneException(_))) => {
                Ok(Reached::Gone)
            }
            Err(error) => Err(ManagementError(error_chain(&error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_endpoint_is_the_emulators_path_or_the_apis_host() {
        assert_eq!(
            management_endpoint(Some("http://127.0.0.1:4566/"), Some("us-east-1"), "abc123", "live"),
            "http://127.0.0.1:4566/_aws/execute-api/abc123/live"
        );
        assert_eq!(
            management_endpoint(None, Some("eu-west-1"), "abc123", "live"),
            "https://abc123.execute-api.eu-west-1.amazonaws.com/live"
        );
    }
}
