//! `POST /api/products` (admin): adds a product to the catalogue with its opening stock.

use std::sync::Arc;

use api::ApiState;
use api::InitError;
use api::auth::TokenService;
use api::http::{json_response, respond};
use domain::{NewProduct, ProductId, now_rfc3339};
use lambda_http::http::{HeaderValue, StatusCode, header};
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
struct ProductDraft {
    name: String,
    #[serde(default)]
    description: Option<String>,
    category: String,
    price: i64,
    #[serde(default)]
    currency: Option<String>,
    stock_quantity: i64,
    #[serde(default)]
    low_stock_threshold: Option<i64>,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        request.identity(&deps.tokens)?.require_admin()?;
        let draft: ProductDraft = request.json()?;
        let product = NewProduct::parse(
            &draft.name,
            draft.description.as_deref(),
            &draft.category,
            draft.price,
            draft.currency.as_deref(),
            draft.stock_quantity,
        )?
        .with_low_stock_threshold(draft.low_stock_threshold)?
        .into_product(ProductId::generate(), now_rfc3339());
        deps.products.create(&product).await?;
        tracing::info!(product_id = %product.id, "product created");
        let mut response = json_response(StatusCode::CREATED, &product)?;
        if let Ok(location) = HeaderValue::from_str(&format!("/api/products/{}", product.id)) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, tokens};
    use domain::{Role, UserId};
    use store::memory::InMemoryProducts;
    use store::products::ProductCatalog as _;

    /// The function's dependencies, and the catalogue they write to.
    fn deps() -> (Deps, Arc<InMemoryProducts>) {
        let products = Arc::new(InMemoryProducts::default());
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
    async fn an_admin_adds_a_product_that_can_then_be_read() {
        let (deps, catalogue) = deps();
        let response = handle(&deps, as_admin(include_str!("../../../events/products-create.json"))).await;
        assert_eq!(response.status(), 201);
        let product = json_of(&response);
        assert_eq!(product["currency"], "USD");
        let id = ProductId::parse(product["id"].as_str().unwrap()).unwrap();
        assert!(catalogue.get(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_customer_is_forbidden_and_nothing_is_created() {
        let (deps, catalogue) = deps();
        let event = as_user(
            request(include_str!("../../../events/products-create.json")),
            &UserId::generate(),
            Role::Customer,
        );
        let response = handle(&deps, event).await;
        assert_eq!(response.status(), 403);
        let page = catalogue.list(&Default::default(), None, 10).await.unwrap();
        assert!(page.items.is_empty());
    }

    #[tokio::test]
    async fn invalid_products_are_refused_field_by_field() {
        let response = handle(
            &deps().0,
            as_admin(include_str!("../../../events/products-create.invalid.json")),
        )
        .await;
        assert_eq!(response.status(), 400);
        let errors = json_of(&response)["errors"].as_array().unwrap().len();
        assert!(errors >= 2, "{errors}");
    }
}
