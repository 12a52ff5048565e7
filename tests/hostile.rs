//! End-to-end: hostile input at the public edges, through HTTP like an attacker. GraphQL documents
//! that expand (fragment chains), amplify (aliases), pile up directives or tokens, or are simply too
//! large are refused as `query-too-complex` without reading anything, quickly; a request places at
//! most one order. (Their storage reads are measured in round_trips.rs, the WebSocket flood in
//! websocket.rs.)
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::{Api, Reply, unique_category};
use serde_json::{Value, json};

/// How long a refusal may take through the emulator's gateway (the check itself is held to 50 ms in
/// functions/graphql/tests/hostile_documents.rs; here the gateway and a warm function add theirs).
const REFUSAL_WALL_CLOCK: Duration = Duration::from_secs(2);

async fn graphql(api: &Api, token: Option<&str>, query: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = api
        .post_json("/graphql", token, &json!({"query": query, "variables": {}}))
        .await;
    (reply, started.elapsed())
}

/// Asserts a refusal as too complex, quickly, with no data and no internals.
#[track_caller]
fn assert_too_complex(reply: &Reply, took: Duration, mentions: &str) {
    let body = reply.expect(200);
    assert!(body["data"].is_null(), "{}", reply.describe());
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{}", reply.describe());
    assert_eq!(
        errors[0]["extensions"]["code"],
        "query-too-complex",
        "{}",
        reply.describe()
    );
    assert_eq!(errors[0]["extensions"]["status"], 400);
    let message = errors[0]["message"].as_str().unwrap_or_default();
    println!("refused over HTTP in {took:?}: {message}");
    assert!(message.contains(mentions), "{message}");
    assert!(took < REFUSAL_WALL_CLOCK, "refused after {took:?}");
    e2e::assert_nothing_internal(&reply.text);
}

fn fragment_chain(levels: usize) -> String {
    let mut document = String::from("{ products { items { ...F0 } } }\n");
    for level in 0..levels {
        document.push_str(&format!(
            "fragment F{level} on Product {{ ...F{next} ...F{next} }}\n",
            next = level + 1
        ));
    }
    document.push_str(&format!("fragment F{levels} on Product {{ id }}\n"));
    document
}

#[tokio::test]
async fn fragment_bombs_are_refused_at_once() {
    let api = Api::from_env();
    // Warm the function first: a cold start is not the refusal's time
    let (warm, _) = graphql(&api, None, "{ __typename }").await;
    warm.expect(200);
    for levels in [24, 40, 64] {
        let (reply, took) = graphql(&api, None, &fragment_chain(levels)).await;
        assert_too_complex(&reply, took, "fields");
    }
}

#[tokio::test]
async fn aliased_amplification_is_refused() {
    let api = Api::from_env();
    let customer = api.customer().await;
    // 999 aliased `me` do not fit in a document
    let mes: String = (0..999).map(|i| format!("m{i}: me {{ id }} ")).collect();
    let (reply, took) = graphql(&api, Some(&customer.token), &format!("{{ {mes} }}")).await;
    assert_too_complex(&reply, took, "too large");
    // 60 of them are more aliases than any client needs
    let mes: String = (0..60).map(|i| format!("m{i}: me {{ id }} ")).collect();
    let (reply, took) = graphql(&api, Some(&customer.token), &format!("{{ {mes} }}")).await;
    assert_too_complex(&reply, took, "aliases");
    // 1,000 aliased one-item listings (one query each) neither
    let listings: String = (0..1_000)
        .map(|i| format!("p{i}:products(limit:1,minPrice:{i}){{items{{id}}}}"))
        .collect();
    let (reply, took) = graphql(&api, None, &format!("{{{listings}}}")).await;
    assert_too_complex(&reply, took, "too large");
}

#[tokio::test]
async fn directives_tokens_and_nesting_are_bounded() {
    let api = Api::from_env();
    let directives: String = (0..60).map(|_| "__typename @include(if: true) ").collect();
    let (reply, took) = graphql(&api, None, &format!("{{ {directives} }}")).await;
    assert_too_complex(&reply, took, "directives");
    let names: String = (0..2_500).map(|_| "a ").collect();
    let (reply, took) = graphql(&api, None, &format!("{{ {names} }}")).await;
    assert_too_complex(&reply, took, "tokens");
    let nested = format!("{}{}", "{ a ".repeat(200), "}".repeat(200));
    let (reply, took) = graphql(&api, None, &nested).await;
    assert_too_complex(&reply, took, "nests");
}

#[tokio::test]
async fn one_request_places_at_most_one_order() {
    // Given a customer and a product in stock
    let api = Api::from_env();
    let customer = api.customer().await;
    let admin = api.admin_token().await;
    let product = api
        .create_product(&admin, "Hostile mug", &unique_category(), 500, 5)
        .await;
    let product_id = product["id"].as_str().unwrap();
    // When one request holds two placements
    let place =
        |alias: &str| format!("{alias}: placeOrder(items: [{{productId: \"{product_id}\", quantity: 1}}]) {{ id }}");
    let (reply, took) = graphql(
        &api,
        Some(&customer.token),
        &format!("mutation {{ {} {} }}", place("a"), place("b")),
    )
    .await;
    // Then it is refused and nothing was placed
    assert_too_complex(&reply, took, "placements");
    assert_eq!(api.stock(product_id).await, 5);
    assert!(api.all_orders(&customer.token, None).await.is_empty());
    // While one placement is served as usual
    let (reply, _) = graphql(&api, Some(&customer.token), &format!("mutation {{ {} }}", place("a"))).await;
    let body: &Value = reply.expect(200);
    assert!(body.get("errors").is_none(), "{}", reply.describe());
    assert_eq!(api.stock(product_id).await, 4);
}
