//! `POST /api/orders`: places an order for the caller. Prices and totals come from the catalogue;
//! every line's stock is reserved, the order stored and the idempotency record completed in one
//! DynamoDB transaction, so two buyers can never both get the last item and a retried request never
//! creates a second order.
//!
//! Round trips on success: the product read (one `BatchGetItem`, issued together with the
//! idempotency claim when an `Idempotency-Key` is sent) and the `TransactWriteItems`.

use api::InitError;
use api::auth::TokenService;
use api::http::{ApiRequest, json_bytes_response, respond};
use api::placement::{Placement, PlacementDeps, PlacementRequest, idempotency_key, place_order};
use api::{ApiError, ApiState};
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use store::idempotency::StoredResponse;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

pub struct Deps {
    pub placement: PlacementDeps,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            placement: PlacementDeps::from_state(state)?,
            tokens: state.tokens().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| place(deps, request)).await
}

async fn place(deps: &Deps, request: ApiRequest) -> Result<Response<Body>, ApiError> {
    let identity = request.identity(&deps.tokens)?;
    let key = idempotency_key(request.header(IDEMPOTENCY_HEADER), "Idempotency-Key")?;
    let body: PlacementRequest = request.json()?;
    let placement = place_order(
        &deps.placement,
        &identity.user_id,
        &body,
        key.as_ref(),
        &request.cause(),
    )
    .await?;
    let mut response = json_body_response(placement.response())?;
    if let Placement::Replayed(_) = placement {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    if let Some(order_id) = placement.order_id() {
        set_location(&mut response, &order_id);
    }
    Ok(response)
}

fn json_body_response(stored: &StoredResponse) -> Result<Response<Body>, ApiError> {
    let status = StatusCode::from_u16(stored.status).map_err(ApiError::internal)?;
    Ok(json_bytes_response(status, stored.body.clone()))
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
            placement: PlacementDeps {
                products: world.products.clone(),
                orders: world.orders.clone(),
                idempotency: world.idempotency.clone(),
                payment_tokens: domain::PaymentTokenRule::Mock,
            },
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
