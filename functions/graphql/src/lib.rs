//! `POST /graphql` (`{query, variables?, operationName?}`): the catalogue, the caller's account and
//! orders, placement and cancellation, on the same rules as the REST routes (docs/api.md "GraphQL").
//!
//! - Identity comes from the bearer token, as for REST; fields that need one answer `unauthorized`
//!   without it. Errors carry `extensions.code` and `extensions.status` (the REST status); see
//!   [`errors`].
//! - A document over the limits of [`cost::LIMITS`] (size, tokens, nesting; once its fragments are
//!   expanded: fields, aliases, directives, depth, storage reads and writes, placements) is refused
//!   as `query-too-complex` before async-graphql parses, checks or validates it ([`limits::admit`]).
//! - Introspection (`__schema`, `__type`) is off unless the deployment sets
//!   `GRAPHQL_INTROSPECTION=true` (template parameter `GraphqlIntrospection`).
//! - An order's `user` and its lines' `product` are batched per request ([`loader`]): an order with
//!   its user and products costs two DynamoDB round trips.
//! - The answer is 200 with `data` and `errors`; a body that is not a GraphQL request is the usual
//!   400 problem; every answer is `Cache-Control: private, no-store`.

pub mod cost;
pub mod errors;
pub mod limits;
pub mod loader;
pub mod schema;

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{EmptySubscription, Schema, Variables};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use api::auth::TokenService;
use api::cursor::CursorCodec;
use api::http::{json_response, respond};
use api::placement::PlacementDeps;
use api::{ApiError, ApiState, InitError};
use store::orders::OrderRepository;
use store::products::ProductCatalog;
use store::users::UserRepository;

use crate::cost::LIMITS;
use crate::errors::with_codes;
use crate::limits::admit;
use crate::loader::{MAX_BATCH, RelatedLoader};
use crate::schema::{Caller, Mutation, Query, RequestCause};

/// Directives one field may carry (the schema has `@skip` and `@include`).
const MAX_DIRECTIVES_PER_FIELD: usize = 4;

pub type ShopSchema = Schema<Query, Mutation, EmptySubscription>;

/// What the resolvers read and write through: the same adapters as the REST routes.
pub struct Services {
    /// Catalogue reads (through the instance's cache when there is one).
    pub catalogue: Arc<dyn ProductCatalog>,
    /// Placement: the catalogue as it is now, the orders and the idempotency records.
    pub placement: PlacementDeps,
    pub orders: Arc<dyn OrderRepository>,
    pub users: Arc<dyn UserRepository>,
    pub cursors: CursorCodec,
}

pub struct Deps {
    pub schema: ShopSchema,
    pub orders: Arc<dyn OrderRepository>,
    pub tokens: TokenService,
    /// Whether introspection queries are answered (`GRAPHQL_INTROSPECTION`).
    pub introspection: bool,
}

impl Deps {
    pub fn new(services: Services, tokens: TokenService, introspection: bool) -> Self {
        let orders = Arc::clone(&services.orders);
        let mut builder = Schema::build(Query, Mutation, EmptySubscription)
            .data(Arc::new(services))
            .limit_recursive_depth(LIMITS.max_nesting as usize)
            .limit_directives(MAX_DIRECTIVES_PER_FIELD);
        if !introspection {
            builder = builder.disable_introspection();
        }
        Self {
            schema: builder.finish(),
            orders,
            tokens,
            introspection,
        }
    }

    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let orders: Arc<dyn OrderRepository> = state.orders();
        let services = Services {
            catalogue: state.catalogue(),
            placement: PlacementDeps::from_state(state)?,
            orders,
            users: state.users(),
            cursors: state.cursors().await?,
        };
        let introspection = state
            .env()
            .optional("GRAPHQL_INTROSPECTION")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
        Ok(Self::new(services, state.tokens().await?, introspection))
    }
}

/// The schema's SDL, as committed in `schema.graphql` at the repository root.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription).finish().sdl()
}

/// A GraphQL request over HTTP (`extensions`, a map, is accepted and ignored).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GraphqlBody {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let body: GraphqlBody = request.json()?;
        let mut query = async_graphql::Request::new(body.query);
        match body.variables {
            None | Some(serde_json::Value::Null) => {}
            Some(variables @ serde_json::Value::Object(_)) => {
                query = query.variables(Variables::from_json(variables));
            }
            Some(_) => return Err(ApiError::invalid_field("variables", "must be an object")),
        }
        if let Some(operation_name) = body.operation_name {
            query = query.operation_name(operation_name);
        }
        if let Err(error) = admit(&mut query, deps.introspection) {
            let response = async_graphql::Response::from_errors(with_codes(vec![error]));
            return json_response(StatusCode::OK, &response);
        }
        let caller = Caller(request.identity(&deps.tokens).map_err(|error| match error {
            ApiError::Unauthorized(reason) => reason,
            _ => "The access token is invalid.",
        }));
        let loader = DataLoader::new(
            RelatedLoader {
                orders: Arc::clone(&deps.orders),
            },
            tokio::spawn,
        )
        .max_batch_size(MAX_BATCH);
        let query = query.data(caller).data(RequestCause(request.cause())).data(loader);
        let mut response = deps.schema.execute(query).await;
        response.errors = with_codes(std::mem::take(&mut response.errors));
        json_response(StatusCode::OK, &response)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::QUERY_TOO_COMPLEX;
    use api::testing::{anonymous, as_user, json_of, request, secret, tokens};
    use domain::{Role, UserId};
    use serde_json::{Value, json};
    use store::testing::{KETTLE_ID, MUG_ID, OrderWorld, SAMPLE_ORDER_ID};

    const PRODUCTS_EVENT: &str = include_str!("../../../events/graphql.json");
    const ORDER_EVENT: &str = include_str!("../../../events/graphql.order.json");

    fn deps_with(world: &OrderWorld, introspection: bool) -> Deps {
        let services = Services {
            catalogue: world.products.clone(),
            placement: PlacementDeps {
                products: world.products.clone(),
                orders: world.orders.clone(),
                idempotency: world.idempotency.clone(),
                payment_tokens: domain::PaymentTokenRule::Mock,
            },
            orders: world.orders.clone(),
            users: world.users.clone(),
            cursors: secret().cursors(),
        };
        Deps::new(services, tokens(), introspection)
    }

    fn deps(world: &OrderWorld) -> Deps {
        deps_with(world, false)
    }

    /// events/graphql.json with this query and variables.
    fn query(query: &str, variables: Value) -> Request {
        let mut event: Value = serde_json::from_str(PRODUCTS_EVENT).unwrap();
        event["body"] = json!({"query": query, "variables": variables}).to_string().into();
        request(&event.to_string())
    }

    async fn run(deps: &Deps, request: Request) -> Value {
        let response = handle(deps, request).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "private, no-store");
        json_of(&response)
    }

    fn codes(body: &Value) -> Vec<String> {
        body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|error| error["extensions"]["code"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn schema_graphql_is_the_schema_of_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema.graphql");
        let sdl = sdl();
        if std::env::var("UPDATE_SCHEMA").is_ok_and(|value| value == "1") {
            std::fs::write(path, &sdl).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == sdl,
            "schema.graphql is not the schema of functions/graphql: regenerate it with \
             `UPDATE_SCHEMA=1 cargo test -p graphql schema_graphql` and commit it"
        );
    }

    #[tokio::test]
    async fn the_sample_event_lists_the_catalogue_without_a_token() {
        let world = OrderWorld::new(5).await;
        let body = run(&deps(&world), request(PRODUCTS_EVENT)).await;
        assert!(body.get("errors").is_none(), "{body}");
        let items = body["data"]["products"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{body}");
        assert_eq!(items[0]["name"], "Mug");
        assert_eq!(items[0]["stockQuantity"], 5);
        assert!(body["data"]["products"]["nextCursor"].is_string());
    }

    #[tokio::test]
    async fn the_sample_order_comes_with_its_buyer_and_products() {
        let world = OrderWorld::with_sample_order().await;
        let request = as_user(request(ORDER_EVENT), &world.buyer, Role::Customer);
        let body = run(&deps(&world), request).await;
        assert!(body.get("errors").is_none(), "{body}");
        let order = &body["data"]["order"];
        assert_eq!(order["id"], SAMPLE_ORDER_ID);
        assert_eq!(order["user"]["name"], "Bea Buyer");
        assert_eq!(order["items"][0]["product"]["name"], "Mug");
        assert_eq!(order["items"][1]["product"]["id"], KETTLE_ID);
        assert_eq!(order["totalAmount"], 2 * 1299 + 4599);
    }

    #[tokio::test]
    async fn another_customers_order_is_not_found_and_no_token_is_unauthorized() {
        let world = OrderWorld::with_sample_order().await;
        let deps = deps(&world);
        let stranger = as_user(request(ORDER_EVENT), &UserId::generate(), Role::Customer);
        let body = run(&deps, stranger).await;
        assert_eq!(codes(&body), ["not-found"]);
        assert_eq!(body["errors"][0]["extensions"]["status"], 404);
        assert!(body["data"]["order"].is_null());
        let body = run(&deps, anonymous(request(ORDER_EVENT))).await;
        assert_eq!(codes(&body), ["unauthorized"]);
        assert_eq!(body["errors"][0]["extensions"]["status"], 401);
    }

    #[tokio::test]
    async fn me_is_the_callers_account() {
        let world = OrderWorld::new(5).await;
        let me = query("{ me { id email name role } }", Value::Null);
        let body = run(&deps(&world), as_user(me, &world.buyer, Role::Customer)).await;
        assert_eq!(body["data"]["me"]["id"], world.buyer.to_string(), "{body}");
        assert_eq!(body["data"]["me"]["email"], "buyer@example.com");
        assert_eq!(body["data"]["me"]["role"], "customer");
    }

    const PLACE: &str = "mutation($items: [OrderLineInput!]!, $key: String) { \
        placeOrder(items: $items, paymentToken: \"tok_visa\", idempotencyKey: $key) { id status totalAmount items { productId quantity price } } }";

    #[tokio::test]
    async fn placing_reserves_stock_and_a_replayed_key_answers_the_same_order() {
        let world = OrderWorld::new(5).await;
        let deps = deps(&world);
        let variables = json!({"items": [{"productId": MUG_ID, "quantity": 2}], "key": "gql-key-1"});
        let first = run(
            &deps,
            as_user(query(PLACE, variables.clone()), &world.buyer, Role::Customer),
        )
        .await;
        assert!(first.get("errors").is_none(), "{first}");
        assert_eq!(first["data"]["placeOrder"]["status"], "PENDING");
        assert_eq!(first["data"]["placeOrder"]["totalAmount"], 2 * 1299);
        assert_eq!(world.stock(MUG_ID).await, 3);
        let again = run(&deps, as_user(query(PLACE, variables), &world.buyer, Role::Customer)).await;
        assert_eq!(again["data"], first["data"]);
        assert_eq!(world.orders.count(), 1);
        assert_eq!(world.stock(MUG_ID).await, 3);
        // The same key with other lines is REST's 422.
        let other = json!({"items": [{"productId": MUG_ID, "quantity": 1}], "key": "gql-key-1"});
        let refused = run(&deps, as_user(query(PLACE, other), &world.buyer, Role::Customer)).await;
        assert_eq!(codes(&refused), ["validation"]);
        assert_eq!(refused["errors"][0]["extensions"]["status"], 422);
    }

    #[tokio::test]
    async fn refused_placements_change_nothing() {
        let world = OrderWorld::new(1).await;
        let deps = deps(&world);
        for (lines, code, status) in [
            (json!([{"productId": MUG_ID, "quantity": 0}]), "validation", 400),
            (
                json!([{"productId": UserId::generate().to_string(), "quantity": 1}]),
                "validation",
                400,
            ),
            (json!([{"productId": MUG_ID, "quantity": 2}]), "conflict", 409),
        ] {
            let variables = json!({"items": lines});
            let body = run(&deps, as_user(query(PLACE, variables), &world.buyer, Role::Customer)).await;
            assert_eq!(codes(&body), [code], "{body}");
            assert_eq!(body["errors"][0]["extensions"]["status"], status);
            assert!(body["data"].is_null(), "{body}");
        }
        assert_eq!(world.orders.count(), 0);
        assert_eq!(world.stock(MUG_ID).await, 1);
    }

    #[tokio::test]
    async fn cancelling_releases_the_stock_once() {
        let world = OrderWorld::with_sample_order().await;
        let deps = deps(&world);
        let cancel = format!("mutation {{ cancelOrder(id: \"{SAMPLE_ORDER_ID}\") {{ status cancelReason }} }}");
        for _ in 0..2 {
            let body = run(
                &deps,
                as_user(query(&cancel, Value::Null), &world.buyer, Role::Customer),
            )
            .await;
            assert_eq!(body["data"]["cancelOrder"]["status"], "CANCELLED", "{body}");
            assert_eq!(body["data"]["cancelOrder"]["cancelReason"], "customer_cancelled");
            assert_eq!(world.stock(MUG_ID).await, 5);
        }
    }

    #[tokio::test]
    async fn over_limit_queries_are_refused_before_anything_is_read() {
        let world = OrderWorld::with_sample_order().await;
        let deps = deps_with(&world, true);
        let deep = format!(
            "{{ __type(name: \"Query\") {{ {}name{} }} }}",
            "fields { type { ofType { ".repeat(5),
            " } } }".repeat(5)
        );
        let body = run(&deps, query(&deep, Value::Null)).await;
        assert_eq!(codes(&body), [QUERY_TOO_COMPLEX], "{body}");
        let wide = format!(
            "{{ {} }}",
            (0..30)
                .map(|i| format!("p{i}: products(limit: 100) {{ items {{ id name }} }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let body = run(&deps, query(&wide, Value::Null)).await;
        assert_eq!(codes(&body), [QUERY_TOO_COMPLEX], "{body}");
        assert!(body["data"].is_null());
        // Many aliased mutations in one request (one count for the rate limiter) are refused too,
        // and nothing is cancelled
        let many = format!(
            "mutation {{ {} }}",
            (0..5)
                .map(|i| format!("c{i}: cancelOrder(id: \"{SAMPLE_ORDER_ID}\") {{ status }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let body = run(&deps, as_user(query(&many, Value::Null), &world.buyer, Role::Customer)).await;
        assert_eq!(codes(&body), [QUERY_TOO_COMPLEX], "{body}");
        assert_eq!(world.stock(MUG_ID).await, 3);
    }

    #[tokio::test]
    async fn the_sample_hostile_document_is_refused_through_the_handler_at_once() {
        // events/graphql.hostile.json: 64 levels of fragments that each spread the next one twice
        // (and 24 levels: under async-graphql's own recursion limit, whose check would walk all 2^24)
        let world = OrderWorld::new(5).await;
        let mut chain = String::from("{ products { items { ...F0 } } }");
        for level in 0..24 {
            chain.push_str(&format!(
                " fragment F{level} on Product {{ ...F{next} ...F{next} }}",
                next = level + 1
            ));
        }
        chain.push_str(" fragment F24 on Product { id }");
        for hostile in [
            request(include_str!("../../../events/graphql.hostile.json")),
            query(&chain, json!({})),
        ] {
            let started = std::time::Instant::now();
            let body = run(&deps(&world), hostile).await;
            assert_eq!(codes(&body), [QUERY_TOO_COMPLEX], "{body}");
            assert!(
                started.elapsed() < std::time::Duration::from_millis(50),
                "{:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn over_the_rate_limit_the_answer_is_a_429_with_a_graphql_body() {
        let response = errors::refusal(&api::ApiError::RateLimited { retry_after_secs: 7 }, "c");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = json_of(&response);
        assert_eq!(codes(&body), ["rate-limited"], "{body}");
        assert_eq!(body["errors"][0]["extensions"]["status"], 429);
    }

    #[tokio::test]
    async fn introspection_is_off_unless_enabled() {
        let world = OrderWorld::new(5).await;
        let introspect = "{ __schema { queryType { name } } }";
        let off = run(&deps(&world), query(introspect, Value::Null)).await;
        assert_eq!(codes(&off), ["forbidden"], "{off}");
        assert!(off["data"].is_null());
        let on = run(&deps_with(&world, true), query(introspect, Value::Null)).await;
        assert_eq!(on["data"]["__schema"]["queryType"]["name"], "Query", "{on}");
    }

    #[tokio::test]
    async fn a_malformed_body_is_a_400_problem_and_a_bad_query_a_validation_error() {
        let world = OrderWorld::new(5).await;
        let deps = deps(&world);
        let mut event: Value = serde_json::from_str(PRODUCTS_EVENT).unwrap();
        for body in ["{\"query\": 1}", "{\"query\": \"{ me { id } }\", \"extensions\": true}"] {
            event["body"] = body.into();
            let response = handle(&deps, request(&event.to_string())).await;
            assert_eq!(response.status(), 400, "{body}");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
        }
        let body = run(&deps, query("{ products { nope } }", Value::Null)).await;
        assert_eq!(codes(&body), ["validation"], "{body}");
        let body = run(&deps, query("{ products(limit: 0) { items { id } } }", Value::Null)).await;
        assert_eq!(codes(&body), ["validation"], "{body}");
        assert_eq!(body["errors"][0]["extensions"]["errors"][0]["field"], "limit");
    }
}
