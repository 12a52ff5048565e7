//! `PATCH /api/products/{product_id}` (admin): changes name, description, category or price.
//! Stock moves only through orders and inventory adjustments, so `stock_quantity` is refused here.

use std::sync::Arc;

use api::InitError;
use api::auth::TokenService;
use api::http::{json_response, respond};
use api::{ApiError, ApiState};
use domain::{ProductId, ProductPatch, now_rfc3339};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use store::products::ProductEditor;

pub struct Deps {
    pub products: Arc<dyn ProductEditor>,
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
struct ProductChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    price: Option<i64>,
    #[serde(default)]
    low_stock_threshold: Option<i64>,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        request.identity(&deps.tokens)?.require_admin()?;
        let not_found = || ApiError::NotFound("product");
        let id = ProductId::parse(&request.path_param("product_id")?).map_err(|_| not_found())?;
        let changes: ProductChanges = request.json()?;
        let patch = ProductPatch::parse(
            changes.name.as_deref(),
            changes.description.as_deref(),
            changes.category.as_deref(),
            changes.price,
            changes.low_stock_threshold,
        )?;
        let product = deps
            .products
            .update(&id, &patch, &now_rfc3339())
            .await?
            .ok_or_else(not_found)?;
        tracing::info!(product_id = %product.id, "product updated");
        json_response(StatusCode::OK, &product)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, tokens};
    use domain::{NewProduct, Role, UserId};
    use store::memory::InMemoryProducts;
    use store::products::ProductCatalog as _;

    const MUG_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-000000000001";

    async fn deps() -> Deps {
        deps_and_catalogue().await.0
    }

    /// The function's dependencies, and the catalogue they change, holding a Mug.
    async fn deps_and_catalogue() -> (Deps, Arc<InMemoryProducts>) {
        let products = Arc::new(InMemoryProducts::default());
        let mug = NewProduct::parse("Mug", None, "kitchen", 1299, None, 5)
            .unwrap()
            .into_product(ProductId::parse(MUG_ID).unwrap(), "2026-01-01T00:00:00Z".into());
        products.create(&mug).await.unwrap();
        let deps = Deps {
            products: products.clone(),
            tokens: tokens(),
        };
        (deps, products)
    }

    fn as_admin(event: &str) -> Request {
        as_user(request(event), &UserId::generate(), Role::Admin)
    }

    #[tokio::test]
    async fn an_admin_changes_the_price_and_nothing_else() {
        let response = handle(
            &deps().await,
            as_admin(include_str!("../../../events/products-update.json")),
        )
        .await;
        assert_eq!(response.status(), 200);
        let product = json_of(&response);
        assert_eq!(product["price"], 999);
        assert_eq!(product["name"], "Mug");
        assert_eq!(product["stock_quantity"], 5);
    }

    #[tokio::test]
    async fn stock_cannot_be_changed_here() {
        let (deps, catalogue) = deps_and_catalogue().await;
        let response = handle(
            &deps,
            as_admin(include_str!("../../../events/products-update.stock.json")),
        )
        .await;
        assert_eq!(response.status(), 400);
        assert_eq!(json_of(&response)["errors"][0]["field"], "stock_quantity");
        let mug = catalogue
            .get(&ProductId::parse(MUG_ID).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mug.stock_quantity.units(), 5);
    }

    #[tokio::test]
    async fn a_customer_is_forbidden() {
        let event = as_user(
            request(include_str!("../../../events/products-update.json")),
            &UserId::generate(),
            Role::Customer,
        );
        assert_eq!(handle(&deps().await, event).await.status(), 403);
    }

    #[tokio::test]
    async fn an_unknown_product_is_404() {
        let response = handle(
            &deps().await,
            as_admin(include_str!("../../../events/products-update.not-found.json")),
        )
        .await;
        assert_eq!(response.status(), 404);
    }
}
