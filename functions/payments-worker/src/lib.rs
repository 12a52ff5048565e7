//! The payment step of the order saga, and the keeper of money safety (docs/api.md "Payment status and
//! money safety"). For each `order.created` event: charge the order (the provider's idempotency key
//! is the order id, and a claim per order guards redeliveries), then move the order on:
//! - approved: `PENDING -> CONFIRMED` and `paid` (one conditional write); if the customer cancelled
//!   meanwhile, the charge is refunded instead: noted on the order first (`refund_pending`), so a
//!   refund that fails is retried by the redelivered event, then made, then `refunded`;
//! - declined: `PENDING -> CANCELLED` with `payment_declined` and `declined`, releasing every line's
//!   stock in the same transaction (the compensation);
//! - no answer (a timeout, a lost response, an outage): the provider is asked what it holds for the
//!   order. A charge it holds is a payment (the order is confirmed); none is retried later, and only
//!   once the attempts run out *and* the provider confirms it holds no charge is the order declined.
//!   An unknown outcome is never taken for a decline.
//!
//! - the card asks the customer to authenticate (3-D Secure): the order stays `PENDING`, its payment
//!   `action_required` with the secret the customer's browser completes it with, until
//!   `PaymentActionMinutes` have passed. A later delivery (the sweep's, or a redelivery) asks the
//!   provider where it stands: charged confirms, failed declines, still waiting past the deadline
//!   voids the payment and cancels the order as `payment_expired`.
//!
//! And for every cancelled order (its `order.cancelled`, or a redelivered `order.created` that finds
//! it cancelled): reconcile with the provider, so that every charge of an order that ends `CANCELLED`
//! is refunded, whatever crashed in between: a `refund_pending` order is refunded; a `pending` one is
//! looked up at the provider and refunded if a charge is found.
//!
//! The provider sits behind a circuit breaker (in-process, per warm instance), a timeout and the
//! deployment's fault injection. While the circuit is open the provider is not called: the message
//! goes back to the queue for at least the breaker's `retry_after`. Attempts are counted on the order
//! itself (`payment_attempts`, incremented just before each real charge), not from the SQS receive
//! count, so a deferral never uses one up and an outage of the provider never declines a good order.

pub mod provider;
mod refunds;
mod saga;
pub mod stripe;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::OrderId;
use domain::events::{Envelope, EventData, EventType};
use store::idempotency::IdempotencyStore;
use store::orders::OrderRepository;
use store::payments::PaymentLedger;
use worker::breaker::{BreakerError, CircuitBreaker};
use worker::once::{Once, Progress, at_most_once_until};
use worker::sqs::{MessageError, RetryDelay, run_batch_with_backoff};

pub use crate::provider::{
    ActionOutcome, ChargeOutcome, ChargeRecord, ChargeRequest, PaymentProvider, TransientPaymentError,
};
use crate::refunds::reconcile;
use crate::saga::{AWAITING_CUSTOMER, pay};
pub use crate::saga::{Decision, decide};

pub struct Deps {
    pub orders: Arc<dyn OrderRepository>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub provider: Arc<dyn PaymentProvider>,
    pub retry_delay: Arc<dyn RetryDelay>,
    /// Charge attempts of one order before a failure with no charge found counts as a decline.
    pub max_attempts: u32,
    pub retry_base_secs: i32,
    pub ledger: Arc<dyn PaymentLedger>,
    /// The payment provider's circuit breaker, kept for the life of the instance.
    pub breaker: CircuitBreaker,
    /// How long a customer has to authenticate a payment (3-D Secure) before it is voided.
    pub payment_action_window: time::Duration,
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

pub(crate) fn retry(error: impl std::fmt::Display) -> MessageError {
    MessageError::Retry(error.to_string())
}

pub(crate) fn deferred(retry_after: std::time::Duration) -> MessageError {
    MessageError::retry_after(retry_after, "payment provider circuit open; deferred")
}

async fn handle_message(deps: &Deps, message: &SqsMessage) -> Result<(), MessageError> {
    let body = message
        .body
        .as_deref()
        .ok_or_else(|| MessageError::Poison("empty body".into()))?;
    let envelope: Envelope =
        serde_json::from_str(body).map_err(|error| MessageError::Poison(format!("not an event envelope: {error}")))?;
    envelope.validate().map_err(MessageError::Poison)?;
    let EventData::Order(data) = &envelope.data else {
        return Err(MessageError::Poison("not an order event".into()));
    };
    let record_key = match envelope.event_type {
        EventType::OrderCreated => "payment",
        // Declined ones too: a charge that got no answer may have landed after all.
        EventType::OrderCancelled => "refund",
        other => {
            tracing::info!(event_type = other.as_str(), "not a payment trigger; ignored");
            return Ok(());
        }
    };
    let order_id = OrderId::parse(&data.order_id).map_err(|_| MessageError::Poison("invalid order id".into()))?;
    let record_key = format!("{record_key}#{order_id}");
    let correlation_id = envelope.correlation_id.as_str();
    let work = || async {
        Ok::<_, MessageError>(match envelope.event_type {
            EventType::OrderCreated => {
                let outcome = pay(deps, &order_id, correlation_id).await?;
                // An order waiting for its customer is not settled: the sweep's later delivery of
                // this same event must look again (charged, failed, or expired).
                if outcome == AWAITING_CUSTOMER {
                    Progress::Unfinished(outcome)
                } else {
                    Progress::Finished(outcome)
                }
            }
            // A cancellation's reconciliation runs whenever it is delivered: a refund can come to be
            // owed after it ran (a payment that succeeded late, noted by the webhook), and the sweep
            // hands such an order on with this very event. It reads the order and the provider
            // first, so a repeat refunds nothing twice.
            _ => Progress::Unfinished(reconcile(deps, &order_id).await?),
        })
    };
    match at_most_once_until(deps.idempotency.as_ref(), &record_key, &envelope.event_id, work).await? {
        Once::Ran(outcome) => tracing::info!(order_id = %order_id, outcome, "payment step done"),
        Once::AlreadyDone => tracing::info!(order_id = %order_id, "already handled; duplicate dropped"),
    }
    Ok(())
}

pub(crate) fn breaker_failure(error: BreakerError<TransientPaymentError>) -> MessageError {
    match error {
        BreakerError::Open { retry_after } => deferred(retry_after),
        BreakerError::Failed(error) => retry(error),
    }
}

#[cfg(test)]
mod action_tests;
#[cfg(test)]
mod tests;
