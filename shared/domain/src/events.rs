//! Domain events: the envelope every consumer reads, and how committed table changes (DynamoDB stream
//! records) become events. Mapping is pure: an image in, at most one event out. Event ids are derived
//! from what changed (entity + transition), so a re-delivered record, or a record replayed after a
//! failure, yields the same id and consumers can drop the duplicate.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CancelReason, Order, OrderStatus, Product, User};

pub const ENVELOPE_VERSION: u32 = 1;
/// SNS/SQS message attribute that carries the event type (subscriptions filter on it).
pub const EVENT_TYPE_ATTRIBUTE: &str = "event_type";
pub const CORRELATION_ATTRIBUTE: &str = "correlation_id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "user.registered")]
    UserRegistered,
    #[serde(rename = "order.created")]
    OrderCreated,
    #[serde(rename = "order.confirmed")]
    OrderConfirmed,
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    #[serde(rename = "order.shipped")]
    OrderShipped,
    #[serde(rename = "inventory.low_stock")]
    InventoryLowStock,
}

impl EventType {
    pub const ALL: [Self; 6] = [
        Self::UserRegistered,
        Self::OrderCreated,
        Self::OrderConfirmed,
        Self::OrderCancelled,
        Self::OrderShipped,
        Self::InventoryLowStock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRegistered => "user.registered",
            Self::OrderCreated => "order.created",
            Self::OrderConfirmed => "order.confirmed",
            Self::OrderCancelled => "order.cancelled",
            Self::OrderShipped => "order.shipped",
            Self::InventoryLowStock => "inventory.low_stock",
        }
    }
}

/// `{event_id, event_type, version, occurred_at, correlation_id, data}` (docs/api.md "Events").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: String,
    pub event_type: EventType,
    pub version: u32,
    pub occurred_at: String,
    pub correlation_id: String,
    pub data: EventData,
    /// The trace context the event continues (W3C `traceparent`). Not part of the event's JSON: it
    /// travels beside it, as a message attribute.
    #[serde(skip)]
    pub trace_parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventData {
    Order(OrderData),
    Inventory(InventoryData),
    User(UserData),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryData {
    pub product_id: String,
    pub product_name: String,
    pub stock_quantity: i64,
    pub low_stock_threshold: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderData {
    pub order_id: String,
    pub user_id: String,
    pub status: OrderStatus,
    pub items: Vec<OrderLineData>,
    pub total_amount: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// The status the order left (absent for `order.created`): a cancelled order that had been
    /// `CONFIRMED` was paid for and must be refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<OrderStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineData {
    pub product_id: String,
    pub product_name: String,
    pub quantity: i64,
    pub price: i64,
}

impl Envelope {
    /// Refuses envelopes this code would never publish: wrong version, malformed id, or data that
    /// does not belong to the event type. Consumers treat a refusal as a poison message.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", self.version));
        }
        if self.event_id.len() != 32 || !self.event_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("event_id is not 32 hex characters".into());
        }
        if self.correlation_id.is_empty() {
            return Err("correlation_id is empty".into());
        }
        let data_fits = matches!(
            (self.event_type, &self.data),
            (EventType::UserRegistered, EventData::User(_))
                | (
                    EventType::OrderCreated
                        | EventType::OrderConfirmed
                        | EventType::OrderCancelled
                        | EventType::OrderShipped,
                    EventData::Order(_),
                )
                | (EventType::InventoryLowStock, EventData::Inventory(_))
        );
        if data_fits {
            Ok(())
        } else {
            Err(format!("data does not fit a {} event", self.event_type.as_str()))
        }
    }
}

/// A deterministic id for "this thing happened to this entity" (hex of SHA-256, 32 chars).
pub fn event_id(event_type: EventType, entity_id: &str) -> String {
    let digest = Sha256::digest(format!("{}|{entity_id}", event_type.as_str()));
    digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect()
}

/// The event a change of an order item announces, if it announces one: creation, or a status change.
pub fn order_event(old: Option<&Order>, new: Option<&Order>) -> Option<Envelope> {
    let new = new?;
    let event_type = match (old.map(|order| order.status), new.status) {
        (None, _) => EventType::OrderCreated,
        (Some(before), after) if before == after => return None,
        (Some(_), OrderStatus::Confirmed) => EventType::OrderConfirmed,
        (Some(_), OrderStatus::Cancelled) => EventType::OrderCancelled,
        (Some(_), OrderStatus::Shipped) => EventType::OrderShipped,
        (Some(_), OrderStatus::Pending) => return None,
    };
    Some(order_envelope(event_type, new, old.map(|order| order.status)))
}

/// The event that hands `order` to the payment step again, while it waits for it: its
/// `order.created` while the charge is not made, its `order.cancelled` while a refund is owed. The
/// sweep publishes it when the outbox's own was lost; it has the id the outbox gave it, so every
/// consumer that saw it already drops it. (`previous_status` is not known here and left out.)
pub fn payment_step_event(order: &Order) -> Option<Envelope> {
    if !order.payment_status.awaits_payment_step(order.status) {
        return None;
    }
    let event_type = match order.status {
        OrderStatus::Pending => EventType::OrderCreated,
        OrderStatus::Cancelled => EventType::OrderCancelled,
        OrderStatus::Confirmed | OrderStatus::Shipped => return None,
    };
    Some(order_envelope(event_type, order, None))
}

fn order_envelope(event_type: EventType, new: &Order, previous_status: Option<OrderStatus>) -> Envelope {
    let occurred_at = if event_type == EventType::OrderCreated {
        &new.created_at
    } else {
        &new.updated_at
    };
    Envelope {
        event_id: event_id(event_type, &new.id.to_string()),
        event_type,
        version: ENVELOPE_VERSION,
        occurred_at: occurred_at.clone(),
        correlation_id: new.correlation_id.clone(),
        trace_parent: new.trace_parent.clone(),
        data: EventData::Order(OrderData {
            order_id: new.id.to_string(),
            user_id: new.user_id.to_string(),
            status: new.status,
            items: new
                .items
                .iter()
                .map(|line| OrderLineData {
                    product_id: line.product_id.to_string(),
                    product_name: line.product_name.clone(),
                    quantity: line.quantity.units(),
                    price: line.price.minor_units(),
                })
                .collect(),
            total_amount: new.total_amount,
            currency: new.currency.code().to_owned(),
            cancel_reason: new.cancel_reason,
            previous_status,
        }),
    }
}

/// The alert a product change raises when its stock crosses the low-stock threshold downwards.
/// `change_id` identifies the change (the stream record), so each crossing is one event, however
/// often its record is delivered.
pub fn low_stock_event(
    old: Option<&Product>,
    new: Option<&Product>,
    change_id: &str,
    correlation_id: Option<&str>,
) -> Option<Envelope> {
    let (old, new) = (old?, new?);
    if !new
        .stock_quantity
        .crossed_below(old.stock_quantity, new.low_stock_threshold)
    {
        return None;
    }
    let event_id = event_id(EventType::InventoryLowStock, &format!("{}|{change_id}", new.id));
    Some(Envelope {
        correlation_id: correlation_id.map_or_else(|| format!("low-stock-{event_id}"), str::to_owned),
        event_id,
        event_type: EventType::InventoryLowStock,
        version: ENVELOPE_VERSION,
        occurred_at: crate::now_rfc3339(),
        data: EventData::Inventory(InventoryData {
            product_id: new.id.to_string(),
            product_name: new.name.clone(),
            stock_quantity: new.stock_quantity.units(),
            low_stock_threshold: new.low_stock_threshold.units(),
        }),
        trace_parent: None,
    })
}

/// The event a new user item announces (registration); role changes and other edits announce nothing.
pub fn user_event(old: Option<&User>, new: Option<&User>, correlation_id: Option<&str>) -> Option<Envelope> {
    let new = new?;
    if old.is_some() {
        return None;
    }
    Some(Envelope {
        event_id: event_id(EventType::UserRegistered, &new.id.to_string()),
        event_type: EventType::UserRegistered,
        version: ENVELOPE_VERSION,
        occurred_at: new.created_at.clone(),
        correlation_id: correlation_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
        data: EventData::User(UserData {
            user_id: new.id.to_string(),
        }),
        trace_parent: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Email, NewOrder, NewProduct, PaymentStatus, ProductId, Role, UserId};

    fn order(status: OrderStatus) -> Order {
        let product = NewProduct::parse("Mug", None, "kitchen", 1299, None, 5)
            .unwrap()
            .into_product(ProductId::generate(), "2026-01-01T00:00:00.000000Z".into());
        let request = NewOrder::parse(&[(product.id.to_string(), 2)], Some("tok_visa")).unwrap();
        let lines = request.price(&[product]).unwrap();
        let mut order = Order::place(
            UserId::generate(),
            lines,
            Some("tok_visa".into()),
            &crate::Cause::untraced("cid-1"),
            "2026-01-01T00:00:00.000000Z".into(),
        )
        .unwrap();
        order.status = status;
        order
    }

    #[test]
    fn a_new_order_is_order_created_with_everything_a_consumer_needs() {
        let new = order(OrderStatus::Pending);
        let event = order_event(None, Some(&new)).unwrap();
        assert_eq!(event.event_type, EventType::OrderCreated);
        assert_eq!(event.correlation_id, "cid-1");
        let EventData::Order(data) = &event.data else {
            panic!("order data")
        };
        assert_eq!(data.total_amount, 2598);
        assert_eq!(data.items[0].product_name, "Mug");
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            !json.contains("tok_visa"),
            "payment tokens stay in the orders table, out of queues"
        );
    }

    #[test]
    fn each_status_change_has_its_event() {
        for (from, to, expected) in [
            (OrderStatus::Pending, OrderStatus::Confirmed, EventType::OrderConfirmed),
            (OrderStatus::Pending, OrderStatus::Cancelled, EventType::OrderCancelled),
            (
                OrderStatus::Confirmed,
                OrderStatus::Cancelled,
                EventType::OrderCancelled,
            ),
            (OrderStatus::Confirmed, OrderStatus::Shipped, EventType::OrderShipped),
        ] {
            let (old, mut new) = (order(from), order(from));
            new.status = to;
            assert_eq!(
                order_event(Some(&old), Some(&new)).unwrap().event_type,
                expected,
                "{from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn changes_that_are_not_transitions_announce_nothing() {
        let old = order(OrderStatus::Pending);
        let mut touched = old.clone();
        touched.updated_at = "2026-01-02T00:00:00.000000Z".into();
        assert_eq!(order_event(Some(&old), Some(&touched)), None);
        assert_eq!(order_event(Some(&old), None), None, "a deletion");
    }

    #[test]
    fn the_same_change_always_has_the_same_id() {
        let new = order(OrderStatus::Pending);
        assert_eq!(
            order_event(None, Some(&new)).unwrap().event_id,
            order_event(None, Some(&new)).unwrap().event_id
        );
        let mut confirmed = new.clone();
        confirmed.status = OrderStatus::Confirmed;
        assert_ne!(
            order_event(None, Some(&new)).unwrap().event_id,
            order_event(Some(&new), Some(&confirmed)).unwrap().event_id
        );
    }

    #[test]
    fn the_payment_step_gets_again_the_event_the_outbox_gave_it() {
        let pending = order(OrderStatus::Pending);
        let created = order_event(None, Some(&pending)).unwrap();
        assert_eq!(payment_step_event(&pending), Some(created), "same id, same data");

        let mut owed = order(OrderStatus::Confirmed);
        owed.payment_status = PaymentStatus::Paid;
        let mut cancelled = owed.clone();
        cancelled.status = OrderStatus::Cancelled;
        cancelled.payment_status = PaymentStatus::RefundPending;
        let outbox = order_event(Some(&owed), Some(&cancelled)).unwrap();
        let again = payment_step_event(&cancelled).unwrap();
        assert_eq!(
            (again.event_id, again.event_type),
            (outbox.event_id, EventType::OrderCancelled)
        );
    }

    #[test]
    fn settled_orders_are_not_handed_to_the_payment_step() {
        let mut paid = order(OrderStatus::Confirmed);
        paid.payment_status = PaymentStatus::Paid;
        let mut never_charged = order(OrderStatus::Cancelled);
        never_charged.payment_status = PaymentStatus::Pending;
        let mut refunded = never_charged.clone();
        refunded.payment_status = PaymentStatus::Refunded;
        for settled in [paid, never_charged, refunded] {
            assert_eq!(payment_step_event(&settled), None, "{:?}", settled.status);
        }
    }

    #[test]
    fn registration_is_announced_once() {
        let user = User {
            id: UserId::generate(),
            email: Email::parse("ada@example.com").unwrap(),
            name: "Ada".into(),
            phone: None,
            role: Role::Customer,
            created_at: "2026-01-01T00:00:00.000000Z".into(),
        };
        let event = user_event(None, Some(&user), Some("cid-9")).unwrap();
        assert_eq!(event.event_type, EventType::UserRegistered);
        assert_eq!(event.correlation_id, "cid-9");
        let mut promoted = user.clone();
        promoted.role = Role::Admin;
        assert_eq!(user_event(Some(&user), Some(&promoted), None), None);
    }

    fn product_with_stock(stock: i64) -> Product {
        NewProduct::parse("Mug", None, "kitchen", 1299, None, stock)
            .unwrap()
            .into_product(
                ProductId::parse("0190f5a4-7b3e-7c1a-9d2e-000000000001").unwrap(),
                "t".into(),
            )
    }

    #[test]
    fn a_downward_crossing_of_the_threshold_raises_one_alert() {
        let (before, after) = (product_with_stock(6), product_with_stock(4));
        let alert = low_stock_event(Some(&before), Some(&after), "record-1", Some("cid-7")).unwrap();
        assert_eq!(alert.event_type, EventType::InventoryLowStock);
        assert_eq!(alert.validate(), Ok(()));
        assert_eq!(alert.correlation_id, "cid-7", "the request that moved the stock");
        assert_eq!(
            alert.event_id,
            low_stock_event(Some(&before), Some(&after), "record-1", Some("cid-7"))
                .unwrap()
                .event_id
        );
        assert_ne!(
            alert.event_id,
            low_stock_event(Some(&before), Some(&after), "record-2", None)
                .unwrap()
                .event_id
        );
        assert_eq!(
            low_stock_event(Some(&after), Some(&product_with_stock(3)), "r", None),
            None,
            "already low"
        );
        assert_eq!(
            low_stock_event(Some(&after), Some(&before), "r", None),
            None,
            "restocked"
        );
        assert_eq!(low_stock_event(None, Some(&after), "r", None), None, "created low");
    }

    #[test]
    fn envelopes_that_could_not_have_been_published_are_refused() {
        let valid = order_event(None, Some(&order(OrderStatus::Pending))).unwrap();
        assert_eq!(valid.validate(), Ok(()));
        let mut wrong_data = valid.clone();
        wrong_data.data = EventData::User(UserData { user_id: "u".into() });
        assert!(wrong_data.validate().is_err());
        let mut bad_id = valid.clone();
        bad_id.event_id = String::new();
        assert!(bad_id.validate().is_err());
        let mut future = valid;
        future.version = 99;
        assert!(future.validate().is_err());
    }

    #[test]
    fn envelopes_serialise_to_the_documented_shape() {
        let event = order_event(None, Some(&order(OrderStatus::Pending))).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        for field in [
            "event_id",
            "event_type",
            "version",
            "occurred_at",
            "correlation_id",
            "data",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["event_type"], "order.created");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
