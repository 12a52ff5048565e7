//! `POST /api/payments/stripe/webhook`: Stripe's events about the PaymentIntents the payments worker
//! created. Public (Stripe has no token of ours) and outside the per-client rate limiter; what guards
//! it is the signature:
//! 1. a body over 64 KiB is refused (413) before anything else;
//! 2. the `Stripe-Signature` header is checked against the raw body with the endpoint's signing
//!    secret (HMAC-SHA256, constant-time, 300 s tolerance); missing, malformed, wrong or stale: 400
//!    and nothing changes;
//! 3. the event is read (signed but unreadable: 400); types the shop does not act on: 200;
//! 4. each event id is handled once (an idempotency record `stripe-event#<id>`): a duplicate answers
//!    200 and changes nothing; a failure releases the record and answers 5xx, so Stripe's redelivery
//!    is handled afresh;
//! 5. the order named by the PaymentIntent's `metadata.order_id` is settled ([`settle`]) through the
//!    payments worker's own conditional transitions, so the webhook and the worker racing on one
//!    order settle it once.

pub mod settle;

use std::sync::Arc;

use api::http::{ApiRequest, MAX_BODY_BYTES, json_bytes_response, respond};
use api::{ApiError, ApiState, InitError};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use store::idempotency::{Claim, IdempotencyStore, StoredResponse};
use store::orders::OrderRepository;
use store::payments::PaymentLedger;
use stripe_client::webhook::{self, Event, SIGNATURE_HEADER};
use stripe_client::{StripeKeys, WebhookSecret};
use tracing::Instrument;
use wiring::secrets::SecretString;

pub use settle::Settled;

/// What every answer that is not a problem says: Stripe only reads the status.
const RECEIVED: &str = r#"{"received":true}"#;

pub struct Deps {
    pub orders: Arc<dyn OrderRepository>,
    pub ledger: Arc<dyn PaymentLedger>,
    /// Stripe event ids already handled.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The endpoint's signing secret (`whsec_...`).
    pub signing_secret: WebhookSecret,
}

impl Deps {
    /// The deployment's tables and the endpoint's signing secret, read once (one `GetSecretValue`)
    /// from the Secrets Manager secret `STRIPE_SECRET_NAME` names.
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let secret_id = state.env().required("STRIPE_SECRET_NAME")?;
        let text = wiring::secrets::read_secret_string(&state.sdk, &secret_id)
            .await
            .map_err(|error| InitError::Secret {
                secret_id: secret_id.clone(),
                source: Box::new(error),
            })?;
        Ok(Self {
            orders: state.orders(),
            ledger: state.payment_ledger(),
            idempotency: state.idempotency(),
            signing_secret: signing_secret(&secret_id, &text)?,
        })
    }
}

/// The webhook signing secret of the Stripe keys' JSON (`{"secret_key": "sk_...", "webhook_secret":
/// "whsec_..."}`); the errors name the secret, never its text.
fn signing_secret(secret_id: &str, text: &SecretString) -> Result<WebhookSecret, InitError> {
    StripeKeys::parse(text.expose())
        .map(|keys| keys.webhook_secret().clone())
        .map_err(|error| InitError::Secret {
            secret_id: secret_id.to_owned(),
            source: Box::new(error),
        })
}

pub async fn handle(deps: &Deps, mut request: Request) -> Response<Body> {
    // The signature covers the body exactly as sent (lambda_http has already undone API Gateway's
    // base64), so it is taken out untouched.
    let body = std::mem::take(request.body_mut());
    respond(request, |request| async move {
        receive(deps, &request, body.as_ref()).await
    })
    .await
}

async fn receive(deps: &Deps, request: &ApiRequest, body: &[u8]) -> Result<Response<Body>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit_bytes: MAX_BODY_BYTES,
        });
    }
    let now = i64::try_from(domain::unix_now()).unwrap_or(i64::MAX);
    let header = request.header(SIGNATURE_HEADER).unwrap_or_default();
    if let Err(error) = webhook::verify(deps.signing_secret.expose().as_bytes(), header, body, now) {
        metrics::counter!("StripeWebhooksRefused").increment(1);
        tracing::warn!(reason = %error, "Stripe webhook signature refused");
        return Err(ApiError::BadRequest(format!("Signature refused: {error}.")));
    }
    let event = webhook::parse_event(body).map_err(|error| {
        tracing::warn!(reason = %error, "a signed Stripe webhook body is not an event this endpoint reads");
        ApiError::BadRequest("The body is not a Stripe event this endpoint reads.".into())
    })?;
    metrics::counter!("StripeWebhooks", "Type" => type_label(&event.kind)).increment(1);
    let span = tracing::info_span!("stripe_event", event_id = %event.id, event_type = %event.kind);
    async {
        if !settle::acts_on(&event) {
            tracing::info!("Stripe event type not acted on; acknowledged");
            return Ok(received());
        }
        once(deps, request, &event).await
    }
    .instrument(span)
    .await
}

/// Settles `event` unless its id was handled before.
async fn once(deps: &Deps, request: &ApiRequest, event: &Event) -> Result<Response<Body>, ApiError> {
    let record_key = format!("stripe-event#{}", event.id);
    // The type, not the body: a redelivery's body differs (`pending_webhooks`), its id and type do not.
    let lease = match deps.idempotency.claim(&record_key, &event.kind).await? {
        Claim::Acquired(lease) => lease,
        Claim::Completed(_) => {
            tracing::info!("Stripe event already handled; duplicate acknowledged");
            return Ok(received());
        }
        Claim::Mismatch => {
            tracing::warn!("a Stripe event id seen before with another type; ignored");
            return Ok(received());
        }
        // Another delivery of it runs right now (or crashed less than a lease ago): Stripe retries.
        Claim::InProgress => {
            return Err(ApiError::Conflict(
                "This event is being handled; it will be acknowledged on a later delivery.".into(),
            ));
        }
    };
    match settle::settle(deps, event, &request.cause()).await {
        Ok(settled) => {
            let done = StoredResponse {
                status: StatusCode::OK.as_u16(),
                body: settled.as_str().to_owned(),
            };
            if let Err(error) = deps.idempotency.complete(&lease, &done).await {
                // The settlement's own conditions make a repeat harmless; the lease expires meanwhile.
                tracing::warn!(error = %error, "could not mark the Stripe event handled");
            }
            tracing::info!(outcome = settled.as_str(), "Stripe event handled");
            Ok(received())
        }
        Err(error) => {
            if let Err(release_error) = deps.idempotency.release(&lease).await {
                tracing::warn!(error = %release_error, "could not release the Stripe event's claim; it expires with its lease");
            }
            Err(error)
        }
    }
}

fn received() -> Response<Body> {
    json_bytes_response(StatusCode::OK, RECEIVED)
}

/// The event type as a metric dimension: the types acted on by name, any other as `other` (a
/// dimension value per unknown type would be unbounded).
fn type_label(kind: &str) -> &'static str {
    use webhook::types::{
        CHARGE_REFUNDED, PAYMENT_INTENT_CANCELED, PAYMENT_INTENT_PAYMENT_FAILED, PAYMENT_INTENT_SUCCEEDED,
    };
    [
        PAYMENT_INTENT_SUCCEEDED,
        PAYMENT_INTENT_PAYMENT_FAILED,
        PAYMENT_INTENT_CANCELED,
        CHARGE_REFUNDED,
    ]
    .into_iter()
    .find(|known| *known == kind)
    .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request};
    use async_trait::async_trait;
    use domain::{CancelReason, Order, OrderId, OrderStatus, PaymentStatus};
    use lambda_http::http::HeaderValue;
    use std::sync::atomic::{AtomicBool, Ordering};
    use store::Page;
    use store::StoreError;
    use store::idempotency::{Lease, RecordStatus};
    use store::memory::{InMemoryOrders, InMemoryPaymentLedger};
    use store::orders::{OrderCursor, PlaceOutcome};
    use store::testing::{KETTLE_ID, MUG_ID, OrderWorld, SAMPLE_ORDER_ID};

    const SECRET: &str = "whsec_unit_test_signing_secret_0123456789";
    const SUCCEEDED: &str = include_str!("../../../events/payments-webhook.json");
    const FAILED: &str = include_str!("../../../events/payments-webhook.payment-failed.json");
    const CANCELED: &str = include_str!("../../../events/payments-webhook.canceled.json");
    const REFUNDED: &str = include_str!("../../../events/payments-webhook.charge-refunded.json");
    const UNKNOWN: &str = include_str!("../../../events/payments-webhook.unknown-type.json");
    const SAMPLE_INTENT: &str = "pi_3SampleIntent0001";

    /// Orders that fail every call while `down` is set, as a storage outage would; and, once
    /// `customer_cancels_first` is set, whose next transition loses the race to the customer's cancel.
    struct FlakyOrders {
        inner: Arc<InMemoryOrders>,
        down: AtomicBool,
        customer_cancels_first: AtomicBool,
    }

    impl FlakyOrders {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("orders table throttled".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl OrderRepository for FlakyOrders {
        async fn place(
            &self,
            order: &Order,
            completion: Option<(&Lease, &StoredResponse)>,
        ) -> Result<PlaceOutcome, StoreError> {
            self.check()?;
            self.inner.place(order, completion).await
        }
        async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
            self.check()?;
            self.inner.get(id).await
        }
        async fn list_for_user(
            &self,
            user_id: &domain::UserId,
            after: Option<&OrderCursor>,
            limit: usize,
        ) -> Result<Page<Order, OrderCursor>, StoreError> {
            self.check()?;
            self.inner.list_for_user(user_id, after, limit).await
        }
        async fn transition(
            &self,
            order: &Order,
            to: OrderStatus,
            reason: Option<CancelReason>,
            now: &str,
            cause: &domain::Cause,
        ) -> Result<Option<Order>, StoreError> {
            self.check()?;
            if self.customer_cancels_first.swap(false, Ordering::SeqCst) {
                let cancelled = self
                    .inner
                    .transition(
                        order,
                        OrderStatus::Cancelled,
                        Some(CancelReason::CustomerCancelled),
                        now,
                        cause,
                    )
                    .await?;
                assert!(cancelled.is_some(), "the customer's cancel goes first");
            }
            self.inner.transition(order, to, reason, now, cause).await
        }
        async fn users_and_products(
            &self,
            users: &[domain::UserId],
            products: &[domain::ProductId],
        ) -> Result<(Vec<domain::User>, Vec<domain::Product>), StoreError> {
            self.check()?;
            self.inner.users_and_products(users, products).await
        }
    }

    struct Fixture {
        world: OrderWorld,
        ledger: Arc<InMemoryPaymentLedger>,
        orders: Arc<FlakyOrders>,
        deps: Deps,
    }

    impl Fixture {
        /// The sample order (`PENDING`, 2 mugs and a kettle, 71.97 USD, mug stock 3 of 5) paid through
        /// the sample PaymentIntent.
        async fn new() -> Self {
            let world = OrderWorld::with_sample_order().await;
            let ledger = Arc::new(InMemoryPaymentLedger::new(world.orders.clone()));
            ledger.remember_intent(&order_id(), SAMPLE_INTENT).await.unwrap();
            let orders = Arc::new(FlakyOrders {
                inner: world.orders.clone(),
                down: AtomicBool::new(false),
                customer_cancels_first: AtomicBool::new(false),
            });
            let deps = Deps {
                orders: orders.clone(),
                ledger: ledger.clone(),
                idempotency: world.idempotency.clone(),
                signing_secret: WebhookSecret::parse(SECRET).unwrap(),
            };
            Self {
                world,
                ledger,
                orders,
                deps,
            }
        }

        async fn send(&self, request: Request) -> Response<Body> {
            handle(&self.deps, request).await
        }

        async fn order(&self) -> Order {
            self.world.sample_order().await
        }
    }

    fn order_id() -> OrderId {
        OrderId::parse(SAMPLE_ORDER_ID).unwrap()
    }

    fn now() -> i64 {
        i64::try_from(domain::unix_now()).unwrap()
    }

    /// `request` with its body signed as Stripe signs it at `timestamp`.
    fn sign_request(mut request: Request, timestamp: i64) -> Request {
        let header = webhook::sign(SECRET.as_bytes(), timestamp, request.body().as_ref());
        request
            .headers_mut()
            .insert(SIGNATURE_HEADER, HeaderValue::from_str(&header).unwrap());
        request
    }

    /// The event file's request, signed at `timestamp`.
    fn signed_at(event_json: &str, timestamp: i64) -> Request {
        sign_request(request(event_json), timestamp)
    }

    fn signed(event_json: &str) -> Request {
        signed_at(event_json, now())
    }

    /// The event file's request with its body edited by `edit` (as JSON), then signed.
    fn signed_with(event_json: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Request {
        let mut request = request(event_json);
        let mut body: serde_json::Value = serde_json::from_slice(request.body().as_ref()).unwrap();
        edit(&mut body);
        *request.body_mut() = Body::from(body.to_string());
        sign_request(request, now())
    }

    fn status_of(order: &Order) -> (OrderStatus, PaymentStatus) {
        (order.status, order.payment_status)
    }

    fn assert_received(response: Response<Body>) {
        assert_eq!(response.status(), 200, "{:?}", response.body());
        assert_eq!(json_of(&response), serde_json::json!({"received": true}));
    }

    #[tokio::test]
    async fn succeeded_confirms_a_pending_order() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let order = fixture.order().await;
        assert_eq!(status_of(&order), (OrderStatus::Confirmed, PaymentStatus::Paid));
        assert_eq!(fixture.world.stock(MUG_ID).await, 3, "a paid order keeps its stock");
        assert_eq!(
            fixture
                .world
                .idempotency
                .record_status("stripe-event#evt_3SampleSucceeded01"),
            Some(RecordStatus::Completed)
        );
    }

    #[tokio::test]
    async fn the_same_event_twice_changes_nothing_the_second_time() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let confirmed = fixture.order().await;
        // The second delivery is answered from the event's record: the orders are not even read.
        fixture.orders.down.store(true, Ordering::SeqCst);
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        fixture.orders.down.store(false, Ordering::SeqCst);
        assert_eq!(fixture.order().await, confirmed);
    }

    #[tokio::test]
    async fn a_redelivered_decline_does_not_cancel_twice() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(FAILED)).await);
        let cancelled = fixture.order().await;
        assert_received(fixture.send(signed(FAILED)).await);
        assert_eq!(fixture.order().await, cancelled);
        assert_eq!(fixture.world.stock(MUG_ID).await, 5, "released once");
        assert_eq!(fixture.world.stock(KETTLE_ID).await, 10);
    }

    #[tokio::test]
    async fn payment_failed_declines_and_releases_the_stock() {
        let fixture = Fixture::new().await;
        assert_eq!(fixture.world.stock(MUG_ID).await, 3);
        assert_received(fixture.send(signed(FAILED)).await);
        let order = fixture.order().await;
        assert_eq!(status_of(&order), (OrderStatus::Cancelled, PaymentStatus::Declined));
        assert_eq!(order.cancel_reason, Some(CancelReason::PaymentDeclined));
        assert_eq!(fixture.world.stock(MUG_ID).await, 5);
        assert_eq!(fixture.world.stock(KETTLE_ID).await, 10);
    }

    #[tokio::test]
    async fn payment_failed_after_succeeded_changes_nothing() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let confirmed = fixture.order().await;
        assert_received(fixture.send(signed(FAILED)).await);
        assert_received(fixture.send(signed(CANCELED)).await);
        assert_eq!(fixture.order().await, confirmed);
        assert_eq!(fixture.world.stock(MUG_ID).await, 3, "nothing released");
    }

    #[tokio::test]
    async fn canceled_expires_a_pending_order_and_releases_its_stock() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(CANCELED)).await);
        let order = fixture.order().await;
        assert_eq!(status_of(&order), (OrderStatus::Cancelled, PaymentStatus::Pending));
        assert_eq!(order.cancel_reason, Some(CancelReason::PaymentExpired));
        assert_eq!(fixture.world.stock(MUG_ID).await, 5);
        assert_eq!(fixture.world.stock(KETTLE_ID).await, 10);
    }

    #[tokio::test]
    async fn canceled_after_the_customer_authenticated_leaves_nothing_to_expire() {
        let fixture = Fixture::new().await;
        let action = domain::PaymentAction {
            client_secret: "pi_3SampleIntent0001_secret_x".into(),
            expires_at: "2099-01-01T00:00:00Z".into(),
        };
        assert!(fixture.ledger.require_action(&order_id(), &action).await.unwrap());
        assert_received(fixture.send(signed(CANCELED)).await);
        let order = fixture.order().await;
        assert_eq!(status_of(&order), (OrderStatus::Cancelled, PaymentStatus::Pending));
        assert_eq!(order.payment_action, None, "the customer's secret goes with the wait");
    }

    #[tokio::test]
    async fn succeeded_for_a_cancelled_order_owes_a_refund() {
        let fixture = Fixture::new().await;
        // The customer cancelled while authenticating: the order was never paid, its stock released.
        fixture.world.set_sample_status(OrderStatus::Cancelled).await;
        assert_eq!(fixture.order().await.payment_status, PaymentStatus::Pending);
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let order = fixture.order().await;
        assert_eq!(
            status_of(&order),
            (OrderStatus::Cancelled, PaymentStatus::RefundPending)
        );
        assert_eq!(fixture.ledger.refund_owed(&order_id()).await.unwrap(), Some(7197));
        assert_eq!(
            fixture.world.stock(MUG_ID).await,
            5,
            "released once, by the cancellation"
        );
    }

    #[tokio::test]
    async fn succeeded_racing_the_customers_cancel_owes_a_refund() {
        let fixture = Fixture::new().await;
        // Read PENDING, but cancelled by the customer before the confirmation is written.
        fixture.orders.customer_cancels_first.store(true, Ordering::SeqCst);
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let order = fixture.order().await;
        assert_eq!(
            status_of(&order),
            (OrderStatus::Cancelled, PaymentStatus::RefundPending)
        );
        assert_eq!(order.cancel_reason, Some(CancelReason::CustomerCancelled));
        assert_eq!(fixture.ledger.refund_owed(&order_id()).await.unwrap(), Some(7197));
        assert_eq!(
            fixture.world.stock(MUG_ID).await,
            5,
            "released once, by the cancellation"
        );
    }

    #[tokio::test]
    async fn succeeded_for_a_declined_order_owes_a_refund() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(FAILED)).await);
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let order = fixture.order().await;
        assert_eq!(
            status_of(&order),
            (OrderStatus::Cancelled, PaymentStatus::RefundPending)
        );
        assert_eq!(fixture.world.stock(MUG_ID).await, 5);
    }

    #[tokio::test]
    async fn succeeded_for_an_order_already_refunded_owes_nothing_more() {
        let fixture = Fixture::new().await;
        fixture.world.set_sample_status(OrderStatus::Cancelled).await;
        fixture.ledger.owe_refund(&order_id(), 7197).await.unwrap();
        fixture.ledger.refund_made(&order_id()).await.unwrap();
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        assert_eq!(fixture.order().await.payment_status, PaymentStatus::Refunded);
        assert_eq!(fixture.ledger.refund_owed(&order_id()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn charge_refunded_settles_a_refund_owed() {
        let fixture = Fixture::new().await;
        fixture.world.set_sample_status(OrderStatus::Cancelled).await;
        fixture.ledger.owe_refund(&order_id(), 7197).await.unwrap();
        // The sample charge.refunded arrives base64-encoded, as API Gateway may pass a body.
        assert_received(fixture.send(signed(REFUNDED)).await);
        assert_eq!(fixture.order().await.payment_status, PaymentStatus::Refunded);
        assert_eq!(fixture.ledger.refund_owed(&order_id()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_partial_refund_settles_nothing() {
        let fixture = Fixture::new().await;
        fixture.world.set_sample_status(OrderStatus::Cancelled).await;
        fixture.ledger.owe_refund(&order_id(), 7197).await.unwrap();
        let partial = signed_with(REFUNDED, |body| {
            body["data"]["object"]["refunded"] = false.into();
            body["data"]["object"]["amount_refunded"] = 1000.into();
        });
        assert_received(fixture.send(partial).await);
        assert_eq!(fixture.order().await.payment_status, PaymentStatus::RefundPending);
    }

    #[tokio::test]
    async fn charge_refunded_for_an_order_owed_nothing_changes_nothing() {
        let fixture = Fixture::new().await;
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        let confirmed = fixture.order().await;
        assert_received(fixture.send(signed(REFUNDED)).await);
        assert_eq!(fixture.order().await, confirmed);
    }

    async fn assert_refused_and_unchanged(fixture: &Fixture, request: Request, detail: &str) {
        let before = fixture.order().await;
        let response = fixture.send(request).await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem = json_of(&response);
        let text = problem["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{text}");
        assert!(!problem.to_string().contains(SECRET), "never echoes the secret");
        assert_eq!(fixture.order().await, before);
        assert_eq!(fixture.world.stock(MUG_ID).await, 3);
        assert_eq!(
            fixture
                .world
                .idempotency
                .record_status("stripe-event#evt_3SampleSucceeded01"),
            None,
            "no record of it"
        );
    }

    #[tokio::test]
    async fn a_forged_signature_is_refused_and_changes_nothing() {
        let fixture = Fixture::new().await;
        let mut forged = request(SUCCEEDED);
        let header = webhook::sign(b"whsec_someone_elses_secret_000000", now(), forged.body().as_ref());
        forged
            .headers_mut()
            .insert(SIGNATURE_HEADER, HeaderValue::from_str(&header).unwrap());
        assert_refused_and_unchanged(&fixture, forged, "signature matches").await;
    }

    #[tokio::test]
    async fn a_tampered_body_is_refused_and_changes_nothing() {
        let fixture = Fixture::new().await;
        let mut tampered = signed(SUCCEEDED);
        let body = String::from_utf8(tampered.body().to_vec())
            .unwrap()
            .replace("7197", "1");
        *tampered.body_mut() = Body::from(body);
        assert_refused_and_unchanged(&fixture, tampered, "signature matches").await;
    }

    #[tokio::test]
    async fn a_stale_timestamp_is_refused_and_changes_nothing() {
        let fixture = Fixture::new().await;
        let stale = signed_at(SUCCEEDED, now() - webhook::TOLERANCE_SECS - 1);
        assert_refused_and_unchanged(&fixture, stale, "timestamp").await;
        let future = signed_at(SUCCEEDED, now() + webhook::TOLERANCE_SECS + 60);
        assert_refused_and_unchanged(&fixture, future, "timestamp").await;
    }

    #[tokio::test]
    async fn a_missing_or_garbled_signature_header_is_refused_and_changes_nothing() {
        let fixture = Fixture::new().await;
        let mut missing = signed(SUCCEEDED);
        missing.headers_mut().remove(SIGNATURE_HEADER);
        assert_refused_and_unchanged(&fixture, missing, "missing").await;
        // The sample file's placeholder header, as a replay of the file without signing would send it.
        assert_refused_and_unchanged(&fixture, request(SUCCEEDED), "signature matches").await;
        let mut garbled = signed(SUCCEEDED);
        garbled
            .headers_mut()
            .insert(SIGNATURE_HEADER, HeaderValue::from_static("garbage"));
        assert_refused_and_unchanged(&fixture, garbled, "malformed").await;
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_before_anything() {
        let fixture = Fixture::new().await;
        let oversized = signed_with(SUCCEEDED, |body| {
            body["data"]["object"]["description"] = "x".repeat(MAX_BODY_BYTES).into();
        });
        let before = fixture.order().await;
        let response = fixture.send(oversized).await;
        assert_eq!(response.status(), 413);
        assert_eq!(fixture.order().await, before);
    }

    #[tokio::test]
    async fn a_signed_body_that_is_not_an_event_is_a_400() {
        let fixture = Fixture::new().await;
        let not_an_event = signed_with(SUCCEEDED, |body| {
            body["data"]["object"]["amount"] = "lots".into();
        });
        let response = fixture.send(not_an_event).await;
        assert_eq!(response.status(), 400);
        assert_eq!(fixture.order().await.status, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn an_unknown_event_type_is_acknowledged_and_changes_nothing() {
        let fixture = Fixture::new().await;
        let before = fixture.order().await;
        assert_received(fixture.send(signed(UNKNOWN)).await);
        assert_eq!(fixture.order().await, before);
        assert_eq!(
            fixture
                .world
                .idempotency
                .record_status("stripe-event#evt_3SampleCustomer00001"),
            None,
            "nothing to remember"
        );
    }

    #[tokio::test]
    async fn another_payment_intent_than_the_stored_one_is_ignored() {
        let fixture = Fixture::new().await;
        for event in [SUCCEEDED, FAILED, CANCELED] {
            let foreign = signed_with(event, |body| {
                body["data"]["object"]["id"] = "pi_3SomeoneElsesIntent".into();
            });
            assert_received(fixture.send(foreign).await);
        }
        let order = fixture.order().await;
        assert_eq!(status_of(&order), (OrderStatus::Pending, PaymentStatus::Pending));
        assert_eq!(fixture.world.stock(MUG_ID).await, 3);
    }

    #[tokio::test]
    async fn a_charge_of_another_payment_intent_settles_no_refund() {
        let fixture = Fixture::new().await;
        fixture.world.set_sample_status(OrderStatus::Cancelled).await;
        fixture.ledger.owe_refund(&order_id(), 7197).await.unwrap();
        let foreign = signed_with(REFUNDED, |body| {
            body["data"]["object"]["payment_intent"] = "pi_3SomeoneElsesIntent".into();
        });
        assert_received(fixture.send(foreign).await);
        assert_eq!(fixture.order().await.payment_status, PaymentStatus::RefundPending);
    }

    #[tokio::test]
    async fn an_amount_or_currency_other_than_the_orders_settles_nothing() {
        let fixture = Fixture::new().await;
        let short = signed_with(SUCCEEDED, |body| {
            body["data"]["object"]["amount"] = 100.into();
            body["data"]["object"]["amount_received"] = 100.into();
        });
        assert_received(fixture.send(short).await);
        let euros = signed_with(SUCCEEDED, |body| {
            body["id"] = "evt_3SampleSucceededEur".into();
            body["data"]["object"]["currency"] = "eur".into();
        });
        assert_received(fixture.send(euros).await);
        assert_eq!(fixture.order().await.status, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn events_for_no_order_of_ours_are_acknowledged_and_ignored() {
        let fixture = Fixture::new().await;
        let cases: [fn(&mut serde_json::Value); 3] = [
            |body| body["data"]["object"]["metadata"] = serde_json::json!({}),
            |body| body["data"]["object"]["metadata"]["order_id"] = "not-an-order-id".into(),
            |body| {
                body["data"]["object"]["metadata"]["order_id"] = "0190f5a4-7b3e-7c1a-9d2e-0000000000ff".into();
            },
        ];
        for (index, edit) in cases.into_iter().enumerate() {
            let request = signed_with(SUCCEEDED, |body| {
                body["id"] = format!("evt_3NotOurs{index}").into();
                edit(body);
            });
            assert_received(fixture.send(request).await);
        }
        assert_eq!(fixture.order().await.status, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn without_a_stored_payment_intent_the_orders_own_event_still_settles_it() {
        let world = OrderWorld::with_sample_order().await;
        let deps = Deps {
            orders: world.orders.clone(),
            ledger: Arc::new(InMemoryPaymentLedger::new(world.orders.clone())),
            idempotency: world.idempotency.clone(),
            signing_secret: WebhookSecret::parse(SECRET).unwrap(),
        };
        assert_eq!(world.sample_order().await.payment_intent_id, None);
        assert_received(handle(&deps, signed(SUCCEEDED)).await);
        assert_eq!(world.sample_order().await.status, OrderStatus::Confirmed);
    }

    #[tokio::test]
    async fn a_storage_failure_is_a_503_and_the_redelivery_is_handled() {
        let fixture = Fixture::new().await;
        fixture.orders.down.store(true, Ordering::SeqCst);
        let response = fixture.send(signed(SUCCEEDED)).await;
        assert_eq!(response.status(), 503);
        assert_eq!(
            fixture
                .world
                .idempotency
                .record_status("stripe-event#evt_3SampleSucceeded01"),
            None,
            "the claim is released"
        );
        fixture.orders.down.store(false, Ordering::SeqCst);
        assert_eq!(fixture.order().await.status, OrderStatus::Pending);
        assert_received(fixture.send(signed(SUCCEEDED)).await);
        assert_eq!(fixture.order().await.status, OrderStatus::Confirmed);
    }

    #[tokio::test]
    async fn an_event_being_handled_elsewhere_is_retried_later() {
        let fixture = Fixture::new().await;
        fixture
            .world
            .idempotency
            .claim("stripe-event#evt_3SampleSucceeded01", "payment_intent.succeeded")
            .await
            .unwrap();
        let response = fixture.send(signed(SUCCEEDED)).await;
        assert_eq!(response.status(), 409, "not 2xx: Stripe delivers it again");
        assert_eq!(fixture.order().await.status, OrderStatus::Pending);
    }

    #[test]
    fn the_signing_secret_is_read_from_the_stripe_keys_and_never_printed() {
        let keys = r#"{"secret_key": "sk_test_abc", "webhook_secret": "whsec_0123456789abcdef0123"}"#;
        let secret = signing_secret("shop/stripe", &SecretString::new(keys)).unwrap();
        assert_eq!(secret.expose(), "whsec_0123456789abcdef0123");
        assert!(!format!("{secret:?}").contains("whsec_0"));
        for bad in [
            r#"{"secret_key": "sk_test_abc"}"#,
            r#"{"secret_key": "sk_test_abc", "webhook_secret": "sk_test_abc"}"#,
            "whsec_plain",
        ] {
            let error = signing_secret("shop/stripe", &SecretString::new(bad)).unwrap_err();
            let chain = format!("{error} {error:?}");
            assert!(chain.contains("shop/stripe"), "{chain}");
            assert!(
                !chain.contains("sk_test_abc") && !chain.contains("whsec_plain"),
                "{chain}"
            );
        }
    }

    #[test]
    fn metric_dimensions_are_bounded() {
        assert_eq!(type_label("payment_intent.succeeded"), "payment_intent.succeeded");
        assert_eq!(type_label("charge.refunded"), "charge.refunded");
        assert_eq!(type_label("customer.created"), "other");
    }
}
