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

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::events::{Envelope, EventData, EventType};
use domain::{CancelReason, Order, OrderId, OrderStatus, PaymentStatus, Transition};
use store::idempotency::IdempotencyStore;
use store::orders::{OrderRepository, StepError, StepOutcome, step};
use store::payments::PaymentLedger;
use worker::breaker::{BreakerError, CircuitBreaker};
use worker::once::{Once, at_most_once};
use worker::sqs::{MessageError, RetryDelay, run_batch_with_backoff};

pub use crate::provider::{ChargeOutcome, ChargeRecord, PaymentProvider, TransientPaymentError};

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
}

/// The saga's decision for a charge attempt, given how many attempts this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirm,
    Decline,
    /// No answer: ask the provider what it holds, then decide.
    LookUp,
}

pub fn decide(charge: &Result<ChargeOutcome, TransientPaymentError>) -> Decision {
    match charge {
        Ok(ChargeOutcome::Approved) => Decision::Confirm,
        Ok(ChargeOutcome::Declined) => Decision::Decline,
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
        match envelope.event_type {
            EventType::OrderCreated => pay(deps, &order_id, correlation_id).await,
            _ => reconcile(deps, &order_id).await,
        }
    };
    match at_most_once(deps.idempotency.as_ref(), &record_key, &envelope.event_id, work).await? {
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
        let charge = deps
            .provider
            .charge(&order.id, order.total_amount, order.payment_token.as_deref())
            .await;
        // Only a provider failure counts against it; a declined card is an answer.
        permit.report(&charge, |_| true);
        charge
    };
    match decide(&charge) {
        Decision::Confirm => confirm(deps, order, correlation_id).await,
        Decision::Decline => decline(deps, order, correlation_id).await,
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
                    decline(deps, order, correlation_id).await
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

async fn decline(deps: &Deps, order: Order, correlation_id: &str) -> Result<&'static str, MessageError> {
    let order_id = order.id.clone();
    let reason = Some(CancelReason::PaymentDeclined);
    match step(
        deps.orders.as_ref(),
        order,
        Transition::DeclinePayment,
        reason,
        &wiring::telemetry::cause(correlation_id),
    )
    .await
    {
        Ok(outcome) => {
            if let StepOutcome::Moved(_) = outcome {
                metrics::counter!("PaymentsDeclined").increment(1);
                metrics::histogram!("PaymentDeclineRate").record(1.0);
            }
            tracing::info!(order_id = %order_id, "payment declined; order cancelled and stock released");
            Ok("declined")
        }
        // Already cancelled by the customer: the stock was released then.
        Err(StepError::Refused(_)) => reconcile(deps, &order_id).await,
        Err(error) => Err(retry(error)),
    }
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
        // Cancelled or declined before any charge was known: ask the provider, in case one went
        // through.
        PaymentStatus::Pending | PaymentStatus::Declined => {
            let found = deps
                .breaker
                .call(|_| true, || deps.provider.find_charge(&order.id))
                .await;
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
    deps.breaker
        .call(|_| true, || deps.provider.refund(order_id, amount))
        .await
        .map_err(breaker_failure)?;
    deps.ledger.refund_made(order_id).await.map_err(retry)?;
    metrics::counter!("Refunds").increment(1);
    tracing::info!(order_id = %order_id, amount, "charge of a cancelled order refunded");
    Ok("refunded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{InMemoryChargeBook, MockPaymentProvider};
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use store::memory::InMemoryPaymentLedger;
    use store::testing::{KETTLE_ID, MUG_ID, OrderWorld, SAMPLE_ORDER_ID};
    use worker::breaker::{BreakerPolicy, ManualClock};
    use worker::testing::RecordedDelays;

    /// The mock provider (on in-memory books), counting the calls made to it.
    struct CountingProvider {
        mock: MockPaymentProvider,
        charges: Mutex<u32>,
        refunds: Mutex<u32>,
        /// While set, every call fails as an outage would.
        down: AtomicBool,
    }

    impl Default for CountingProvider {
        fn default() -> Self {
            Self {
                mock: MockPaymentProvider {
                    book: Arc::new(InMemoryChargeBook::default()),
                },
                charges: Mutex::default(),
                refunds: Mutex::default(),
                down: AtomicBool::default(),
            }
        }
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
            self.mock.charge(order_id, amount, token).await
        }
        async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError> {
            *self.refunds.lock().unwrap() += 1;
            self.outage()?;
            self.mock.refund(order_id, amount).await
        }
        async fn find_charge(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
            self.outage()?;
            self.mock.find_charge(order_id).await
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
        let order = world.sample_order().await;
        assert_eq!(
            (order.status, order.payment_status),
            (OrderStatus::Confirmed, PaymentStatus::Paid)
        );
        assert_eq!(world.stock(MUG_ID).await, 3);
    }

    #[tokio::test]
    async fn a_declined_payment_cancels_and_releases_every_line() {
        let world = world_with_token(Some("tok_decline")).await;
        handle(&deps(&world, Arc::default()), message(1)).await;
        let order = world.sample_order().await;
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert_eq!(order.cancel_reason, Some(CancelReason::PaymentDeclined));
        assert_eq!(order.payment_status, PaymentStatus::Declined);
        assert_eq!((world.stock(MUG_ID).await, world.stock(KETTLE_ID).await), (5, 10));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_declined_and_compensated() {
        let world = world_with_token(Some("tok_error")).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        for receives in 1..=3 {
            let response = handle(&deps, message(receives)).await;
            assert_eq!(response.batch_item_failures.len(), 1, "attempt {receives} is retried");
            assert_eq!(world.sample_order().await.status, OrderStatus::Pending);
        }
        // The delivery after the last attempt only asks the provider, which holds no charge.
        let response = handle(&deps, message(4)).await;
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
        charged: AtomicBool,
    }

    #[async_trait]
    impl PaymentProvider for CancelledDuringCharge {
        async fn charge(&self, _: &OrderId, _: i64, _: Option<&str>) -> Result<ChargeOutcome, TransientPaymentError> {
            self.world.set_sample_status(OrderStatus::Cancelled).await;
            self.charged.store(true, Ordering::SeqCst);
            Ok(ChargeOutcome::Approved)
        }
        async fn find_charge(&self, _: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
            Ok(self.charged.load(Ordering::SeqCst).then_some(ChargeRecord {
                amount: 7197,
                refunded: false,
            }))
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
            charged: AtomicBool::default(),
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
        assert_eq!(world.sample_order().await.payment_status, PaymentStatus::Refunded);

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
        handle(&deps, message(1)).await;
        world.set_sample_status(OrderStatus::Cancelled).await;
        assert_eq!(world.sample_order().await.payment_status, PaymentStatus::RefundPending);
        handle(&deps, cancelled_message(OrderStatus::Confirmed, "customer_cancelled")).await;
        handle(&deps, cancelled_message(OrderStatus::Confirmed, "customer_cancelled")).await;
        assert_eq!(*provider.refunds.lock().unwrap(), 1);
        assert_eq!(world.sample_order().await.payment_status, PaymentStatus::Refunded);
        let held = provider
            .find_charge(&OrderId::parse(SAMPLE_ORDER_ID).unwrap())
            .await
            .unwrap();
        assert_eq!(
            held.map(|charge| charge.refunded),
            Some(true),
            "the provider's books agree"
        );
    }

    #[tokio::test]
    async fn a_charge_made_before_a_crash_is_found_and_refunded_when_the_order_was_cancelled() {
        // Given a charge went through, and the order was cancelled before the worker could confirm it
        let world = world_with_token(None).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        let order_id = OrderId::parse(SAMPLE_ORDER_ID).unwrap();
        provider.charge(&order_id, 7197, None).await.unwrap();
        world.set_sample_status(OrderStatus::Cancelled).await;
        // When the order.created event is delivered again
        let response = handle(&deps, message(2)).await;
        // Then the provider is asked, the charge is found and refunded, once
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(*provider.refunds.lock().unwrap(), 1);
        assert_eq!(world.sample_order().await.payment_status, PaymentStatus::Refunded);
    }

    #[tokio::test]
    async fn a_lost_charge_answer_is_looked_up_not_taken_for_a_decline() {
        // Given every charge answer is lost (the provider charges, the worker hears nothing)
        let world = world_with_token(None).await;
        let mock = MockPaymentProvider {
            book: Arc::new(InMemoryChargeBook::default()),
        };
        let provider = Arc::new(provider::GuardedProvider {
            inner: Arc::new(mock),
            faults: wiring::FaultPlan::parse("payment.charge=lost-response:1").unwrap(),
        });
        let deps = Deps {
            provider,
            ..deps(&world, Arc::default())
        };
        // When the order is paid for
        let response = handle(&deps, message(1)).await;
        // Then the lookup finds the charge and the order is confirmed, not retried or declined
        assert!(response.batch_item_failures.is_empty());
        let order = world.sample_order().await;
        assert_eq!(
            (order.status, order.payment_status),
            (OrderStatus::Confirmed, PaymentStatus::Paid)
        );
    }

    #[tokio::test]
    async fn an_unpaid_or_declined_cancellation_refunds_nothing() {
        let world = world_with_token(None).await;
        let provider = Arc::new(CountingProvider::default());
        let deps = deps(&world, provider.clone());
        world.set_sample_status(OrderStatus::Cancelled).await;
        handle(&deps, cancelled_message(OrderStatus::Pending, "customer_cancelled")).await;
        handle(&deps, cancelled_message(OrderStatus::Pending, "payment_declined")).await;
        assert_eq!(*provider.refunds.lock().unwrap(), 0);
        assert_eq!(
            world.sample_order().await.payment_status,
            PaymentStatus::Pending,
            "never charged"
        );
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
    async fn given_a_failed_probe_then_it_is_a_real_attempt_and_the_last_one_declines_once_the_provider_says_no_charge()
    {
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
        assert_eq!(
            world.sample_order().await.status,
            OrderStatus::Pending,
            "the outcome is unknown while the provider is down: never assumed declined"
        );
        provider.down.store(false, Ordering::SeqCst);
        clock.advance(OPEN_FOR);
        handle(&deps, message(6)).await;
        assert_eq!(provider.charges(), 3, "no charge past the attempts: only a lookup");
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
        handle(&deps(&world, provider.clone()), message(1)).await;
        world.set_sample_status(OrderStatus::Cancelled).await;
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
    fn the_saga_decides_from_the_charge() {
        let approved = Ok(ChargeOutcome::Approved);
        let declined = Ok(ChargeOutcome::Declined);
        let failed = Err(TransientPaymentError("down".into()));
        assert_eq!(decide(&approved), Decision::Confirm);
        assert_eq!(decide(&declined), Decision::Decline);
        assert_eq!(decide(&failed), Decision::LookUp, "no answer is never a decline");
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
