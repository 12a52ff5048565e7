//! `POST /api/inventory/{product_id}/adjustments` (admin): adds `delta` (non-zero) to a product's
//! stock with a `reason`. Conditional, so stock never goes below zero (409, nothing changed), and
//! recorded with who, why and when in the same transaction. Falling to or below the product's
//! low-stock threshold raises `inventory.low_stock` through the outbox.

use std::sync::Arc;

use api::InitError;
use api::auth::TokenService;
use api::http::{json_response, respond};
use api::{ApiError, ApiState};
use domain::validation::FieldErrors;
use domain::{ProductId, StockQuantity, now_rfc3339, parse_text};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use store::products::{AdjustOutcome, Adjustment, Inventory};

pub struct Deps {
    pub products: Arc<dyn Inventory>,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            products: state.products(),
            tokens: state.tokens().await?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentRequest {
    delta: i64,
    reason: String,
}

#[derive(Serialize)]
struct StockLevel {
    product_id: String,
    stock_quantity: StockQuantity,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        identity.require_admin()?;
        let not_found = || ApiError::NotFound("product");
        let id = ProductId::parse(&request.path_param("product_id")?).map_err(|_| not_found())?;
        let body: AdjustmentRequest = request.json()?;
        let mut errors = FieldErrors::default();
        if body.delta == 0 || !(-StockQuantity::MAX..=StockQuantity::MAX).contains(&body.delta) {
            errors.push("delta", format!("must be a non-zero integer between -{0} and {0}", StockQuantity::MAX));
        }
        let reason = errors.check("reason", parse_text(&body.reason, 1, 200));
        let reason = errors.finish(|| reason)?;
        let adjustment = Adjustment {
            delta: body.delta,
            reason,
            by: identity.user_id.to_string(),
            at: now_rfc3339(),
        };
        match deps.products.adjust_stock(&id, &adjustment, request.correlation_id()).await? {
            AdjustOutcome::Adjusted(stock_quantity) => {
                tracing::info!(product_id = %id, delta = adjustment.delta, stock = stock_quantity.units(), "stock adjusted");
                json_response(StatusCode::OK, &StockLevel {
                    product_id: id.to_string(),
                    stock_quantity,
                })
            }
            AdjustOutcome::OutOfBounds { current } => Err(ApiError::Conflict(format!(
                "The adjustment would take the stock of product {id} from {} out of bounds (0 to {}); nothing changed.",
                current.units(),
                StockQuantity::MAX
            ))),
            AdjustOutcome::NotFound => Err(not_found()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, tokens};
    use domain::{Role, UserId};
    use store::testing::{MUG_ID, OrderWorld};

    fn with_body(body: serde_json::Value) -> Request {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/inventory-adjust.json")).unwrap();
        event["body"] = body.to_string().into();
        as_user(request(&event.to_string()), &UserId::generate(), Role::Admin)
    }

    async fn deps() -> (Deps, OrderWorld) {
        let world = OrderWorld::new(5).await;
        (
            Deps {
                products: world.products.clone(),
                tokens: tokens(),
            },
            world,
        )
    }

    #[tokio::test]
    async fn an_admin_restocks_and_the_adjustment_is_recorded() {
        let (deps, world) = deps().await;
        let response = handle(&deps, with_body(serde_json::json!({"delta": 20, "reason": "delivery"}))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_of(&response)["stock_quantity"], 25);
        let recorded = world
            .products
            .recent_adjustments(&ProductId::parse(MUG_ID).unwrap(), 10)
            .await
            .unwrap();
        assert_eq!((recorded[0].delta, recorded[0].reason.as_str()), (20, "delivery"));
    }

    #[tokio::test]
    async fn stock_never_goes_below_zero() {
        let (deps, world) = deps().await;
        let response = handle(&deps, with_body(serde_json::json!({"delta": -6, "reason": "breakage"}))).await;
        assert_eq!(response.status(), 409);
        assert_eq!(world.stock(MUG_ID).await, 5);
        let response = handle(&deps, with_body(serde_json::json!({"delta": -5, "reason": "breakage"}))).await;
        assert_eq!(json_of(&response)["stock_quantity"], 0);
    }

    #[tokio::test]
    async fn zero_deltas_and_missing_reasons_are_400() {
        let (deps, _) = deps().await;
        for body in [
            serde_json::json!({"delta": 0, "reason": "x"}),
            serde_json::json!({"delta": 1, "reason": ""}),
            serde_json::json!({"delta": 1}),
            serde_json::json!({"delta": "1", "reason": "x"}),
            serde_json::json!({"delta": 1, "reason": "x", "by": "someone"}),
            serde_json::json!({"delta": i64::MIN, "reason": "overflow"}),
            serde_json::json!({"delta": 1_000_001, "reason": "too many"}),
        ] {
            assert_eq!(handle(&deps, with_body(body.clone())).await.status(), 400, "{body}");
        }
    }

    #[tokio::test]
    async fn customers_are_forbidden() {
        let (deps, world) = deps().await;
        let event = as_user(
            request(include_str!("../../../events/inventory-adjust.json")),
            &world.buyer,
            Role::Customer,
        );
        assert_eq!(handle(&deps, event).await.status(), 403);
        assert_eq!(world.stock(MUG_ID).await, 5);
    }
}
