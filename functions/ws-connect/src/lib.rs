//! WebSocket `$connect`: the handshake's `?token=` is verified by the same token service as REST, and
//! the connection is recorded under the verified user, never under anything the client names. A
//! missing, tampered or expired token answers 401, and API Gateway refuses the handshake.
//!
//! Round trips: one `PutItem`.

use std::sync::Arc;

use api::auth::TokenService;
use api::websocket::{SocketEvent, SocketResponse, respond};
use api::{ApiState, InitError};
use domain::{now_rfc3339, unix_now};
use store::connections::{Connection, ConnectionRegistry, DynamoConnectionRegistry};

pub struct Deps {
    pub connections: Arc<dyn ConnectionRegistry>,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let table = state.env().required("CONNECTIONS_TABLE")?;
        Ok(Self {
            connections: Arc::new(DynamoConnectionRegistry::new(state.dynamodb.clone(), &table)),
            tokens: state.tokens().await?,
        })
    }
}

pub async fn handle(deps: &Deps, event: SocketEvent) -> SocketResponse {
    respond(event, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let connection = Connection::opened(request.connection_id()?, &identity.user_id, now_rfc3339(), unix_now());
        deps.connections.register(&connection).await?;
        tracing::info!(connection_id = %connection.connection_id, user_id = %identity.user_id, "connection opened");
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use api::testing::tokens;
    use domain::{Role, UserId};
    use store::memory::InMemoryConnections;

    const EVENT: &str = include_str!("../../../events/ws-connect.json");

    fn event_with_token(token: Option<&str>) -> SocketEvent {
        let mut event: serde_json::Value = serde_json::from_str(EVENT).unwrap();
        event["queryStringParameters"] = match token {
            Some(token) => serde_json::json!({ "token": token }),
            None => serde_json::Value::Null,
        };
        serde_json::from_value(event).unwrap()
    }

    fn deps() -> (Deps, Arc<InMemoryConnections>) {
        let connections = Arc::new(InMemoryConnections::default());
        (
            Deps {
                connections: connections.clone(),
                tokens: tokens(),
            },
            connections,
        )
    }

    #[tokio::test]
    async fn a_verified_caller_is_connected_under_their_own_id() {
        // Given a handshake with a customer's token
        let (deps, connections) = deps();
        let user = UserId::generate();
        let token = tokens().issue(&user, Role::Customer).unwrap().access_token;
        // When it arrives
        let response = handle(&deps, event_with_token(Some(&token))).await;
        // Then it is accepted and the connection is found under that user
        assert_eq!(response.status_code, 200);
        let found = connections.of_user(&user.to_string(), unix_now()).await.unwrap();
        assert_eq!(found, vec!["Jd1VbfBsoAMCKvA=".to_owned()]);
    }

    #[tokio::test]
    async fn a_handshake_without_a_valid_token_is_refused_and_records_nothing() {
        let (deps, connections) = deps();
        let user = UserId::generate();
        let token = tokens().issue(&user, Role::Customer).unwrap().access_token;
        let tampered = format!("{}x", token);
        for token in [None, Some("not-a-token"), Some(tampered.as_str())] {
            // Given a handshake without a token, with garbage, or with a tampered signature
            // When it arrives
            let response = handle(&deps, event_with_token(token)).await;
            // Then it is refused and nothing is recorded
            assert_eq!(response.status_code, 401, "{token:?}");
        }
        assert!(connections.ids().is_empty());
    }
}
