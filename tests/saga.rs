//! End-to-end: the order saga. Every placed order is picked up by the payment step within about a
//! second: the mock provider approves it (`CONFIRMED`), declines it on `tok_decline` (`CANCELLED` with
//! `cancel_reason: "payment_declined"`, its stock released: the compensation), or fails transiently on
//! `tok_error` (retried, then declined and compensated). Customers hear of each step in their notification
//! history; a cancel racing the payment step wins for good and releases the stock exactly once; a
//! confirmed order ships.
//!
//! Every test uses fresh customers and products in a category of its own, so tests run in parallel and
//! repeatedly.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{
    Api, Customer, Reply, SETTLE_TIMEOUT, assert_delivered_once, assert_problem, is_sent, mentioning, unique_category,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const PHONE: &str = "+14155550123";
/// The statuses an order can settle in once the payment step is done with it.
const SETTLED: [&str; 3] = ["CONFIRMED", "CANCELLED", "SHIPPED"];
/// How long to keep watching for something that must not happen (a late event or status change).
const GRACE: Duration = Duration::from_secs(4);

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

fn line(product_id: &str, quantity: i64) -> Value {
    json!({"product_id": product_id, "quantity": quantity})
}

/// A product in `category`, created by the admin; returns its id.
async fn product(api: &Api, admin: &str, name: &str, category: &str, price: i64, stock: i64) -> String {
    id_of(&api.create_product(admin, name, category, price, stock).await)
}

/// `POST /api/orders` with `lines` and `payment_token` (when given), sending `correlation_id` as
/// `X-Correlation-ID` (when given).
async fn send_order(
    api: &Api,
    customer: &Customer,
    lines: Value,
    payment_token: Option<&str>,
    correlation_id: Option<&str>,
) -> Reply {
    let mut body = json!({"items": lines});
    if let Some(token) = payment_token {
        body["payment_token"] = json!(token);
    }
    let headers: Vec<(&str, &str)> = correlation_id.map(|id| ("x-correlation-id", id)).into_iter().collect();
    api.send(
        Method::POST,
        "/api/orders",
        Some(&customer.token),
        Some("application/json"),
        Some(body.to_string().into_bytes()),
        &headers,
    )
    .await
}

/// Places the order and returns it, asserting it is created `PENDING` (201).
async fn place(api: &Api, customer: &Customer, lines: Value, payment_token: Option<&str>) -> Value {
    let reply = send_order(api, customer, lines, payment_token, None).await;
    let order = reply.expect(201).clone();
    assert_eq!(order["status"], "PENDING", "a new order is PENDING: {order}");
    order
}

async fn cancel(api: &Api, token: &str, order_id: &str) -> Reply {
    api.post_empty(&format!("/api/orders/{order_id}/cancel"), Some(token))
        .await
}

/// Waits for the payment step to settle the order and returns it.
async fn settled(api: &Api, customer: &Customer, order_id: &str) -> Value {
    api.await_order_status(&customer.token, order_id, &SETTLED, SETTLE_TIMEOUT)
        .await
}

/// Waits for a delivered notification of `event_type` on `channel` about `order_id` in the customer's
/// history and returns it.
async fn await_sent(api: &Api, customer: &Customer, event_type: &str, channel: &str, order_id: &str) -> Value {
    let what = format!(
        "a SENT {event_type} {channel} about order {order_id} for {}",
        customer.email
    );
    api.await_notifications(&customer.token, None, "", &what, |items| {
        items
            .iter()
            .find(|item| is_sent(item, event_type, channel, order_id))
            .cloned()
    })
    .await
}

/// Asserts that, after a grace period, the customer's history holds no `event_type` about `order_id`.
async fn assert_never_notified(api: &Api, customer: &Customer, event_type: &str, order_id: &str) {
    tokio::time::sleep(GRACE).await;
    let items = api.notifications_since(&customer.token, None, "").await;
    let found = mentioning(&items, event_type, order_id);
    assert!(
        found.is_empty(),
        "no {event_type} may be sent for order {order_id}, found: {found:?}"
    );
}

// ---------------------------------------------------------------------- approved

#[tokio::test]
async fn an_approved_payment_confirms_the_order_keeps_its_stock_and_tells_the_customer() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer_with_phone(Some(PHONE)).await;
    let category = unique_category();
    let mug = product(&api, &admin, "E2E saga mug", &category, 1299, 10).await;
    let correlation_id = format!("e2e-saga-{}", uuid::Uuid::new_v4().simple());

    // When the customer orders two mugs with a card the provider approves
    let started = Instant::now();
    let reply = send_order(
        &api,
        &customer,
        json!([line(&mug, 2)]),
        Some("tok_visa"),
        Some(&correlation_id),
    )
    .await;
    let placed = reply.expect(201).clone();
    let order_id = id_of(&placed);
    assert_eq!(placed["status"], "PENDING");
    assert_eq!(api.stock(&mug).await, 8);

    // Then the payment step confirms it within seconds, changing nothing else
    let confirmed = api.await_confirmed(&customer.token, &order_id).await;
    println!(
        "tok_visa order confirmed {} ms after placement",
        started.elapsed().as_millis()
    );
    assert!(confirmed.get("cancel_reason").is_none(), "{confirmed}");
    for field in ["id", "user_id", "items", "total_amount", "currency", "created_at"] {
        assert_eq!(confirmed[field], placed[field], "{field} changed on confirmation");
    }

    // And the stock stays reserved for it
    assert_eq!(api.stock(&mug).await, 8);

    // And an order.confirmed email about it, with its total, is delivered once to the customer,
    // carrying the correlation id of the placement request
    let email = await_sent(&api, &customer, "order.confirmed", "email", &order_id).await;
    assert_delivered_once(&email, &customer.email);
    assert!(
        email["subject"]
            .as_str()
            .is_some_and(|subject| subject.contains(&order_id)),
        "the subject names the order: {email}"
    );
    assert!(
        email["body"].as_str().is_some_and(|body| body.contains("$25.98")),
        "the body shows the total: {email}"
    );
    assert_eq!(email["correlation_id"], correlation_id.as_str(), "{email}");

    // And an order without a payment token is approved too, and nothing tells the customer of a
    // cancellation
    let other = id_of(&place(&api, &customer, json!([line(&mug, 1)]), None).await);
    api.await_confirmed(&customer.token, &other).await;
    await_sent(&api, &customer, "order.confirmed", "email", &other).await;
    assert_eq!(api.stock(&mug).await, 7);
    assert_never_notified(&api, &customer, "order.cancelled", &order_id).await;
    assert_eq!(
        api.order(&customer.token, &order_id).await["status"],
        "CONFIRMED",
        "a confirmed order stays confirmed"
    );
}

// ---------------------------------------------------------------------- declined

#[tokio::test]
async fn a_declined_payment_cancels_the_order_and_gives_its_stock_back_once() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer_with_phone(Some(PHONE)).await;
    let category = unique_category();
    let bowl = product(&api, &admin, "E2E saga bowl", &category, 900, 6).await;
    let plate = product(&api, &admin, "E2E saga plate", &category, 700, 4).await;

    // When the customer orders with a card the provider declines
    let order = place(
        &api,
        &customer,
        json!([line(&bowl, 2), line(&plate, 4)]),
        Some("tok_decline"),
    )
    .await;
    let order_id = id_of(&order);
    // The placement reserved both lines; the decline may release them between the two reads (the
    // bowl's is read first), so each read sees its line reserved or, once released, back in full.
    let seen = (api.stock(&bowl).await, api.stock(&plate).await);
    assert!(
        [(4, 0), (4, 4), (6, 4)].contains(&seen),
        "stock (bowl, plate) right after placement: {seen:?}"
    );

    // Then the payment step cancels it as declined
    let cancelled = settled(&api, &customer, &order_id).await;
    assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
    assert_eq!(cancelled["cancel_reason"], "payment_declined", "{cancelled}");
    assert_eq!(cancelled["items"], order["items"]);

    // And every line's stock is back where it was before the order
    assert_eq!((api.stock(&bowl).await, api.stock(&plate).await), (6, 4));

    // And the customer is told by email and, having a phone, by SMS
    let email = await_sent(&api, &customer, "order.cancelled", "email", &order_id).await;
    assert_delivered_once(&email, &customer.email);
    let sms = await_sent(&api, &customer, "order.cancelled", "sms", &order_id).await;
    assert_delivered_once(&sms, PHONE);

    // And the released stock can be bought again
    let again = place(&api, &customer, json!([line(&plate, 4)]), None).await;
    api.await_confirmed(&customer.token, &id_of(&again)).await;
    assert_eq!(api.stock(&plate).await, 0);

    // And cancelling the declined order answers 200 but gives nothing back a second time
    let reply = cancel(&api, &customer.token, &order_id).await;
    let body = reply.expect(200);
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(
        body["cancel_reason"], "payment_declined",
        "the first reason stands: {body}"
    );
    assert_eq!((api.stock(&bowl).await, api.stock(&plate).await), (6, 0));

    // And it cannot be shipped
    assert_problem(
        &api.post_empty(&format!("/api/orders/{order_id}/ship"), Some(&admin))
            .await,
        409,
    );

    // And it was never confirmed, nor announced as such
    assert_never_notified(&api, &customer, "order.confirmed", &order_id).await;
    let end = api.order(&customer.token, &order_id).await;
    assert_eq!(
        (end["status"].as_str(), end["cancel_reason"].as_str()),
        (Some("CANCELLED"), Some("payment_declined"))
    );
}

// ---------------------------------------------------------------------- transient failures

#[tokio::test]
async fn a_payment_failing_transiently_is_retried_then_declined_and_compensated() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer().await;
    let category = unique_category();
    let lamp = product(&api, &admin, "E2E saga lamp", &category, 3500, 5).await;

    // When the customer orders while the payment provider keeps failing
    let started = Instant::now();
    let order = place(&api, &customer, json!([line(&lamp, 2)]), Some("tok_error")).await;
    let order_id = id_of(&order);

    // Then the order stays PENDING, holding its stock, while the payment is retried
    assert_eq!(api.stock(&lamp).await, 3);
    let mut pending_seen_at = Duration::ZERO;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let end = loop {
        let now = api.order(&customer.token, &order_id).await;
        if now["status"] != "PENDING" {
            break now;
        }
        pending_seen_at = started.elapsed();
        assert!(
            Instant::now() < deadline,
            "order {order_id} is still PENDING after {SETTLE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    println!(
        "tok_error order: last seen PENDING at {} ms, settled by {} ms",
        pending_seen_at.as_millis(),
        took.as_millis()
    );
    // Retried with growing delays (at least two retries of at least one second each) before giving up
    assert!(
        took >= Duration::from_secs(2),
        "the order settled {took:?} after placement: a transient failure must be retried, not declined at once"
    );

    // And then declined: cancelled as payment_declined, its stock back
    assert_eq!(end["status"], "CANCELLED", "{end}");
    assert_eq!(end["cancel_reason"], "payment_declined", "{end}");
    assert_eq!(api.stock(&lamp).await, 5);

    // And the customer is told of the cancellation, and never of a confirmation
    let email = await_sent(&api, &customer, "order.cancelled", "email", &order_id).await;
    assert_delivered_once(&email, &customer.email);
    assert_never_notified(&api, &customer, "order.confirmed", &order_id).await;
    assert_eq!(api.order(&customer.token, &order_id).await["status"], "CANCELLED");
    assert_eq!(api.stock(&lamp).await, 5);
}

// ---------------------------------------------------------------------- cancel racing payment

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_the_payment_step_wins_for_good_and_releases_the_stock_once() {
    const ORDERS: usize = 20;
    const STOCK: i64 = 100;
    const TOKENS: [Option<&str>; 4] = [None, Some("tok_visa"), Some("tok_decline"), Some("tok_error")];
    let api = Arc::new(Api::from_env());
    let admin = api.admin_token().await;
    let category = unique_category();
    let item = product(&api, &admin, "E2E saga race", &category, 500, STOCK).await;
    let mut customers = Vec::new();
    for _ in 0..4 {
        customers.push(Arc::new(api.customer().await));
    }

    // When 20 orders (approved, declined and failing payments alike) are each cancelled by their
    // customer right after placement, all at once, while the payment step picks them up: the cancels
    // are spread over the first 1.5 s after each placement, so that some come before the payment step,
    // some while it runs and some after it is done
    let mut tasks = JoinSet::new();
    for n in 0..ORDERS {
        let api = Arc::clone(&api);
        let customer = Arc::clone(&customers[n % customers.len()]);
        let item = item.clone();
        tasks.spawn(async move {
            let quantity = 1 + i64::try_from(n % 3).expect("small");
            let order = place(
                &api,
                &customer,
                json!([line(&item, quantity)]),
                TOKENS[n % TOKENS.len()],
            )
            .await;
            let delay = u64::try_from(n * 79 % 1500).expect("small");
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let reply = cancel(&api, &customer.token, &id_of(&order)).await;
            (n, customer, order, quantity, reply)
        });
    }
    let mut runs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        runs.push(joined.expect("an order task panicked"));
    }
    runs.sort_by_key(|run| run.0);

    // Then every cancel answers 200 with the order CANCELLED (or, at worst, 409 for a concurrent change)
    let mut cancelled_by_request = 0;
    for (n, _, order, _, reply) in &runs {
        match reply.status {
            200 => {
                assert_eq!(reply.json["status"], "CANCELLED", "order {n}: {}", reply.text);
                assert_eq!(reply.json["id"], order["id"], "order {n}: {}", reply.text);
                cancelled_by_request += 1;
            }
            409 => {
                assert_problem(reply, 409);
            }
            _ => panic!("cancel of order {n}: expected 200 or 409, got {}", reply.describe()),
        }
    }

    // And once the payment step is done with them (every one settled, then a grace period for late
    // payment outcomes), each order ended in one status: CANCELLED for every 200 cancel
    for (_, customer, order, _, _) in &runs {
        settled(&api, customer, &id_of(order)).await;
    }
    tokio::time::sleep(GRACE).await;
    let mut finals: HashMap<String, Value> = HashMap::new();
    for (n, customer, order, _, reply) in &runs {
        let order_id = id_of(order);
        let end = api.order(&customer.token, &order_id).await;
        let status = end["status"].as_str().unwrap_or_default();
        assert!(
            status == "CANCELLED" || status == "CONFIRMED",
            "order {n} ({order_id}) ended {status}: {end}"
        );
        if reply.status == 200 {
            assert_eq!(
                status, "CANCELLED",
                "order {n} ({order_id}) was cancelled (200) and must stay so, but the payment step moved it on: {end}"
            );
        }
        finals.insert(order_id, end);
    }
    let by_reason = |reason: &str| finals.values().filter(|end| end["cancel_reason"] == reason).count();
    println!(
        "{ORDERS} orders cancelled while paid: {cancelled_by_request} cancels answered 200; final: {} customer_cancelled, \
         {} payment_declined, {} CONFIRMED",
        by_reason("customer_cancelled"),
        by_reason("payment_declined"),
        finals.values().filter(|end| end["status"] == "CONFIRMED").count()
    );

    // And the stock is conserved: what is left plus what the orders still hold is the opening stock
    let held: i64 = runs
        .iter()
        .filter(|(_, _, order, _, _)| finals[&id_of(order)]["status"] != "CANCELLED")
        .map(|(_, _, _, quantity, _)| quantity)
        .sum();
    assert_eq!(
        api.stock(&item).await + held,
        STOCK,
        "stock now + stock held by orders not cancelled must equal the opening stock"
    );

    // And each cancelled order was announced cancelled exactly once, and no order still CONFIRMED was
    // announced cancelled
    let mut confirmed_first = 0;
    for customer in &customers {
        let mine: Vec<&(usize, Arc<Customer>, Value, i64, Reply)> =
            runs.iter().filter(|run| run.1.id == customer.id).collect();
        let cancelled: Vec<String> = mine
            .iter()
            .map(|run| id_of(&run.2))
            .filter(|id| finals[id]["status"] == "CANCELLED")
            .collect();
        let what = format!("an order.cancelled email for each of {cancelled:?}");
        let items = api
            .await_notifications(&customer.token, None, "", &what, |items| {
                cancelled
                    .iter()
                    .all(|id| items.iter().any(|item| is_sent(item, "order.cancelled", "email", id)))
                    .then(|| items.to_vec())
            })
            .await;
        confirmed_first += mine
            .iter()
            .filter(|run| !mentioning(&items, "order.confirmed", &id_of(&run.2)).is_empty())
            .count();
        for run in &mine {
            let order_id = id_of(&run.2);
            let emails = mentioning(&items, "order.cancelled", &order_id)
                .into_iter()
                .filter(|item| item["channel"] == "email")
                .count();
            let expected = usize::from(finals[&order_id]["status"] == "CANCELLED");
            assert_eq!(emails, expected, "order.cancelled emails for order {order_id}");
        }
    }
    println!("{confirmed_first} of the {ORDERS} orders were confirmed (order.confirmed sent) before their cancel");
}

// ---------------------------------------------------------------------- shipping

#[tokio::test]
async fn a_confirmed_order_ships_and_the_customer_is_told() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer_with_phone(Some(PHONE)).await;
    let category = unique_category();
    let chair = product(&api, &admin, "E2E saga chair", &category, 9900, 5).await;
    let order_id = id_of(&place(&api, &customer, json!([line(&chair, 2)]), Some("tok_visa")).await);

    // Given the payment step confirmed the order
    api.await_confirmed(&customer.token, &order_id).await;
    await_sent(&api, &customer, "order.confirmed", "email", &order_id).await;

    // When an admin ships it
    let reply = api
        .post_empty(&format!("/api/orders/{order_id}/ship"), Some(&admin))
        .await;

    // Then it is SHIPPED, for the customer too, and its stock stays taken
    let shipped = reply.expect(200);
    assert_eq!(shipped["id"], order_id.as_str());
    assert_eq!(shipped["status"], "SHIPPED");
    assert_eq!(api.order(&customer.token, &order_id).await["status"], "SHIPPED");
    assert_eq!(api.stock(&chair).await, 3);

    // And the customer is told by email and, having a phone, by SMS
    let email = await_sent(&api, &customer, "order.shipped", "email", &order_id).await;
    assert_delivered_once(&email, &customer.email);
    assert!(
        email["subject"]
            .as_str()
            .is_some_and(|subject| subject.contains(&order_id)),
        "the subject names the order: {email}"
    );
    let sms = await_sent(&api, &customer, "order.shipped", "sms", &order_id).await;
    assert_delivered_once(&sms, PHONE);

    // And a shipped order can no longer be cancelled
    assert_problem(&cancel(&api, &customer.token, &order_id).await, 409);
    assert_eq!(api.order(&customer.token, &order_id).await["status"], "SHIPPED");
    assert_eq!(api.stock(&chair).await, 3);
}
