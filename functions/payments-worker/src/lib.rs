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
pub mod stripe;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::events::{Envelope, EventData, EventType};
use domain::{CancelReason, Order, OrderId, OrderStatus, PaymentAction, PaymentStatus, Transition};
use store::idempotency::IdempotencyStore;
use store::orders::{OrderRepository, StepError, StepOutcome, step};
use store::payments::PaymentLedger;
use worker::breaker::{BreakerError, CircuitBreaker};
use worker::once::{Once, Progress, at_most_once_until};
use worker::sqs::{MessageError, RetryDelay, run_batch_with_backoff};

pub use crate::provider::{
    ActionOutcome, ChargeOutcome, ChargeRecord, ChargeRequest, PaymentProvider, TransientPaymentError,
};

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

/// The saga's decision for a charge attempt, given how many attempts this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirm,
    Decline,
    /// The customer must authenticate first: the order waits for them.
    AwaitCustomer,
    /// No answer: ask the provider what it holds, then decide.
    LookUp,
}

pub fn decide(charge: &Result<ChargeOutcome, TransientPaymentError>) -> Decision {
    match charge {
        Ok(ChargeOutcome::Approved) => Decision::Confirm,
        Ok(ChargeOutcome::Declined) => Decision::Decline,
        Ok(ChargeOutcome::ActionRequired { .. }) => Decision::AwaitCustomer,
        Err(_) => Decision::LookUp,
    }
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

fn retry(error: impl std::fmt::Display) -> MessageError {
    MessageError::Retry(error.to_string())
}

fn deferred(retry_after: std::time::Duration) -> MessageError {
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

/// Charges and moves the order; the returned text says what happened (kept on the payment record).
async fn pay(deps: &Deps, order_id: &OrderId, correlation_id: &str) -> Result<&'static str, MessageError> {
    let Some(order) = deps.orders.get(order_id).await.map_err(retry)? else {
        tracing::warn!(order_id = %order_id, "order not found; nothing to charge");
        return Ok("order missing");
    };
    if order.status != OrderStatus::Pending {
        // Cancelled (maybe while an earlier delivery charged it and crashed): keep no charge.
        return reconcile_order(deps, &order).await;
    }
    if order.payment_status == PaymentStatus::ActionRequired {
        return settle_action(deps, order, correlation_id).await;
    }
    // Asked before the attempt is counted: a deferral is not an attempt. Dropping `permit` unreported
    // (no charge after all) frees the breaker's probe slot.
    let permit = deps.breaker.try_acquire().map_err(|open| deferred(open.retry_after))?;
    let Some(attempt) = deps.ledger.record_attempt(&order.id).await.map_err(retry)? else {
        drop(permit);
        return reconcile(deps, order_id).await;
    };
    let charge = if attempt > deps.max_attempts {
        // The attempts ran out with the outcome unknown: only the lookup below decides now.
        drop(permit);
        Err(TransientPaymentError("attempts exhausted".into()))
    } else {
        let currency = order.currency.code().to_ascii_lowercase();
        let request = ChargeRequest {
            order_id: &order.id,
            amount: order.total_amount,
            currency: &currency,
            token: order.payment_token.as_deref(),
        };
        let charge = deps.provider.charge(&request).await;
        // Only a provider failure counts against it; a declined card is an answer.
        permit.report(&charge, |_| true);
        charge
    };
    match decide(&charge) {
        Decision::Confirm => confirm(deps, order, correlation_id).await,
        Decision::Decline => decline(deps, order, CancelReason::PaymentDeclined, correlation_id).await,
        Decision::AwaitCustomer => {
            let Ok(ChargeOutcome::ActionRequired { client_secret }) = charge else {
                return Err(MessageError::Retry(
                    "the charge's outcome changed while it was read".into(),
                ));
            };
            await_customer(deps, order, client_secret).await
        }
        Decision::LookUp => {
            if let Err(error) = &charge {
                tracing::warn!(order_id = %order.id, error = %error, attempt, "no answer to the charge; asking the provider");
            }
            // Under the charge's own permit: its failure is the provider's, already reported.
            match deps.provider.find_charge(&order.id).await {
                Ok(Some(found)) if !found.refunded => {
                    tracing::info!(order_id = %order.id, "the charge went through after all");
                    confirm(deps, order, correlation_id).await
                }
                // Only in a delivery that charged nothing itself: a charge that got no answer here may
                // still land, so it is given until the next delivery to show up in the lookup.
                Ok(_) if attempt > deps.max_attempts => {
                    tracing::warn!(order_id = %order.id, attempt, "payment attempts exhausted and no charge held; declining");
                    decline(deps, order, CancelReason::PaymentDeclined, correlation_id).await
                }
                Ok(_) => Err(MessageError::Retry(format!(
                    "payment attempt {attempt} of {} failed; no charge held",
                    deps.max_attempts
                ))),
                // Never assumed declined: the next delivery asks again.
                Err(error) => Err(MessageError::Retry(format!(
                    "payment attempt {attempt}: outcome unknown ({error})"
                ))),
            }
        }
    }
}

async fn confirm(deps: &Deps, order: Order, correlation_id: &str) -> Result<&'static str, MessageError> {
    let order_id = order.id.clone();
    match step(
        deps.orders.as_ref(),
        order,
        Transition::ConfirmPayment,
        None,
        &wiring::telemetry::cause(correlation_id),
    )
    .await
    {
        Ok(outcome) => {
            if let StepOutcome::Moved(_) = outcome {
                metrics::counter!("PaymentsApproved").increment(1);
                // 0 per approval, 1 per decline: its average is the decline rate the alarm watches,
                // which needs no metric math (the emulator has none).
                metrics::histogram!("PaymentDeclineRate").record(0.0);
            }
            Ok("confirmed")
        }
        // Cancelled while we charged: the cancellation stands and the money goes back.
        Err(StepError::Refused(_) | StepError::Contended) => reconcile(deps, &order_id).await,
        Err(error) => Err(retry(error)),
    }
}

/// Cancels an unpaid order because its payment failed (`payment_declined`) or its customer did not
/// authenticate in time (`payment_expired`), releasing its stock in the same transaction.
async fn decline(
    deps: &Deps,
    order: Order,
    reason: CancelReason,
    correlation_id: &str,
) -> Result<&'static str, MessageError> {
    let order_id = order.id.clone();
    match step(
        deps.orders.as_ref(),
        order,
        Transition::DeclinePayment,
        Some(reason),
        &wiring::telemetry::cause(correlation_id),
    )
    .await
    {
        Ok(outcome) => {
            let expired = reason == CancelReason::PaymentExpired;
            if let StepOutcome::Moved(_) = outcome {
                if expired {
                    metrics::counter!("PaymentsExpired").increment(1);
                } else {
                    metrics::counter!("PaymentsDeclined").increment(1);
                    metrics::histogram!("PaymentDeclineRate").record(1.0);
                }
            }
            tracing::info!(order_id = %order_id, reason = ?reason, "payment not made; order cancelled and stock released");
            Ok(if expired { "expired" } else { "declined" })
        }
        // Already cancelled by the customer: the stock was released then.
        Err(StepError::Refused(_)) => reconcile(deps, &order_id).await,
        Err(error) => Err(retry(error)),
    }
}

/// The payment step's outcome for an order left waiting for its customer's authentication.
const AWAITING_CUSTOMER: &str = "awaiting the customer";

/// The card asked the customer to authenticate: the order waits for them, with the secret their
/// browser completes the payment with, until the payment-action window closes.
async fn await_customer(deps: &Deps, order: Order, client_secret: String) -> Result<&'static str, MessageError> {
    let expires_at = time::OffsetDateTime::now_utc() + deps.payment_action_window;
    let action = PaymentAction {
        client_secret,
        expires_at: domain::format_rfc3339(expires_at),
    };
    if deps.ledger.require_action(&order.id, &action).await.map_err(retry)? {
        metrics::counter!("PaymentsActionRequired").increment(1);
        tracing::info!(order_id = %order.id, expires_at = %action.expires_at, "the card asks the customer to authenticate");
        Ok(AWAITING_CUSTOMER)
    } else {
        // Cancelled meanwhile: the payment must not complete now.
        reconcile(deps, &order.id).await
    }
}

/// A later look at an order waiting for its customer (a redelivery, or the sweep): charged confirms
/// it, failed declines it, and still waiting once the window has closed voids the payment and
/// cancels the order as expired.
async fn settle_action(deps: &Deps, order: Order, correlation_id: &str) -> Result<&'static str, MessageError> {
    let outcome = deps
        .breaker
        .call(|_| true, || deps.provider.action_outcome(&order.id))
        .await
        .map_err(breaker_failure)?;
    match outcome {
        ActionOutcome::Charged(_) => confirm(deps, order, correlation_id).await,
        ActionOutcome::Failed => decline(deps, order, CancelReason::PaymentDeclined, correlation_id).await,
        // Voided by an earlier look whose answer was lost: the expiry stands.
        ActionOutcome::Cancelled => decline(deps, order, CancelReason::PaymentExpired, correlation_id).await,
        ActionOutcome::Waiting if !action_expired(&order) => Ok(AWAITING_CUSTOMER),
        ActionOutcome::Waiting => {
            let charged = deps
                .breaker
                .call(|_| true, || deps.provider.void(&order.id))
                .await
                .map_err(breaker_failure)?;
            match charged {
                // Authenticated at the last moment: the voiding came too late, the payment stands.
                Some(_) => confirm(deps, order, correlation_id).await,
                None => decline(deps, order, CancelReason::PaymentExpired, correlation_id).await,
            }
        }
    }
}

/// Whether the order's payment-action window has closed (none recorded counts as closed: nothing
/// waits forever).
fn action_expired(order: &Order) -> bool {
    order.payment_action.as_ref().is_none_or(PaymentAction::has_expired)
}

/// Makes sure a cancelled order keeps none of the customer's money.
async fn reconcile(deps: &Deps, order_id: &OrderId) -> Result<&'static str, MessageError> {
    match deps.orders.get(order_id).await.map_err(retry)? {
        Some(order) => reconcile_order(deps, &order).await,
        None => Ok("order missing"),
    }
}

async fn reconcile_order(deps: &Deps, order: &Order) -> Result<&'static str, MessageError> {
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

fn breaker_failure(error: BreakerError<TransientPaymentError>) -> MessageError {
    match error {
        BreakerError::Open { retry_after } => deferred(retry_after),
        BreakerError::Failed(error) => retry(error),
    }
}

/// Makes the refund owed for a cancelled order (through the breaker: deferred while it is open) and
/// marks it made. The provider's refund is idempotent per order, so a repeat after a lost
/// `refund_made` gives nothing back twice.
async fn settle_refund(deps: &Deps, order_id: &OrderId, amount: i64) -> Result<&'static str, MessageError> {
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

#[cfg(test)]
mod action_tests;
#[cfg(test)]
mod tests;
