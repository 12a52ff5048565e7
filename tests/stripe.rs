//! Payments with Stripe, end to end, on the third stack `make test-e2e` deploys
//! (`SHOP_STRIPE_API_URL`: `PaymentProvider=stripe`, `StuckOrderMinutes`, `SweepIntervalMinutes` and
//! `PaymentActionMinutes` 1) against the localstripe emulator (`SHOP_STRIPE_URL`), whose webhooks
//! reach the stack's `POST /api/payments/stripe/webhook`.
//!
//! Each test places its own orders through HTTP like a client, plays the customer's part at the
//! emulator as Stripe.js would (3-D Secure), and checks the money against the emulator's own
//! PaymentIntents and refunds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use domain::{Role, UserId};
use e2e::stripe_emulator::StripeEmulator;
use e2e::{Api, Customer, POLL_EVERY, assert_field_error, env_var, mentioning, mint_token, unique_category, unix_now};
use reqwest::Method;
use serde_json::{Value, json};

/// Past `PaymentActionMinutes` (1) and a sweep (every minute, for orders waiting a minute): the
/// slowest settlement these tests wait for.
const SWEEP_SETTLES_WITHIN: Duration = Duration::from_secs(200);
/// A webhook (localstripe sends it a second after the change) or the payment worker.
const SETTLES_WITHIN: Duration = Duration::from_secs(45);
const WEBHOOK: &str = "/api/payments/stripe/webhook";
/// A card whose PaymentMethod asks for 3-D Secure, on Stripe's test mode and on localstripe.
const THREE_D_SECURE_CARD: &str = "4000002760003184";

fn shop() -> Api {
    Api::at_url(&env_var("SHOP_STRIPE_API_URL"))
}

/// An admin of the Stripe stack: a token signed with its key (identity comes from the token alone).
fn admin() -> String {
    mint_token(
        &env_var("SHOP_STRIPE_JWT_SECRET"),
        &UserId::generate().to_string(),
        Role::Admin,
        unix_now(),
    )
}

/// The stack's Stripe emulator, with the stack's key.
fn stripe() -> StripeEmulator {
    StripeEmulator::new(&env_var("SHOP_STRIPE_URL"), &env_var("SHOP_STRIPE_SECRET_KEY"))
}

/// A customer, and a product of their own to buy (10 in stock at 12.50).
async fn buyer(shop: &Api) -> (Customer, String) {
    let product = shop
        .create_product(&admin(), "Stripe mug", &unique_category(), 1250, 10)
        .await;
    (shop.customer().await, product["id"].as_str().unwrap().to_owned())
}

async fn place(shop: &Api, customer: &Customer, product_id: &str, token: Option<&str>) -> e2e::Reply {
    let mut body = json!({"items": [{"product_id": product_id, "quantity": 2}]});
    if let Some(token) = token {
        body["payment_token"] = json!(token);
    }
    shop.place_order(Some(&customer.token), &body, None).await
}

async fn placed(shop: &Api, customer: &Customer, product_id: &str, token: &str) -> String {
    let reply = place(shop, customer, product_id, Some(token)).await;
    reply.expect(201)["id"].as_str().unwrap().to_owned()
}

/// Polls the owner's view of the order until `done` holds, failing after `within`.
async fn await_order(
    shop: &Api,
    token: &str,
    order_id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let order = shop.order(token, order_id).await;
        if done(&order) {
            return order;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order {order_id} did not settle as expected within {within:?}: {order}"
        );
        tokio::time::sleep(POLL_EVERY * 4).await;
    }
}

fn is(order: &Value, status: &str, payment_status: &str) -> bool {
    order["status"] == status && order["payment_status"] == payment_status
}

/// An order whose card asks for 3-D Secure, once the shop has asked the customer: the order, its
/// PaymentIntent's id and the client secret the owner sees.
async fn awaiting_authentication(shop: &Api, stripe: &StripeEmulator) -> (Customer, String, String, String, String) {
    let (customer, product_id) = buyer(shop).await;
    let method = stripe.payment_method(THREE_D_SECURE_CARD).await;
    let order_id = placed(shop, &customer, &product_id, &method).await;
    let order = await_order(shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["payment_status"] != "pending"
    })
    .await;
    assert!(is(&order, "PENDING", "action_required"), "{order}");
    let secret = order["payment_action"]["client_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("the owner sees the payment action: {order}"))
        .to_owned();
    let intent = stripe.intent_of(&order_id).await;
    assert_eq!(intent["status"], "requires_action");
    assert_eq!(intent["client_secret"], secret.as_str());
    let intent_id = intent["id"].as_str().unwrap().to_owned();
    (customer, product_id, order_id, intent_id, secret)
}

/// A `payment_intent.*` event as Stripe sends it, for the PaymentIntent `intent` of `order_id`.
fn intent_event(event_id: &str, kind: &str, intent: &Value, created: u64) -> Vec<u8> {
    json!({
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": {"object": intent},
    })
    .to_string()
    .into_bytes()
}

/// Delivers `body` to the stack's webhook with `signature` (none: no header).
async fn deliver(shop: &Api, body: &[u8], signature: Option<&str>) -> e2e::Reply {
    let headers: Vec<(&str, &str)> = signature.map(|value| ("stripe-signature", value)).into_iter().collect();
    shop.send(
        Method::POST,
        WEBHOOK,
        None,
        Some("application/json"),
        Some(body.to_vec()),
        &headers,
    )
    .await
}

fn signed(body: &[u8], at: u64) -> String {
    stripe_client::webhook::sign(env_var("SHOP_STRIPE_WEBHOOK_SECRET").as_bytes(), at as i64, body)
}

#[tokio::test]
async fn an_approved_card_confirms_the_order_with_one_payment_intent_for_its_total() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, product_id) = buyer(&shop).await;
    let order_id = placed(&shop, &customer, &product_id, "pm_card_visa").await;
    let order = await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CONFIRMED", "paid"), "{order}");
    assert!(order.get("payment_action").is_none(), "{order}");
    let intent = stripe.intent_of(&order_id).await;
    assert_eq!(
        (intent["status"].as_str(), intent["amount"].as_i64()),
        (Some("succeeded"), Some(2500))
    );
    assert_eq!(intent["currency"], "usd");
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_releases_its_stock() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, product_id) = buyer(&shop).await;
    let order_id = placed(&shop, &customer, &product_id, "pm_card_chargeCustomerFail").await;
    let order = await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CANCELLED", "declined"), "{order}");
    assert_eq!(order["cancel_reason"], "payment_declined");
    assert_eq!(shop.stock(&product_id).await, 10, "the stock came back");
    let intent = stripe.intent_of(&order_id).await;
    assert_ne!(intent["status"], "succeeded");
}

#[tokio::test]
async fn without_a_payment_method_id_a_placement_is_refused_and_changes_nothing() {
    let shop = shop();
    let (customer, product_id) = buyer(&shop).await;
    for token in [None, Some("tok_visa"), Some("pm_"), Some("pm_card visa")] {
        let reply = place(&shop, &customer, &product_id, token).await;
        assert_eq!(reply.status, 400, "{token:?}: {}", reply.describe());
        assert_field_error(&reply, "payment_token");
    }
    assert_eq!(shop.stock(&product_id).await, 10, "nothing was reserved");
    assert!(
        shop.all_orders(&customer.token, None).await.is_empty(),
        "nothing was placed"
    );
}

#[tokio::test]
async fn three_d_secure_completed_by_the_customer_confirms_the_order_through_the_webhook() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, _, order_id, intent_id, secret) = awaiting_authentication(&shop, &stripe).await;

    // The client secret is the owner's alone: an admin's read of the order does not carry it.
    let as_admin = shop.order(&admin(), &order_id).await;
    assert_eq!(as_admin["payment_status"], "action_required");
    assert!(as_admin.get("payment_action").is_none(), "{as_admin}");

    stripe.authenticate(&intent_id, &secret, true).await;
    let order = await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CONFIRMED", "paid"), "{order}");
    assert!(
        order.get("payment_action").is_none(),
        "the secret goes once paid: {order}"
    );
    assert_eq!(stripe.intent_of(&order_id).await["status"], "succeeded");
}

#[tokio::test]
async fn three_d_secure_failed_declines_the_order_and_releases_its_stock() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, product_id, order_id, intent_id, secret) = awaiting_authentication(&shop, &stripe).await;
    // The emulator sends no webhook for a failed authentication: the sweep asks Stripe.
    stripe.authenticate(&intent_id, &secret, false).await;
    let order = await_order(&shop, &customer.token, &order_id, SWEEP_SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CANCELLED", "declined"), "{order}");
    assert_eq!(order["cancel_reason"], "payment_declined");
    assert_eq!(shop.stock(&product_id).await, 10);
}

#[tokio::test]
async fn three_d_secure_never_completed_expires_the_order_and_cancels_its_payment_intent() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, product_id, order_id, _, _) = awaiting_authentication(&shop, &stripe).await;
    let order = await_order(&shop, &customer.token, &order_id, SWEEP_SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CANCELLED", "pending"), "never charged: {order}");
    assert_eq!(order["cancel_reason"], "payment_expired");
    assert_eq!(shop.stock(&product_id).await, 10);
    assert_eq!(stripe.intent_of(&order_id).await["status"], "canceled");
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_it_through_stripe_once() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, product_id) = buyer(&shop).await;
    let order_id = placed(&shop, &customer, &product_id, "pm_card_visa").await;
    await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        is(order, "CONFIRMED", "paid")
    })
    .await;
    shop.post_empty(&format!("/api/orders/{order_id}/cancel"), Some(&customer.token))
        .await
        .expect(200);
    let order = await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["payment_status"] == "refunded"
    })
    .await;
    assert_eq!(order["status"], "CANCELLED");
    let intent = stripe.intent_of(&order_id).await;
    let refunds = stripe.refunds_of(intent["id"].as_str().unwrap()).await;
    assert_eq!(refunds.len(), 1, "refunded once: {refunds:#?}");
    assert_eq!(refunds[0]["amount"], 2500);
}

#[tokio::test]
async fn a_forged_stale_or_unsigned_webhook_is_refused_and_changes_nothing() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, _, order_id, intent_id, _) = awaiting_authentication(&shop, &stripe).await;
    // What a forger would send: the order's PaymentIntent, "succeeded".
    let mut intent = stripe.intent_of(&order_id).await;
    intent["status"] = json!("succeeded");
    intent["amount_received"] = intent["amount"].clone();
    let body = intent_event(
        &format!("evt_forged_{intent_id}"),
        "payment_intent.succeeded",
        &intent,
        unix_now(),
    );
    let wrong_key = stripe_client::webhook::sign(b"whsec_not_the_shops", unix_now() as i64, &body);
    let stale = signed(&body, unix_now() - 600);
    for (what, signature) in [
        ("wrong secret", Some(wrong_key.as_str())),
        ("stale", Some(stale.as_str())),
        ("unsigned", None),
        ("garbage", Some("t=1,v1=zz")),
    ] {
        let reply = deliver(&shop, &body, signature).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.describe());
    }
    let tampered = signed(&body, unix_now());
    let mut altered = body.clone();
    altered.extend_from_slice(b" ");
    assert_eq!(
        deliver(&shop, &altered, Some(&tampered)).await.status,
        400,
        "a body changed after signing"
    );
    let order = shop.order(&customer.token, &order_id).await;
    assert!(is(&order, "PENDING", "action_required"), "nothing changed: {order}");
}

#[tokio::test]
async fn the_same_webhook_twice_and_a_late_failure_settle_the_order_once() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, _, order_id, intent_id, secret) = awaiting_authentication(&shop, &stripe).await;
    let since = shop.order(&customer.token, &order_id).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let stale_failure = intent_event(
        &format!("evt_failed_{intent_id}"),
        "payment_intent.payment_failed",
        &stripe.intent_of(&order_id).await,
        unix_now() - 5,
    );
    stripe.authenticate(&intent_id, &secret, true).await;
    let succeeded = stripe.intent_of(&order_id).await;
    assert_eq!(succeeded["status"], "succeeded");
    let event = intent_event(
        &format!("evt_ok_{intent_id}"),
        "payment_intent.succeeded",
        &succeeded,
        unix_now(),
    );
    // Our delivery races the emulator's own (a second after the change); then ours again, then the
    // failure Stripe sent earlier, arriving last.
    for body in [&event, &event, &stale_failure] {
        let reply = deliver(&shop, body, Some(&signed(body, unix_now()))).await;
        assert_eq!(reply.status, 200, "{}", reply.describe());
    }
    let order = await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CONFIRMED", "paid"), "{order}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let order = shop.order(&customer.token, &order_id).await;
    assert!(
        is(&order, "CONFIRMED", "paid"),
        "a late failure changes nothing: {order}"
    );
    let confirmations = shop
        .await_notifications(&customer.token, None, &since, "the order's confirmation", |items| {
            let found = mentioning(items, "order.confirmed", &order_id);
            (!found.is_empty()).then_some(found.len())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = shop.notifications_since(&customer.token, None, &since).await;
    assert_eq!(
        (confirmations, mentioning(&again, "order.confirmed", &order_id).len()),
        (1, 1),
        "confirmed once, notified once"
    );
}

#[tokio::test]
async fn the_webhook_and_the_payment_worker_racing_on_one_order_settle_it_once() {
    let (shop, stripe) = (shop(), stripe());
    let (customer, product_id, order_id, intent_id, secret) = awaiting_authentication(&shop, &stripe).await;
    let since = shop.order(&customer.token, &order_id).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    stripe.authenticate(&intent_id, &secret, true).await;
    let succeeded = stripe.intent_of(&order_id).await;
    // Ten distinct deliveries at once (Stripe retrying, several endpoints), beside the emulator's
    // own webhook and the sweep's hand-off to the payment worker a minute later.
    let deliveries = (0..10).map(|n| {
        let shop = &shop;
        let body = intent_event(
            &format!("evt_race_{n}_{intent_id}"),
            "payment_intent.succeeded",
            &succeeded,
            unix_now(),
        );
        async move { deliver(shop, &body, Some(&signed(&body, unix_now()))).await.status }
    });
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let order = await_order(&shop, &customer.token, &order_id, SETTLES_WITHIN, |order| {
        order["status"] != "PENDING"
    })
    .await;
    assert!(is(&order, "CONFIRMED", "paid"), "{order}");
    assert_eq!(shop.stock(&product_id).await, 8, "reserved once, released never");
    let confirmed = shop
        .await_notifications(&customer.token, None, &since, "the order's confirmation", |items| {
            let found = mentioning(items, "order.confirmed", &order_id);
            (!found.is_empty()).then_some(found.len())
        })
        .await;
    assert_eq!(confirmed, 1, "one confirmation for one order");
    assert!(stripe.refunds_of(&intent_id).await.is_empty(), "nothing to give back");
}
