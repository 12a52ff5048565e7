//! DynamoDB round trips of order placement, order details and GraphQL's order with its user and
//! products, measured by running the handlers in process against the emulator's real tables with a
//! client that counts every request it sends (`wiring::testing::RoundTripCounter`). The customer and the products are created through the HTTP
//! API like any client; the in-process handlers accept tokens signed with the unit-test secret.
//! Run with `--nocapture` to see the measured numbers.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use api::placement::PlacementDeps;
use api::testing::{as_user, json_of, request, secret, tokens};
use domain::{Role, UserId};
use e2e::{Api, Customer, ShopTables, emulator_sdk_config, unique_category};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use store::idempotency::DynamoIdempotencyStore;
use store::products::DynamoProductRepository;
use store::users::DynamoUserRepository;
use wiring::testing::RoundTripCounter;

const CREATE_EVENT: &str = include_str!("../events/orders-create.json");
const DETAILS_EVENT: &str = include_str!("../events/orders-details.json");
const GRAPHQL_ORDER_EVENT: &str = include_str!("../events/graphql.order.json");

/// The order handlers wired to the stack's tables through one counting DynamoDB client.
struct Counted {
    counter: RoundTripCounter,
    create: orders_create::Deps,
    details: orders_details::Deps,
    graphql: graphql::Deps,
}

impl Counted {
    async fn new() -> Self {
        let sdk = emulator_sdk_config().await;
        let tables = ShopTables::from_env();
        let counter = RoundTripCounter::default();
        let client = counter.client(&sdk);
        let orders = Arc::new(tables.order_repository(client.clone()));
        let create = orders_create::Deps {
            placement: PlacementDeps {
                products: Arc::new(DynamoProductRepository::new(
                    client.clone(),
                    &tables.products,
                    &tables.inventory_adjustments,
                )),
                orders: orders.clone(),
                idempotency: Arc::new(DynamoIdempotencyStore::new(client.clone(), &tables.idempotency)),
                payment_tokens: domain::PaymentTokenRule::Mock,
            },
            tokens: tokens(),
        };
        let details = orders_details::Deps {
            orders: orders.clone(),
            tokens: tokens(),
        };
        let graphql = graphql::Deps::new(
            graphql::Services {
                catalogue: create.placement.products.clone(),
                placement: PlacementDeps {
                    products: create.placement.products.clone(),
                    orders: orders.clone(),
                    idempotency: create.placement.idempotency.clone(),
                    payment_tokens: domain::PaymentTokenRule::Mock,
                },
                orders,
                users: Arc::new(DynamoUserRepository::new(client.clone(), &tables.users)),
                cursors: secret().cursors(),
            },
            tokens(),
            false,
        );
        Self {
            counter,
            create,
            details,
            graphql,
        }
    }

    /// Runs a placement and returns (status, body, headers' replay mark, round trips).
    async fn place(&self, request: Request) -> (u16, Value, Option<String>, usize) {
        self.counter.reset();
        let response = orders_create::handle(&self.create, request).await;
        let trips = self.counter.count();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (response.status().as_u16(), json_of(&response), replayed, trips)
    }

    async fn details(&self, request: Request) -> (u16, Value, usize) {
        self.measure(orders_details::handle(&self.details, request)).await
    }

    async fn graphql(&self, request: Request) -> (u16, Value, usize) {
        self.measure(graphql::handle(&self.graphql, request)).await
    }

    /// Runs `handled` (a handler's answer, not started yet) and returns (status, body, round trips).
    async fn measure(&self, handled: impl Future<Output = Response<Body>>) -> (u16, Value, usize) {
        self.counter.reset();
        let response = handled.await;
        let trips = self.counter.count();
        (response.status().as_u16(), json_of(&response), trips)
    }
}

/// A fresh customer (through the API) and two products of a category of their own.
async fn shop(api: &Api) -> (Customer, UserId, [String; 2]) {
    let admin = api.admin_token().await;
    let customer = api.customer().await;
    let user_id = UserId::parse(&customer.id).expect("a user id");
    let category = unique_category();
    let mut ids = Vec::new();
    for (name, price) in [("E2E counted mug", 1299), ("E2E counted kettle", 4599)] {
        let product = api.create_product(&admin, name, &category, price, 10).await;
        ids.push(product["id"].as_str().expect("product id").to_owned());
    }
    let ids: [String; 2] = ids.try_into().expect("two products");
    (customer, user_id, ids)
}

/// A fresh customer (see [`shop`]) and an order of theirs, placed by the counted handler.
async fn placed_order(api: &Api, counted: &Counted) -> (Customer, UserId, String) {
    let (customer, user_id, products) = shop(api).await;
    let (status, order, _, _) = counted.place(create_request(&products, None, &user_id)).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().expect("order id").to_owned();
    (customer, user_id, order_id)
}

/// events/orders-create.json with its body naming `products` (2 of the first, 1 of the second) and,
/// when given, an `Idempotency-Key`, sent by `user`.
fn create_request(products: &[String; 2], key: Option<&str>, user: &UserId) -> Request {
    let mut event: Value = serde_json::from_str(CREATE_EVENT).expect("events/orders-create.json is JSON");
    let body = json!({
        "items": [
            {"product_id": products[0], "quantity": 2},
            {"product_id": products[1], "quantity": 1},
        ],
        "payment_token": "tok_visa",
    });
    event["body"] = body.to_string().into();
    if let Some(key) = key {
        event["headers"]["idempotency-key"] = key.into();
    }
    as_user(request(&event.to_string()), user, Role::Customer)
}

/// events/orders-details.json for `order_id`, sent by `user`.
fn details_request(order_id: &str, user: &UserId) -> Request {
    let mut event: Value = serde_json::from_str(DETAILS_EVENT).expect("events/orders-details.json is JSON");
    let path = format!("/api/orders/{order_id}/details");
    event["rawPath"] = path.clone().into();
    event["requestContext"]["http"]["path"] = path.into();
    event["pathParameters"]["order_id"] = order_id.into();
    as_user(request(&event.to_string()), user, Role::Customer)
}

#[tokio::test]
async fn placing_an_order_without_a_key_takes_two_round_trips() {
    let api = Api::from_env();
    let counted = Counted::new().await;
    let (customer, user_id, products) = shop(&api).await;

    // When the handler places an order without an Idempotency-Key
    let (status, order, _, trips) = counted.place(create_request(&products, None, &user_id)).await;
    println!("round trips: placement without Idempotency-Key = {trips}");

    // Then it is created in the stack's tables (the API serves it) after two requests: the product
    // read and the transaction
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["total_amount"], 2 * 1299 + 4599);
    let order_id = order["id"].as_str().expect("order id");
    let read = api.get(&format!("/api/orders/{order_id}"), Some(&customer.token)).await;
    assert_eq!(read.expect(200)["id"], order_id);
    assert_eq!(api.stock(&products[0]).await, 8);
    assert_eq!(trips, 2, "DynamoDB requests of a placement without Idempotency-Key");
}

#[tokio::test]
async fn placing_an_order_with_a_key_takes_two_sequential_rounds() {
    let api = Api::from_env();
    let counted = Counted::new().await;
    let (customer, user_id, products) = shop(&api).await;
    let key = format!("e2e-{}", uuid::Uuid::new_v4());

    // When the handler places an order with an Idempotency-Key
    let (status, order, replayed, trips) = counted.place(create_request(&products, Some(&key), &user_id)).await;
    println!("round trips: placement with Idempotency-Key = {trips} (claim and product read run concurrently)");

    // Then three requests were made, the claim alongside the product read, then the transaction
    assert_eq!(status, 201, "{order}");
    assert_eq!(replayed, None);
    assert!(
        trips <= 3,
        "a keyed placement makes {trips} DynamoDB requests; expected at most 3"
    );

    // And a replay answers the same order without placing another
    let (status, replay, replayed, replay_trips) = counted.place(create_request(&products, Some(&key), &user_id)).await;
    println!("round trips: replay of a keyed placement = {replay_trips}");
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay, order);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert!(replay_trips <= 2, "a replay makes {replay_trips} DynamoDB requests");
    assert_eq!(api.all_orders(&customer.token, None).await.len(), 1);
    assert_eq!(api.stock(&products[0]).await, 8);
}

#[tokio::test]
async fn order_details_take_two_round_trips() {
    let api = Api::from_env();
    let counted = Counted::new().await;
    let (customer, user_id, order_id) = placed_order(&api, &counted).await;
    let order_id = order_id.as_str();

    // When the handler serves the order's details
    let (status, details, trips) = counted.details(details_request(order_id, &user_id)).await;
    println!("round trips: order details = {trips}");

    // Then they hold the buyer and the products, after two requests: the order, then one batch read
    // across the users and products tables
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["user"]["id"], customer.id.as_str());
    assert_eq!(details["user"]["email"], customer.email.as_str());
    assert_eq!(details["items"][0]["product_name"], "E2E counted mug");
    assert_eq!(details["items"][1]["product_name"], "E2E counted kettle");
    assert_eq!(trips, 2, "DynamoDB requests of order details");
}

/// events/graphql.order.json asking for `order_id` (with its user and products), sent by `user`.
fn graphql_order_request(order_id: &str, user: &UserId) -> Request {
    let mut event: Value = serde_json::from_str(GRAPHQL_ORDER_EVENT).expect("events/graphql.order.json is JSON");
    let mut body: Value = serde_json::from_str(event["body"].as_str().expect("a body")).expect("a JSON body");
    body["variables"]["id"] = order_id.into();
    event["body"] = body.to_string().into();
    as_user(request(&event.to_string()), user, Role::Customer)
}

#[tokio::test]
async fn a_graphql_order_with_its_user_and_products_takes_two_round_trips() {
    let api = Api::from_env();
    let counted = Counted::new().await;
    let (customer, user_id, order_id) = placed_order(&api, &counted).await;
    let order_id = order_id.as_str();

    // When the GraphQL handler serves order(id) with its user and every line's product
    let (status, body, trips) = counted.graphql(graphql_order_request(order_id, &user_id)).await;
    println!("round trips: GraphQL order with user and products = {trips}");

    // Then the answer holds the buyer and the products, after two requests: the order, then one batch
    // (DataLoader) read across the users and products tables
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    let read = &body["data"]["order"];
    assert_eq!(read["user"]["id"], customer.id.as_str());
    assert_eq!(read["user"]["email"], customer.email.as_str());
    assert_eq!(read["items"][0]["product"]["name"], "E2E counted mug");
    assert_eq!(read["items"][1]["product"]["name"], "E2E counted kettle");
    assert_eq!(
        trips, 2,
        "DynamoDB requests of a GraphQL order with its user and products"
    );
}

/// events/graphql.order.json with `query` as its document, sent by `user`.
fn graphql_request(query: &str, user: &UserId) -> Request {
    let mut event: Value = serde_json::from_str(GRAPHQL_ORDER_EVENT).expect("events/graphql.order.json is JSON");
    event["body"] = json!({"query": query, "variables": {}}).to_string().into();
    as_user(request(&event.to_string()), user, Role::Customer)
}

#[tokio::test]
async fn the_heaviest_graphql_request_allowed_reads_within_its_budget_and_a_refused_one_reads_nothing() {
    let api = Api::from_env();
    let counted = Counted::new().await;
    let (_, user_id, order_id) = placed_order(&api, &counted).await;

    // When one request asks for 25 aliased orders by id, each with its buyer and products (each
    // priced as a read, a batch for its buyer and one for its products: the batches may not meet),
    // plus its account and a full page of its orders and of the catalogue: 91 reads at most
    let aliases: String = (0..25)
        .map(|i| format!("o{i}: order(id: \"{order_id}\") {{ id user {{ name }} items {{ product {{ name }} }} }} "))
        .collect();
    let document = format!(
        "{{ {aliases} me {{ id }} orders(limit: 100) {{ items {{ id }} }} products(limit: 100) {{ items {{ id }} }} }}"
    );
    let (status, body, trips) = counted.graphql(graphql_request(&document, &user_id)).await;
    let weight = graphql::cost::weigh(
        &async_graphql::parser::parse_query(&document).expect("it parses"),
        &async_graphql::Variables::default(),
    )
    .expect("it is weighed");
    println!(
        "round trips: the heaviest allowed GraphQL request = {trips} (priced at {} reads, budget {})",
        weight.storage_reads(),
        graphql::cost::LIMITS.max_reads
    );

    // Then it is served, after no more reads than its price, which is within the budget
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["o24"]["id"], order_id.as_str());
    assert!(weight.storage_reads() <= graphql::cost::LIMITS.max_reads, "{weight:?}");
    assert!(
        trips as u64 <= weight.storage_reads(),
        "{trips} reads, priced at {weight:?}"
    );

    // And ten reads more are refused without a single read
    let more: String = (0..10).map(|i| format!("p{i}: me {{ id }} ")).collect();
    let (status, body, trips) = counted
        .graphql(graphql_request(
            &document.replacen("{ ", &format!("{{ {more}"), 1),
            &user_id,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "query-too-complex", "{body}");
    assert_eq!(trips, 0, "a refused document read the storage");
}
