//! The charge: pay a placed order, then confirm it, decline it (releasing its stock), or leave it
//! waiting for its customer's authentication and settle that later (charged, failed, or expired).

use domain::{CancelReason, Order, OrderId, OrderStatus, PaymentAction, PaymentStatus, Transition};
use store::orders::{StepError, StepOutcome, step};
use worker::sqs::MessageError;

use crate::refunds::{reconcile, reconcile_order};
use crate::{
    ActionOutcome, ChargeOutcome, ChargeRequest, Deps, TransientPaymentError, breaker_failure, deferred, retry,
};

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
/// Charges and moves the order; the returned text says what happened (kept on the payment record).
pub(crate) async fn pay(deps: &Deps, order_id: &OrderId, correlation_id: &str) -> Result<&'static str, MessageError> {
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

pub(crate) async fn confirm(deps: &Deps, order: Order, correlation_id: &str) -> Result<&'static str, MessageError> {
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
pub(crate) async fn decline(
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
pub(crate) const AWAITING_CUSTOMER: &str = "awaiting the customer";

/// The card asked the customer to authenticate: the order waits for them, with the secret their
/// browser completes the payment with, until the payment-action window closes.
pub(crate) async fn await_customer(
    deps: &Deps,
    order: Order,
    client_secret: String,
) -> Result<&'static str, MessageError> {
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
pub(crate) async fn settle_action(
    deps: &Deps,
    order: Order,
    correlation_id: &str,
) -> Result<&'static str, MessageError> {
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
pub(crate) fn action_expired(order: &Order) -> bool {
    order.payment_action.as_ref().is_none_or(PaymentAction::has_expired)
}
