//! The Stripe adapter against localstripe, the local Stripe emulator (`make tools` installs it in
//! .venv/stripe): approve, decline, a payment method that does not exist, 3-D Secure passed and
//! failed, void, refund once, and a refused key, each on the in-memory ledger and an emulator of its
//! own (in memory, on the loopback address, a free port).
//!
//! Ignored by default (it starts Python servers):
//! `cargo test -p payments-worker --test stripe_localstripe -- --ignored`. Without the emulator
//! installed each test says so and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::OrderId;
use payments_worker::stripe::StripeProvider;
use payments_worker::{ActionOutcome, ChargeOutcome, ChargeRecord, ChargeRequest, PaymentProvider};
use store::memory::InMemoryPaymentLedger;
use store::payments::PaymentLedger;
use store::testing::{OrderWorld, SAMPLE_ORDER_ID};
use stripe_client::request::ApiRequest;
use stripe_client::resources::List;
use stripe_client::{PaymentIntent, SecretKey, StripeClient, StripeError};

/// localstripe's app, served in memory only (its own `start()` keeps state in /tmp/localstripe.pickle,
/// shared by every instance) and on the loopback address only (its `start()` listens everywhere).
const LAUNCHER: &str = r#"
import sys
from aiohttp import web
from localstripe import resources, server
resources.Store.try_load_from_disk = lambda store: None
resources.Store.dump_to_disk = lambda store: None
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"#;

const KEY: &str = "sk_test_local_payments_worker";
const CURRENCY: &str = "eur";

/// A localstripe process of this test's; stopped when dropped.
struct LocalStripe {
    child: Child,
    url: String,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/stripe/bin")
}

/// Starts localstripe on a free port and waits until it answers; `None` (said on stderr) when it is
/// not installed.
async fn local_stripe() -> Option<LocalStripe> {
    if !venv().join("localstripe").exists() {
        eprintln!("skipped: localstripe is not installed in .venv/stripe (make tools)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(venv().join("python"))
        .args(["-c", LAUNCHER, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("localstripe starts");
    let stripe = LocalStripe {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let probe = client(&stripe);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // It serves once an unknown PaymentIntent is a 404.
        match probe.retrieve_payment_intent("pi_none", false).await {
            Err(StripeError::NotFound { .. }) => return Some(stripe),
            _ if Instant::now() > deadline => panic!("localstripe did not start on port {port}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn client(stripe: &LocalStripe) -> StripeClient {
    StripeClient::new(&stripe.url, SecretKey::parse(KEY).unwrap()).unwrap()
}

/// The sample order, its ledger, and the provider over both.
struct Shop {
    world: OrderWorld,
    ledger: Arc<InMemoryPaymentLedger>,
    provider: StripeProvider,
    stripe: StripeClient,
    order_id: OrderId,
}

impl Shop {
    async fn new(stripe: &LocalStripe) -> Self {
        Self::with_client(client(stripe)).await
    }

    async fn with_client(stripe: StripeClient) -> Self {
        let world = OrderWorld::with_sample_order().await;
        let ledger = Arc::new(InMemoryPaymentLedger::new(world.orders.clone()));
        let provider = StripeProvider::new(stripe.clone(), ledger.clone());
        Self {
            world,
            ledger,
            provider,
            stripe,
            order_id: OrderId::parse(SAMPLE_ORDER_ID).unwrap(),
        }
    }

    async fn amount(&self) -> i64 {
        self.world.sample_order().await.total_amount
    }

    async fn charge(&self, token: &str) -> Result<ChargeOutcome, String> {
        let request = ChargeRequest {
            order_id: &self.order_id,
            amount: self.amount().await,
            currency: CURRENCY,
            token: Some(token),
        };
        self.provider.charge(&request).await.map_err(|error| error.0)
    }

    async fn intent_id(&self) -> Option<String> {
        self.ledger.intent_of(&self.order_id).await.unwrap()
    }

    /// Every PaymentIntent the emulator holds.
    async fn intents(&self) -> Vec<PaymentIntent> {
        let list: List<PaymentIntent> = self
            .stripe
            .execute(&ApiRequest::get("/v1/payment_intents?limit=100"))
            .await
            .unwrap();
        list.data
    }

    /// The customer's browser completing (or failing) 3-D Secure.
    async fn authenticate(&self, client_secret: &str, success: bool) -> Result<PaymentIntent, StripeError> {
        let intent_id = self.intent_id().await.unwrap();
        let path =
            format!("/v1/payment_intents/{intent_id}/_authenticate?client_secret={client_secret}&success={success}");
        self.stripe
            .execute(&ApiRequest::post(
                path,
                Vec::new(),
                format!("test-{intent_id}-authenticate"),
            ))
            .await
    }

    /// A card that asks for 3-D Secure (4000 0027 6000 3184), as a PaymentMethod.
    async fn three_d_secure_card(&self) -> String {
        let form = [
            ("type", "card"),
            ("card[number]", "4000002760003184"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .to_vec();
        let method: serde_json::Value = self
            .stripe
            .execute(&ApiRequest::post("/v1/payment_methods", form, "test-3ds-card"))
            .await
            .unwrap();
        method["id"].as_str().unwrap().to_owned()
    }

    /// What the provider says is held for the order.
    async fn held(&self) -> Option<ChargeRecord> {
        self.provider.find_charge(&self.order_id).await.unwrap()
    }
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_good_card_is_charged_once_and_found() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    let amount = shop.amount().await;

    assert_eq!(shop.charge("pm_card_visa").await, Ok(ChargeOutcome::Approved));
    let intent_id = shop.intent_id().await.expect("the intent is stored on the order");
    assert_eq!(
        shop.held().await,
        Some(ChargeRecord {
            amount,
            refunded: false
        })
    );
    // A redelivery reads the stored intent: approved again, and still one intent for the order.
    assert_eq!(shop.charge("pm_card_visa").await, Ok(ChargeOutcome::Approved));
    let intents = shop.intents().await;
    assert_eq!(intents.len(), 1, "one PaymentIntent per order");
    assert_eq!(intents[0].id, intent_id);
    assert_eq!(
        intents[0].metadata.get("order_id").map(String::as_str),
        Some(SAMPLE_ORDER_ID)
    );
    assert_eq!(intents[0].currency.as_deref(), Some(CURRENCY));
    assert_eq!(
        shop.provider.action_outcome(&shop.order_id).await.unwrap(),
        ActionOutcome::Charged(ChargeRecord {
            amount,
            refunded: false
        })
    );
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_declined_card_declines_and_holds_no_charge() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;

    assert_eq!(
        shop.charge("pm_card_chargeCustomerFail").await,
        Ok(ChargeOutcome::Declined)
    );
    assert!(shop.intent_id().await.is_some());
    assert_eq!(shop.held().await, None);
    // A redelivery finds the failed intent (requires_payment_method): declined, never re-confirmed.
    assert_eq!(
        shop.charge("pm_card_chargeCustomerFail").await,
        Ok(ChargeOutcome::Declined)
    );
    assert_eq!(shop.intents().await.len(), 1);
    // And voiding it leaves nothing that could still be paid.
    assert_eq!(shop.provider.void(&shop.order_id).await.unwrap(), None);
    assert_eq!(shop.intents().await[0].status.as_str(), "canceled");
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_payment_method_that_does_not_exist_declines() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;

    assert_eq!(shop.charge("pm_doesNotExist123").await, Ok(ChargeOutcome::Declined));
    assert_eq!(shop.intent_id().await, None, "no intent was created");
    assert_eq!(shop.held().await, None);
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn three_d_secure_waits_for_the_customer_then_charges() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    let card = shop.three_d_secure_card().await;

    let Ok(ChargeOutcome::ActionRequired { client_secret }) = shop.charge(&card).await else {
        panic!("3-D Secure is asked for")
    };
    let intent_id = shop.intent_id().await.unwrap();
    assert!(client_secret.starts_with(&format!("{intent_id}_secret_")));
    assert_eq!(
        shop.provider.action_outcome(&shop.order_id).await.unwrap(),
        ActionOutcome::Waiting
    );
    assert_eq!(shop.held().await, None, "nothing charged while waiting");
    // A redelivery while waiting hands out the same secret.
    assert_eq!(
        shop.charge(&card).await,
        Ok(ChargeOutcome::ActionRequired {
            client_secret: client_secret.clone()
        })
    );

    shop.authenticate(&client_secret, true).await.unwrap();

    let amount = shop.amount().await;
    let charged = ChargeRecord {
        amount,
        refunded: false,
    };
    assert_eq!(
        shop.provider.action_outcome(&shop.order_id).await.unwrap(),
        ActionOutcome::Charged(charged)
    );
    assert_eq!(shop.held().await, Some(charged));
    assert_eq!(shop.charge(&card).await, Ok(ChargeOutcome::Approved));
    assert_eq!(shop.intents().await.len(), 1);
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_failed_three_d_secure_fails_the_payment() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    let card = shop.three_d_secure_card().await;
    let Ok(ChargeOutcome::ActionRequired { client_secret }) = shop.charge(&card).await else {
        panic!("3-D Secure is asked for")
    };

    shop.authenticate(&client_secret, false).await.unwrap();

    assert_eq!(
        shop.provider.action_outcome(&shop.order_id).await.unwrap(),
        ActionOutcome::Failed
    );
    assert_eq!(shop.held().await, None);
    assert_eq!(shop.charge(&card).await, Ok(ChargeOutcome::Declined));
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_voided_payment_can_no_longer_complete() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    let card = shop.three_d_secure_card().await;
    let Ok(ChargeOutcome::ActionRequired { client_secret }) = shop.charge(&card).await else {
        panic!("3-D Secure is asked for")
    };

    assert_eq!(shop.provider.void(&shop.order_id).await.unwrap(), None);

    // The customer's late authentication is refused, and nothing is charged.
    let late = shop.authenticate(&client_secret, true).await;
    assert!(
        matches!(late, Err(StripeError::Rejected { status: 400, .. })),
        "{late:?}"
    );
    assert_eq!(
        shop.provider.action_outcome(&shop.order_id).await.unwrap(),
        ActionOutcome::Cancelled
    );
    assert_eq!(shop.held().await, None);
    assert_eq!(
        shop.provider.void(&shop.order_id).await.unwrap(),
        None,
        "voiding twice is fine"
    );
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn voiding_a_completed_payment_hands_back_its_charge() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    assert_eq!(shop.charge("pm_card_visa").await, Ok(ChargeOutcome::Approved));

    let charge = shop.provider.void(&shop.order_id).await.unwrap();

    assert_eq!(
        charge,
        Some(ChargeRecord {
            amount: shop.amount().await,
            refunded: false
        })
    );
    assert_eq!(shop.intents().await[0].status.as_str(), "succeeded", "not cancelled");
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_refund_is_made_once_however_often_it_is_asked() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    let amount = shop.amount().await;
    assert_eq!(shop.charge("pm_card_visa").await, Ok(ChargeOutcome::Approved));

    // localstripe ignores idempotency keys: only the adapter's check keeps the second from refunding.
    shop.provider.refund(&shop.order_id, amount).await.unwrap();
    shop.provider.refund(&shop.order_id, amount).await.unwrap();

    let intent_id = shop.intent_id().await.unwrap();
    let refunds = shop.stripe.list_refunds(&intent_id).await.unwrap();
    assert_eq!(refunds.data.len(), 1, "{:?}", refunds.data);
    assert_eq!(refunds.data[0].amount, amount);
    assert_eq!(shop.held().await, Some(ChargeRecord { amount, refunded: true }));
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_refund_with_no_stored_intent_is_an_error_not_a_success() {
    let Some(stripe) = local_stripe().await else { return };
    let shop = Shop::new(&stripe).await;
    let error = shop.provider.refund(&shop.order_id, 100).await.unwrap_err();
    assert!(error.0.contains("no PaymentIntent stored"), "{}", error.0);
}

#[tokio::test]
#[ignore = "starts localstripe"]
async fn a_refused_key_is_transient_never_a_decline() {
    let Some(stripe) = local_stripe().await else { return };
    // localstripe takes only sk_ keys: a restricted key stands in for a wrong one.
    let wrong = StripeClient::new(&stripe.url, SecretKey::parse("rk_test_wrong_key").unwrap()).unwrap();
    let shop = Shop::with_client(wrong).await;

    let outcome = shop.charge("pm_card_visa").await;

    let error = outcome.unwrap_err();
    assert!(error.contains("refused the API key"), "{error}");
    assert!(!error.contains("rk_test"), "{error}");
    assert_eq!(shop.intent_id().await, None);
    assert_eq!(shop.held().await, None);
}
