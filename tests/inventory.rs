//! End-to-end: inventory (`/api/inventory/{product_id}`, admin only). Adjustments move a product's stock
//! up and down, never below zero, and are recorded with who, why and when (newest first); products carry
//! a low-stock threshold (default 5); a stock change crossing it downwards, by an adjustment or an
//! order, raises one `inventory.low_stock` alert per crossing, emailed to every admin.
//!
//! Every test uses products of its own in a category of its own, so tests run in parallel and
//! repeatedly. The admin account is shared by all tests (and its history with them), so alerts are
//! picked from it by product id and by time (nothing older than the product).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use e2e::{Api, Reply, assert_field_error, assert_problem, mentioning, unique_category, unknown_id};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const LOW_STOCK: &str = "inventory.low_stock";
/// How long to keep watching for an alert that must not come.
const GRACE: Duration = Duration::from_secs(4);

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// Creates a product as admin with `stock` and, when given, a low-stock `threshold`; returns it (201).
async fn product(api: &Api, admin: &str, name: &str, category: &str, stock: i64, threshold: Option<i64>) -> Value {
    let mut body = json!({
        "name": name,
        "description": format!("{name} made by the e2e suite"),
        "category": category,
        "price": 1000,
        "stock_quantity": stock,
    });
    if let Some(threshold) = threshold {
        body["low_stock_threshold"] = json!(threshold);
    }
    let reply = api.post_json("/api/products", Some(admin), &body).await;
    reply.expect(201).clone()
}

fn inventory_path(product_id: &str) -> String {
    format!("/api/inventory/{product_id}")
}

fn adjustments_path(product_id: &str) -> String {
    format!("/api/inventory/{product_id}/adjustments")
}

/// `POST /api/inventory/{product_id}/adjustments` with `body`.
async fn adjust(api: &Api, token: Option<&str>, product_id: &str, body: &Value) -> Reply {
    api.post_json(&adjustments_path(product_id), token, body).await
}

/// Adjusts by `delta` for `reason` as admin, asserting 200 `{product_id, stock_quantity}` with the
/// stock `expected`.
async fn adjust_ok(api: &Api, admin: &str, product_id: &str, delta: i64, reason: &str, expected: i64) {
    let reply = adjust(api, Some(admin), product_id, &json!({"delta": delta, "reason": reason})).await;
    let body = reply.expect(200);
    assert_eq!(
        body,
        &json!({"product_id": product_id, "stock_quantity": expected}),
        "adjusting by {delta}"
    );
}

/// `GET /api/inventory/{product_id}` as admin (200).
async fn inventory(api: &Api, admin: &str, product_id: &str) -> Value {
    api.get(&inventory_path(product_id), Some(admin))
        .await
        .expect(200)
        .clone()
}

fn adjustments(view: &Value) -> Vec<Value> {
    view["adjustments"]
        .as_array()
        .unwrap_or_else(|| panic!("adjustments is not an array: {view}"))
        .clone()
}

/// The id of the user `token` belongs to.
async fn user_id(api: &Api, token: &str) -> String {
    id_of(api.get("/api/users/me", Some(token)).await.expect(200))
}

/// The low-stock alerts about `product` in the admin's own history (nothing older than the product).
async fn alerts(api: &Api, admin: &str, product: &Value) -> Vec<Value> {
    let since = product["created_at"].as_str().expect("created_at");
    let items = api.notifications_since(admin, None, since).await;
    mentioning(&items, LOW_STOCK, &id_of(product))
        .into_iter()
        .cloned()
        .collect()
}

/// Waits until the admin's history holds `count` low-stock alerts about `product`, then returns them.
async fn await_alerts(api: &Api, admin: &str, product: &Value, count: usize) -> Vec<Value> {
    let product_id = id_of(product);
    let since = product["created_at"].as_str().expect("created_at");
    let what = format!("{count} {LOW_STOCK} alert(s) about product {product_id}");
    api.await_notifications(admin, None, since, &what, |items| {
        let found: Vec<Value> = mentioning(items, LOW_STOCK, &product_id)
            .into_iter()
            .filter(|item| item["status"] == "SENT")
            .cloned()
            .collect();
        (found.len() >= count).then_some(found)
    })
    .await
}

/// Asserts the shape of a low-stock alert about `product` delivered to the admin `admin_email`.
#[track_caller]
fn assert_alert(alert: &Value, product: &Value, admin_email: &str) {
    assert_eq!(alert["event_type"], LOW_STOCK, "{alert}");
    assert_eq!(alert["channel"], "email", "{alert}");
    assert_eq!(alert["status"], "SENT", "{alert}");
    assert_eq!(alert["attempts"], 1, "{alert}");
    assert_eq!(alert["recipient"], admin_email, "alerts go to the admins: {alert}");
    let name = product["name"].as_str().expect("name");
    assert!(
        alert["subject"].as_str().is_some_and(|subject| subject.contains(name)),
        "the subject names the product: {alert}"
    );
    assert!(
        alert["body"]
            .as_str()
            .is_some_and(|body| body.contains(&id_of(product))),
        "the body names the product id: {alert}"
    );
}

/// Asserts that after a grace period the admin's history holds exactly `count` alerts about `product`,
/// each a distinct event.
async fn assert_alert_count_stays(api: &Api, admin: &str, product: &Value, count: usize) {
    tokio::time::sleep(GRACE).await;
    let found = alerts(api, admin, product).await;
    let events: HashSet<&str> = found.iter().filter_map(|item| item["event_id"].as_str()).collect();
    assert_eq!(
        (found.len(), events.len()),
        (count, count),
        "exactly {count} low-stock alert(s) about product {}: {}",
        id_of(product),
        Value::Array(found.clone())
    );
}

// ---------------------------------------------------------------------- adjustments

#[tokio::test]
async fn adjustments_move_the_stock_and_are_recorded_with_who_why_and_when_newest_first() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let admin_id = user_id(&api, &admin).await;
    let customer = api.customer().await;
    let category = unique_category();
    let item = product(&api, &admin, "E2E crate", &category, 10, None).await;
    let item_id = id_of(&item);

    // Given a new product, its inventory shows its stock, the default threshold and no adjustments
    assert_eq!(
        inventory(&api, &admin, &item_id).await,
        json!({"product_id": item_id, "stock_quantity": 10, "low_stock_threshold": 5, "adjustments": []})
    );

    // When an admin restocks it, then writes off breakage, then counts the rest out to zero
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let steps = [
        (15, format!("delivery {tag}"), 25),
        (-7, format!("breakage {tag}"), 18),
        (-18, format!("stocktake {tag}"), 0),
    ];
    for (delta, reason, expected) in &steps {
        // Then each answers the new stock
        adjust_ok(&api, &admin, &item_id, *delta, reason, *expected).await;
        assert_eq!(
            api.stock(&item_id).await,
            *expected,
            "the catalogue shows the new stock"
        );
    }

    // And the inventory lists them newest first, each with who, why and when
    let view = inventory(&api, &admin, &item_id).await;
    assert_eq!(view["stock_quantity"], 0);
    assert_eq!(view["low_stock_threshold"], 5);
    let recorded = adjustments(&view);
    assert_eq!(recorded.len(), steps.len(), "{view}");
    let created_at = item["created_at"].as_str().expect("created_at");
    for (adjustment, (delta, reason, _)) in recorded.iter().zip(steps.iter().rev()) {
        let fields: HashSet<&str> = adjustment
            .as_object()
            .expect("an adjustment is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, HashSet::from(["delta", "reason", "by", "at"]), "{adjustment}");
        assert_eq!(adjustment["delta"], *delta, "{view}");
        assert_eq!(adjustment["reason"], reason.as_str(), "{view}");
        assert_eq!(adjustment["by"], admin_id.as_str(), "made by the admin: {view}");
        let at = adjustment["at"].as_str().expect("at is a string");
        assert!(
            at.len() >= 20 && at.as_bytes()[10] == b'T' && at.ends_with('Z') && at >= created_at,
            "at is an RFC 3339 UTC time after the product was created ({created_at}): {at}"
        );
    }
    let times: Vec<&str> = recorded.iter().filter_map(|a| a["at"].as_str()).collect();
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {times:?}"
    );

    // And orders see the adjusted stock: none left to sell
    let reply = api
        .place_order(
            Some(&customer.token),
            &json!({"items": [{"product_id": item_id, "quantity": 1}]}),
            None,
        )
        .await;
    assert_problem(&reply, 409);

    // And a restock makes it sellable again
    adjust_ok(&api, &admin, &item_id, 1, &format!("found one {tag}"), 1).await;
    let reply = api
        .place_order(
            Some(&customer.token),
            &json!({"items": [{"product_id": item_id, "quantity": 1}]}),
            None,
        )
        .await;
    reply.expect(201);
    assert_eq!(api.stock(&item_id).await, 0);
    let view = inventory(&api, &admin, &item_id).await;
    assert_eq!(view["stock_quantity"], 0);
    assert_eq!(adjustments(&view).len(), 4, "orders are no adjustments: {view}");
    assert_eq!(adjustments(&view)[0]["reason"], format!("found one {tag}"));
}

#[tokio::test]
async fn an_adjustment_taking_the_stock_below_zero_is_refused_and_changes_nothing() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let item_id = id_of(&product(&api, &admin, "E2E jar", &category, 3, None).await);

    // When an admin removes more than is in stock
    let reply = adjust(
        &api,
        Some(&admin),
        &item_id,
        &json!({"delta": -4, "reason": "shrinkage"}),
    )
    .await;

    // Then it is a 409 and nothing changed, nor was recorded
    assert_problem(&reply, 409);
    assert_eq!(api.stock(&item_id).await, 3);
    let view = inventory(&api, &admin, &item_id).await;
    assert_eq!(
        (view["stock_quantity"].as_i64(), adjustments(&view).len()),
        (Some(3), 0),
        "{view}"
    );

    // And removing exactly what is there is fine, after which even one more is refused
    adjust_ok(&api, &admin, &item_id, -3, "sold off", 0).await;
    assert_problem(
        &adjust(
            &api,
            Some(&admin),
            &item_id,
            &json!({"delta": -1, "reason": "one more"}),
        )
        .await,
        409,
    );
    assert_eq!(api.stock(&item_id).await, 0);
    let view = inventory(&api, &admin, &item_id).await;
    assert_eq!(view["stock_quantity"], 0);
    let recorded = adjustments(&view);
    assert_eq!(recorded.len(), 1, "only the accepted adjustment is recorded: {view}");
    assert_eq!(
        (recorded[0]["delta"].as_i64(), recorded[0]["reason"].as_str()),
        (Some(-3), Some("sold off"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_removals_never_take_the_stock_below_zero() {
    const REMOVALS: usize = 20;
    let api = Arc::new(Api::from_env());
    let admin = api.admin_token().await;
    let category = unique_category();
    let item_id = id_of(&product(&api, &admin, "E2E tin", &category, 10, Some(0)).await);

    // When 20 removals of one unit race for a stock of 10
    let mut tasks = JoinSet::new();
    for n in 0..REMOVALS {
        let api = Arc::clone(&api);
        let admin = admin.clone();
        let item_id = item_id.clone();
        tasks.spawn(async move {
            adjust(
                &api,
                Some(&admin),
                &item_id,
                &json!({"delta": -1, "reason": format!("removal {n}")}),
            )
            .await
        });
    }
    let mut accepted = 0;
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        let reply = joined.expect("a removal task panicked");
        match reply.status {
            200 => accepted += 1,
            409 => {
                assert_problem(&reply, 409);
                refused += 1;
            }
            _ => panic!("expected 200 or 409, got {}", reply.describe()),
        }
    }

    // Then exactly 10 succeed, the stock is 0, and exactly those 10 are recorded
    assert_eq!((accepted, refused), (10, 10));
    assert_eq!(api.stock(&item_id).await, 0);
    let view = inventory(&api, &admin, &item_id).await;
    assert_eq!(view["stock_quantity"], 0);
    let recorded = adjustments(&view);
    assert_eq!(recorded.len(), 10, "{view}");
    let reasons: HashSet<&str> = recorded.iter().filter_map(|a| a["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 10, "ten distinct removals: {view}");
}

#[tokio::test]
async fn invalid_adjustments_are_400_and_change_nothing() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let item_id = id_of(&product(&api, &admin, "E2E box", &category, 7, None).await);

    for (body, field) in [
        (json!({"delta": 0, "reason": "nothing"}), "delta"),
        (json!({"delta": 1}), "reason"),
        (json!({"delta": 1, "reason": ""}), "reason"),
        (json!({"reason": "no delta"}), "delta"),
        (json!({"delta": "1", "reason": "a string"}), "delta"),
        (json!({"delta": 1.5, "reason": "a fraction"}), "delta"),
        (json!({"delta": 1, "reason": "forged", "by": "someone-else"}), "by"),
        (
            json!({"delta": 1, "reason": "forged", "stock_quantity": 100}),
            "stock_quantity",
        ),
    ] {
        // When the body is not an acceptable adjustment
        let reply = adjust(&api, Some(&admin), &item_id, &body).await;
        // Then it is a 400 naming the field
        assert_field_error(&reply, field);
    }
    let malformed = api
        .send_raw(
            Method::POST,
            &adjustments_path(&item_id),
            Some(&admin),
            "application/json",
            r#"{"delta": "#,
        )
        .await;
    assert_field_error(&malformed, "body");

    // And nothing changed, nor was recorded
    assert_eq!(api.stock(&item_id).await, 7);
    let view = inventory(&api, &admin, &item_id).await;
    assert_eq!(
        (view["stock_quantity"].as_i64(), adjustments(&view).len()),
        (Some(7), 0),
        "{view}"
    );
}

#[tokio::test]
async fn only_admins_adjust_or_read_inventory_of_products_that_exist() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer().await;
    let category = unique_category();
    let item_id = id_of(&product(&api, &admin, "E2E basket", &category, 6, None).await);
    let body = json!({"delta": 5, "reason": "restock"});

    // When a customer adjusts or reads the inventory, it is forbidden
    assert_problem(&adjust(&api, Some(&customer.token), &item_id, &body).await, 403);
    assert_problem(&api.get(&inventory_path(&item_id), Some(&customer.token)).await, 403);

    // When nobody, or a garbage token, does, it is unauthorised
    for token in [None, Some("not-a-token")] {
        assert_problem(&adjust(&api, token, &item_id, &body).await, 401);
        assert_problem(&api.get(&inventory_path(&item_id), token).await, 401);
    }

    // When an admin names a product that does not exist, it is not found
    for id in [unknown_id(), "not-an-id".to_owned()] {
        assert_problem(&adjust(&api, Some(&admin), &id, &body).await, 404);
        assert_problem(&api.get(&inventory_path(&id), Some(&admin)).await, 404);
    }
    // And an unknown product is not created by adjusting it
    let ghost = unknown_id();
    adjust(&api, Some(&admin), &ghost, &body).await;
    assert_problem(&api.get_product(&ghost).await, 404);

    // Then the real product is untouched
    assert_eq!(api.stock(&item_id).await, 6);
    assert!(adjustments(&inventory(&api, &admin, &item_id).await).is_empty());
}

// ---------------------------------------------------------------------- threshold

#[tokio::test]
async fn the_low_stock_threshold_defaults_to_five_and_is_set_on_create_and_patch() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();

    // A product created without one has threshold 5
    let plain = product(&api, &admin, "E2E plain", &category, 9, None).await;
    assert_eq!(plain["low_stock_threshold"], 5, "{plain}");
    assert_eq!(inventory(&api, &admin, &id_of(&plain)).await["low_stock_threshold"], 5);

    // A product created with one keeps it
    let custom = product(&api, &admin, "E2E custom", &category, 9, Some(2)).await;
    let custom_id = id_of(&custom);
    assert_eq!(custom["low_stock_threshold"], 2, "{custom}");
    assert_eq!(inventory(&api, &admin, &custom_id).await["low_stock_threshold"], 2);

    // PATCH changes it, and not the stock
    let reply = api
        .patch_json(
            &format!("/api/products/{custom_id}"),
            Some(&admin),
            &json!({"low_stock_threshold": 8}),
        )
        .await;
    let patched = reply.expect(200);
    assert_eq!(patched["low_stock_threshold"], 8, "{patched}");
    assert_eq!(patched["stock_quantity"], 9, "{patched}");
    let view = inventory(&api, &admin, &custom_id).await;
    assert_eq!(
        (view["low_stock_threshold"].as_i64(), view["stock_quantity"].as_i64()),
        (Some(8), Some(9))
    );
    assert_eq!(api.get_product(&custom_id).await.expect(200)["low_stock_threshold"], 8);

    // A negative threshold is refused on create and on patch
    let reply = api
        .post_json(
            "/api/products",
            Some(&admin),
            &json!({"name": "E2E negative", "category": category, "price": 100, "stock_quantity": 1,
                    "low_stock_threshold": -1}),
        )
        .await;
    assert_field_error(&reply, "low_stock_threshold");
    let reply = api
        .patch_json(
            &format!("/api/products/{custom_id}"),
            Some(&admin),
            &json!({"low_stock_threshold": -1}),
        )
        .await;
    assert_field_error(&reply, "low_stock_threshold");
    assert_eq!(inventory(&api, &admin, &custom_id).await["low_stock_threshold"], 8);
}

// ---------------------------------------------------------------------- low-stock alerts

/// The email address of the account `token` belongs to (where its alerts go).
async fn email_of(api: &Api, token: &str) -> String {
    api.get("/api/users/me", Some(token)).await.expect(200)["email"]
        .as_str()
        .expect("email")
        .to_owned()
}

#[tokio::test]
async fn a_low_stock_alert_is_sent_to_the_admins_once_per_downward_crossing() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let admin_email = email_of(&api, &admin).await;
    let category = unique_category();
    let item = product(&api, &admin, "E2E alert widget", &category, 8, Some(5)).await;
    let item_id = id_of(&item);

    // When the stock goes 8 -> 6 (still above the threshold of 5) -> 4 (crossing it)
    adjust_ok(&api, &admin, &item_id, -2, "sold at the fair", 6).await;
    adjust_ok(&api, &admin, &item_id, -2, "sold at the fair", 4).await;

    // Then one alert about the product reaches the admin
    let first = await_alerts(&api, &admin, &item, 1).await;
    assert_alert(&first[0], &item, &admin_email);

    // When it goes on down to 3 (already low), back up to 13, then down to 4 (crossing again)
    adjust_ok(&api, &admin, &item_id, -1, "damaged", 3).await;
    adjust_ok(&api, &admin, &item_id, 10, "delivery", 13).await;
    adjust_ok(&api, &admin, &item_id, -9, "sold to a shop", 4).await;

    // Then a second alert arrives, and no more: exactly one per crossing
    let both = await_alerts(&api, &admin, &item, 2).await;
    for alert in &both {
        assert_alert(alert, &item, &admin_email);
    }
    assert_alert_count_stays(&api, &admin, &item, 2).await;
}

#[tokio::test]
async fn an_order_taking_the_stock_across_the_threshold_raises_one_alert() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let admin_email = email_of(&api, &admin).await;
    let customer = api.customer().await;
    let category = unique_category();
    let item = product(&api, &admin, "E2E alert gadget", &category, 7, None).await;
    let item_id = id_of(&item);

    // When a customer's order takes the stock from 7 to 4 (threshold 5)
    let order = api
        .place_order(
            Some(&customer.token),
            &json!({"items": [{"product_id": item_id, "quantity": 3}]}),
            None,
        )
        .await;
    let order_id = id_of(order.expect(201));
    assert_eq!(api.stock(&item_id).await, 4);

    // Then one alert about the product reaches the admin
    let found = await_alerts(&api, &admin, &item, 1).await;
    assert_alert(&found[0], &item, &admin_email);

    // And the order is confirmed as usual, and another order (4 -> 3, already low) raises none
    api.await_confirmed(&customer.token, &order_id).await;
    let second = api
        .place_order(
            Some(&customer.token),
            &json!({"items": [{"product_id": item_id, "quantity": 1}]}),
            None,
        )
        .await;
    api.await_confirmed(&customer.token, &id_of(second.expect(201))).await;
    assert_eq!(api.stock(&item_id).await, 3);
    assert_alert_count_stays(&api, &admin, &item, 1).await;
}
