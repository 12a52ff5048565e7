//! The WebSocket pusher: reads the orders table's stream and posts
//! `{type:"order.updated", order_id, status, payment_status, updated_at}` to every open connection of
//! the order's owner, and of no one else (docs/api.md "Real-time updates"). A placement (PENDING) and every
//! change of status or payment status is pushed; other changes of an order are not news.
//!
//! A connection the management API calls gone (410) is forgotten. A push that fails otherwise (after
//! the SDK's retries) is logged and counted (`PushesFailed`), not retried: the order is always read
//! through the API, and a client that reconnects reads it there. A batch whose connections cannot be
//! read fails, so the stream delivers it again (a client may then see an update twice, with the same
//! `updated_at`).

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use domain::{Order, OrderStatus, PaymentStatus, unix_now};
use serde::Serialize;
use store::StoreError;
use store::connections::ConnectionRegistry;
use store::orders::order_from_image;

pub const UPDATE_TYPE: &str = "order.updated";

/// What a connection is sent about one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderUpdate {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub order_id: String,
    pub status: OrderStatus,
    pub payment_status: PaymentStatus,
    pub updated_at: String,
}

/// The update a change of an order is, if it is one: the order's placement, or a change of its
/// status or payment status.
pub fn update_of(old: Option<&Order>, new: Option<&Order>) -> Option<(String, OrderUpdate)> {
    let new = new?;
    if old.is_some_and(|old| old.status == new.status && old.payment_status == new.payment_status) {
        return None;
    }
    let update = OrderUpdate {
        kind: UPDATE_TYPE,
        order_id: new.id.to_string(),
        status: new.status,
        payment_status: new.payment_status,
        updated_at: new.updated_at.clone(),
    };
    Some((new.user_id.to_string(), update))
}

pub use wiring::management::{ManagementError as PostError, Reached as Posted};

/// Where updates go: API Gateway's management API in production; a recorder in tests.
#[async_trait]
pub trait ConnectionPoster: Send + Sync {
    async fn post(&self, connection_id: &str, data: &[u8]) -> Result<Posted, PostError>;
}

#[async_trait]
impl ConnectionPoster for wiring::management::ManagementApi {
    async fn post(&self, connection_id: &str, data: &[u8]) -> Result<Posted, PostError> {
        wiring::management::ManagementApi::post(self, connection_id, data).await
    }
}

pub struct Deps {
    pub connections: Arc<dyn ConnectionRegistry>,
    pub poster: Arc<dyn ConnectionPoster>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the owner's connections could not be read")]
    Connections(#[from] StoreError),
    #[error("an update could not be encoded")]
    Encoding(#[from] serde_json::Error),
}

/// The update of one stream record, if any. An image this code cannot read is skipped with an
/// error log: the outbox parks such records; a push is not worth stopping the shard for.
fn record_update(record: &EventRecord) -> Option<(Order, OrderUpdate)> {
    match (
        order_from_image(&record.change.old_image),
        order_from_image(&record.change.new_image),
    ) {
        (Ok(old), Ok(new)) => {
            let (_, update) = update_of(old.as_ref(), new.as_ref())?;
            Some((new?, update))
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(error = %error, event_id = %record.event_id, "unreadable order image; not pushed");
            None
        }
    }
}

/// Pushes the updates of `event`'s records, in stream order.
pub async fn handle(deps: &Deps, event: Event) -> Result<(), PushError> {
    let mut pushed = 0;
    for record in &event.records {
        if store::probe::passes(&record.change.old_image, &record.change.new_image) {
            continue;
        }
        let Some((order, update)) = record_update(record) else {
            continue;
        };
        wiring::telemetry::set_correlation_id(&order.correlation_id);
        let span = tracing::info_span!(
            "push",
            "otel.name" = format!("{} push {}", wiring::telemetry::service_name(), UPDATE_TYPE),
            "otel.kind" = "producer",
            correlation_id = %order.correlation_id,
            order_id = %order.id,
            status = %order.status.as_str(),
        );
        wiring::telemetry::continue_trace(&span, order.trace_parent.as_deref());
        pushed += tracing::Instrument::instrument(push(deps, &order, &update), span).await?;
    }
    tracing::info!(records = event.records.len(), pushed, "stream batch pushed");
    Ok(())
}

/// Posts one update to every open connection of the order's owner, all at once (at most
/// `MAX_CONNECTIONS_PER_USER`, each within the SDK's timeouts, so one slow connection cannot hold the
/// batch past the function's timeout); returns how many got it.
async fn push(deps: &Deps, order: &Order, update: &OrderUpdate) -> Result<usize, PushError> {
    let connections = deps.connections.of_user(&order.user_id.to_string(), unix_now()).await?;
    let data = serde_json::to_vec(update)?;
    let data = &data;
    let posts = connections
        .iter()
        .map(|connection_id| async move { (connection_id, deps.poster.post(connection_id, data).await) });
    let mut delivered = 0;
    for (connection_id, posted) in futures_util::future::join_all(posts).await {
        match posted {
            Ok(Posted::Done) => delivered += 1,
            Ok(Posted::Gone) => {
                tracing::info!(connection_id, "connection gone; forgetting it");
                if let Err(error) = deps.connections.forget(connection_id).await {
                    tracing::warn!(error = %error, connection_id, "could not forget a gone connection; TTL will");
                }
            }
            Err(error) => {
                metrics::counter!("PushesFailed").increment(1);
                tracing::warn!(error = %error, connection_id, "push failed; the client reads the order through the API");
            }
        }
    }
    metrics::counter!("PushesSent").increment(delivered as u64);
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Mutex;

    use super::*;
    use domain::UserId;
    use store::connections::Connection;
    use store::memory::InMemoryConnections;

    const EVENT: &str = include_str!("../../../events/ws-pusher.json");
    /// The owner of the sample event's order.
    const OWNER: &str = "0190f5a4-7b3e-7c1a-9d2e-0000000000b1";

    /// Records every post; connections named in `gone` answer 410, in `failing` an error.
    #[derive(Default)]
    struct RecordingPoster {
        posts: Mutex<Vec<(String, serde_json::Value)>>,
        gone: Vec<String>,
        failing: Vec<String>,
    }

    #[async_trait]
    impl ConnectionPoster for RecordingPoster {
        async fn post(&self, connection_id: &str, data: &[u8]) -> Result<Posted, PostError> {
            if self.gone.iter().any(|id| id == connection_id) {
                return Ok(Posted::Gone);
            }
            if self.failing.iter().any(|id| id == connection_id) {
                return Err(PostError("injected".into()));
            }
            let body = serde_json::from_slice(data).unwrap();
            self.posts.lock().unwrap().push((connection_id.to_owned(), body));
            Ok(Posted::Done)
        }
    }

    async fn connect(connections: &InMemoryConnections, id: &str, user: &str) {
        let user = UserId::parse(user).unwrap();
        let connection = Connection::opened(id, &user, domain::now_rfc3339(), unix_now());
        connections.register(&connection).await.unwrap();
    }

    fn world(poster: RecordingPoster) -> (Deps, Arc<InMemoryConnections>, Arc<RecordingPoster>) {
        let connections = Arc::new(InMemoryConnections::default());
        let poster = Arc::new(poster);
        let deps = Deps {
            connections: connections.clone(),
            poster: poster.clone(),
        };
        (deps, connections, poster)
    }

    #[tokio::test]
    async fn a_status_change_reaches_every_connection_of_the_owner_and_no_one_else() {
        // Given two connections of the order's owner and one of another user
        let (deps, connections, poster) = world(RecordingPoster::default());
        connect(&connections, "owner-1", OWNER).await;
        connect(&connections, "owner-2", OWNER).await;
        connect(&connections, "stranger", &UserId::generate().to_string()).await;
        // When the sample batch arrives (the order's placement, then its confirmation)
        handle(&deps, serde_json::from_str(EVENT).unwrap()).await.unwrap();
        // Then each of the owner's connections got PENDING then CONFIRMED, and the stranger nothing
        let posts = poster.posts.lock().unwrap().clone();
        let to = |id: &str| -> Vec<(String, String)> {
            posts
                .iter()
                .filter(|(connection, _)| connection == id)
                .map(|(_, body)| {
                    assert_eq!(body["type"], "order.updated");
                    assert_eq!(body["order_id"], "0190f5a4-7b3e-7c1a-9d2e-0000000000a1");
                    assert!(body["updated_at"].is_string());
                    (
                        body["status"].as_str().unwrap().to_owned(),
                        body["payment_status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let expected = vec![
            ("PENDING".to_owned(), "pending".to_owned()),
            ("CONFIRMED".to_owned(), "paid".to_owned()),
        ];
        assert_eq!(to("owner-1"), expected);
        assert_eq!(to("owner-2"), expected);
        assert!(to("stranger").is_empty());
    }

    #[tokio::test]
    async fn a_gone_connection_is_forgotten_and_a_failing_one_does_not_stop_the_others() {
        // Given three connections of the owner: one gone, one failing, one open
        let poster = RecordingPoster {
            gone: vec!["gone".into()],
            failing: vec!["failing".into()],
            ..RecordingPoster::default()
        };
        let (deps, connections, poster) = world(poster);
        for id in ["gone", "failing", "open"] {
            connect(&connections, id, OWNER).await;
        }
        // When the batch arrives
        handle(&deps, serde_json::from_str(EVENT).unwrap()).await.unwrap();
        // Then the gone one is forgotten, the failing one kept, and the open one got both updates
        assert_eq!(connections.ids(), vec!["failing".to_owned(), "open".to_owned()]);
        let posts = poster.posts.lock().unwrap();
        assert_eq!(posts.iter().filter(|(id, _)| id == "open").count(), 2);
    }

    #[test]
    fn only_placements_and_status_or_payment_changes_are_news() {
        let event: Event = serde_json::from_str(EVENT).unwrap();
        let confirmed: Order = serde_dynamo::from_item(event.records[1].change.new_image.clone()).unwrap();
        // A change that keeps both statuses (e.g. a stored trace context) is not pushed
        let touched = Order {
            trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..confirmed.clone()
        };
        assert!(update_of(Some(&confirmed), Some(&touched)).is_none());
        // A placement and a status change are; a deletion is not
        assert!(update_of(None, Some(&confirmed)).is_some());
        let shipped = Order {
            status: OrderStatus::Shipped,
            ..confirmed.clone()
        };
        let (owner, update) = update_of(Some(&confirmed), Some(&shipped)).unwrap();
        assert_eq!(owner, OWNER);
        assert_eq!(update.status, OrderStatus::Shipped);
        assert!(update_of(Some(&confirmed), None).is_none());
    }
}
