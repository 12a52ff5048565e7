//! The money of cancelled orders: every charge of an order that ends cancelled is refunded, once,
//! whatever crashed in between; a payment still waiting for its customer is voided.

use domain::{Order, OrderId, OrderStatus, PaymentStatus};
use worker::once::{Once, Progress, at_most_once_until};
use worker::sqs::MessageError;

use crate::{Deps, breaker_failure, retry};

/// Makes sure a cancelled order keeps none of the customer's money.
pub(crate) async fn reconcile(deps: &Deps, order_id: &OrderId) -> Result<&'static str, MessageError> {
    match deps.orders.get(order_id).await.map_err(retry)? {
        Some(order) => reconcile_order(deps, &order).await,
        None => Ok("order missing"),
    }
}

pub(crate) async fn reconcile_order(deps: &Deps, order: &Order) -> Result<&'static str, MessageError> {
    if order.status != OrderStatus::Cancelled {
        tracing::info!(order_id = %order.id, status = order.status.as_str(), "not pending and not cancelled; nothing to do");
        return Ok("not pending");
    }
    match order.payment_status {
        PaymentStatus::Refunded => Ok("settled"),
        PaymentStatus::RefundPending | PaymentStatus::Paid => {
            let amount = deps.ledger.refund_owed(&order.id).await.map_err(retry)?;
            settle_refund(deps, &order.id, amount.unwrap_or(order.total_amount)).await
        }
        // Cancelled or declined before any charge was known: void whatever payment may still complete
        // (a customer's pending authentication) and ask the provider, in case one went through.
        PaymentStatus::Pending | PaymentStatus::Declined | PaymentStatus::ActionRequired => {
            let found = deps.breaker.call(|_| true, || deps.provider.void(&order.id)).await;
            match found.map_err(breaker_failure)? {
                None => Ok("never charged"),
                Some(charge) if charge.refunded => {
                    deps.ledger.refund_made(&order.id).await.map_err(retry)?;
                    Ok("refunded")
                }
                Some(charge) => {
                    // Noted first: if the refund fails or is deferred, a redelivery finds it owed.
                    deps.ledger.owe_refund(&order.id, charge.amount).await.map_err(retry)?;
                    tracing::info!(order_id = %order.id, "a cancelled order was charged; refunding");
                    settle_refund(deps, &order.id, charge.amount).await
                }
            }
        }
    }
}
/// Makes the refund owed for a cancelled order (through the breaker: deferred while it is open) and
/// marks it made. The provider's refund is idempotent per order, so a repeat after a lost
/// `refund_made` gives nothing back twice.
pub(crate) async fn settle_refund(deps: &Deps, order_id: &OrderId, amount: i64) -> Result<&'static str, MessageError> {
    // One refund call at a time per order: the payment step (a charge approved after a cancel) and the
    // cancellation's reconciliation can both get here at once, and a provider that does not honour
    // idempotency keys would refund twice. The second waits (its message is retried), then finds the
    // refund made.
    let lease = format!("refund-call#{order_id}");
    let work = || async {
        let order = deps.orders.get(order_id).await.map_err(retry)?;
        if order.is_none_or(|order| order.payment_status == PaymentStatus::Refunded) {
            return Ok(Progress::Unfinished("settled"));
        }
        deps.breaker
            .call(|_| true, || deps.provider.refund(order_id, amount))
            .await
            .map_err(breaker_failure)?;
        deps.ledger.refund_made(order_id).await.map_err(retry)?;
        metrics::counter!("Refunds").increment(1);
        tracing::info!(order_id = %order_id, amount, "charge of a cancelled order refunded");
        Ok::<_, MessageError>(Progress::Unfinished("refunded"))
    };
    match at_most_once_until(deps.idempotency.as_ref(), &lease, "refund", work).await? {
        Once::Ran(outcome) => Ok(outcome),
        // Never completed, only released: no refund is on record as done here.
        Once::AlreadyDone => Ok("settled"),
    }
}
