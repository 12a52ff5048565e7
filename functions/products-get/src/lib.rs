//! `GET /api/products/{product_id}`: one product, for anyone. Served from the instance's catalogue
//! cache when it holds the product, with an `ETag` (a matching `If-None-Match` gets a `304`).

use std::sync::Arc;

use api::ApiState;
use api::InitError;
use api::catalogue::product_by_id;
use api::http::{catalogue_response, respond};
use lambda_http::{Body, Request, Response};
use store::products::ProductCatalog;

pub struct Deps {
    pub products: Arc<dyn ProductCatalog>,
    /// How long HTTP caches may keep the answer (`CatalogueCacheSeconds`).
    pub max_age_secs: u64,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            products: state.catalogue(),
            max_age_secs: state.config.catalogue_cache_secs,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let product = product_by_id(deps.products.as_ref(), &request.path_param("product_id")?).await?;
        catalogue_response(&request, &product, deps.max_age_secs)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request};
    use domain::{NewProduct, ProductId};
    use store::memory::InMemoryProducts;
    use store::products::ProductEditor as _;

    const MUG_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-000000000001";

    async fn deps() -> Deps {
        let products = Arc::new(InMemoryProducts::default());
        let mug = NewProduct::parse("Mug", None, "kitchen", 1299, None, 5)
            .unwrap()
            .into_product(ProductId::parse(MUG_ID).unwrap(), "2026-01-01T00:00:00Z".into());
        products.create(&mug).await.unwrap();
        Deps {
            products,
            max_age_secs: 30,
        }
    }

    #[tokio::test]
    async fn an_existing_product_is_returned_with_every_field() {
        let response = handle(
            &deps().await,
            request(include_str!("../../../events/products-get.json")),
        )
        .await;
        assert_eq!(response.status(), 200);
        let product = json_of(&response);
        for field in [
            "id",
            "name",
            "description",
            "category",
            "price",
            "currency",
            "stock_quantity",
            "created_at",
            "updated_at",
        ] {
            assert!(product.get(field).is_some(), "{field}");
        }
        assert_eq!(product["price"], 1299);
        assert_eq!(product["currency"], "USD");
    }

    #[tokio::test]
    async fn an_unknown_or_malformed_id_is_404() {
        let response = handle(
            &deps().await,
            request(include_str!("../../../events/products-get.not-found.json")),
        )
        .await;
        assert_eq!(response.status(), 404);
        let response = handle(
            &deps().await,
            request(include_str!("../../../events/products-get.bad-id.json")),
        )
        .await;
        assert_eq!(response.status(), 404);
    }
}
