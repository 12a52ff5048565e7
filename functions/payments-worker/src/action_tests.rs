//! The saga when a card asks its customer to authenticate (3-D Secure): the order waits, then is
//! confirmed, declined or expired, and a cancelled one's payment is voided.

use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use domain::{CancelReason, OrderId, OrderStatus, PaymentStatus};
use store::testing::{KETTLE_ID, MUG_ID, OrderWorld};

use crate::tests::{cancelled_message, deps, message, world_with_token};
use crate::{
    ActionOutcome, ChargeOutcome, ChargeRecord, ChargeRequest, Deps, PaymentProvider, TransientPaymentError, handle,
};

const SECRET: &str = "pi_3DS_secret_abc";

/// A provider whose cards all ask for authentication; where the payment stands afterwards is set
/// by the test, and voids are counted.
struct AuthenticatingProvider {
    outcome: Mutex<ActionOutcome>,
    /// What a void finds: a charge completed just before it, or nothing.
    charged_before_void: Mutex<Option<ChargeRecord>>,
    voids: Mutex<u32>,
    refunds: Mutex<u32>,
}

impl Default for AuthenticatingProvider {
    fn default() -> Self {
        Self {
            outcome: Mutex::new(ActionOutcome::Waiting),
            charged_before_void: Mutex::default(),
            voids: Mutex::default(),
            refunds: Mutex::default(),
        }
    }
}

const CHARGED: ChargeRecord = ChargeRecord {
    amount: 7197,
    refunded: false,
};

#[async_trait]
impl PaymentProvider for AuthenticatingProvider {
    async fn charge(&self, _: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError> {
        Ok(ChargeOutcome::ActionRequired {
            client_secret: SECRET.into(),
        })
    }
    async fn refund(&self, _: &OrderId, _: i64) -> Result<(), TransientPaymentError> {
        *self.refunds.lock().unwrap() += 1;
        Ok(())
    }
    async fn find_charge(&self, _: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        Ok(match *self.outcome.lock().unwrap() {
            ActionOutcome::Charged(charge) => Some(charge),
            _ => None,
        })
    }
    async fn action_outcome(&self, _: &OrderId) -> Result<ActionOutcome, TransientPaymentError> {
        Ok(*self.outcome.lock().unwrap())
    }
    async fn void(&self, _: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        *self.voids.lock().unwrap() += 1;
        Ok(*self.charged_before_void.lock().unwrap())
    }
}

fn deps_with(world: &OrderWorld, provider: &Arc<AuthenticatingProvider>, window: time::Duration) -> Deps {
    Deps {
        provider: provider.clone(),
        payment_action_window: window,
        ..deps(world, Arc::default())
    }
}

/// The sample order after its first delivery: waiting for its customer.
async fn waiting_order(window: time::Duration) -> (OrderWorld, Arc<AuthenticatingProvider>, Deps) {
    let world = world_with_token(Some("pm_card_threeDSecure2Required")).await;
    let provider = Arc::new(AuthenticatingProvider::default());
    let deps = deps_with(&world, &provider, window);
    let response = handle(&deps, message(1)).await;
    assert!(response.batch_item_failures.is_empty(), "waiting is not a failure");
    (world, provider, deps)
}

#[tokio::test]
async fn a_card_that_asks_for_authentication_leaves_the_order_waiting_with_the_secret_and_a_deadline() {
    let before = time::OffsetDateTime::now_utc();
    let (world, _, _) = waiting_order(time::Duration::minutes(30)).await;
    let order = world.sample_order().await;
    assert_eq!(
        (order.status, order.payment_status),
        (OrderStatus::Pending, PaymentStatus::ActionRequired)
    );
    let action = order.payment_action.expect("the customer's action is kept");
    assert_eq!(action.client_secret, SECRET);
    let expires_at = domain::parse_rfc3339(&action.expires_at).unwrap();
    assert!(expires_at >= before + time::Duration::minutes(30));
    assert!(expires_at <= time::OffsetDateTime::now_utc() + time::Duration::minutes(30));
    assert_eq!(
        world.stock(MUG_ID).await,
        3,
        "the stock stays reserved while the customer decides"
    );
    assert!(
        !format!("{action:?}").contains(SECRET),
        "the secret never reaches a log"
    );
}

#[tokio::test]
async fn a_waiting_order_redelivered_before_its_deadline_keeps_waiting() {
    let (world, provider, deps) = waiting_order(time::Duration::minutes(30)).await;
    let response = handle(&deps, message(2)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(world.sample_order().await.payment_status, PaymentStatus::ActionRequired);
    assert_eq!(*provider.voids.lock().unwrap(), 0);
}

#[tokio::test]
async fn an_authenticated_payment_found_by_a_later_delivery_confirms_the_order() {
    let (world, provider, deps) = waiting_order(time::Duration::minutes(30)).await;
    *provider.outcome.lock().unwrap() = ActionOutcome::Charged(CHARGED);
    handle(&deps, message(2)).await;
    let order = world.sample_order().await;
    assert_eq!(
        (order.status, order.payment_status),
        (OrderStatus::Confirmed, PaymentStatus::Paid)
    );
    assert!(
        order.payment_action.is_none(),
        "the secret goes once the payment is settled"
    );
}

#[tokio::test]
async fn a_failed_authentication_declines_the_order_and_releases_its_stock() {
    let (world, provider, deps) = waiting_order(time::Duration::minutes(30)).await;
    *provider.outcome.lock().unwrap() = ActionOutcome::Failed;
    handle(&deps, message(2)).await;
    let order = world.sample_order().await;
    assert_eq!(
        (order.status, order.payment_status, order.cancel_reason),
        (
            OrderStatus::Cancelled,
            PaymentStatus::Declined,
            Some(CancelReason::PaymentDeclined)
        )
    );
    assert_eq!((world.stock(MUG_ID).await, world.stock(KETTLE_ID).await), (5, 10));
}

#[tokio::test]
async fn past_its_deadline_the_payment_is_voided_and_the_order_expires_uncharged() {
    let (world, provider, deps) = waiting_order(time::Duration::ZERO).await;
    handle(&deps, message(2)).await;
    let order = world.sample_order().await;
    assert_eq!(
        (order.status, order.payment_status, order.cancel_reason),
        (
            OrderStatus::Cancelled,
            PaymentStatus::Pending,
            Some(CancelReason::PaymentExpired)
        )
    );
    assert!(order.payment_action.is_none());
    assert_eq!(*provider.voids.lock().unwrap(), 1);
    assert_eq!((world.stock(MUG_ID).await, world.stock(KETTLE_ID).await), (5, 10));
}

#[tokio::test]
async fn a_payment_authenticated_just_before_the_void_confirms_the_order_instead() {
    let (world, provider, deps) = waiting_order(time::Duration::ZERO).await;
    *provider.charged_before_void.lock().unwrap() = Some(CHARGED);
    handle(&deps, message(2)).await;
    let order = world.sample_order().await;
    assert_eq!(
        (order.status, order.payment_status),
        (OrderStatus::Confirmed, PaymentStatus::Paid)
    );
}

#[tokio::test]
async fn cancelling_a_waiting_order_voids_its_payment_and_refunds_nothing() {
    let (world, provider, deps) = waiting_order(time::Duration::minutes(30)).await;
    world.set_sample_status(OrderStatus::Cancelled).await;
    let order = world.sample_order().await;
    assert_eq!(order.payment_status, PaymentStatus::Pending, "never charged");
    assert!(order.payment_action.is_none());
    handle(&deps, cancelled_message(OrderStatus::Pending, "customer_cancelled")).await;
    assert_eq!(
        *provider.voids.lock().unwrap(),
        1,
        "the customer can no longer complete it"
    );
    assert_eq!(*provider.refunds.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_cancelled_order_whose_customer_authenticated_anyway_is_refunded() {
    let (world, provider, deps) = waiting_order(time::Duration::minutes(30)).await;
    world.set_sample_status(OrderStatus::Cancelled).await;
    *provider.charged_before_void.lock().unwrap() = Some(CHARGED);
    handle(&deps, cancelled_message(OrderStatus::Pending, "customer_cancelled")).await;
    assert_eq!(*provider.refunds.lock().unwrap(), 1);
    assert_eq!(world.sample_order().await.payment_status, PaymentStatus::Refunded);
}

#[tokio::test]
async fn a_payment_voided_by_an_earlier_look_whose_answer_was_lost_still_expires_the_order() {
    let (world, provider, deps) = waiting_order(time::Duration::minutes(30)).await;
    *provider.outcome.lock().unwrap() = ActionOutcome::Cancelled;
    handle(&deps, message(2)).await;
    let order = world.sample_order().await;
    assert_eq!(
        (order.status, order.payment_status, order.cancel_reason),
        (
            OrderStatus::Cancelled,
            PaymentStatus::Pending,
            Some(CancelReason::PaymentExpired)
        ),
        "an expiry, not a decline"
    );
}
