//! What each Stripe event does to its order, through the payments worker's own conditional steps
//! (`store::orders::step`, the payment ledger), so the webhook and the worker racing on one order
//! settle it once, and a late, repeated or out-of-order event changes nothing:
//! - `payment_intent.succeeded` (for the order's amount and currency): `PENDING -> CONFIRMED`, `paid`;
//!   already confirmed or shipped: nothing; cancelled before the money came (the customer cancelled,
//!   or the payment expired, while they authenticated): the money is owed back (`refund_pending`, the
//!   payments worker makes the refund);
//! - `payment_intent.payment_failed`: `PENDING -> CANCELLED` (`payment_declined`, `declined`), stock
//!   released in the same transaction;
//! - `payment_intent.canceled`: `PENDING -> CANCELLED` (`payment_expired`), stock released;
//! - `charge.refunded`, the whole charge: a `refund_pending` order becomes `refunded`.
//!
//! An event is settled only against the order its `metadata.order_id` names, and never when that
//! order's stored PaymentIntent is another one.

use domain::{CancelReason, Cause, Order, OrderId, OrderStatus, PaymentStatus, Transition};
use store::StoreError;
use store::orders::{StepError, StepOutcome, step};
use stripe_client::webhook::types::{
    CHARGE_REFUNDED, PAYMENT_INTENT_CANCELED, PAYMENT_INTENT_PAYMENT_FAILED, PAYMENT_INTENT_SUCCEEDED,
};
use stripe_client::webhook::{Charge, Event, EventObject, PaymentIntent};

use api::ApiError;

use crate::Deps;

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The order was paid: `CONFIRMED`, `paid`.
    Confirmed,
    /// The payment failed: the order is cancelled (`payment_declined`) and its stock released.
    Declined,
    /// The payment was cancelled: the order is cancelled (`payment_expired`) and its stock released.
    Expired,
    /// Money came for a cancelled order: its refund is owed (`refund_pending`).
    RefundOwed,
    /// The refund owed was made: `refunded`.
    Refunded,
    /// Nothing to change; the text says why (for the logs and the event's record).
    Unchanged(&'static str),
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::RefundOwed => "refund owed",
            Self::Refunded => "refunded",
            Self::Unchanged(why) => why,
        }
    }
}

/// Whether the shop acts on events of this type (the others are acknowledged unread).
pub fn acts_on(event: &Event) -> bool {
    !matches!(event.object, EventObject::Other)
}

/// Applies `event` to its order. Storage failures are errors (Stripe delivers the event again); a
/// step the order's status refuses is not.
pub async fn settle(deps: &Deps, event: &Event, cause: &Cause) -> Result<Settled, ApiError> {
    match (&event.object, event.kind.as_str()) {
        (EventObject::PaymentIntent(intent), kind) => {
            let Some(order) = our_order(deps, intent.metadata.order_id.as_deref(), Some(&intent.id)).await? else {
                return Ok(Settled::Unchanged("not an order of ours"));
            };
            tracing::info!(order_id = %order.id, status = order.status.as_str(), "settling the order's payment");
            match kind {
                PAYMENT_INTENT_SUCCEEDED => succeeded(deps, order, intent, cause).await,
                PAYMENT_INTENT_PAYMENT_FAILED => not_paid(deps, order, CancelReason::PaymentDeclined, cause).await,
                PAYMENT_INTENT_CANCELED => not_paid(deps, order, CancelReason::PaymentExpired, cause).await,
                _ => Ok(Settled::Unchanged("type not acted on")),
            }
        }
        (EventObject::Charge(charge), CHARGE_REFUNDED) => {
            let Some(order) = our_order(
                deps,
                charge.metadata.order_id.as_deref(),
                charge.payment_intent.as_deref(),
            )
            .await?
            else {
                return Ok(Settled::Unchanged("not an order of ours"));
            };
            tracing::info!(order_id = %order.id, status = order.status.as_str(), "settling the order's refund");
            refunded(deps, &order, charge).await
        }
        _ => Ok(Settled::Unchanged("type not acted on")),
    }
}

/// The order `raw_order_id` names, if it exists and its payment is `intent_id` (or none is stored).
async fn our_order(
    deps: &Deps,
    raw_order_id: Option<&str>,
    intent_id: Option<&str>,
) -> Result<Option<Order>, ApiError> {
    let Some(raw_order_id) = raw_order_id else {
        tracing::warn!("no metadata.order_id: not a payment of the shop's; ignored");
        return Ok(None);
    };
    let Ok(order_id) = OrderId::parse(raw_order_id) else {
        tracing::warn!("metadata.order_id is not an order id: not a payment of the shop's; ignored");
        return Ok(None);
    };
    let Some(order) = deps.orders.get(&order_id).await? else {
        tracing::warn!(order_id = %order_id, "no such order; ignored");
        return Ok(None);
    };
    if let Some(stored) = &order.payment_intent_id
        && intent_id != Some(stored.as_str())
    {
        // Never settle an order from someone else's payment.
        tracing::warn!(
            order_id = %order_id,
            stored_intent = %stored,
            event_intent = intent_id.unwrap_or("none"),
            "the event's PaymentIntent is not the order's; ignored"
        );
        return Ok(None);
    }
    Ok(Some(order))
}

async fn succeeded(deps: &Deps, order: Order, intent: &PaymentIntent, cause: &Cause) -> Result<Settled, ApiError> {
    let currency = order.currency.code().to_ascii_lowercase();
    if intent.received() != order.total_amount || intent.currency != currency {
        tracing::error!(
            order_id = %order.id,
            received = intent.received(),
            received_currency = %intent.currency,
            total_amount = order.total_amount,
            currency = %currency,
            "a PaymentIntent succeeded for another amount or currency than its order's; not settled, look into it"
        );
        return Ok(Settled::Unchanged("amount or currency differs"));
    }
    if order.status != OrderStatus::Pending {
        return paid_after_all(deps, &order, intent.received()).await;
    }
    let order_id = order.id.clone();
    match step(deps.orders.as_ref(), order, Transition::ConfirmPayment, None, cause).await {
        Ok(StepOutcome::Moved(_)) => Ok(Settled::Confirmed),
        Ok(StepOutcome::AlreadyThere(_)) => Ok(Settled::Unchanged("already confirmed")),
        // It moved on meanwhile (cancelled by its customer, or confirmed by the worker): settle the
        // payment against where it is now.
        Err(StepError::Refused(_)) => match deps.orders.get(&order_id).await? {
            Some(now) => paid_after_all(deps, &now, intent.received()).await,
            None => Ok(Settled::Unchanged("order gone")),
        },
        Err(error) => Err(step_failure(error)),
    }
}

/// A payment that succeeded for an order that is no longer pending: nothing when it is paid
/// already; owed back when the order was cancelled before the money came.
async fn paid_after_all(deps: &Deps, order: &Order, amount: i64) -> Result<Settled, ApiError> {
    match (order.status, order.payment_status) {
        (
            OrderStatus::Cancelled,
            PaymentStatus::Pending | PaymentStatus::Declined | PaymentStatus::ActionRequired | PaymentStatus::Paid,
        ) => {
            if let Err(error) = deps.ledger.owe_refund(&order.id, amount).await {
                return refund_noted_meanwhile(deps, &order.id, error).await;
            }
            metrics::counter!("StripeRefundsOwed").increment(1);
            tracing::warn!(
                order_id = %order.id,
                amount,
                "money came for a cancelled order; its refund is owed (the payments worker makes it)"
            );
            Ok(Settled::RefundOwed)
        }
        (OrderStatus::Cancelled, PaymentStatus::RefundPending | PaymentStatus::Refunded) => {
            Ok(Settled::Unchanged("refund already owed or made"))
        }
        _ => Ok(Settled::Unchanged("already paid")),
    }
}

/// `owe_refund` refused: fine if the refund was noted (or made) by the payments worker meanwhile.
async fn refund_noted_meanwhile(deps: &Deps, order_id: &OrderId, error: StoreError) -> Result<Settled, ApiError> {
    let now = deps.orders.get(order_id).await?;
    match now.map(|order| order.payment_status) {
        Some(PaymentStatus::RefundPending | PaymentStatus::Refunded) => {
            Ok(Settled::Unchanged("refund already owed or made"))
        }
        _ => Err(error.into()),
    }
}

/// The payment failed (`payment_declined`) or was cancelled (`payment_expired`): a pending order is
/// cancelled and its stock released; any other is left alone (paid, or cancelled already).
async fn not_paid(deps: &Deps, order: Order, reason: CancelReason, cause: &Cause) -> Result<Settled, ApiError> {
    if order.status != OrderStatus::Pending {
        return Ok(Settled::Unchanged("not pending"));
    }
    match step(
        deps.orders.as_ref(),
        order,
        Transition::DeclinePayment,
        Some(reason),
        cause,
    )
    .await
    {
        Ok(StepOutcome::Moved(_)) if reason == CancelReason::PaymentExpired => Ok(Settled::Expired),
        Ok(StepOutcome::Moved(_)) => Ok(Settled::Declined),
        Ok(StepOutcome::AlreadyThere(_)) | Err(StepError::Refused(_)) => Ok(Settled::Unchanged("not pending")),
        Err(error) => Err(step_failure(error)),
    }
}

/// The whole charge was refunded: the refund the order was owed is made.
async fn refunded(deps: &Deps, order: &Order, charge: &Charge) -> Result<Settled, ApiError> {
    let owed = order.status == OrderStatus::Cancelled && order.payment_status == PaymentStatus::RefundPending;
    if !owed {
        if order.payment_status != PaymentStatus::Refunded {
            tracing::warn!(order_id = %order.id, payment_status = order.payment_status.as_str(), "a refund for an order owed none; look into it");
        }
        return Ok(Settled::Unchanged("no refund owed"));
    }
    if !charge.fully_refunded() {
        tracing::warn!(
            order_id = %order.id,
            amount = charge.amount,
            amount_refunded = charge.amount_refunded,
            "the charge is only partly refunded; the refund stays owed"
        );
        return Ok(Settled::Unchanged("partly refunded"));
    }
    deps.ledger.refund_made(&order.id).await?;
    Ok(Settled::Refunded)
}

fn step_failure(error: StepError) -> ApiError {
    match error {
        StepError::Store(store) => store.into(),
        // Stripe delivers the event again; by then the order has settled down.
        other => ApiError::Unavailable(Box::new(other)),
    }
}
