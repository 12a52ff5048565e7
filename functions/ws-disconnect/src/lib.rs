//! WebSocket `$disconnect`: the connection's record is deleted, so the pusher stops posting to it.
//! API Gateway sends this at most once and not always (a dropped client may send nothing): the
//! pusher also forgets a connection the management API calls gone, and TTL removes the rest.
//!
//! Round trips: one `DeleteItem`.

use std::sync::Arc;

use api::websocket::{SocketEvent, SocketResponse, respond};
use api::{ApiState, InitError};
use store::connections::{ConnectionRegistry, DynamoConnectionRegistry};

pub struct Deps {
    pub connections: Arc<dyn ConnectionRegistry>,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let table = state.env().required("CONNECTIONS_TABLE")?;
        Ok(Self {
            connections: Arc::new(DynamoConnectionRegistry::new(state.dynamodb.clone(), &table)),
        })
    }
}

pub async fn handle(deps: &Deps, event: SocketEvent) -> SocketResponse {
    respond(event, |request| async move {
        let connection_id = request.connection_id()?;
        deps.connections.forget(connection_id).await?;
        tracing::info!(connection_id, "connection closed");
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use domain::UserId;
    use store::connections::Connection;
    use store::memory::InMemoryConnections;

    const EVENT: &str = include_str!("../../../events/ws-disconnect.json");

    #[tokio::test]
    async fn a_closed_connection_is_forgotten_and_a_repeat_changes_nothing() {
        // Given the recorded connection the sample event closes, and another one
        let connections = Arc::new(InMemoryConnections::default());
        let user = UserId::generate();
        for id in ["Jd1VbfBsoAMCKvA=", "other-connection"] {
            let connection = Connection::opened(id, &user, domain::now_rfc3339(), domain::unix_now());
            connections.register(&connection).await.unwrap();
        }
        let deps = Deps {
            connections: connections.clone(),
        };
        for _ in 0..2 {
            // When the disconnect arrives (twice)
            let response = handle(&deps, serde_json::from_str(EVENT).unwrap()).await;
            // Then it is answered 200 and only the other connection is left
            assert_eq!(response.status_code, 200);
            assert_eq!(connections.ids(), vec!["other-connection".to_owned()]);
        }
    }
}
