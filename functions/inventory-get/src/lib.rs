//! `GET /api/inventory/{product_id}` (admin): stock, low-stock threshold and the recent adjustments,
//! newest first. The product and its adjustments are read concurrently.

use std::sync::Arc;

use api::InitError;
use api::auth::TokenService;
use api::http::{json_response, respond};
use api::{ApiError, ApiState};
use domain::{ProductId, StockQuantity};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use store::products::{Adjustment, Inventory, ProductCatalog};

/// How many adjustments the view shows.
pub const RECENT_ADJUSTMENTS: usize = 20;

pub struct Deps {
    pub products: Arc<dyn ProductCatalog>,
    pub inventory: Arc<dyn Inventory>,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let products = state.products();
        Ok(Self {
            products: products.clone(),
            inventory: products,
            tokens: state.tokens().await?,
        })
    }
}

#[derive(Serialize)]
struct InventoryView {
    product_id: String,
    stock_quantity: StockQuantity,
    low_stock_threshold: StockQuantity,
    adjustments: Vec<Adjustment>,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        request.identity(&deps.tokens)?.require_admin()?;
        let not_found = || ApiError::NotFound("product");
        let id = ProductId::parse(&request.path_param("product_id")?).map_err(|_| not_found())?;
        let (product, adjustments) = tokio::join!(
            deps.products.get(&id),
            deps.inventory.recent_adjustments(&id, RECENT_ADJUSTMENTS)
        );
        let product = product?.ok_or_else(not_found)?;
        json_response(
            StatusCode::OK,
            &InventoryView {
                product_id: product.id.to_string(),
                stock_quantity: product.stock_quantity,
                low_stock_threshold: product.low_stock_threshold,
                adjustments: adjustments?,
            },
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, tokens};
    use domain::{Role, UserId};
    use store::testing::{MUG_ID, OrderWorld};

    fn event() -> Request {
        request(include_str!("../../../events/inventory-get.json"))
    }

    #[tokio::test]
    async fn an_admin_sees_stock_threshold_and_adjustments_newest_first() {
        let world = OrderWorld::new(5).await;
        let id = ProductId::parse(MUG_ID).unwrap();
        for (delta, reason) in [(10, "delivery"), (-2, "breakage")] {
            let adjustment = Adjustment {
                delta,
                reason: reason.into(),
                by: "admin".into(),
                at: "t".into(),
            };
            world.products.adjust_stock(&id, &adjustment, "test").await.unwrap();
        }
        let deps = Deps {
            products: world.products.clone(),
            inventory: world.products.clone(),
            tokens: tokens(),
        };
        let response = handle(&deps, as_user(event(), &UserId::generate(), Role::Admin)).await;
        assert_eq!(response.status(), 200);
        let body = json_of(&response);
        assert_eq!(body["stock_quantity"], 13);
        assert_eq!(body["low_stock_threshold"], 5);
        assert_eq!(body["adjustments"][0]["reason"], "breakage");
        assert_eq!(body["adjustments"][1]["delta"], 10);
    }

    #[tokio::test]
    async fn customers_are_forbidden() {
        let world = OrderWorld::new(5).await;
        let deps = Deps {
            products: world.products.clone(),
            inventory: world.products.clone(),
            tokens: tokens(),
        };
        assert_eq!(
            handle(&deps, as_user(event(), &world.buyer, Role::Customer))
                .await
                .status(),
            403
        );
    }
}
