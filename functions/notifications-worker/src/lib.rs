//! Notification worker: consumes domain events from its SQS queue and notifies the user concerned by
//! email (and SMS for some events when a phone is set). Each (event, channel) is delivered at most once
//! however often the event arrives (an idempotency claim per pair); recipients come from the users
//! table; texts from templates; every attempt and its outcome are kept in the notification history.
//! A failed send is retried by the queue with a growing delay, then dead-lettered.
//!
//! Each channel's provider sits behind a circuit breaker (in-process, per warm instance): while it is
//! open the provider is not called and the message goes back to the queue for at least the breaker's
//! `retry_after` (deferred, not failed: the history records no attempt, and the per-(event, channel)
//! claim is released so the retry sends). A deferral still uses one of the queue's receives; a
//! provider down past them dead-letters the message (alarmed, redrivable), it is not dropped.
//!
//! SMS and email cost money (OWASP API4): a recipient gets at most `hourly_cap` notifications per
//! rolling hour, admins' low-stock alerts included (the rule is per recipient). Past the cap a
//! notification is recorded as `SUPPRESSED`, not sent and not retried. The count reads the history's
//! `by_user` index, eventually consistent, so concurrent deliveries to one user (bounded by the
//! worker's concurrency) can overshoot the cap slightly.

pub mod notifier;
pub mod templates;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::events::{Envelope, EventData, OrderData, UserData};
use domain::{UserId, format_rfc3339, now_rfc3339};
use serde::Serialize;
use store::idempotency::IdempotencyStore;
use store::notifications::{Channel, DeliveryStatus, Notification, NotificationRepository, notification_id};
use store::users::UserRepository;
use wiring::{ConfigError, Env};
use worker::breaker::{BreakerPolicy, CircuitBreaker};
use worker::once::{Once, at_most_once};
use worker::sqs::{MessageError, RetryDelay, run_batch_with_backoff};

use crate::notifier::{FailureKind, Notifier, OutboundMessage, SendError};
use crate::templates::Templates;

pub struct Deps {
    pub users: Arc<dyn UserRepository>,
    pub history: Arc<dyn NotificationRepository>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub notifier: Arc<dyn Notifier>,
    pub retry_delay: Arc<dyn RetryDelay>,
    pub templates: Templates,
    /// First retry delay; each further receive doubles it (capped at 15 minutes).
    pub retry_base_secs: i32,
    /// One circuit breaker per channel's provider, kept for the life of the instance.
    pub breakers: ChannelBreakers,
    /// Notifications one recipient may get per rolling hour; past it they are suppressed.
    pub hourly_cap: u32,
}

/// The circuit breakers of the email (SES) and SMS (SNS) providers.
pub struct ChannelBreakers {
    pub email: CircuitBreaker,
    pub sms: CircuitBreaker,
}

impl ChannelBreakers {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            email: CircuitBreaker::new("email", policy),
            sms: CircuitBreaker::new("sms", policy),
        }
    }

    pub fn for_channel(&self, channel: Channel) -> &CircuitBreaker {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
        }
    }
}

pub const HOURLY_CAP_VAR: &str = "NOTIFICATIONS_PER_USER_PER_HOUR";
pub const DEFAULT_HOURLY_CAP: u32 = 20;

/// `NOTIFICATIONS_PER_USER_PER_HOUR` (1..=10000, default 20), read at init.
pub fn hourly_cap(env: &Env) -> Result<u32, ConfigError> {
    env.number(HOURLY_CAP_VAR, 1..=10_000, Some(DEFAULT_HOURLY_CAP))
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    run_batch_with_backoff(
        event,
        deps.retry_delay.as_ref(),
        deps.retry_base_secs,
        |message| async move { handle_message(deps, &message).await },
    )
    .await
}

#[derive(Serialize)]
struct LineContext {
    product_name: String,
    quantity: i64,
    price: String,
}

#[derive(Serialize)]
struct ProductContext {
    id: String,
    name: String,
    stock_quantity: i64,
    low_stock_threshold: i64,
}

#[derive(Serialize)]
struct MessageContext {
    name: String,
    order_id: Option<String>,
    total: Option<String>,
    items: Vec<LineContext>,
    cancel_reason: Option<String>,
    product: Option<ProductContext>,
}

/// `$12.99` from 1299 minor units (the shop sells in USD).
pub fn format_money(minor_units: i64) -> String {
    let sign = if minor_units < 0 { "-" } else { "" };
    let units = minor_units.unsigned_abs();
    format!("{sign}${}.{:02}", units / 100, units % 100)
}

fn context_for(name: &str, data: &EventData) -> MessageContext {
    let order = match data {
        EventData::Order(order) => Some(order),
        _ => None,
    };
    MessageContext {
        product: match data {
            EventData::Inventory(product) => Some(ProductContext {
                id: product.product_id.clone(),
                name: product.product_name.clone(),
                stock_quantity: product.stock_quantity,
                low_stock_threshold: product.low_stock_threshold,
            }),
            _ => None,
        },
        name: name.to_owned(),
        order_id: order.map(|o| o.order_id.clone()),
        total: order.map(|o| format_money(o.total_amount)),
        items: order
            .map(|o| {
                o.items
                    .iter()
                    .map(|line| LineContext {
                        product_name: line.product_name.clone(),
                        quantity: line.quantity,
                        price: format_money(line.price),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        cancel_reason: order
            .and_then(|o| o.cancel_reason)
            .and_then(|reason| serde_json::to_value(reason).ok())
            .and_then(|value| value.as_str().map(str::to_owned)),
    }
}

async fn handle_message(deps: &Deps, message: &SqsMessage) -> Result<(), MessageError> {
    let body = message
        .body
        .as_deref()
        .ok_or_else(|| MessageError::Poison("empty body".into()))?;
    let envelope: Envelope =
        serde_json::from_str(body).map_err(|error| MessageError::Poison(format!("not an event envelope: {error}")))?;
    envelope.validate().map_err(MessageError::Poison)?;
    tracing::info!(
        event_id = %envelope.event_id,
        event_type = envelope.event_type.as_str(),
        correlation_id = %envelope.correlation_id,
        "event received"
    );
    let recipients = match &envelope.data {
        EventData::Order(OrderData { user_id, .. }) | EventData::User(UserData { user_id }) => {
            let user_id =
                UserId::parse(user_id).map_err(|_| MessageError::Poison("event names no valid user".into()))?;
            match deps
                .users
                .get(&user_id)
                .await
                .map_err(|e| MessageError::Retry(e.to_string()))?
            {
                Some(user) => vec![user],
                None => {
                    tracing::info!("the user no longer exists; nothing to notify");
                    Vec::new()
                }
            }
        }
        // Operational alerts go to every admin.
        EventData::Inventory(_) => deps
            .users
            .admins()
            .await
            .map_err(|e| MessageError::Retry(e.to_string()))?,
    };
    // Each (recipient, channel) succeeds or fails on its own: one bad address or one provider down
    // withholds nothing from the others. Delivered ones are claimed, so a redelivery of the message
    // retries only what failed.
    let mut retry: Option<MessageError> = None;
    for user in recipients {
        let context = context_for(&user.name, &envelope.data);
        let addresses = [
            (Channel::Email, Some(user.email.to_string())),
            (Channel::Sms, user.phone.as_ref().map(|phone| phone.as_str().to_owned())),
        ];
        for (channel, address) in addresses {
            let Some(address) = address else { continue };
            if !deps.templates.has(envelope.event_type, channel) {
                continue;
            }
            if let Err(error) = deliver(deps, &envelope, &user.id, channel, address, &context).await {
                retry = Some(match retry {
                    Some(earlier) => earlier.or_later(error),
                    None => error,
                });
            }
        }
    }
    retry.map_or(Ok(()), Err)
}

async fn deliver(
    deps: &Deps,
    envelope: &Envelope,
    user_id: &UserId,
    channel: Channel,
    recipient: String,
    context: &MessageContext,
) -> Result<(), MessageError> {
    let record_key = format!("notification#{}#{user_id}#{}", envelope.event_id, channel.as_str());
    let work = || send_and_record(deps, envelope, user_id, channel, recipient, context);
    if at_most_once(deps.idempotency.as_ref(), &record_key, &envelope.event_id, work).await? == Once::AlreadyDone {
        tracing::info!(channel = channel.as_str(), "already delivered; duplicate dropped");
    }
    Ok(())
}

async fn send_and_record(
    deps: &Deps,
    envelope: &Envelope,
    user_id: &UserId,
    channel: Channel,
    recipient: String,
    context: &MessageContext,
) -> Result<(), MessageError> {
    let retry = |error: &dyn std::fmt::Display| MessageError::Retry(error.to_string());
    let rendered = deps
        .templates
        .render(envelope.event_type, channel, context)
        .map_err(|e| retry(&e))?;
    let draft = Notification {
        id: notification_id(&envelope.event_id, &user_id.to_string(), channel),
        user_id: user_id.to_string(),
        event_id: envelope.event_id.clone(),
        event_type: envelope.event_type.as_str().to_owned(),
        channel,
        recipient: recipient.clone(),
        subject: rendered.subject.clone(),
        body: rendered.body.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        correlation_id: envelope.correlation_id.clone(),
        created_at: now_rfc3339(),
        sent_at: None,
    };
    if over_hourly_cap(deps, &draft).await? {
        deps.history.record_suppressed(&draft).await.map_err(|e| retry(&e))?;
        metrics::counter!("NotificationsSuppressed", "Channel" => channel.as_str()).increment(1);
        tracing::warn!(
            channel = channel.as_str(),
            user_id = %user_id,
            cap = deps.hourly_cap,
            "hourly notification cap reached; suppressed, not sent"
        );
        return Ok(());
    }
    // Asked after the cap (a suppressed notification needs no provider) and before the attempt is
    // recorded: a deferral is not an attempt. Dropping `attempt` without a report (nothing sent after
    // all) frees the breaker's probe slot.
    let attempt = deps.breakers.for_channel(channel).try_acquire().map_err(|open| {
        MessageError::retry_after(
            open.retry_after,
            format!("{} provider circuit open; deferred", channel.as_str()),
        )
    })?;
    let recorded = deps.history.record_attempt(&draft).await.map_err(|e| retry(&e))?;
    if recorded.status == DeliveryStatus::Sent {
        tracing::info!(channel = channel.as_str(), "history says sent; not sending again");
        return Ok(());
    }
    let message = OutboundMessage {
        channel,
        recipient,
        subject: rendered.subject,
        body: rendered.body,
    };
    let sent = deps.notifier.send(&message).await;
    attempt.report(&sent, SendError::counts_against_provider);
    match sent {
        Ok(()) => {
            deps.history
                .record_outcome(&draft.id, DeliveryStatus::Sent, None, &now_rfc3339())
                .await
                .map_err(|e| retry(&e))?;
            metrics::counter!("NotificationsSent", "Channel" => channel.as_str()).increment(1);
            tracing::info!(
                channel = channel.as_str(),
                attempts = recorded.attempts,
                "notification sent"
            );
            Ok(())
        }
        Err(error) => {
            metrics::counter!("NotificationsFailed", "Channel" => channel.as_str()).increment(1);
            tracing::warn!(channel = channel.as_str(), error = %error, attempts = recorded.attempts, "send failed");
            let reason = error.to_string();
            deps.history
                .record_outcome(&draft.id, DeliveryStatus::Failed, Some(&reason), &now_rfc3339())
                .await
                .map_err(|e| retry(&e))?;
            match error.kind {
                // A permanent rejection (a bad address) fails the same way every time: recorded as
                // failed, not retried.
                FailureKind::Rejected => Ok(()),
                FailureKind::Unavailable => Err(MessageError::Retry(reason)),
            }
        }
    }
}

/// Whether the recipient of `draft` already had `hourly_cap` notifications sent or attempted in the
/// last hour (not counting `draft` itself, which may be a retry).
async fn over_hourly_cap(deps: &Deps, draft: &Notification) -> Result<bool, MessageError> {
    let now = time::OffsetDateTime::now_utc();
    let since = format_rfc3339(now.checked_sub(time::Duration::HOUR).unwrap_or(now));
    let recent = deps
        .history
        .count_recent(&draft.user_id, &since, &draft.id, deps.hourly_cap)
        .await
        .map_err(|e| MessageError::Retry(e.to_string()))?;
    Ok(recent >= deps.hourly_cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::MockNotifier;
    use domain::{Email, Phone, Role, User};
    use std::time::Duration;
    use store::idempotency::InMemoryIdempotency;
    use store::memory::{InMemoryNotifications, InMemoryUsers};
    use worker::breaker::ManualClock;
    use worker::testing::RecordedDelays;

    const BUYER: &str = "0190f5a4-7b3e-7c1a-9d2e-0000000000b1";

    struct World {
        deps: Deps,
        notifier: Arc<MockNotifier>,
        history: Arc<InMemoryNotifications>,
        delays: Arc<RecordedDelays>,
    }

    async fn world(notifier: MockNotifier) -> World {
        let users = Arc::new(InMemoryUsers::default());
        let buyer = User {
            id: UserId::parse(BUYER).unwrap(),
            email: Email::parse("buyer@example.com").unwrap(),
            name: "Bea Buyer".into(),
            phone: Some(Phone::parse("+14155550123").unwrap()),
            role: Role::Customer,
            created_at: now_rfc3339(),
        };
        users.create(&buyer, "hash", "cid").await.unwrap();
        let notifier = Arc::new(notifier);
        let history = Arc::new(InMemoryNotifications::default());
        let delays = Arc::new(RecordedDelays::default());
        let deps = Deps {
            users,
            history: history.clone(),
            idempotency: Arc::new(InMemoryIdempotency::default()),
            notifier: notifier.clone(),
            retry_delay: delays.clone(),
            templates: Templates::load().unwrap(),
            retry_base_secs: 10,
            breakers: ChannelBreakers::new(BreakerPolicy::default()),
            hourly_cap: DEFAULT_HOURLY_CAP,
        };
        World {
            deps,
            notifier,
            history,
            delays,
        }
    }

    const OPEN_FOR: Duration = Duration::from_secs(30);

    /// Breakers that open after `threshold` provider failures, on a clock the test moves.
    fn breakers(threshold: u32, clock: &Arc<ManualClock>) -> ChannelBreakers {
        let policy = BreakerPolicy {
            failure_threshold: threshold,
            open_for: OPEN_FOR,
        };
        ChannelBreakers {
            email: CircuitBreaker::with_clock("email", policy, clock.clone()),
            sms: CircuitBreaker::with_clock("sms", policy, clock.clone()),
        }
    }

    async fn history_of(world: &World, channel: Channel) -> Option<Notification> {
        let history = world.history.list_for_user(BUYER, None, 100).await.unwrap().items;
        history
            .into_iter()
            .find(|n| n.channel == channel && n.event_type == "order.created")
    }

    /// A notification to the buyer of another event, `minutes_ago` old, `SENT` or `SUPPRESSED`.
    async fn past_notification(world: &World, n: usize, minutes_ago: i64, status: DeliveryStatus) {
        let created = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
        let notification = Notification {
            id: format!("past-{n}"),
            user_id: BUYER.into(),
            event_id: format!("past-event-{n}"),
            event_type: "order.confirmed".into(),
            channel: Channel::Email,
            recipient: "buyer@example.com".into(),
            subject: None,
            body: "earlier".into(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            correlation_id: "past".into(),
            created_at: format_rfc3339(created),
            sent_at: None,
        };
        if status == DeliveryStatus::Suppressed {
            world.history.record_suppressed(&notification).await.unwrap();
            return;
        }
        world.history.record_attempt(&notification).await.unwrap();
        world
            .history
            .record_outcome(&notification.id, status, None, &notification.created_at)
            .await
            .unwrap();
    }

    fn batch() -> SqsEvent {
        serde_json::from_str(include_str!("../../../events/notifications-worker.json")).unwrap()
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect()
    }

    #[tokio::test]
    async fn an_order_is_announced_by_email_and_sms_while_the_poison_message_alone_fails() {
        let world = world(MockNotifier::default()).await;
        let response = handle(&world.deps, batch()).await;
        assert_eq!(failed_ids(&response), ["poison-1"]);
        let sent = world.notifier.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].recipient, "buyer@example.com");
        assert_eq!(
            sent[0].subject.as_deref(),
            Some("We received your order 0190f5a4-7b3e-7c1a-9d2e-0000000000a1")
        );
        assert!(sent[0].body.contains("2 x Enamel mug at $12.99"));
        assert_eq!(sent[1].channel, Channel::Sms);
        let history = world.history.list_for_user(BUYER, None, 10).await.unwrap().items;
        assert_eq!(history.len(), 2);
        assert!(
            history
                .iter()
                .all(|n| n.status == DeliveryStatus::Sent && n.attempts == 1 && n.sent_at.is_some())
        );
        assert!(history.iter().all(|n| n.correlation_id == "sample-orders-create"));
        assert_eq!(world.delays.recorded(), [0], "the poison message is released at once");
    }

    #[tokio::test]
    async fn a_duplicate_delivery_sends_nothing_twice() {
        let world = world(MockNotifier::default()).await;
        handle(&world.deps, batch()).await;
        handle(&world.deps, batch()).await;
        assert_eq!(world.notifier.sent().len(), 2);
        let history = world.history.list_for_user(BUYER, None, 10).await.unwrap().items;
        assert!(history.iter().all(|n| n.attempts == 1));
    }

    #[tokio::test]
    async fn a_failed_send_is_recorded_and_retried_later_with_backoff() {
        let failing = MockNotifier::failing_for(&["+14155550123"]);
        let world = world(failing).await;
        let response = handle(&world.deps, batch()).await;
        assert_eq!(failed_ids(&response), ["order-created-1", "poison-1"]);
        let history = world.history.list_for_user(BUYER, None, 10).await.unwrap().items;
        let sms = history.iter().find(|n| n.channel == Channel::Sms).unwrap();
        assert_eq!((sms.status, sms.attempts), (DeliveryStatus::Failed, 1));
        // The retry sends only what failed: the email went out once.
        handle(&world.deps, batch()).await;
        assert_eq!(
            world
                .notifier
                .sent()
                .iter()
                .filter(|m| m.channel == Channel::Email)
                .count(),
            1
        );
        let history = world.history.list_for_user(BUYER, None, 10).await.unwrap().items;
        assert_eq!(history.iter().find(|n| n.channel == Channel::Sms).unwrap().attempts, 2);
        assert!(world.delays.recorded().contains(&10));
    }

    /// Two admins and the low-stock alert for them (one message).
    async fn admins_and_an_alert(notifier: MockNotifier) -> (World, SqsEvent) {
        let world = world(notifier).await;
        for (id, email) in [
            ("0190f5a4-7b3e-7c1a-9d2e-0000000000c1", "ops1@example.com"),
            ("0190f5a4-7b3e-7c1a-9d2e-0000000000c2", "ops2@example.com"),
        ] {
            let admin = User {
                id: UserId::parse(id).unwrap(),
                email: Email::parse(email).unwrap(),
                name: "Ops".into(),
                phone: Some(Phone::parse("+14155550100").unwrap()),
                role: Role::Admin,
                created_at: now_rfc3339(),
            };
            world.deps.users.create(&admin, "hash", "cid").await.unwrap();
        }
        let mut event = batch();
        event.records.truncate(1);
        event.records[0].body = Some(
            serde_json::json!({
                "event_id": "0123456789abcdef0123456789abcdef",
                "event_type": "inventory.low_stock",
                "version": 1,
                "occurred_at": "2026-11-25T12:00:00.000000Z",
                "correlation_id": "low-stock-1",
                "data": {"product_id": "p-1", "product_name": "Mug", "stock_quantity": 3, "low_stock_threshold": 5},
            })
            .to_string(),
        );
        (world, event)
    }

    #[tokio::test]
    async fn a_low_stock_alert_goes_to_every_admin_once() {
        let (world, event) = admins_and_an_alert(MockNotifier::default()).await;
        handle(&world.deps, event.clone()).await;
        handle(&world.deps, event).await;
        let mut recipients: Vec<String> = world.notifier.sent().into_iter().map(|m| m.recipient).collect();
        recipients.sort();
        assert_eq!(
            recipients,
            ["ops1@example.com", "ops2@example.com"],
            "email only, once each, no customer"
        );
    }

    #[tokio::test]
    async fn given_one_admin_address_failing_then_the_others_still_get_the_alert_and_only_it_is_retried() {
        let (world, event) = admins_and_an_alert(MockNotifier::failing_for(&["ops1@example.com"])).await;

        let first = handle(&world.deps, event.clone()).await;

        assert_eq!(
            failed_ids(&first).len(),
            1,
            "the message comes back for the failed delivery"
        );
        let sent: Vec<String> = world.notifier.sent().into_iter().map(|m| m.recipient).collect();
        assert_eq!(
            sent,
            ["ops2@example.com"],
            "the failure withholds nothing from the next admin"
        );
        handle(&world.deps, event).await;
        assert_eq!(world.notifier.sent().len(), 1, "the delivered one is not sent again");
    }

    #[tokio::test]
    async fn given_a_failing_provider_when_failures_reach_the_threshold_then_messages_are_deferred_without_calling_it()
    {
        let clock = Arc::new(ManualClock::default());
        let mut world = world(MockNotifier::default()).await;
        world.deps.breakers = breakers(2, &clock);
        world.notifier.set_down(true);
        // Two real attempts per channel fail (each channel on its own), and both circuits open.
        for _ in 0..2 {
            handle(&world.deps, batch()).await;
        }
        assert_eq!(world.notifier.calls(), 4);
        let email = history_of(&world, Channel::Email).await.unwrap();
        assert_eq!((email.status, email.attempts), (DeliveryStatus::Failed, 2));

        let delays_before = world.delays.recorded().len();

        let response = handle(&world.deps, batch()).await;

        assert_eq!(world.notifier.calls(), 4, "an open circuit does not call the provider");
        assert_eq!(
            failed_ids(&response),
            ["order-created-1", "poison-1"],
            "deferred, so retried by the queue, not deleted"
        );
        let email = history_of(&world, Channel::Email).await.unwrap();
        assert_eq!(
            (email.status, email.attempts),
            (DeliveryStatus::Failed, 2),
            "a deferral is not an attempt"
        );
        assert_eq!(
            world.delays.recorded()[delays_before..],
            [30, 0],
            "back no sooner than the circuit's retry_after (the poison message at once)"
        );
    }

    #[tokio::test]
    async fn given_an_open_circuit_when_its_time_is_up_then_a_probe_goes_through_and_the_deferred_message_is_sent() {
        let clock = Arc::new(ManualClock::default());
        let mut world = world(MockNotifier::default()).await;
        world.deps.breakers = breakers(2, &clock);
        world.notifier.set_down(true);
        for _ in 0..3 {
            handle(&world.deps, batch()).await;
        }
        assert_eq!(
            world.notifier.calls(),
            4,
            "two failures per channel, then both circuits are open"
        );
        world.notifier.set_down(false);
        clock.advance(OPEN_FOR);

        let response = handle(&world.deps, batch()).await;

        assert_eq!(failed_ids(&response), ["poison-1"]);
        assert_eq!(world.notifier.sent().len(), 2, "the email probe, then the SMS");
        let email = history_of(&world, Channel::Email).await.unwrap();
        assert_eq!((email.status, email.attempts), (DeliveryStatus::Sent, 3));
        assert_eq!(world.deps.breakers.email.state().name(), "closed");
        handle(&world.deps, batch()).await;
        assert_eq!(world.notifier.sent().len(), 2, "and still at most once");
    }

    #[tokio::test]
    async fn given_an_open_sms_circuit_then_email_still_goes_out_once() {
        let clock = Arc::new(ManualClock::default());
        let mut world = world(MockNotifier::failing_for(&["+14155550123"])).await;
        world.deps.breakers = breakers(2, &clock);
        for _ in 0..4 {
            handle(&world.deps, batch()).await;
        }
        assert_eq!(
            world.notifier.calls(),
            3,
            "one email, two SMS failures, then the SMS is deferred"
        );
        assert_eq!(world.notifier.sent().len(), 1);
        assert_eq!(world.deps.breakers.email.state().name(), "closed");
        assert_eq!(world.deps.breakers.sms.state().name(), "open");
        assert_eq!(history_of(&world, Channel::Sms).await.unwrap().attempts, 2);
    }

    #[tokio::test]
    async fn given_a_provider_that_refuses_a_recipient_then_the_circuit_stays_closed() {
        let clock = Arc::new(ManualClock::default());
        let mut world = world(MockNotifier::rejecting(&["+14155550123"])).await;
        world.deps.breakers = breakers(2, &clock);
        for _ in 0..4 {
            handle(&world.deps, batch()).await;
        }
        assert_eq!(
            world.notifier.calls(),
            2,
            "one email, and one SMS: a permanent rejection is not retried"
        );
        assert_eq!(world.deps.breakers.sms.state().name(), "closed");
        let sms = history_of(&world, Channel::Sms).await.unwrap();
        assert_eq!((sms.status, sms.attempts), (DeliveryStatus::Failed, 1));
    }

    #[tokio::test]
    async fn given_a_user_sent_the_hourly_cap_when_another_notification_comes_then_it_is_suppressed_not_sent() {
        let mut world = world(MockNotifier::default()).await;
        world.deps.hourly_cap = 3;
        for n in 0..3 {
            past_notification(&world, n, 10 + n as i64, DeliveryStatus::Sent).await;
        }

        let response = handle(&world.deps, batch()).await;

        assert_eq!(failed_ids(&response), ["poison-1"], "a policy decision, not a failure");
        assert_eq!(world.notifier.calls(), 0);
        for channel in [Channel::Email, Channel::Sms] {
            let suppressed = history_of(&world, channel).await.unwrap();
            assert_eq!(
                (suppressed.status, suppressed.attempts, suppressed.sent_at),
                (DeliveryStatus::Suppressed, 0, None)
            );
        }
        handle(&world.deps, batch()).await;
        assert_eq!(world.notifier.calls(), 0, "a redelivery is not sent either");
    }

    #[tokio::test]
    async fn given_a_user_one_below_the_cap_then_the_email_goes_out_and_the_sms_is_suppressed() {
        let mut world = world(MockNotifier::default()).await;
        world.deps.hourly_cap = 3;
        for n in 0..2 {
            past_notification(&world, n, 5, DeliveryStatus::Sent).await;
        }
        handle(&world.deps, batch()).await;
        let sent = world.notifier.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].channel, Channel::Email);
        assert_eq!(
            history_of(&world, Channel::Sms).await.unwrap().status,
            DeliveryStatus::Suppressed
        );
    }

    #[tokio::test]
    async fn given_notifications_older_than_an_hour_or_suppressed_then_they_do_not_count_against_the_cap() {
        let mut world = world(MockNotifier::default()).await;
        world.deps.hourly_cap = 2;
        for n in 0..5 {
            past_notification(&world, n, 61 + n as i64, DeliveryStatus::Sent).await;
        }
        past_notification(&world, 5, 1, DeliveryStatus::Suppressed).await;

        handle(&world.deps, batch()).await;

        assert_eq!(world.notifier.sent().len(), 2, "email and SMS both go out");
    }

    #[test]
    fn the_hourly_cap_defaults_to_twenty_and_refuses_nonsense() {
        let cap_of = |raw: Option<&'static str>| hourly_cap(&Env::from_lookup(move |_| raw.map(str::to_owned)));
        assert_eq!(cap_of(None).unwrap(), 20);
        assert_eq!(cap_of(Some("50")).unwrap(), 50);
        for bad in ["0", "-3", "lots"] {
            assert!(cap_of(Some(bad)).unwrap_err().to_string().contains(HOURLY_CAP_VAR));
        }
    }

    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(format_money(1299), "$12.99");
        assert_eq!(format_money(5), "$0.05");
        assert_eq!(format_money(0), "$0.00");
    }
}
