//! WebSocket `$default`: every frame a client sends. The socket only pushes order updates, so a
//! frame is read as a keep-alive (API Gateway closes a connection idle for 10 minutes) and answered
//! 200. A frame larger than API Gateway's 128 KB never reaches here.
//!
//! Frames are counted against their user's API budget, as REST requests are (the user is the one
//! the connection was opened by, recorded at `$connect`). A user over the limit, or a connection
//! that is not recorded (expired, or forgotten), is closed through the management API: each frame
//! is an invocation, and a closed connection sends no more of them.
//!
//! Round trips: one `GetItem` (the connection's user) and one `UpdateItem` (the rate counter); when
//! closing, a `DeleteConnection` and a `DeleteItem`.

use std::sync::Arc;

use api::ApiError;
use api::ratelimit::RateLimiter;
use api::websocket::{SocketEvent, SocketResponse, respond};
use async_trait::async_trait;
use domain::unix_now;
use store::connections::ConnectionRegistry;
use wiring::management::{ManagementApi, ManagementError, Reached};

/// Closes connections: API Gateway's management API in production; a recorder in tests.
#[async_trait]
pub trait ConnectionCloser: Send + Sync {
    async fn close(&self, connection_id: &str) -> Result<Reached, ManagementError>;
}

#[async_trait]
impl ConnectionCloser for ManagementApi {
    async fn close(&self, connection_id: &str) -> Result<Reached, ManagementError> {
        ManagementApi::close(self, connection_id).await
    }
}

pub struct Deps {
    pub connections: Arc<dyn ConnectionRegistry>,
    pub limiter: RateLimiter,
    pub closer: Arc<dyn ConnectionCloser>,
}

pub async fn handle(deps: &Deps, event: SocketEvent) -> SocketResponse {
    respond(event, |request| async move {
        let connection_id = request.connection_id()?;
        let Some(user_id) = deps.connections.user_of(connection_id, unix_now()).await? else {
            close(deps, connection_id, "the connection is not recorded").await;
            return Err(ApiError::Unauthorized("This connection is not open; connect again."));
        };
        let now_ms = domain::unix_now_millis();
        if let Some(verdict) = deps.limiter.check_user(&user_id, now_ms).await
            && let Some(retry_after_secs) = verdict.retry_after_secs
        {
            metrics::counter!("RateLimited").increment(1);
            close(deps, connection_id, "its user is over the rate limit").await;
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        tracing::debug!(
            bytes = request.body().map_or(0, str::len),
            "client frame read as a keep-alive"
        );
        Ok(())
    })
    .await
}

/// Closes the connection and forgets it; a failure is logged (the frame is refused either way).
async fn close(deps: &Deps, connection_id: &str, why: &'static str) {
    match deps.closer.close(connection_id).await {
        Ok(_) => tracing::warn!(connection_id, why, "connection closed"),
        Err(error) => tracing::error!(connection_id, why, error = %error, "closing a connection failed"),
    }
    if let Err(error) = deps.connections.forget(connection_id).await {
        tracing::error!(connection_id, error = %error, "forgetting a closed connection failed");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use super::*;
    use api::ratelimit::SlidingWindow;
    use domain::{UserId, now_rfc3339};
    use store::connections::Connection;
    use store::memory::InMemoryConnections;
    use store::rate_counter::InMemoryWindowCounter;

    const EVENT: &str = include_str!("../../../events/ws-default.json");
    const CONNECTION: &str = "Jd1VbfBsoAMCKvA=";

    #[derive(Default)]
    struct Closed(Mutex<Vec<String>>);

    #[async_trait]
    impl ConnectionCloser for Closed {
        async fn close(&self, connection_id: &str) -> Result<Reached, ManagementError> {
            self.0.lock().unwrap().push(connection_id.to_owned());
            Ok(Reached::Done)
        }
    }

    async fn world(frames_per_minute: u32) -> (Deps, Arc<InMemoryConnections>, Arc<Closed>) {
        let connections = Arc::new(InMemoryConnections::default());
        let user = UserId::generate();
        connections
            .register(&Connection::opened(CONNECTION, &user, now_rfc3339(), unix_now()))
            .await
            .unwrap();
        let closed = Arc::new(Closed::default());
        let limiter = RateLimiter::of_users(
            Arc::new(InMemoryWindowCounter::default()),
            SlidingWindow {
                limit: frames_per_minute,
                window_secs: 60,
            },
        );
        let deps = Deps {
            connections: connections.clone(),
            limiter,
            closer: closed.clone(),
        };
        (deps, connections, closed)
    }

    fn frame() -> SocketEvent {
        serde_json::from_str(EVENT).unwrap()
    }

    #[tokio::test]
    async fn a_client_frame_is_a_keep_alive() {
        // Given the sample frame on an open connection, when it arrives, then it is answered 200
        let (deps, _, closed) = world(10).await;
        let response = handle(&deps, frame()).await;
        assert_eq!(response.status_code, 200);
        assert!(response.body.is_none());
        assert!(closed.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_user_over_the_frame_rate_is_refused_and_the_connection_closed() {
        // Given a user allowed 3 frames a minute
        let (deps, connections, closed) = world(3).await;
        // When they send 4
        let mut answered = Vec::new();
        for _ in 0..4 {
            answered.push(handle(&deps, frame()).await.status_code);
        }
        // Then the fourth is refused as rate limited, and the connection is closed and forgotten
        assert_eq!(answered, [200, 200, 200, 429]);
        assert_eq!(*closed.0.lock().unwrap(), [CONNECTION]);
        assert!(connections.ids().is_empty());
    }

    #[tokio::test]
    async fn a_frame_on_a_connection_not_recorded_closes_it() {
        let (deps, connections, closed) = world(10).await;
        connections.forget(CONNECTION).await.unwrap();
        let response = handle(&deps, frame()).await;
        assert_eq!(response.status_code, 401);
        assert_eq!(*closed.0.lock().unwrap(), [CONNECTION]);
    }
}
