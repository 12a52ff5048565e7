//! The payment step of the order saga. For each `order.created` event: charge the order once (the
//! provider is told the order id as its idempotency key, and a claim per order guards redeliveries),
//! then move the order on:
//! - approved: `PENDING -> CONFIRMED` (conditional); if the customer cancelled meanwhile, the charge is
//!   refunded instead, so no order is both paid for and cancelled. The refund is first noted on the
//!   order (`refund_due`), so a refund that fails is retried by the redelivered event (which otherwise
//!   finds the order cancelled and would do nothing), and a dead-lettered one stays visible;
//! - declined: `PENDING -> CANCELLED` with `payment_declined`, releasing every line's stock in the same
//!   transaction (the compensation);
//! - failed transiently: retried with growing delays; once the attempts run out the order is declined
//!   and compensated rather than left pending forever.
//!
//! And for each `order.cancelled` of an order that had been `CONFIRMED` (paid): refund it, once.
//!
//! The provider sits behind a circuit breaker (in-process, per warm instance). While it is open the
//! provider is not called: the message goes back to the queue for at least the breaker's `retry_after`.
//! Attempts are counted on the order itself (`payment_attempts`, incremented just before each real
//! charge), not from the SQS receive count, so a deferral never uses one up and an outage of the
//! provider never declines a good order. A deferral does use one of the queue's receives: an outage
//! longer than they last sends the message to the dead-letter queue (alarmed, redrivable), with the
//! order still `PENDING`: not lost, and the attempts counted so far still count after a redrive.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::events::{Envelope, EventData, EventType, OrderData};
use domain::{CancelReason, Order, OrderId, OrderStatus, Transition};
use store::idempotency::IdempotencyStore;
use store::orders::OrderRepository;
use store::orders::{StepError, StepOutcome, step};
use store::payments::PaymentLedger;
use worker::breaker::{BreakerError, CircuitBreaker};
use worker::once::{Once, at_most_once};
use worker::sqs::{MessageError, RetryDelay, run_batch_with_backoff};

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
    /// Refunds `amount` of the order's charge; idempotent per order id like `charge`.
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
    /// Charge attempts of one order before a transient failure counts as a decline.
    pub max_attempts: u32,
    pub retry_base_secs: i32,
    pub ledger: Arc<dyn PaymentLedger>,
    /// The payment provider's circuit breaker, kept for the life of the instance.
    pub breaker: CircuitBreaker,
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
    let work = || pay(deps, &order_id, &envelope.correlation_id);
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
    // Deferred while the circuit is open: the claim is released and the redelivered event refunds.
    let work = || provider_refund(deps, &order_id, data.total_amount);
    match at_most_once(deps.idempotency.as_ref(), &record_key, &envelope.event_id, work).await? {
        Once::Ran(_) => {
            tracing::info!(order_id = %order_id, amount = data.total_amount, "cancelled paid order refunded")
        }
        Once::AlreadyDone => tracing::info!(order_id = %order_id, "refund already made; duplicate dropped"),
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
        // A charge approved as the order was cancelled, whose refund has not been made yet.
        if order.status == OrderStatus::Cancelled
            && let Some(amount) = deps.ledger.refund_owed(order_id).await.map_err(retry)?
        {
            return settle_refund(deps, order_id, amount).await;
        }
        tracing::info!(order_id = %order_id, status = order.status.as_str(), "order no longer pending; not charged");
        return Ok("not pending");
    }
    // Asked before the attempt is counted: a deferral is not an attempt. Dropping `permit` unreported
    // (no charge after all) frees the breaker's probe slot.
    let permit = deps.breaker.try_acquire().map_err(|open| deferred(open.retry_after))?;
    let Some(attempt) = deps.ledger.record_attempt(&order.id).await.map_err(retry)? else {
        tracing::info!(order_id = %order_id, "order no longer pending; not charged");
        return Ok("not pending");
    };
    let charge = deps
        .provider
        .charge(&order.id, order.total_amount, order.payment_token.as_deref())
        .await;
    // Only a provider failure counts against it; a declined card is an answer.
    permit.report(&charge, |_| true);
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
        Err(StepError::Refused(_) | StepError::Contended) if order_is_cancelled(deps, &order_id).await? => {
            // Noted first: if the refund fails or is deferred, the redelivered event finds the order
            // cancelled with the refund still owed, and makes it (see `pay`).
            deps.ledger.owe_refund(&order_id, amount).await.map_err(retry)?;
            tracing::info!(order_id = %order_id, "order cancelled during payment; refunding the charge");
            settle_refund(deps, &order_id, amount).await
        }
        Err(error) => Err(retry(error)),
    }
}

/// One refund through the breaker: deferred (back to the queue) while it is open.
async fn provider_refund(deps: &Deps, order_id: &OrderId, amount: i64) -> Result<&'static str, MessageError> {
    deps.breaker
        .call(|_| true, || deps.provider.refund(order_id, amount))
        .await
        .map_err(|error| match error {
            BreakerError::Open { retry_after } => deferred(retry_after),
            BreakerError::Failed(error) => retry(error),
        })?;
    Ok("refunded")
}

/// Makes the refund owed for a cancelled order (through the breaker: deferred while it is open) and
/// forgets it. The provider's refund is idempotent per order, so a repeat after a lost `refund_made`
/// gives nothing back twice.
async fn settle_refund(deps: &Deps, order_id: &OrderId, amount: i64) -> Result<&'static str, MessageError> {
    provider_refund(deps, order_id, amount).await?;
    deps.ledger.refund_made(order_id).await.map_err(retry)?;
    tracing::info!(order_id = %order_id, amount, "charge of a cancelled order refunded");
    Ok("refunded")
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
        Err(StepError::Refused(_)) => Ok("already cancelled"),
        Err(error) => Err(retry(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use store::memory::InMemoryPaymentLedger;
    use store::testing::{KETTLE_ID, MUG_ID, OrderWorld, SAMPLE_ORDER_ID};
    use worker::breaker::{BreakerPolicy, ManualClock};
    use worker::testing::RecordedDelays;

    #[derive(Default)]
    struct CountingProvider {
        charges: Mutex<u32>,
        refunds: Mutex<u32>,
        /// While set, every call fails as an outage would.
        down: AtomicBool,
    }

    impl CountingProvider {
        fn charges(&self) -> u32 {
            *self.charges.lock().unwrap()
        }

        fn outage(&self) -> Result<(), TransientPaymentError> {
            if self.down.load(Ordering::SeqCst) {
                Err(TransientPaymentError("provider down".into()))
            } else {
                Ok(())
            }
        }
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
            self.outage()?;
            MockPaymentProvider.charge(order_id, amount, token).await
        }
        async fn refund(&self, _order_id: &OrderId, _amount: i64) -> Result<(), TransientPaymentError> {
            *self.refunds.lock().unwrap() += 1;
            self.outage()
        }
    }

    /// The in-memory ledger beside the world's orders.
    fn ledger_of(world: &OrderWorld) -> Arc<InMemoryPaymentLedger> {
        Arc::new(InMemoryPaymentLedger::new(world.orders.clone()))
    }

    /// Charge attempts recorded for the sample order.
    fn attempts_of_sample(ledger: &InMemoryPaymentLedger) -> u32 {
        ledger.attempts(&OrderId::parse(SAMPLE_ORDER_ID).unwrap())
    }

    fn deps(world: &OrderWorld, provider: Arc<CountingProvider>) -> Deps {
        Deps {
            orders: world.orders.clone(),
            idempotency: world.idempotency.clone(),
            provider,
            retry_delay: Arc::new(RecordedDelays::default()),
            max_attempts: 3,
            retry_base_secs: 1,
            ledger: ledger_of(world),
            breaker: CircuitBreaker::new("payment-provider", BreakerPolicy::default()),
        }
    }

    const OPEN_FOR: Duration = Duration::from_secs(30);

    /// `deps` with a breaker that opens after `threshold` provider failures, on a clock the test moves.
    fn deps_with_breaker(
        world: &OrderWorld,
        provider: Arc<CountingProvider>,
        threshold: u32,
        clock: &Arc<ManualClock>,
    ) -> (Deps, Arc<InMemoryPaymentLedger>, Arc<RecordedDelays>) {
        let attempts = ledger_of(world);
        let delays = Arc::new(RecordedDelays::default());
        let policy = BreakerPolicy {
            failure_threshold: threshold,
            open_for: OPEN_FOR,
        };
        let deps = Deps {
            ledger: attempts.clone(),
            retry_delay: delays.clone(),
            breaker: CircuitBreaker::with_clock("payment-provider", policy, clock.clone()),
            ..self::deps(world, provider)
        };
        (deps, attempts, delays)
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

    /// A provider that approves, while the customer cancels the order during the charge; its refunds
    /// fail while `refunds_fail` is set.
    struct CancelledDuringCharge {
        world: Arc<OrderWorld>,
        refunds_fail: AtomicBool,
        refund_calls: Mutex<u32>,
    }

    #[async_trait]
    impl PaymentProvider for CancelledDuringCharge {
        async fn charge(&self, _: &OrderId, _: i64, _: Option<&str>) -> Result<ChargeOutcome, TransientPaymentError> {
            self.world.set_sample_status(OrderStatus::Cancelled).await;
            Ok(ChargeOutcome::Approved)
        }
        async fn refund(&self, _: &OrderId, _: i64) -> Result<(), TransientPaymentError> {
            *self.refund_calls.lock().unwrap() += 1;
            if self.refunds_fail.load(Ordering::SeqCst) {
                Err(TransientPaymentError("refunds down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_charge_whose_order_was_cancelled_meanwhile_is_refunded_even_when_the_first_refund_fails() {
        // Given the customer cancels while the charge is approved, and the first refund fails,
        let world = Arc::new(world_with_token(None).await);
        let provider = Arc::new(CancelledDuringCharge {
            world: world.clone(),
            refunds_fail: AtomicBool::new(true),
            refund_calls: Mutex::default(),
        });
        let ledger = ledger_of(&world);
        let deps = Deps {
            provider: provider.clone(),
            ledger: ledger.clone(),
            ..deps(&world, Arc::default())
        };
        let order_id = OrderId::parse(SAMPLE_ORDER_ID).unwrap();
        let first = handle(&deps, message(1)).await;
        // then the event is retried, the cancellation stands and the refund is noted as owed;
        assert_eq!(first.batch_item_failures.len(), 1);
        assert_eq!(world.sample_order().await.status, OrderStatus::Cancelled);
        assert!(ledger.refund_owed(&order_id).await.unwrap().is_some());

        // when the refunds work again, the redelivered event makes the refund (not "not pending"),
        provider.refunds_fail.store(false, Ordering::SeqCst);
        let second = handle(&deps, message(2)).await;
        assert!(second.batch_item_failures.is_empty());
        assert_eq!(*provider.refund_calls.lock().unwrap(), 2, "one failed, one made");
        assert_eq!(ledger.refund_owed(&order_id).await.unwrap(), None);

        // and a further duplicate refunds nothing more.
        handle(&deps, message(3)).await;
        assert_eq!(*provider.refund_calls.lock().unwrap(), 2);
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

    #[tokio::test]
    async fn given_an_open_circuit_when_payment_messages_keep_coming_then_they_are_deferred_without_charging_or_using_attempts()
     {
        let world = world_with_token(Some("tok_visa")).await;
        let provider = Arc::new(CountingProvider::default());
        provider.down.store(true, Ordering::SeqCst);
        let clock = Arc::new(ManualClock::default());
        let (deps, attempts, delays) = deps_with_breaker(&world, provider.clone(), 2, &clock);
        // Two real attempts fail and open the circuit (max_attempts is 3).
        for receives in 1..=2 {
            handle(&deps, message(receives)).await;
        }
        assert_eq!((provider.charges(), attempts_of_sample(&attempts)), (2, 2));

        for receives in 3..=8 {
            let response = handle(&deps, message(receives)).await;
            assert_eq!(
                response.batch_item_failures.len(),
                1,
                "delivery {receives} is retried, not deleted"
            );
        }

        assert_eq!(provider.charges(), 2, "an open circuit does not call the provider");
        assert_eq!(attempts_of_sample(&attempts), 2, "a deferral is not a charge attempt");
        assert_eq!(
            world.sample_order().await.status,
            OrderStatus::Pending,
            "not declined by the outage"
        );
        assert!(
            delays.recorded()[2..].iter().all(|delay| *delay >= 30),
            "back no sooner than the circuit's retry_after: {:?}",
            delays.recorded()
        );
    }

    #[tokio::test]
    async fn given_an_open_circuit_when_its_time_is_up_and_the_provider_is_back_then_the_probe_confirms_the_order() {
        let world = world_with_token(Some("tok_visa")).await;
        let provider = Arc::new(CountingProvider::default());
        provider.down.store(true, Ordering::SeqCst);
        let clock = Arc::new(ManualClock::default());
        let (deps, attempts, _) = deps_with_breaker(&world, provider.clone(), 2, &clock);
        for receives in 1..=5 {
            handle(&deps, message(receives)).await;
        }
        provider.down.store(false, Ordering::SeqCst);
        clock.advance(OPEN_FOR);

        let response = handle(&deps, message(6)).await;

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(world.sample_order().await.status, OrderStatus::Confirmed);
        assert_eq!((provider.charges(), attempts_of_sample(&attempts)), (3, 3));
        assert_eq!(deps.breaker.state().name(), "closed");
    }

    #[tokio::test]
    async fn given_a_failed_probe_then_it_is_a_real_attempt_and_the_last_one_declines() {
        let world = world_with_token(Some("tok_visa")).await;
        let provider = Arc::new(CountingProvider::default());
        provider.down.store(true, Ordering::SeqCst);
        let clock = Arc::new(ManualClock::default());
        let (deps, attempts, _) = deps_with_breaker(&world, provider.clone(), 2, &clock);
        for receives in 1..=4 {
            handle(&deps, message(receives)).await;
        }
        clock.advance(OPEN_FOR);

        handle(&deps, message(5)).await;

        assert_eq!((provider.charges(), attempts_of_sample(&attempts)), (3, 3));
        let order = world.sample_order().await;
        assert_eq!(
            (order.status, order.cancel_reason),
            (OrderStatus::Cancelled, Some(CancelReason::PaymentDeclined))
        );
        assert_eq!(world.stock(MUG_ID).await, 5, "compensated");
    }

    #[tokio::test]
    async fn given_a_declined_card_then_the_circuit_stays_closed() {
        let world = world_with_token(Some("tok_decline")).await;
        let clock = Arc::new(ManualClock::default());
        let (deps, _, _) = deps_with_breaker(&world, Arc::default(), 1, &clock);
        handle(&deps, message(1)).await;
        assert_eq!(world.sample_order().await.status, OrderStatus::Cancelled);
        assert_eq!(
            deps.breaker.state().name(),
            "closed",
            "a decline is an answer, not an outage"
        );
    }

    #[tokio::test]
    async fn given_an_open_circuit_then_a_refund_is_deferred_and_made_once_it_closes() {
        let world = world_with_token(None).await;
        let provider = Arc::new(CountingProvider::default());
        provider.down.store(true, Ordering::SeqCst);
        let clock = Arc::new(ManualClock::default());
        let (deps, _, _) = deps_with_breaker(&world, provider.clone(), 1, &clock);
        let refund = || cancelled_message(OrderStatus::Confirmed, "customer_cancelled");
        assert_eq!(handle(&deps, refund()).await.batch_item_failures.len(), 1);
        assert_eq!(handle(&deps, refund()).await.batch_item_failures.len(), 1);
        assert_eq!(
            *provider.refunds.lock().unwrap(),
            1,
            "the second was deferred, not tried"
        );
        provider.down.store(false, Ordering::SeqCst);
        clock.advance(OPEN_FOR);
        assert!(handle(&deps, refund()).await.batch_item_failures.is_empty());
        handle(&deps, refund()).await;
        assert_eq!(*provider.refunds.lock().unwrap(), 2, "one failed try, one refund");
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
