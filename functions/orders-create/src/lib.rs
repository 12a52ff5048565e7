//! `POST /api/orders`: places an order for the caller. Prices and totals come from the catalogue;
//! every line's stock is reserved, the order stored and the idempotency record completed in one
//! DynamoDB transaction, so two buyers can never both get the last item and a retried request never
//! creates a second order.
//!
//! Round trips on success: the product read (one `BatchGetItem`, issued together with the
//! idempotency claim when an `Idempotency-Key` is sent) and the `TransactWriteItems`.

use std::sync::Arc;

use api::InitError;
use api::auth::TokenService;
use api::http::{ApiRequest, json_bytes_response, respond};
use api::orders::OrderView;
use api::{ApiError, ApiState};
use domain::validation::FieldErrors;
use domain::{IdempotencyKey, fingerprint};
use domain::{NewOrder, Order, now_rfc3339};
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use store::idempotency::{Claim, IdempotencyStore, Lease, StoredResponse};
use store::orders::{OrderRepository, PlaceOutcome};
use store::products::ProductCatalog;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const OPERATION: &str = "orders-create";

pub struct Deps {
    pub products: Arc<dyn ProductCatalog>,
    pub orders: Arc<dyn OrderRepository>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            products: state.products(),
            orders: state.orders(),
            idempotency: state.idempotency(),
            tokens: state.tokens().await?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementRequest {
    items: Vec<LineRequestBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_token: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineRequestBody {
    product_id: String,
    quantity: i64,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| place(deps, request)).await
}

async fn place(deps: &Deps, request: ApiRequest) -> Result<Response<Body>, ApiError> {
    let identity = request.identity(&deps.tokens)?;
    let key = request
        .header(IDEMPOTENCY_HEADER)
        .map(|raw| IdempotencyKey::parse(raw).map_err(|invalid| ApiError::invalid_field("Idempotency-Key", invalid.0)))
        .transpose()?;
    let body: PlacementRequest = request.json()?;
    let lines: Vec<(String, i64)> = body
        .items
        .iter()
        .map(|line| (line.product_id.clone(), line.quantity))
        .collect();
    let new_order = NewOrder::parse(&lines, body.payment_token.as_deref())?;

    // The claim and the catalogue read do not depend on each other: one round trip for both.
    let product_ids = new_order.product_ids();
    let catalogue = deps.products.get_many(&product_ids);
    let (claim, catalogue) = match &key {
        Some(key) => {
            let record_key = key.record_key(OPERATION, &identity.user_id.to_string());
            let canonical = serde_json::to_vec(&body).map_err(ApiError::internal)?;
            let hash = fingerprint(&canonical);
            let (claim, catalogue) = tokio::join!(deps.idempotency.claim(&record_key, &hash), catalogue);
            (Some(claim?), catalogue)
        }
        None => (None, catalogue.await),
    };
    let lease = match claim {
        None => None,
        Some(Claim::Acquired(lease)) => Some(lease),
        Some(Claim::Completed(stored)) => return replay(&stored),
        Some(Claim::InProgress) => {
            return Err(ApiError::Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly.".into(),
            ));
        }
        Some(Claim::Mismatch) => {
            return Err(ApiError::Unprocessable(
                "This Idempotency-Key was used with a different request body.".into(),
            ));
        }
    };

    // Any failure from here on changed nothing, including a failed catalogue read: release the key.
    let result = match catalogue {
        Ok(catalogue) => place_with(deps, &request, &identity.user_id, new_order, catalogue, lease.as_ref()).await,
        Err(error) => Err(error.into()),
    };
    if result.is_err()
        && let Some(lease) = &lease
    {
        // Nothing was changed: give the key back so the client can retry with it.
        if let Err(error) = deps.idempotency.release(lease).await {
            tracing::warn!(error = %error, "could not release idempotency claim; it expires with its lease");
        }
    }
    result
}

async fn place_with(
    deps: &Deps,
    request: &ApiRequest,
    user_id: &domain::UserId,
    new_order: NewOrder,
    catalogue: Vec<domain::Product>,
    lease: Option<&Lease>,
) -> Result<Response<Body>, ApiError> {
    let lines = new_order
        .price(&catalogue)
        .map_err(|missing| unknown_products(&new_order.product_ids(), &missing))?;
    let order = Order::place(
        user_id.clone(),
        lines,
        new_order.payment_token,
        &request.cause(),
        now_rfc3339(),
    )
    .ok_or_else(|| ApiError::invalid_field("items", "the order total is too large"))?;
    let body = serde_json::to_string(&OrderView::from(&order)).map_err(ApiError::internal)?;
    let stored = StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        body,
    };
    match deps.orders.place(&order, lease.map(|lease| (lease, &stored))).await? {
        PlaceOutcome::Placed => {
            metrics::counter!("OrdersPlaced").increment(1);
            // Minor units (cents): CloudWatch sums and averages them per period.
            metrics::histogram!("OrderValue").record(order.total_amount as f64);
            tracing::info!(order_id = %order.id, total = order.total_amount, lines = order.items.len(), "order placed");
            let mut response = json_body_response(&stored)?;
            set_location(&mut response, &order.id.to_string());
            Ok(response)
        }
        PlaceOutcome::OutOfStock(product_id) => {
            let name = order
                .items
                .iter()
                .find(|l| l.product_id == product_id)
                .map_or("", |l| l.product_name.as_str());
            Err(ApiError::Conflict(format!(
                "Not enough stock of product {product_id} ({name}) for this order; nothing was reserved."
            )))
        }
        PlaceOutcome::ProductGone(product_id) => {
            let ordered: Vec<_> = order.items.iter().map(|line| line.product_id.clone()).collect();
            Err(unknown_products(&ordered, &[product_id]))
        }
        PlaceOutcome::LeaseLost => Err(ApiError::Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly.".into(),
        )),
    }
}

/// 400 naming each missing product by the line (`ordered` is the lines' product ids, in order).
fn unknown_products(ordered: &[domain::ProductId], missing: &[domain::ProductId]) -> ApiError {
    let mut errors = FieldErrors::default();
    for id in missing {
        let index = ordered.iter().position(|ordered_id| ordered_id == id);
        let field = index.map_or_else(|| "items".to_string(), |index| format!("items[{index}].product_id"));
        errors.push(field, format!("product {id} does not exist"));
    }
    errors.into()
}

fn json_body_response(stored: &StoredResponse) -> Result<Response<Body>, ApiError> {
    let status = StatusCode::from_u16(stored.status).map_err(ApiError::internal)?;
    Ok(json_bytes_response(status, stored.body.clone()))
}

/// The stored response of the original request, marked as a replay, with the original's Location.
fn replay(stored: &StoredResponse) -> Result<Response<Body>, ApiError> {
    let mut response = json_body_response(stored)?;
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    let order_id = serde_json::from_str::<serde_json::Value>(&stored.body)
        .ok()
        .and_then(|order| order["id"].as_str().map(str::to_owned));
    if let Some(order_id) = order_id {
        set_location(&mut response, &order_id);
    }
    Ok(response)
}

fn set_location(response: &mut Response<Body>, order_id: &str) {
    if let Ok(location) = HeaderValue::from_str(&format!("/api/orders/{order_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, tokens};
    use domain::Role;
    use store::testing::{KETTLE_ID, MUG_ID, OrderWorld};

    fn deps(world: &OrderWorld) -> Deps {
        Deps {
            products: world.products.clone(),
            orders: world.orders.clone(),
            idempotency: world.idempotency.clone(),
            tokens: tokens(),
        }
    }

    fn event(world: &OrderWorld, file: &str) -> Request {
        as_user(request(file), &world.buyer, Role::Customer)
    }

    #[tokio::test]
    async fn placing_reserves_stock_and_prices_on_the_server() {
        let world = OrderWorld::new(5).await;
        let response = handle(
            &deps(&world),
            event(&world, include_str!("../../../events/orders-create.json")),
        )
        .await;
        assert_eq!(response.status(), 201);
        let order = json_of(&response);
        assert_eq!(order["status"], "PENDING");
        assert_eq!(order["user_id"], world.buyer.to_string());
        assert_eq!(order["total_amount"], 2 * 1299 + 4599);
        assert_eq!(order["items"][0]["price"], 1299);
        assert!(order.get("payment_token").is_none());
        assert_eq!(world.stock(MUG_ID).await, 3);
        assert_eq!(world.stock(KETTLE_ID).await, 9);
    }

    #[tokio::test]
    async fn not_enough_stock_is_409_naming_the_product_and_changes_nothing() {
        let world = OrderWorld::new(1).await;
        let response = handle(
            &deps(&world),
            event(&world, include_str!("../../../events/orders-create.json")),
        )
        .await;
        assert_eq!(response.status(), 409);
        assert!(json_of(&response)["detail"].as_str().unwrap().contains(MUG_ID));
        assert_eq!(world.stock(MUG_ID).await, 1);
        assert_eq!(world.stock(KETTLE_ID).await, 10);
        assert_eq!(world.orders.count(), 0);
    }

    #[tokio::test]
    async fn an_unknown_product_is_400_and_changes_nothing() {
        let world = OrderWorld::new(5).await;
        let file = include_str!("../../../events/orders-create.unknown-product.json");
        let response = handle(&deps(&world), event(&world, file)).await;
        assert_eq!(response.status(), 400);
        assert_eq!(json_of(&response)["errors"][0]["field"], "items[1].product_id");
        assert_eq!(world.stock(MUG_ID).await, 5);
        assert_eq!(world.orders.count(), 0);
    }

    #[tokio::test]
    async fn forbidden_fields_are_refused() {
        let world = OrderWorld::new(5).await;
        let file = include_str!("../../../events/orders-create.forbidden-fields.json");
        let response = handle(&deps(&world), event(&world, file)).await;
        assert_eq!(response.status(), 400);
        assert_eq!(world.orders.count(), 0);
    }

    #[tokio::test]
    async fn a_replayed_key_returns_the_original_order_and_creates_nothing() {
        let world = OrderWorld::new(5).await;
        let deps = deps(&world);
        let file = include_str!("../../../events/orders-create.idempotent.json");
        let first = handle(&deps, event(&world, file)).await;
        let second = handle(&deps, event(&world, file)).await;
        assert_eq!(first.status(), 201);
        assert_eq!(second.status(), 201);
        assert_eq!(second.headers()[REPLAYED_HEADER], "true");
        assert_eq!(second.headers()["location"], first.headers()["location"]);
        assert_eq!(json_of(&first), json_of(&second));
        assert_eq!(world.orders.count(), 1);
        assert_eq!(world.stock(MUG_ID).await, 4);
    }

    #[tokio::test]
    async fn the_same_key_with_another_body_is_422() {
        let world = OrderWorld::new(5).await;
        let deps = deps(&world);
        let file = include_str!("../../../events/orders-create.idempotent.json");
        handle(&deps, event(&world, file)).await;
        let mut other: serde_json::Value = serde_json::from_str(file).unwrap();
        other["body"] = serde_json::json!({"items": [{"product_id": MUG_ID, "quantity": 2}]})
            .to_string()
            .into();
        let response = handle(&deps, event(&world, &other.to_string())).await;
        assert_eq!(response.status(), 422);
        assert_eq!(world.orders.count(), 1);
    }

    #[tokio::test]
    async fn a_failed_placement_gives_the_key_back() {
        let world = OrderWorld::new(0).await;
        let deps = deps(&world);
        let file = include_str!("../../../events/orders-create.idempotent.json");
        assert_eq!(handle(&deps, event(&world, file)).await.status(), 409);
        world.products.move_stock_for_tests(MUG_ID, 3);
        assert_eq!(handle(&deps, event(&world, file)).await.status(), 201);
    }

    #[tokio::test]
    async fn a_malformed_key_is_400() {
        let world = OrderWorld::new(5).await;
        let mut file: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/orders-create.idempotent.json")).unwrap();
        file["headers"]["idempotency-key"] = "has spaces in it".into();
        assert_eq!(
            handle(&deps(&world), event(&world, &file.to_string())).await.status(),
            400
        );
    }
}
