//! The saga's unit tests: the mock provider on in-memory orders, and providers that misbehave on cue.

use super::*;
use crate::provider::{InMemoryChargeBook, MockPaymentProvider};
use async_trait::async_trait;
use domain::{CancelReason, OrderStatus, PaymentStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::memory::InMemoryPaymentLedger;
use store::testing::{KETTLE_ID, MUG_ID, OrderWorld, SAMPLE_ORDER_ID};
use worker::breaker::{BreakerPolicy, ManualClock};
use worker::testing::RecordedDelays;

/// The mock provider (on in-memory books), counting the calls made to it.
pub(crate) struct CountingProvider {
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
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError> {
        *self.charges.lock().unwrap() += 1;
        self.outage()?;
        self.mock.charge(request).await
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
    async fn action_outcome(&self, order_id: &OrderId) -> Result<ActionOutcome, TransientPaymentError> {
        self.outage()?;
        self.mock.action_outcome(order_id).await
    }
    async fn void(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        self.outage()?;
        self.mock.void(order_id).await
    }
}

/// The in-memory ledger beside the world's orders.
pub(crate) fn ledger_of(world: &OrderWorld) -> Arc<InMemoryPaymentLedger> {
    Arc::new(InMemoryPaymentLedger::new(world.orders.clone()))
}

/// Charge attempts recorded for the sample order.
fn attempts_of_sample(ledger: &InMemoryPaymentLedger) -> u32 {
    ledger.attempts(&OrderId::parse(SAMPLE_ORDER_ID).unwrap())
}

pub(crate) fn deps(world: &OrderWorld, provider: Arc<CountingProvider>) -> Deps {
    Deps {
        orders: world.orders.clone(),
        idempotency: world.idempotency.clone(),
        provider,
        retry_delay: Arc::new(RecordedDelays::default()),
        max_attempts: 3,
        retry_base_secs: 1,
        ledger: ledger_of(world),
        breaker: CircuitBreaker::new("payment-provider", BreakerPolicy::default()),
        payment_action_window: time::Duration::minutes(30),
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
pub(crate) fn message(receives: u32) -> SqsEvent {
    let mut event: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/payments-worker.json")).unwrap();
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = receives.to_string().into();
    serde_json::from_value(event).unwrap()
}

pub(crate) async fn world_with_token(token: Option<&str>) -> OrderWorld {
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
    async fn charge(&self, _: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError> {
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
    async fn action_outcome(&self, _: &OrderId) -> Result<ActionOutcome, TransientPaymentError> {
        Ok(ActionOutcome::Failed)
    }
    async fn void(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        self.find_charge(order_id).await
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
pub(crate) fn cancelled_message(previous: OrderStatus, reason: &str) -> SqsEvent {
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
    let request = ChargeRequest {
        order_id: &order_id,
        amount: 7197,
        currency: "usd",
        token: None,
    };
    provider.charge(&request).await.unwrap();
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
        timeout: provider::PROVIDER_TIMEOUT,
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
async fn given_a_failed_probe_then_it_is_a_real_attempt_and_the_last_one_declines_once_the_provider_says_no_charge() {
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

#[tokio::test]
async fn a_refund_already_under_way_for_the_order_is_waited_for_never_made_twice() {
    use store::idempotency::{Claim, IdempotencyStore as _};
    // Given a paid order cancelled later, whose refund another delivery is making right now
    let world = world_with_token(None).await;
    let provider = Arc::new(CountingProvider::default());
    let deps = deps(&world, provider.clone());
    handle(&deps, message(1)).await;
    world.set_sample_status(OrderStatus::Cancelled).await;
    let lease = format!("refund-call#{SAMPLE_ORDER_ID}");
    let Claim::Acquired(held) = world.idempotency.claim(&lease, "refund").await.unwrap() else {
        panic!("the lease is free")
    };
    // When the cancellation is delivered meanwhile, it is retried without refunding
    let refund = || cancelled_message(OrderStatus::Confirmed, "customer_cancelled");
    assert_eq!(handle(&deps, refund()).await.batch_item_failures.len(), 1);
    assert_eq!(*provider.refunds.lock().unwrap(), 0);
    // and once the other delivery is done, the retry refunds once, and a further one nothing.
    world.idempotency.release(&held).await.unwrap();
    assert!(handle(&deps, refund()).await.batch_item_failures.is_empty());
    handle(&deps, refund()).await;
    assert_eq!(*provider.refunds.lock().unwrap(), 1);
    assert_eq!(world.sample_order().await.payment_status, PaymentStatus::Refunded);
}
