//! WebSocket `$default`: every frame a client sends. The socket only pushes order updates, so a
//! frame is read as a keep-alive (API Gateway closes a connection idle for 10 minutes) and answered
//! 200; nothing is read or written. A frame larger than API Gateway's 128 KB never reaches here.

use api::websocket::{SocketEvent, SocketResponse, respond};

pub async fn handle(event: SocketEvent) -> SocketResponse {
    respond(event, |request| async move {
        tracing::debug!(
            bytes = request.body().map_or(0, str::len),
            "client frame read as a keep-alive"
        );
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_client_frame_is_a_keep_alive() {
        // Given the sample frame, when it arrives, then it is answered 200 with no body
        let response = handle(serde_json::from_str(include_str!("../../../events/ws-default.json")).unwrap()).await;
        assert_eq!(response.status_code, 200);
        assert!(response.body.is_none());
    }
}
