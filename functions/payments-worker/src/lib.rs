//! The payment step of the order saga. For each `order.created` event: charge the order once (the
//! provider is told the order id as its idempotency key, and a claim per order guards redeliveries),
//! then move the order on:
//! - approved: `PENDING -> CONFIRMED` (conditional); if the customer cancelled meanwhile, the charge is
//!   refunded instead, so no order is both paid for and cancelled;
//! - declined: `PENDING -> CANCELLED` with `payment_declined`, releasing every line's stock in the same
//!   transaction (the compensation);
//! - failed transiently: retried with growing delays; once the attempts run out the order is declined
//!   and compensated rather than left pending forever.
//!
//! And for each `order.cancelled` of an order that had been `CONFIRMED` (paid): refund it, once.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::domain::{CancelReason, Order, OrderId, OrderStatus, Transition};
use shared::error::ApiError;
use shared::events::{Envelope, EventData, EventType, OrderData};
use shared::idempotency::{IdempotencyStore, Once, at_most_once};
use shared::orders::{StepOutcome, step};
use shared::repo::orders::OrderRepository;
use shared::sqs::{MessageError, RetryDelay, receive_count, run_batch_with_backoff};

/// What a payment provider said about a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved,
    Declined,
}

#[derive(Debug, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct TransientPaymentError(pub String);

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges `amount` (minor units) for `order_id`; the order id is the provider's idempotency key,
    /// so a repeated call never charges twice.
    async fn charge(
        &self,
        order_id: &OrderId,
        amount: i64,
        token: Option<&str>,
    ) -> Result<ChargeOutcome, TransientPaymentError>;
    async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError>;
}

/// The mock provider of API.md: `tok_decline` declines, `tok_error` fails transiently, anything else
/// (or no token) is approved. Named as a mock; a real provider implements the same trait.
#[derive(Debug, Default)]
pub struct MockPaymentProvider;

#[async_trait]
impl PaymentProvider for MockPaymentProvider {
    async fn charge(
        &self,
        order_id: &OrderId,
        amount: i64,
        token: Option<&str>,
    ) -> Result<ChargeOutcome, TransientPaymentError> {
        let outcome = match token {
            Some("tok_decline") => Ok(ChargeOutcome::Declined),
            Some("tok_error") => Err(TransientPaymentError("mock provider: simulated outage".into())),
            _ => Ok(ChargeOutcome::Approved),
        };
        tracing::info!(order_id = %order_id, amount, outcome = ?outcome, "mock payment provider charge");
        outcome
    }

    async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError> {
        tracing::info!(order_id = %order_id, amount, "mock payment provider refund");
        Ok(())
    }
}

pub struct Deps {
    pub orders: Arc<dyn OrderRepository>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub provider: Arc<dyn PaymentProvider>,
    pub retry_delay: Arc<dyn RetryDelay>,
    /// Deliveries of one order's payment before a transient failure counts as a decline.
    pub max_attempts: u32,
    pub retry_base_secs: i32,
}

/// The saga's decision for a charge attempt, given how many attempts this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirm,
    Decline,
    RetryLater,
}

pub fn decide(charge: &Result<ChargeOutcome, TransientPaymentError>, attempt: u32, max_attempts: u32) -> Decision {
    match charge {
        Ok(ChargeOutcome::Approved) => Decision::Confirm,
        Ok(ChargeOutcome::Declined) => Decision::Decline,
        Err(_) if attempt >= max_attempts => Decision::Decline,
        Err(_) => Decision::RetryLater,
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
    match envelope.event_type {
        EventType::OrderCreated => {}
        EventType::OrderCancelled => return refund_if_paid(deps, &envelope, data).await,
        other => {
            tracing::info!(event_type = other.as_str(), "not a payment trigger; ignored");
            return Ok(());
        }
    }
    let order_id = OrderId::parse(&data.order_id).map_err(|_| MessageError::Poison("invalid order id".into()))?;
    let record_key = format!("payment#{order_id}");
    let work = || pay(deps, &order_id, receive_count(message), &envelope.correlation_id);
    match at_most_once(deps.idempotency.as_ref(), &record_key, &envelope.event_id, work).await? {
        Once::Ran(outcome) => tracing::info!(order_id = %order_id, outcome, "payment step done"),
        Once::AlreadyDone => tracing::info!(order_id = %order_id, "payment already handled; duplicate dropped"),
    }
    Ok(())
}

/// An order cancelled after its payment was confirmed was paid for: give the money back, once.
async fn refund_if_paid(deps: &Deps, envelope: &Envelope, data: &OrderData) -> Result<(), MessageError> {
    let paid = data.previous_status == Some(OrderStatus::Confirmed);
    if !paid || data.cancel_reason == Some(CancelReason::PaymentDeclined) {
        return Ok(());
    }
    let order_id = OrderId::parse(&data.order_id).map_err(|_| MessageError::Poison("invalid order id".into()))?;
    let record_key = format!("refund#{order_id}");
    let work = || async {
        deps.provider
            .refund(&order_id, data.total_amount)
            .await
            .map_err(retry)?;
        Ok::<_, MessageError>("refunded")
    };
    match at_most_once(deps.idempotency.as_ref(), &record_key, &envelope.event_id, work).await? {
        Once::Ran(_) => {
            tracing::info!(order_id = %order_id, amount = data.total_amount, "cancelled paid order refunded")
        }
        Once::AlreadyDone => tracing::info!(order_id = %order_id, "refund already made; duplicate dropped"),
    }
    Ok(())
}

/// Charges and moves the order; the returned text says what happened (kept on the payment record).
async fn pay(
    deps: &Deps,
    order_id: &OrderId,
    attempt: u32,
    correlation_id: &str,
) -> Result<&'static str, MessageError> {
    let Some(order) = deps.orders.get(order_id).await.map_err(retry)? else {
        tracing::warn!(order_id = %order_id, "order not found; nothing to charge");
        return Ok("order missing");
    };
    if order.status != OrderStatus::Pending {
        tracing::info!(order_id = %order_id, status = order.status.as_str(), "order no longer pending; not charged");
        return Ok("not pending");
    }
    let charge = deps
        .provider
        .charge(&order.id, order.total_amount, order.payment_token.as_deref())
        .await;
    match decide(&charge, attempt, deps.max_attempts) {
        Decision::Confirm => confirm(deps, order, correlation_id).await,
        Decision::Decline => {
            if let Err(error) = &charge {
                tracing::warn!(order_id = %order.id, error = %error, attempt, "payment attempts exhausted; declining");
            }
            decline(deps, order, correlation_id).await
        }
        Decision::RetryLater => Err(MessageError::Retry(format!(
            "payment attempt {attempt} of {} failed transiently",
            deps.max_attempts
        ))),
    }
}

async fn confirm(deps: &Deps, order: Order, correlation_id: &str) -> Result<&'static str, MessageError> {
    let amount = order.total_amount;
    let order_id = order.id.clone();
    match step(
        deps.orders.as_ref(),
        order,
        Transition::ConfirmPayment,
        None,
        correlation_id,
    )
    .await
    {
        Ok(_) => Ok("confirmed"),
        // Cancelled while we charged: the cancellation stands and the money goes back. Anything else
        // (the order still changing) is retried rather than refunded.
        Err(ApiError::Conflict(_)) if order_is_cancelled(deps, &order_id).await? => {
            deps.provider.refund(&order_id, amount).await.map_err(retry)?;
            tracing::info!(order_id = %order_id, "order cancelled during payment; charge refunded");
            Ok("refunded")
        }
        Err(error) => Err(retry(error)),
    }
}

async fn order_is_cancelled(deps: &Deps, order_id: &OrderId) -> Result<bool, MessageError> {
    let order = deps.orders.get(order_id).await.map_err(retry)?;
    Ok(order.is_some_and(|order| order.status == OrderStatus::Cancelled))
}

async fn decline(deps: &Deps, order: Order, correlation_id: &str) -> Result<&'static str, MessageError> {
    let order_id = order.id.clone();
    match step(
        deps.orders.as_ref(),
        order,
        Transition::DeclinePayment,
        Some(CancelReason::PaymentDeclined),
        correlation_id,
    )
    .await
    {
        Ok(StepOutcome::Moved(_) | StepOutcome::AlreadyThere(_)) => {
            tracing::info!(order_id = %order_id, "payment declined; order cancelled and stock released");
            Ok("declined")
        }
        // Already cancelled by the customer: the stock was released then.
        Err(ApiError::Conflict(_)) => Ok("already cancelled"),
        Err(error) => Err(retry(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testing::{KETTLE_ID, MUG_ID, OrderWorld, RecordedDelays};
    use std::sync::Mutex;

    #[derive(Default)]
    struct CountingProvider {
        charges: Mutex<u32>,
        refunds: Mutex<u32>,
    }

    #[async_trait]
    impl PaymentProvider for CountingProvider {
        async fn charge(
            &self,
            order_id: &OrderId,
            amount: i64,
            token: Option<&str>,
        ) -> Result<ChargeOutcome, TransientPaymentError> {
            *self.charges.lock().unwrap() += 1;
            MockPaymentProvider.charge(order_id, amount, token).await
        }
        async fn refund(&self, _order_id: &OrderId, _amount: i64) -> Result<(), TransientPaymentError> {
            *self.refunds.lock().unwrap() += 1;
            Ok(())
        }
    }

    fn deps(world: &OrderWorld, provider: Arc<CountingProvider>) -> Deps {
        Deps {
            orders: world.orders.clone(),
            idempotency: world.idempotency.clone(),
            provider,
            retry_delay: Arc::new(RecordedDelays::default()),
            max_attempts: 3,
            retry_base_secs: 1,
        }
    }

    /// The sample `order.created` message for the sample order, delivered for the `receives`-th time.
    /// (The payment token is read from the stored order: see `world_with_token`.)
    fn message(receives: u32) -> SqsEvent {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/payments-worker.json")).unwrap();
        event["Records"][0]["attributes"]["ApproximateReceiveCount"] = receives.to_string().into();
        serde_json::from_value(event).unwrap()
    }

    async fn world_with_token(token: Option<&str>) -> OrderWorld {
        let world = OrderWorld::with_sample_order().await;
        world.set_sample_payment_token(token).await;
        world
    }

    #[tokio::test]
    async fn an_approved_payment_confirms_the_order_and_keeps_the_stock_reserved() {
        let world = world_with_token(Some("tok_visa")).await;
        let response = handle(&deps(&world, Arc::default()), message(1)).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(world.sample_order().await.status, OrderStatus::Confirmed);
        assert_eq!(world.stock(MUG_ID).await, 3);
    }

    #[tokio::test]
    async fn a_declined_payment_cancels_and_releases_every_line() {
        let world = world_with_token(Some("tok_decline")).await;
        handle(&deps(&world, Arc::default()), message(1)).await;
        let order = world.sample_order().await;
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert_eq!(order.cancel_reason, Some(CancelReason::PaymentDeclined));
        assert_eq!((world.stock(MUG_ID).await, world.stock(KETTLE_ID).await), (5, 10));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_declined_and_compensated() {
        let world = world_with_token(Some("tok_error")).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        for receives in 1..=2 {
            let response = handle(&deps, message(receives)).await;
            assert_eq!(response.batch_item_failures.len(), 1, "attempt {receives} is retried");
            assert_eq!(world.sample_order().await.status, OrderStatus::Pending);
        }
        let response = handle(&deps, message(3)).await;
        assert!(response.batch_item_failures.is_empty());
        let order = world.sample_order().await;
        assert_eq!(
            (order.status, order.cancel_reason),
            (OrderStatus::Cancelled, Some(CancelReason::PaymentDeclined))
        );
        assert_eq!(world.stock(MUG_ID).await, 5);
        assert_eq!(*provider.charges.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_redelivered_event_never_charges_twice() {
        let world = world_with_token(None).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        handle(&deps, message(1)).await;
        handle(&deps, message(2)).await;
        assert_eq!(*provider.charges.lock().unwrap(), 1);
        assert_eq!(world.sample_order().await.status, OrderStatus::Confirmed);
    }

    #[tokio::test]
    async fn an_order_cancelled_before_payment_is_not_charged() {
        let world = world_with_token(None).await;
        world.set_sample_status(OrderStatus::Cancelled).await;
        let provider = Arc::new(CountingProvider::default());
        handle(&deps(&world, provider.clone()), message(1)).await;
        assert_eq!(*provider.charges.lock().unwrap(), 0);
        assert_eq!(world.sample_order().await.status, OrderStatus::Cancelled);
    }

    /// The sample message turned into the `order.cancelled` of an order that left `previous`.
    fn cancelled_message(previous: OrderStatus, reason: &str) -> SqsEvent {
        let mut event = message(1);
        let body = event.records[0].body.take().unwrap();
        let mut envelope: serde_json::Value = serde_json::from_str(&body).unwrap();
        envelope["event_type"] = "order.cancelled".into();
        envelope["event_id"] = "00000000000000000000000000000c01".into();
        envelope["data"]["status"] = "CANCELLED".into();
        envelope["data"]["cancel_reason"] = reason.into();
        envelope["data"]["previous_status"] = serde_json::to_value(previous).unwrap();
        event.records[0].body = Some(envelope.to_string());
        event
    }

    #[tokio::test]
    async fn a_paid_order_cancelled_later_is_refunded_exactly_once() {
        let world = world_with_token(None).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        handle(&deps, cancelled_message(OrderStatus::Confirmed, "customer_cancelled")).await;
        handle(&deps, cancelled_message(OrderStatus::Confirmed, "customer_cancelled")).await;
        assert_eq!(*provider.refunds.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn an_unpaid_or_declined_cancellation_refunds_nothing() {
        let world = world_with_token(None).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        handle(&deps, cancelled_message(OrderStatus::Pending, "customer_cancelled")).await;
        handle(&deps, cancelled_message(OrderStatus::Pending, "payment_declined")).await;
        assert_eq!(*provider.refunds.lock().unwrap(), 0);
    }

    #[test]
    fn the_saga_decides_from_the_charge_and_the_attempt() {
        let approved = Ok(ChargeOutcome::Approved);
        let declined = Ok(ChargeOutcome::Declined);
        let failed = Err(TransientPaymentError("down".into()));
        assert_eq!(decide(&approved, 1, 3), Decision::Confirm);
        assert_eq!(decide(&approved, 3, 3), Decision::Confirm);
        assert_eq!(decide(&declined, 1, 3), Decision::Decline);
        assert_eq!(decide(&failed, 1, 3), Decision::RetryLater);
        assert_eq!(decide(&failed, 2, 3), Decision::RetryLater);
        assert_eq!(decide(&failed, 3, 3), Decision::Decline);
    }

    #[test]
    fn a_poison_message_is_reported_alone() {
        // Covered by the shared batch runner; here the worker's own parsing: not an envelope.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let world = world_with_token(None).await;
            let mut event = message(1);
            event.records[0].body = Some("{oops".into());
            let response = handle(&deps(&world, Arc::default()), event).await;
            assert_eq!(response.batch_item_failures.len(), 1);
        });
    }
}
