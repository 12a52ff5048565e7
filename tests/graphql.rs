//! End-to-end: GraphQL at `POST /graphql` (docs/api.md "GraphQL"), through HTTP like a client: the catalogue
//! with filters and paging, one product, the caller's account, placement (idempotent) and the order with
//! its buyer and products, ownership, authentication, validation, stock conflicts, cancellation, the
//! depth and complexity limits and introspection (off by default).
//! Every test uses fresh customers and products of its own (in a category of its own).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{Api, Customer, Reply, assert_problem, unique_category, unknown_id};
use serde_json::{Value, json};

const ORDER_FIELDS: &str = "id userId status paymentStatus totalAmount currency cancelReason createdAt updatedAt \
     user { id name email } items { productId quantity price product { id name description } }";

/// `POST /graphql` with `query` and `variables`, as `token` (anonymous when `None`).
async fn graphql(api: &Api, token: Option<&str>, query: &str, variables: Value) -> Reply {
    api.post_json("/graphql", token, &json!({"query": query, "variables": variables}))
        .await
}

/// The `data` of a GraphQL answer that must have no errors.
#[track_caller]
fn data(reply: &Reply) -> &Value {
    let body = reply.expect(200);
    assert!(body.get("errors").is_none(), "unexpected errors: {}", reply.describe());
    assert_eq!(reply.header("cache-control"), Some("private, no-store"));
    &body["data"]
}

/// The single error of a GraphQL answer: asserts its code and REST status, returns it.
#[track_caller]
fn single_error<'a>(reply: &'a Reply, code: &str, status: u16) -> &'a Value {
    let body = reply.expect(200);
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {}", reply.describe()));
    assert_eq!(errors.len(), 1, "{}", reply.describe());
    assert_eq!(errors[0]["extensions"]["code"], code, "{}", reply.describe());
    assert_eq!(errors[0]["extensions"]["status"], status, "{}", reply.describe());
    e2e::assert_nothing_internal(&reply.text);
    &errors[0]
}

/// A product of a category of its own, created by the admin; returns its id.
async fn product(api: &Api, name: &str, price: i64, stock: i64) -> String {
    let admin = api.admin_token().await;
    let created = api.create_product(&admin, name, &unique_category(), price, stock).await;
    created["id"].as_str().expect("product id").to_owned()
}

const PLACE: &str = "mutation Place($items: [OrderLineInput!]!, $key: String, $token: String) { \
     placeOrder(items: $items, paymentToken: $token, idempotencyKey: $key) { id status totalAmount } }";

async fn place(api: &Api, customer: &Customer, product_id: &str, quantity: i64, key: Option<&str>) -> Reply {
    let variables = json!({
        "items": [{"productId": product_id, "quantity": quantity}],
        "key": key,
        "token": "tok_visa",
    });
    graphql(api, Some(&customer.token), PLACE, variables).await
}

async fn placed_id(api: &Api, customer: &Customer, product_id: &str, quantity: i64) -> String {
    let reply = place(api, customer, product_id, quantity, None).await;
    data(&reply)["placeOrder"]["id"].as_str().expect("order id").to_owned()
}

#[tokio::test]
async fn graphql_the_catalogue_is_filtered_and_paged() {
    // Given three products of a category of its own
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    for (name, price) in [("GQL cheap", 100), ("GQL middle", 200), ("GQL dear", 300)] {
        api.create_product(&admin, name, &category, price, 5).await;
    }
    assert_eq!(api.category_items(&category, 3).await.len(), 3);
    let query = "query($category: String, $cursor: String) { \
        products(category: $category, minPrice: 150, limit: 1, cursor: $cursor) { items { name price stockQuantity category } nextCursor } }";

    // When an anonymous client asks for those from 150 on, one per page
    let first = graphql(&api, None, query, json!({"category": category})).await;
    let page = &data(&first)["products"];

    // Then the pages follow each other, cheapest first
    assert_eq!(page["items"][0]["name"], "GQL middle");
    assert_eq!(page["items"][0]["stockQuantity"], 5);
    assert_eq!(page["items"][0]["category"], category.as_str());
    let cursor = page["nextCursor"].as_str().expect("a next cursor");
    let second = graphql(&api, None, query, json!({"category": category, "cursor": cursor})).await;
    let page = &data(&second)["products"];
    assert_eq!(page["items"][0]["name"], "GQL dear");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["nextCursor"].is_null());

    // And a filter that makes no sense is a validation error naming the field
    let bad = graphql(
        &api,
        None,
        "{ products(minPrice: 500, maxPrice: 100) { items { id } } }",
        Value::Null,
    )
    .await;
    let error = single_error(&bad, "validation", 400);
    assert_eq!(error["extensions"]["errors"][0]["field"], "min_price");
}

#[tokio::test]
async fn graphql_one_product_is_read_by_id_and_an_unknown_one_is_not_found() {
    // Given a product
    let api = Api::from_env();
    let id = product(&api, "GQL lamp", 2599, 7).await;
    let query =
        "query($id: ID!) { product(id: $id) { id name description price currency stockQuantity createdAt updatedAt } }";

    // When it is asked for by id
    let reply = graphql(&api, None, query, json!({"id": id})).await;

    // Then it comes with the REST product's fields in camelCase
    let rest = api.get_product(&id).await;
    let rest = rest.expect(200);
    let product = &data(&reply)["product"];
    assert_eq!(product["id"], id.as_str());
    assert_eq!(product["name"], "GQL lamp");
    assert_eq!(product["price"], 2599);
    assert_eq!(product["currency"], "USD");
    assert_eq!(product["stockQuantity"], 7);
    assert_eq!(product["createdAt"], rest["created_at"]);

    // And an unknown id is not-found
    let missing = graphql(&api, None, query, json!({"id": unknown_id()})).await;
    single_error(&missing, "not-found", 404);
    assert!(missing.json["data"]["product"].is_null());
}

#[tokio::test]
async fn graphql_me_is_the_callers_own_account() {
    // Given a customer
    let api = Api::from_env();
    let customer = api.customer().await;

    // When they ask who they are
    let reply = graphql(
        &api,
        Some(&customer.token),
        "{ me { id email name role createdAt } }",
        Value::Null,
    )
    .await;

    // Then it is their account
    let me = &data(&reply)["me"];
    assert_eq!(me["id"], customer.id.as_str());
    assert_eq!(me["email"], customer.email.as_str());
    assert_eq!(me["role"], "customer");
}

#[tokio::test]
async fn graphql_a_placed_order_is_read_back_with_its_buyer_and_products() {
    // Given a customer and a product
    let api = Api::from_env();
    let customer = api.customer().await;
    let product_id = product(&api, "GQL mug", 1299, 10).await;

    // When they place an order over GraphQL
    let reply = place(&api, &customer, &product_id, 2, None).await;
    let placed = &data(&reply)["placeOrder"];
    assert_eq!(placed["status"], "PENDING");
    assert_eq!(placed["totalAmount"], 2 * 1299);
    let order_id = placed["id"].as_str().expect("order id");

    // Then the stock is reserved, REST sees the same order
    assert_eq!(api.stock(&product_id).await, 8);
    assert_eq!(api.order(&customer.token, order_id).await["total_amount"], 2 * 1299);

    // And order(id) shows it with its buyer and its products
    let query = format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}");
    let read = graphql(&api, Some(&customer.token), &query, json!({"id": order_id})).await;
    let order = &data(&read)["order"];
    assert_eq!(order["id"], order_id);
    assert_eq!(order["userId"], customer.id.as_str());
    assert_eq!(order["user"]["id"], customer.id.as_str());
    assert_eq!(order["user"]["email"], customer.email.as_str());
    assert_eq!(order["items"][0]["productId"], product_id.as_str());
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["items"][0]["price"], 1299);
    assert_eq!(order["items"][0]["product"]["name"], "GQL mug");
    assert_eq!(
        order["items"][0]["product"]["description"],
        "GQL mug made by the e2e suite"
    );

    // And orders lists it
    let listed = graphql(
        &api,
        Some(&customer.token),
        "{ orders(limit: 10) { items { id } nextCursor } }",
        Value::Null,
    )
    .await;
    let listed = &data(&listed)["orders"];
    assert_eq!(listed["items"][0]["id"], order_id);
    assert!(listed["nextCursor"].is_null());
}

#[tokio::test]
async fn graphql_another_users_order_is_not_found() {
    // Given an order of one customer
    let api = Api::from_env();
    let owner = api.customer().await;
    let stranger = api.customer().await;
    let product_id = product(&api, "GQL private mug", 500, 5).await;
    let order_id = placed_id(&api, &owner, &product_id, 1).await;

    // When another customer asks for it, or tries to cancel it
    let read = graphql(
        &api,
        Some(&stranger.token),
        "query($id: ID!) { order(id: $id) { id } }",
        json!({"id": order_id}),
    )
    .await;
    let cancel = graphql(
        &api,
        Some(&stranger.token),
        "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
        json!({"id": order_id}),
    )
    .await;

    // Then it does not exist for them, and nothing changed
    single_error(&read, "not-found", 404);
    assert!(read.json["data"]["order"].is_null());
    single_error(&cancel, "not-found", 404);
    assert_eq!(api.stock(&product_id).await, 4);
    assert_ne!(api.order(&owner.token, &order_id).await["status"], "CANCELLED");
}

#[tokio::test]
async fn graphql_without_a_token_the_callers_fields_are_unauthorized() {
    // Given a product
    let api = Api::from_env();
    let product_id = product(&api, "GQL anonymous mug", 500, 5).await;

    // When an anonymous client asks who they are, or places an order
    let me = graphql(&api, None, "{ me { id } }", Value::Null).await;
    let variables = json!({"items": [{"productId": product_id, "quantity": 1}]});
    let placed = graphql(&api, None, PLACE, variables).await;
    let forged = graphql(&api, Some("not-a-token"), "{ orders { items { id } } }", Value::Null).await;

    // Then each is unauthorized, and nothing was reserved
    single_error(&me, "unauthorized", 401);
    single_error(&placed, "unauthorized", 401);
    single_error(&forged, "unauthorized", 401);
    assert_eq!(api.stock(&product_id).await, 5);
}

#[tokio::test]
async fn graphql_invalid_placements_are_validation_errors_and_change_nothing() {
    // Given a customer and a product
    let api = Api::from_env();
    let customer = api.customer().await;
    let product_id = product(&api, "GQL valid mug", 500, 5).await;

    // When they order a quantity of 0, too many units, or a product that does not exist
    let zero = place(&api, &customer, &product_id, 0, None).await;
    let too_many = place(&api, &customer, &product_id, 101, None).await;
    let unknown = place(&api, &customer, &unknown_id(), 1, None).await;

    // Then each is a validation error naming the line, and nothing was placed or reserved
    for reply in [&zero, &too_many, &unknown] {
        let error = single_error(reply, "validation", 400);
        let field = error["extensions"]["errors"][0]["field"].as_str().unwrap_or_default();
        assert!(field.starts_with("items"), "{}", reply.describe());
        assert!(reply.json["data"].is_null());
    }
    assert_eq!(api.stock(&product_id).await, 5);
    assert!(api.all_orders(&customer.token, None).await.is_empty());
}

#[tokio::test]
async fn graphql_not_enough_stock_is_a_conflict_naming_the_product() {
    // Given a product with 2 units
    let api = Api::from_env();
    let customer = api.customer().await;
    let product_id = product(&api, "GQL scarce mug", 500, 2).await;

    // When a customer orders 3
    let reply = place(&api, &customer, &product_id, 3, None).await;

    // Then it is a conflict naming the product, and nothing was reserved
    let error = single_error(&reply, "conflict", 409);
    assert!(
        error["message"].as_str().unwrap().contains(&product_id),
        "{}",
        reply.describe()
    );
    assert_eq!(api.stock(&product_id).await, 2);
    assert!(api.all_orders(&customer.token, None).await.is_empty());
}

#[tokio::test]
async fn graphql_a_replayed_idempotency_key_answers_the_same_order() {
    // Given a customer, a product and a key
    let api = Api::from_env();
    let customer = api.customer().await;
    let product_id = product(&api, "GQL idempotent mug", 500, 5).await;
    let key = format!("gql-{}", uuid::Uuid::new_v4());

    // When the same placement is sent twice with the key
    let first = place(&api, &customer, &product_id, 2, Some(&key)).await;
    let second = place(&api, &customer, &product_id, 2, Some(&key)).await;

    // Then both answer the same order, placed once
    let first_id = &data(&first)["placeOrder"]["id"];
    assert_eq!(&data(&second)["placeOrder"]["id"], first_id);
    assert_eq!(api.all_orders(&customer.token, None).await.len(), 1);
    assert_eq!(api.stock(&product_id).await, 3);

    // And other lines under the same key are refused (REST's 422), placing nothing
    let other = place(&api, &customer, &product_id, 1, Some(&key)).await;
    single_error(&other, "validation", 422);
    assert_eq!(api.all_orders(&customer.token, None).await.len(), 1);
    assert_eq!(api.stock(&product_id).await, 3);
}

#[tokio::test]
async fn graphql_cancelling_releases_the_stock_once() {
    // Given a placed order of 2 units
    let api = Api::from_env();
    let customer = api.customer().await;
    let product_id = product(&api, "GQL cancelled mug", 500, 5).await;
    let order_id = placed_id(&api, &customer, &product_id, 2).await;
    assert_eq!(api.stock(&product_id).await, 3);
    let cancel = "mutation($id: ID!) { cancelOrder(id: $id) { id status cancelReason } }";

    // When the customer cancels it twice
    let first = graphql(&api, Some(&customer.token), cancel, json!({"id": order_id})).await;
    let second = graphql(&api, Some(&customer.token), cancel, json!({"id": order_id})).await;

    // Then it is cancelled, and the stock came back exactly once
    for reply in [&first, &second] {
        let order = &data(reply)["cancelOrder"];
        assert_eq!(order["status"], "CANCELLED");
        assert_eq!(order["cancelReason"], "customer_cancelled");
    }
    assert_eq!(api.stock(&product_id).await, 5);
}

#[tokio::test]
async fn graphql_over_limit_queries_are_refused_before_anything_runs() {
    // Given a customer and a product
    let api = Api::from_env();
    let customer = api.customer().await;
    let product_id = product(&api, "GQL limited mug", 500, 5).await;

    // When they send a query nested too deep
    let deep = format!(
        "{{ __type(name: \"Query\") {{ {}name{} }} }}",
        "fields { type { ofType { ".repeat(5),
        " } } }".repeat(5)
    );
    let deep = graphql(&api, Some(&customer.token), &deep, Value::Null).await;

    // And a mutation asking for far too much (300 aliased placements with their lines and products)
    let placements: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "p{i}: placeOrder(items: [{{productId: \"{product_id}\", quantity: 1}}]) {{ id items {{ productId product {{ id name }} }} }}"
            )
        })
        .collect();
    let listings: Vec<String> = (0..30)
        .map(|i| format!("l{i}: products(limit: 100) {{ items {{ id name price }} }}"))
        .collect();
    let wide_mutation = format!("mutation {{ {} }}", placements.join(" "));
    let wide_query = format!("{{ {} }}", listings.join(" "));
    let wide_mutation = graphql(&api, Some(&customer.token), &wide_mutation, Value::Null).await;
    let wide_query = graphql(&api, Some(&customer.token), &wide_query, Value::Null).await;

    // Then each is refused as too complex, with no data, and nothing was placed
    for reply in [&deep, &wide_query] {
        single_error(reply, "query-too-complex", 400);
        assert!(reply.json["data"].is_null(), "{}", reply.describe());
    }
    single_error(&wide_mutation, "query-too-complex", 400);
    assert_eq!(api.stock(&product_id).await, 5);
    assert!(api.all_orders(&customer.token, None).await.is_empty());
}

#[tokio::test]
async fn graphql_introspection_is_off_by_default() {
    // When a client asks for the schema
    let api = Api::from_env();
    let reply = graphql(&api, None, "{ __schema { types { name } } }", Value::Null).await;

    // Then it is refused, without any of it
    single_error(&reply, "forbidden", 403);
    assert!(reply.json["data"].is_null());
    assert!(!reply.text.contains("ProductPage"), "{}", reply.describe());
}

#[tokio::test]
async fn graphql_a_body_that_is_not_a_graphql_request_is_a_400_problem() {
    // When a client sends a body without a query, or not JSON
    let api = Api::from_env();
    let missing = api.post_json("/graphql", None, &json!({"variables": {}})).await;
    let not_json = api
        .send_raw(reqwest::Method::POST, "/graphql", None, "text/plain", "{ me { id } }")
        .await;

    // Then they are the usual problems
    assert_problem(&missing, 400);
    assert_problem(&not_json, 415);
}
