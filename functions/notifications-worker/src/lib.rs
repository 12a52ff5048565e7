//! Notification worker: consumes domain events from its SQS queue and notifies the user concerned by
//! email (and SMS for some events when a phone is set). Each (event, channel) is delivered at most once
//! however often the event arrives (an idempotency claim per pair); recipients come from the users
//! table; texts from templates; every attempt and its outcome are kept in the notification history.
//! A failed send is retried by the queue with a growing delay, then dead-lettered.

pub mod notifier;
pub mod templates;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::Serialize;
use shared::domain::{UserId, now_rfc3339};
use shared::events::{Envelope, EventData, OrderData, UserData};
use shared::idempotency::{IdempotencyStore, Once, at_most_once};
use shared::repo::notifications::{Channel, DeliveryStatus, Notification, NotificationRepository, notification_id};
use shared::repo::users::UserRepository;
use shared::sqs::{MessageError, RetryDelay, run_batch_with_backoff};

use crate::notifier::{Notifier, OutboundMessage};
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
    for user in recipients {
        let context = context_for(&user.name, &envelope.data);
        let addresses = [
            (Channel::Email, Some(user.email.to_string())),
            (Channel::Sms, user.phone.as_ref().map(|phone| phone.as_str().to_owned())),
        ];
        for (channel, address) in addresses {
            let Some(address) = address else { continue };
            if deps.templates.has(envelope.event_type, channel) {
                deliver(deps, &envelope, &user.id, channel, address, &context).await?;
            }
        }
    }
    Ok(())
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
    match deps.notifier.send(&message).await {
        Ok(()) => {
            deps.history
                .record_outcome(&draft.id, DeliveryStatus::Sent, None, &now_rfc3339())
                .await
                .map_err(|e| retry(&e))?;
            tracing::info!(
                channel = channel.as_str(),
                attempts = recorded.attempts,
                "notification sent"
            );
            Ok(())
        }
        Err(error) => {
            tracing::warn!(channel = channel.as_str(), error = %error, attempts = recorded.attempts, "send failed");
            let reason = error.to_string();
            deps.history
                .record_outcome(&draft.id, DeliveryStatus::Failed, Some(&reason), &now_rfc3339())
                .await
                .map_err(|e| retry(&e))?;
            Err(MessageError::Retry(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::MockNotifier;
    use shared::domain::{Email, Phone, Role, User};
    use shared::idempotency::InMemoryIdempotency;
    use shared::repo::memory::{InMemoryNotifications, InMemoryUsers};
    use shared::testing::RecordedDelays;

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
        };
        World {
            deps,
            notifier,
            history,
            delays,
        }
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

    #[tokio::test]
    async fn a_low_stock_alert_goes_to_every_admin_once() {
        let world = world(MockNotifier::default()).await;
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

    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(format_money(1299), "$12.99");
        assert_eq!(format_money(5), "$0.05");
        assert_eq!(format_money(0), "$0.00");
    }
}
