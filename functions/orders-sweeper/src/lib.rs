//! The sweep: nothing stays pending. On a schedule, it finds the orders that have waited for the
//! payment step longer than `StuckOrderMinutes` (a charge never made, a refund owed but not made),
//! through the orders table's `by_unsettled` index, never a scan, and hands each to the payment step
//! again by publishing the very event the outbox gave it (`order.created`, or `order.cancelled` for a
//! refund), with the same id, to the events topic.
//!
//! That is the payment worker's own path: it asks the provider whenever an earlier attempt's outcome
//! is unknown and charges with the order id as the idempotency key, so a swept order is never charged
//! twice, and every consumer drops an event id it has handled (a notification is not sent twice).
//! An event is lost when a stream record ages out after repeated failures, or when an emulator
//! restarts with records not yet delivered; a payment message dead-lettered after its receives is
//! swept the same way.
//!
//! Each order's wait restarts when it is swept (a conditional write on when it began to wait), so two
//! sweeps never hand one order on twice, and an order the payment step cannot settle yet (its
//! provider down) is handed on again once per `StuckOrderMinutes`, not once per run. Each run handles
//! at most `SweepBatchSize` orders, oldest first within each index partition.

use std::sync::Arc;

use domain::events::{Envelope, payment_step_event};
use domain::format_rfc3339;
use serde::Serialize;
use store::StoreError;
use store::unsettled::{UnsettledOrders, WaitingOrder};
use wiring::{ConfigError, Env};
use worker::publish::{EventSink, PublishError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long an order may wait for the payment step before it is swept.
    pub stuck_after: time::Duration,
    /// The most orders one run hands on.
    pub batch_size: usize,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let minutes: i64 = env.number("STUCK_ORDER_MINUTES", 1..=10_080, Some(15))?;
        Ok(Self {
            stuck_after: time::Duration::minutes(minutes),
            batch_size: env.number("SWEEP_BATCH_SIZE", 1..=1_000, Some(100))?,
        })
    }
}

pub struct Deps {
    pub unsettled: Arc<dyn UnsettledOrders>,
    pub sink: Arc<dyn EventSink>,
    pub settings: Settings,
}

/// What one run did (the function's answer, and its log line).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Orders found waiting too long.
    pub found: usize,
    /// Orders handed to the payment step again.
    pub swept: usize,
    /// Orders that had moved on, or that another sweep took first.
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("the orders waiting for the payment step could not be read or marked")]
    Store(#[from] StoreError),
    /// The orders taken in this run wait once more; the next sweep after `StuckOrderMinutes` retries.
    #[error("{failed} of {taken} swept orders could not be published")]
    Publish {
        failed: usize,
        taken: usize,
        #[source]
        cause: PublishError,
    },
}

/// A scheduled run: the schedule's event says nothing the sweep needs (its `time` is when the run was
/// due, not when it runs), so the sweep reads the clock.
pub async fn handle(deps: &Deps, _scheduled: serde_json::Value) -> Result<SweepReport, SweepError> {
    sweep(deps, time::OffsetDateTime::now_utc()).await
}

/// One run of the sweep at `now`.
pub async fn sweep(deps: &Deps, now: time::OffsetDateTime) -> Result<SweepReport, SweepError> {
    let before = format_rfc3339(now - deps.settings.stuck_after);
    let found = deps
        .unsettled
        .waiting_since_before(&before, deps.settings.batch_size)
        .await?;
    let mut report = SweepReport {
        found: found.len(),
        ..SweepReport::default()
    };
    let now = format_rfc3339(now);
    let mut taken: Vec<Envelope> = Vec::with_capacity(found.len());
    for waiting in &found {
        match take(deps, waiting, &now).await? {
            Some(event) => taken.push(event),
            None => report.skipped += 1,
        }
    }
    publish(deps, &taken).await?;
    report.swept = taken.len();
    metrics::counter!("OrdersSwept").increment(u64::try_from(report.swept).unwrap_or(u64::MAX));
    tracing::info!(
        found = report.found,
        swept = report.swept,
        skipped = report.skipped,
        "sweep done"
    );
    Ok(report)
}

/// Takes one order for this run: its event, if it still waits and no other sweep took it first.
async fn take(deps: &Deps, waiting: &WaitingOrder, now: &str) -> Result<Option<Envelope>, SweepError> {
    // The index may lag behind the table: an order it shows may be settled already.
    let Some(event) = payment_step_event(&waiting.order) else {
        return Ok(None);
    };
    if !deps.unsettled.restart_wait(waiting, now).await? {
        return Ok(None);
    }
    tracing::warn!(
        order_id = %waiting.order.id,
        status = waiting.order.status.as_str(),
        payment_status = waiting.order.payment_status.as_str(),
        waiting_since = %waiting.since,
        correlation_id = %waiting.order.correlation_id,
        "order stuck waiting for the payment step; handing it on again"
    );
    Ok(Some(event))
}

/// SNS takes ten messages per batch.
const PUBLISH_BATCH: usize = 10;

async fn publish(deps: &Deps, taken: &[Envelope]) -> Result<(), SweepError> {
    for (index, chunk) in taken.chunks(PUBLISH_BATCH).enumerate() {
        if let Err(cause) = deps.sink.publish(chunk).await {
            return Err(SweepError::Publish {
                failed: taken.len() - index * PUBLISH_BATCH,
                taken: taken.len(),
                cause,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use domain::events::EventType;
    use domain::{Cause, OrderStatus, PaymentStatus, Transition};
    use std::sync::Mutex;
    use store::contract::{Stores, stepped};

    /// The events topic, recording what it is given; failing while `down`.
    #[derive(Default)]
    struct Topic {
        published: Mutex<Vec<Envelope>>,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl EventSink for Topic {
        async fn publish(&self, events: &[Envelope]) -> Result<(), PublishError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(PublishError("topic down".into()));
            }
            self.published.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
    }

    impl Topic {
        fn published(&self) -> Vec<(EventType, String)> {
            let published = self.published.lock().unwrap();
            published
                .iter()
                .map(|event| (event.event_type, event.event_id.clone()))
                .collect()
        }
    }

    const SETTINGS: Settings = Settings {
        stuck_after: time::Duration::minutes(15),
        batch_size: 100,
    };

    struct World {
        stores: Stores,
        topic: Arc<Topic>,
        deps: Deps,
    }

    fn world(settings: Settings) -> World {
        let stores = Stores::in_memory();
        let topic = Arc::new(Topic::default());
        let deps = Deps {
            unsettled: stores.unsettled.clone(),
            sink: topic.clone(),
            settings,
        };
        World { stores, topic, deps }
    }

    /// An order placed as the API places it, whose `order.created` never reached anyone.
    async fn placed(stores: &Stores) -> domain::Order {
        placed_at(stores, domain::now_rfc3339()).await
    }

    async fn placed_at(stores: &Stores, at: String) -> domain::Order {
        let product = domain::NewProduct::parse("Mug", None, "kitchen", 1299, None, 10)
            .unwrap()
            .into_product(domain::ProductId::generate(), domain::now_rfc3339());
        stores.editor.create(&product).await.unwrap();
        let lines = domain::NewOrder::parse(&[(product.id.to_string(), 1)], Some("tok_visa"))
            .unwrap()
            .price(&[product])
            .unwrap();
        let order = domain::Order::place(
            domain::UserId::generate(),
            lines,
            Some("tok_visa".into()),
            &Cause::untraced("cid-lost"),
            at,
        )
        .unwrap();
        stores.orders.place(&order, None).await.unwrap();
        order
    }

    fn in_minutes(minutes: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes)
    }

    #[tokio::test]
    async fn an_order_whose_event_was_lost_is_handed_to_the_payment_step_once_it_is_stuck() {
        let world = world(SETTINGS);
        let order = placed(&world.stores).await;

        let early = sweep(&world.deps, in_minutes(10)).await.unwrap();
        assert_eq!(early.swept, 0, "not stuck yet");

        let report = sweep(&world.deps, in_minutes(16)).await.unwrap();
        assert_eq!((report.found, report.swept), (1, 1));
        let expected = domain::events::order_event(None, Some(&order)).unwrap();
        assert_eq!(
            world.topic.published(),
            [(EventType::OrderCreated, expected.event_id)],
            "the outbox's own event, same id"
        );
        assert_eq!(world.topic.published.lock().unwrap()[0].correlation_id, "cid-lost");
    }

    #[tokio::test]
    async fn the_scheduled_event_sweeps_what_is_stuck_by_now() {
        let world = world(SETTINGS);
        let stuck = placed_at(&world.stores, domain::format_rfc3339(in_minutes(-20))).await;
        placed(&world.stores).await;
        let scheduled: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/orders-sweeper.json")).unwrap();

        let report = handle(&world.deps, scheduled).await.unwrap();

        assert_eq!((report.found, report.swept), (1, 1));
        let event = &world.topic.published.lock().unwrap()[0];
        let domain::events::EventData::Order(data) = &event.data else {
            panic!("an order event")
        };
        assert_eq!(data.order_id, stuck.id.to_string());
    }

    #[tokio::test]
    async fn a_second_sweep_changes_nothing() {
        let world = world(SETTINGS);
        placed(&world.stores).await;
        sweep(&world.deps, in_minutes(16)).await.unwrap();

        let again = sweep(&world.deps, in_minutes(17)).await.unwrap();

        assert_eq!(again, SweepReport::default());
        assert_eq!(world.topic.published().len(), 1);
    }

    #[tokio::test]
    async fn an_order_still_stuck_is_handed_on_again_once_per_period() {
        let world = world(SETTINGS);
        placed(&world.stores).await;
        sweep(&world.deps, in_minutes(16)).await.unwrap();
        // Its wait restarted when it was swept: due again 15 minutes after that.
        assert_eq!(sweep(&world.deps, in_minutes(30)).await.unwrap().swept, 0);
        assert_eq!(sweep(&world.deps, in_minutes(32)).await.unwrap().swept, 1);
    }

    #[tokio::test]
    async fn settled_orders_are_left_alone() {
        let world = world(SETTINGS);
        let paid = placed(&world.stores).await;
        stepped(&world.stores, paid, Transition::ConfirmPayment).await;
        let never_charged = placed(&world.stores).await;
        stepped(&world.stores, never_charged, Transition::Cancel).await;

        let report = sweep(&world.deps, in_minutes(60)).await.unwrap();

        assert_eq!(report, SweepReport::default());
        assert!(world.topic.published().is_empty());
    }

    #[tokio::test]
    async fn a_refund_owed_too_long_is_handed_on_as_the_cancellation() {
        let world = world(SETTINGS);
        let order = placed(&world.stores).await;
        let confirmed = stepped(&world.stores, order, Transition::ConfirmPayment).await;
        let cancelled = stepped(&world.stores, confirmed.clone(), Transition::Cancel).await;
        assert_eq!(
            (cancelled.status, cancelled.payment_status),
            (OrderStatus::Cancelled, PaymentStatus::RefundPending)
        );

        sweep(&world.deps, in_minutes(16)).await.unwrap();

        let outbox = domain::events::order_event(Some(&confirmed), Some(&cancelled)).unwrap();
        assert_eq!(world.topic.published(), [(EventType::OrderCancelled, outbox.event_id)]);
    }

    #[tokio::test]
    async fn a_run_hands_on_at_most_its_batch() {
        let world = world(Settings {
            batch_size: 2,
            ..SETTINGS
        });
        for _ in 0..3 {
            placed(&world.stores).await;
        }
        assert_eq!(sweep(&world.deps, in_minutes(16)).await.unwrap().swept, 2);
        assert_eq!(
            sweep(&world.deps, in_minutes(16)).await.unwrap().swept,
            1,
            "the rest next run"
        );
    }

    #[tokio::test]
    async fn a_failed_publish_fails_the_run_and_the_order_is_swept_again_after_the_period() {
        let world = world(SETTINGS);
        placed(&world.stores).await;
        world.topic.down.store(true, std::sync::atomic::Ordering::SeqCst);

        let failed = sweep(&world.deps, in_minutes(16)).await;

        assert!(matches!(
            failed,
            Err(SweepError::Publish {
                failed: 1,
                taken: 1,
                ..
            })
        ));
        world.topic.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(sweep(&world.deps, in_minutes(32)).await.unwrap().swept, 1);
    }
}
