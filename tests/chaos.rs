//! The chaos suite (`make chaos`, and `make test`): the failure paths, proven. Each scenario runs on
//! a stack of its own whose `FaultInjection` injects one kind of fault (`scripts/local_stack.py
//! chaos` deploys them on a private emulator and passes `SHOP_CHAOS_STACKS`), drives traffic through
//! the API like clients, waits for the system to be quiet, and counts violations of the invariants:
//! - money: `CONFIRMED`/`SHIPPED` orders are `paid` with exactly one net charge in the mock
//!   provider's books; `CANCELLED` ones are `pending`, `declined` or `refunded` with no net charge;
//!   no order stays `PENDING` or `refund_pending`;
//! - stock, one reusable check: initial stock + adjustments - stock held by non-cancelled orders ==
//!   stock now;
//! - events and notifications: every committed order's notifications are sent, once per channel;
//! - writes: orders created == 201 answers, each adjustment applied once.
//!
//! Each scenario appends one row (scenario, operations, violations) to `SHOP_CHAOS_REPORT`, then
//! fails if any invariant was violated.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use e2e::stripe_emulator::StripeEmulator;
use e2e::{Api, Customer, env_var, unique_category};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// How long the system may take to become quiet once the traffic stops.
const QUIET_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(500);

/// One scenario's stack, as `SHOP_CHAOS_STACKS` describes it.
struct Stack {
    scenario: &'static str,
    api: Api,
    admin: String,
    outputs: Value,
    dynamodb: aws_sdk_dynamodb::Client,
}

async fn stack(scenario: &'static str) -> Stack {
    let stacks: Value = serde_json::from_str(&env_var("SHOP_CHAOS_STACKS")).expect("SHOP_CHAOS_STACKS is JSON");
    let info = &stacks[scenario];
    let api = Api::at_url(
        info["api_url"]
            .as_str()
            .unwrap_or_else(|| panic!("no stack for {scenario}")),
    );
    let admin = api
        .token(&env_var("SHOP_ADMIN_EMAIL"), &env_var("SHOP_ADMIN_PASSWORD"))
        .await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&e2e::emulator_sdk_config().await);
    Stack {
        scenario,
        api,
        admin,
        outputs: info["outputs"].clone(),
        dynamodb,
    }
}

/// Appends the scenario's row to the report, then fails the test if anything was violated.
fn report(scenario: &str, operations: usize, violations: &[String]) {
    let row = json!({"scenario": scenario, "operations": operations, "violations": violations.len()});
    let path = env_var("SHOP_CHAOS_REPORT");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{row}").unwrap();
    assert!(
        violations.is_empty(),
        "{scenario}: {} invariant violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// A product of a category of its own with `stock` units, and its id.
async fn product(stack: &Stack, price: i64, stock: i64) -> String {
    let created = stack
        .api
        .create_product(&stack.admin, "Chaos mug", &unique_category(), price, stock)
        .await;
    id_of(&created)
}

/// Every order of `customers`, as the admin lists them (all of them, including any whose answer
/// the client never saw).
async fn orders_of(stack: &Stack, customers: &[Customer]) -> Vec<Value> {
    let mut orders = Vec::new();
    for customer in customers {
        orders.extend(stack.api.all_orders(&stack.admin, Some(&customer.id)).await);
    }
    orders
}

/// Waits until no order of `customers` is `PENDING` or `refund_pending` (the system is quiet), and
/// returns them; a violation per order still unsettled after [`QUIET_TIMEOUT`].
async fn quiet_orders(stack: &Stack, customers: &[Customer], violations: &mut Vec<String>) -> Vec<Value> {
    let deadline = Instant::now() + QUIET_TIMEOUT;
    loop {
        let orders = orders_of(stack, customers).await;
        let unsettled: Vec<&Value> = orders
            .iter()
            .filter(|order| order["status"] == "PENDING" || order["payment_status"] == "refund_pending")
            .collect();
        if unsettled.is_empty() {
            return orders;
        }
        if Instant::now() > deadline {
            for order in unsettled {
                violations.push(format!(
                    "order {} never settled: {} / {}",
                    order["id"], order["status"], order["payment_status"]
                ));
            }
            return orders;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stock conservation, for each `(product id, initial stock)`: initial + adjustments applied -
/// units held by the non-cancelled `orders` == the stock now.
async fn stock_violations(stack: &Stack, products: &[(String, i64)], orders: &[Value]) -> Vec<String> {
    let mut violations = Vec::new();
    for (product_id, initial) in products {
        let inventory = stack
            .api
            .get(&format!("/api/inventory/{product_id}"), Some(&stack.admin))
            .await;
        let inventory = inventory.expect(200);
        let adjusted: i64 = inventory["adjustments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|adjustment| adjustment["delta"].as_i64().unwrap())
            .sum();
        let held: i64 = orders
            .iter()
            .filter(|order| order["status"] != "CANCELLED")
            .flat_map(|order| order["items"].as_array().unwrap().iter())
            .filter(|line| line["product_id"] == product_id.as_str())
            .map(|line| line["quantity"].as_i64().unwrap())
            .sum();
        let now = inventory["stock_quantity"].as_i64().unwrap();
        if initial + adjusted - held != now {
            violations.push(format!(
                "stock of {product_id} not conserved: {initial} + {adjusted} adjusted - {held} held != {now} now"
            ));
        }
    }
    violations
}

/// The mock provider's books: order id -> net charge (charged - refunded).
async fn net_charges(stack: &Stack) -> HashMap<String, i64> {
    let table = stack.outputs["MockPaymentsLedgerTableName"].as_str().unwrap();
    let mut net = HashMap::new();
    let mut start = None;
    loop {
        let page = stack
            .dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let number = |name: &str| {
                item.get(name)
                    .and_then(|value| value.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let order_id = item["order_id"].as_s().unwrap().clone();
            net.insert(order_id, number("amount") - number("refunded_amount"));
        }
        start = page.last_evaluated_key.clone();
        if start.is_none() {
            return net;
        }
    }
}

/// The money invariants (docs/api.md "Payment status and money safety"), order by order, against the
/// provider's books.
fn money_violations(orders: &[Value], net: &HashMap<String, i64>) -> Vec<String> {
    let mut violations = Vec::new();
    for order in orders {
        let id = id_of(order);
        let charged = net.get(&id).copied().unwrap_or(0);
        let total = order["total_amount"].as_i64().unwrap();
        let (status, payment) = (
            order["status"].as_str().unwrap(),
            order["payment_status"].as_str().unwrap(),
        );
        let fine = match status {
            "CONFIRMED" | "SHIPPED" => payment == "paid" && charged == total,
            "CANCELLED" => matches!(payment, "pending" | "declined" | "refunded") && charged == 0,
            _ => false,
        };
        if !fine {
            violations.push(format!(
                "order {id}: {status} / {payment} with a net charge of {charged} (total {total})"
            ));
        }
    }
    violations
}

fn lines(product_ids: &[(String, i64)], units: i64) -> Value {
    let items: Vec<Value> = product_ids
        .iter()
        .map(|(id, _)| json!({"product_id": id, "quantity": units}))
        .collect();
    json!({ "items": items })
}

#[tokio::test]
async fn chaos_payment_faults_leave_money_and_stock_right() {
    let stack = stack("payment").await;
    let (products, customers, operations) = orders_under_payment_faults(&stack, |_| None).await;
    let mut violations = Vec::new();
    let orders = quiet_orders(&stack, &customers, &mut violations).await;
    violations.extend(money_violations(&orders, &net_charges(&stack).await));
    violations.extend(stock_violations(&stack, &products, &orders).await);
    report(stack.scenario, operations, &violations);
}

/// The same faults on every call of the Stripe adapter (lost answers, errors), against the Stripe
/// emulator: the money is checked against the emulator's own PaymentIntents and refunds, and no
/// order ever has more than one PaymentIntent that took money.
#[tokio::test]
async fn chaos_stripe_payment_faults_leave_money_and_stock_right() {
    let stack = stack("stripe").await;
    let stripe = stripe_of("stripe");
    // Every fifth card is declined when charged.
    let card = |n: usize| {
        Some(if n % 5 == 4 {
            "pm_card_chargeCustomerFail"
        } else {
            "pm_card_visa"
        })
    };
    let (products, customers, operations) = orders_under_payment_faults(&stack, card).await;
    let mut violations = Vec::new();
    let orders = quiet_orders(&stack, &customers, &mut violations).await;
    violations.extend(money_violations(&orders, &stripe.net_charges().await));
    for (order_id, intents) in stripe.intents_by_order().await {
        let took_money = intents.iter().filter(|intent| intent["status"] == "succeeded").count();
        if took_money > 1 {
            violations.push(format!("order {order_id}: {took_money} PaymentIntents took money"));
        }
    }
    violations.extend(stock_violations(&stack, &products, &orders).await);
    report(stack.scenario, operations, &violations);
}

/// The scenario's Stripe emulator, with its stack's key (`SHOP_CHAOS_STACKS`).
fn stripe_of(scenario: &str) -> StripeEmulator {
    let stacks: Value = serde_json::from_str(&env_var("SHOP_CHAOS_STACKS")).expect("SHOP_CHAOS_STACKS is JSON");
    let stripe = &stacks[scenario]["stripe"];
    StripeEmulator::new(
        stripe["url"].as_str().expect("the scenario's Stripe emulator"),
        stripe["secret_key"].as_str().expect("its key"),
    )
}

/// 30 orders from three customers, paid with `token(n)`, every third one cancelled right away (racing
/// its payment): the products (with their initial stock), the customers, and the operations made.
async fn orders_under_payment_faults(
    stack: &Stack,
    token: fn(usize) -> Option<&'static str>,
) -> (Vec<(String, i64)>, Vec<Customer>, usize) {
    let products = vec![
        (product(stack, 1000, 1000).await, 1000),
        (product(stack, 2500, 1000).await, 1000),
    ];
    let mut customers = Vec::new();
    for _ in 0..3 {
        customers.push(stack.api.customer().await);
    }
    let mut operations = 0;
    let mut placements = JoinSet::new();
    for n in 0..30_usize {
        let api = Api::at_url(&stack.api.url(""));
        let customer_token = customers[n % 3].token.clone();
        let mut body = lines(&products[..1 + n % 2], 1 + (n % 3) as i64);
        if let Some(token) = token(n) {
            body["payment_token"] = json!(token);
        }
        placements.spawn(async move {
            let placed = api.place_order(Some(&customer_token), &body, None).await;
            let order_id = id_of(placed.expect(201));
            if n % 3 == 0 {
                let cancelled = api
                    .post_empty(&format!("/api/orders/{order_id}/cancel"), Some(&customer_token))
                    .await;
                assert_eq!(cancelled.status, 200, "{}", cancelled.describe());
                return 2;
            }
            1
        });
    }
    while let Some(done) = placements.join_next().await {
        operations += done.unwrap();
    }
    (products, customers, operations)
}

/// Waits until `customer`'s history holds, for each of `orders`, one `SENT` notification of every
/// `(event type, channel)` in `expected`; a violation for each one still missing after the timeout.
async fn notifications_sent_once(
    stack: &Stack,
    customer: &Customer,
    orders: &[String],
    expected: &[(&str, &str)],
    violations: &mut Vec<String>,
) {
    let deadline = Instant::now() + QUIET_TIMEOUT;
    loop {
        let items = stack.api.notifications_since(&customer.token, None, "").await;
        let mut missing = Vec::new();
        for order_id in orders {
            for (event_type, channel) in expected {
                let matching: Vec<&Value> = items
                    .iter()
                    .filter(|item| {
                        item["event_type"] == *event_type
                            && item["channel"] == *channel
                            && item["body"]
                                .as_str()
                                .is_some_and(|body| body.contains(order_id.as_str()))
                    })
                    .collect();
                let sent = matching.iter().filter(|item| item["status"] == "SENT").count();
                if matching.len() != 1 || sent != 1 {
                    missing.push(format!(
                        "order {order_id}: {event_type} by {channel}: {} notification(s), {sent} sent",
                        matching.len()
                    ));
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            violations.extend(missing);
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Places `count` orders of one unit of `product` round-robin for `customers`; their ids by customer.
async fn place_round_robin(stack: &Stack, customers: &[Customer], product: &str, count: usize) -> Vec<Vec<String>> {
    let mut placements = JoinSet::new();
    for n in 0..count {
        let api = Api::at_url(&stack.api.url(""));
        let customer = n % customers.len();
        let token = customers[customer].token.clone();
        let body = json!({"items": [{"product_id": product, "quantity": 1}]});
        placements.spawn(async move {
            let placed = api.place_order(Some(&token), &body, None).await;
            (customer, id_of(placed.expect(201)))
        });
    }
    let mut by_customer = vec![Vec::new(); customers.len()];
    while let Some(done) = placements.join_next().await {
        let (customer, order_id) = done.unwrap();
        by_customer[customer].push(order_id);
    }
    by_customer
}

#[tokio::test]
async fn chaos_send_faults_deliver_every_notification_once_per_channel() {
    let stack = stack("send").await;
    let product_id = product(&stack, 700, 500).await;
    let mut customers = Vec::new();
    for _ in 0..4 {
        customers.push(stack.api.customer_with_phone(Some("+14155550123")).await);
    }
    let placed = place_round_robin(&stack, &customers, &product_id, 20).await;
    let mut violations = Vec::new();
    let expected = [
        ("order.created", "email"),
        ("order.created", "sms"),
        ("order.confirmed", "email"),
    ];
    let mut checks = JoinSet::new();
    for (customer, orders) in customers.into_iter().zip(placed) {
        let stack = stack_clone(&stack).await;
        checks.spawn(async move {
            let mut found = Vec::new();
            notifications_sent_once(&stack, &customer, &orders, &expected, &mut found).await;
            found
        });
    }
    while let Some(found) = checks.join_next().await {
        violations.extend(found.unwrap());
    }
    report("send", 20, &violations);
}

/// Another handle on the same scenario stack, for concurrent checks.
async fn stack_clone(stack: &Stack) -> Stack {
    Stack {
        scenario: stack.scenario,
        api: Api::at_url(&stack.api.url("")),
        admin: stack.admin.clone(),
        outputs: stack.outputs.clone(),
        dynamodb: stack.dynamodb.clone(),
    }
}

#[tokio::test]
async fn chaos_lost_transaction_answers_commit_each_write_once() {
    let stack = stack("transactions").await;
    let products = vec![
        (product(&stack, 900, 500).await, 500),
        (product(&stack, 400, 500).await, 500),
    ];
    let mut customers = Vec::new();
    for _ in 0..4 {
        customers.push(stack.api.customer().await);
    }
    let mut violations = Vec::new();
    // Placements without an Idempotency-Key: what the client is told must be what happened.
    let mut placements = JoinSet::new();
    for n in 0..40_usize {
        let api = Api::at_url(&stack.api.url(""));
        let token = customers[n % 4].token.clone();
        let body = lines(&products[..1 + n % 2], 1);
        placements.spawn(async move { api.place_order(Some(&token), &body, None).await });
    }
    let mut created = 0;
    let mut placed_ids = Vec::new();
    while let Some(reply) = placements.join_next().await {
        let reply = reply.unwrap();
        match reply.status {
            201 => {
                created += 1;
                placed_ids.push(id_of(&reply.json));
            }
            503 => {}
            other => violations.push(format!("placement answered {other}: {}", reply.text)),
        }
    }
    // Inventory adjustments: each answered one applied once.
    let mut adjusted = 0;
    for n in 0..10_i64 {
        let (product_id, _) = &products[(n % 2) as usize];
        let delta = if n % 3 == 0 { -2 } else { 5 };
        let body = json!({"delta": delta, "reason": format!("chaos {n}")});
        let reply = stack
            .api
            .post_json(
                &format!("/api/inventory/{product_id}/adjustments"),
                Some(&stack.admin),
                &body,
            )
            .await;
        match reply.status {
            200 => adjusted += 1,
            503 => {}
            other => violations.push(format!("adjustment answered {other}: {}", reply.text)),
        }
    }
    // Cancellations (a transition releasing stock) of a quarter of the orders.
    let mut cancels = 0;
    for (n, order_id) in placed_ids.iter().enumerate().filter(|(n, _)| n % 4 == 0) {
        let token = &customers[n % 4].token;
        let _ = stack
            .api
            .post_empty(&format!("/api/orders/{order_id}/cancel"), Some(token))
            .await;
        cancels += 1;
    }
    let orders = quiet_orders(&stack, &customers, &mut violations).await;
    if orders.len() != created {
        violations.push(format!("{} orders exist for {created} answers of 201", orders.len()));
    }
    let mut recorded = 0;
    for (product_id, _) in &products {
        let inventory = stack
            .api
            .get(&format!("/api/inventory/{product_id}"), Some(&stack.admin))
            .await;
        recorded += inventory.expect(200)["adjustments"].as_array().unwrap().len();
    }
    if recorded != adjusted {
        violations.push(format!("{recorded} adjustments recorded for {adjusted} answers of 200"));
    }
    violations.extend(stock_violations(&stack, &products, &orders).await);
    report(stack.scenario, 40 + 10 + cancels, &violations);
}

#[tokio::test]
async fn chaos_publish_faults_lose_no_event() {
    let stack = stack("publish").await;
    let product_id = product(&stack, 1200, 500).await;
    let mut customers = Vec::new();
    for _ in 0..3 {
        customers.push(stack.api.customer().await);
    }
    let placed = place_round_robin(&stack, &customers, &product_id, 15).await;
    let mut violations = Vec::new();
    let expected = [("order.created", "email"), ("order.confirmed", "email")];
    for (customer, orders) in customers.iter().zip(&placed) {
        notifications_sent_once(&stack, customer, orders, &expected, &mut violations).await;
    }
    let orders = quiet_orders(&stack, &customers, &mut violations).await;
    violations.extend(stock_violations(&stack, &[(product_id, 500)], &orders).await);
    report(stack.scenario, 15, &violations);
}

/// Run by `local_stack.py chaos` alone, after the others: once this test says its traffic has started,
/// the harness asks it to pause (as a shop's clients see it go down), drains the streams, stops the
/// emulator as Ctrl-C stops it, starts it again on its persisted state and says when it is back.
#[tokio::test]
async fn chaos_restart_loses_no_committed_order() {
    let stack = stack("publish").await;
    let initial = 400;
    let product_id = product(&stack, 300, initial).await;
    let customers = vec![stack.api.customer().await, stack.api.customer().await];
    let marker = |name: &str| std::path::PathBuf::from(env_var(name));
    let (stopping, restarted) = (marker("SHOP_CHAOS_STOPPING"), marker("SHOP_CHAOS_RESTARTED"));
    std::fs::write(marker("SHOP_CHAOS_TRAFFIC_STARTED"), "started").unwrap();
    // Orders right up to the stop, and for a while after the start; only 201s count as committed.
    let mut committed: Vec<(usize, String)> = Vec::new();
    let mut attempts = 0;
    let place = async |attempts: &mut usize, committed: &mut Vec<(usize, String)>| {
        let n = *attempts % customers.len();
        *attempts += 1;
        let body = json!({"items": [{"product_id": product_id, "quantity": 1}]});
        if let Some(reply) = stack
            .api
            .try_post_json("/api/orders", Some(&customers[n].token), &body)
            .await
            && reply.status == 201
        {
            committed.push((n, id_of(&reply.json)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stopping.exists() && Instant::now() < deadline {
        place(&mut attempts, &mut committed).await;
    }
    std::fs::write(marker("SHOP_CHAOS_PAUSED"), "paused").unwrap();
    // The harness drains, restarts and redeploys a changed parameter meanwhile.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !restarted.exists() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let mut violations = Vec::new();
    if restarted.exists() {
        let back = Instant::now();
        while back.elapsed() < Duration::from_secs(5) {
            place(&mut attempts, &mut committed).await;
        }
    } else {
        violations.push("the emulator was not restarted".into());
    }
    // After the restart the shop still works: a few more orders, placed at once.
    let after_restart = place_round_robin(&stack, &customers, &product_id, 4).await;
    // Every answered order is still there after the restart.
    for (n, order_id) in &committed {
        let reply = stack
            .api
            .get(&format!("/api/orders/{order_id}"), Some(&customers[*n].token))
            .await;
        if reply.status != 200 {
            violations.push(format!("committed order {order_id} is gone ({})", reply.status));
        }
    }
    // Every order settles and is notified once: placed, then confirmed. (Should a change still have
    // been waiting in a stream at the stop, the sweep settles its order: StuckOrderMinutes is 1 here.)
    let orders = quiet_orders(&stack, &customers, &mut violations).await;
    violations.extend(money_violations(&orders, &net_charges(&stack).await));
    violations.extend(stock_violations(&stack, &[(product_id, initial)], &orders).await);
    let expected = [("order.created", "email"), ("order.confirmed", "email")];
    for (n, customer) in customers.iter().enumerate() {
        let mut theirs: Vec<String> = committed
            .iter()
            .filter(|(owner, _)| *owner == n)
            .map(|(_, id)| id.clone())
            .collect();
        theirs.extend(after_restart[n].iter().cloned());
        notifications_sent_once(&stack, customer, &theirs, &expected, &mut violations).await;
    }
    report("restart", attempts + 4, &violations);
}

/// The outbox of this scenario's stack relays no order event (`local_stack.py chaos` disabled the
/// publisher's orders-stream mapping): every order's `order.created` is lost, as when a stream
/// record ages out. The scheduled sweep (StuckOrderMinutes 1, every minute) must settle each one
/// through the payment worker, charged once, notified once; a second sweep then changes nothing.
#[tokio::test]
async fn chaos_sweep_settles_orders_whose_events_were_lost() {
    let stack = stack("sweep").await;
    let initial = 100;
    let product_id = product(&stack, 900, initial).await;
    let customers = vec![stack.api.customer().await, stack.api.customer().await];
    let approved = place_round_robin(&stack, &customers, &product_id, 4).await;
    let mut declined = Vec::new();
    for customer in &customers {
        let body = json!({"items": [{"product_id": product_id, "quantity": 2}], "payment_token": "tok_decline"});
        let placed = stack.api.place_order(Some(&customer.token), &body, None).await;
        declined.push(id_of(placed.expect(201)));
    }
    let mut violations = Vec::new();
    let orders = quiet_orders(&stack, &customers, &mut violations).await;
    for order in &orders {
        let id = id_of(order);
        let expected = if declined.contains(&id) {
            "CANCELLED"
        } else {
            "CONFIRMED"
        };
        if order["status"] != expected {
            violations.push(format!("order {id} is {} (expected {expected})", order["status"]));
        }
    }
    violations.extend(money_violations(&orders, &net_charges(&stack).await));
    violations.extend(stock_violations(&stack, &[(product_id, initial)], &orders).await);
    // The sweep's `order.created` is the outbox's own: one "order received" each, never two.
    for (n, customer) in customers.iter().enumerate() {
        let mut theirs = approved[n].clone();
        theirs.push(declined[n].clone());
        notifications_sent_once(
            &stack,
            customer,
            &theirs,
            &[("order.created", "email")],
            &mut violations,
        )
        .await;
    }

    // A second sweep, run now as the scheduled one runs, finds nothing waiting and changes nothing.
    let before = orders_of(&stack, &customers).await;
    let sdk = e2e::emulator_sdk_config().await;
    let deps = orders_sweeper::Deps {
        unsettled: std::sync::Arc::new(store::unsettled::DynamoUnsettledOrders::new(
            stack.dynamodb.clone(),
            stack.outputs["OrdersTableName"].as_str().unwrap(),
        )),
        sink: std::sync::Arc::new(worker::publish::SnsSink::new(
            aws_sdk_sns::Client::new(&sdk),
            stack.outputs["EventsTopicArn"].as_str().unwrap().to_owned(),
        )),
        settings: orders_sweeper::Settings {
            // Anything still waiting at all would be due.
            stuck_after: time::Duration::minutes(-5),
            batch_size: 100,
        },
    };
    let again = orders_sweeper::sweep(&deps, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    if again.found != 0 {
        violations.push(format!("a second sweep found orders still waiting: {again:?}"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    if orders_of(&stack, &customers).await != before {
        violations.push("a second sweep changed orders".into());
    }
    report(stack.scenario, 6, &violations);
}
