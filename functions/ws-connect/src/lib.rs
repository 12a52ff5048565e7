//! WebSocket `$connect`: the handshake's `?token=` is verified by the same token service as REST, and
//! the connection is recorded under the verified user, never under anything the client names. A
//! missing, tampered or expired token answers 401, and API Gateway refuses the handshake.
//!
//! A user holds at most `WS_CONNECTIONS_PER_USER` open connections (template parameter
//! `WebSocketConnectionsPerUser`, default 5): the connection is recorded, then the user's open ones
//! counted; past the cap it is forgotten again and refused with 429. Handshakes racing each other
//! may all see the others and all be refused (the client connects again), never all be let in
//! beyond the cap, but for what the index has not shown yet (it is eventually consistent).
//!
//! Round trips: one `PutItem` and one `Query`; past the cap, one `DeleteItem` more.

use std::sync::Arc;

use api::ApiError;
use api::auth::TokenService;
use api::websocket::{SocketEvent, SocketResponse, respond};
use api::{ApiState, InitError};
use domain::{now_rfc3339, unix_now};
use store::connections::{Connection, ConnectionRegistry, DynamoConnectionRegistry, MAX_CONNECTIONS_PER_USER};

/// How long a client refused for holding too many connections is asked to wait.
const RETRY_AFTER_SECS: u64 = 60;

pub struct Deps {
    pub connections: Arc<dyn ConnectionRegistry>,
    pub tokens: TokenService,
    /// Open connections one user may hold.
    pub per_user: usize,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let table = state.env().required("CONNECTIONS_TABLE")?;
        let per_user = state.env().number(
            "WS_CONNECTIONS_PER_USER",
            1..=MAX_CONNECTIONS_PER_USER as u64 - 1,
            Some(5),
        )?;
        Ok(Self {
            connections: Arc::new(DynamoConnectionRegistry::new(state.dynamodb.clone(), &table)),
            tokens: state.tokens().await?,
            per_user: usize::try_from(per_user).unwrap_or(5),
        })
    }
}

pub async fn handle(deps: &Deps, event: SocketEvent) -> SocketResponse {
    respond(event, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let connection = Connection::opened(request.connection_id()?, &identity.user_id, now_rfc3339(), unix_now());
        deps.connections.register(&connection).await?;
        let open = deps.connections.of_user(&connection.user_id, unix_now()).await?;
        if open.len() > deps.per_user {
            deps.connections.forget(&connection.connection_id).await?;
            tracing::warn!(user_id = %identity.user_id, open = open.len() - 1, "connection refused: too many open");
            return Err(ApiError::RateLimited {
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
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
                per_user: 2,
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

    #[tokio::test]
    async fn a_user_holds_at_most_the_cap_of_connections() {
        // Given a customer allowed 2 connections
        let (deps, connections) = deps();
        let user = UserId::generate();
        let token = tokens().issue(&user, Role::Customer).unwrap().access_token;
        let handshake = |id: &str| {
            let mut event = event_with_token(Some(&token));
            event.request_context.connection_id = Some(id.to_owned());
            event
        };
        // When they open three
        let statuses = [
            handle(&deps, handshake("c1")).await.status_code,
            handle(&deps, handshake("c2")).await.status_code,
            handle(&deps, handshake("c3")).await.status_code,
        ];
        // Then the third is refused as too many, and only the first two are recorded
        assert_eq!(statuses, [200, 200, 429]);
        assert_eq!(connections.ids(), ["c1", "c2"]);
        // And once one closes, a new one is let in
        connections.forget("c1").await.unwrap();
        assert_eq!(handle(&deps, handshake("c4")).await.status_code, 200);
    }
}
