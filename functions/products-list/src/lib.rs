//! `GET /api/products`: the catalogue, cheapest first, filtered by `category`, `min_price` and
//! `max_price` (minor units), paged with `limit` and an opaque `cursor`. Served by an index query.

use std::sync::Arc;

use api::InitError;
use api::catalogue::{ProductQuery, product_filter, product_page};
use api::cursor::CursorCodec;
use api::http::{ApiRequest, catalogue_response, respond};
use api::listing::page_limit;
use api::{ApiError, ApiState};
use domain::validation::FieldErrors;
use lambda_http::{Body, Request, Response};
use store::products::{ProductCatalog, ProductFilter};

pub struct Deps {
    pub products: Arc<dyn ProductCatalog>,
    pub cursors: CursorCodec,
    /// How long HTTP caches may keep a page (`CatalogueCacheSeconds`).
    pub max_age_secs: u64,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            products: state.catalogue(),
            cursors: state.cursors().await?,
            max_age_secs: state.config.catalogue_cache_secs,
        })
    }
}

/// The listing's filters from the query string: integers are read here, the rules are
/// `api::catalogue::product_filter`'s.
fn filter_of(request: &ApiRequest) -> Result<ProductFilter, ApiError> {
    let mut errors = FieldErrors::default();
    let mut price = |name: &str| match request.query_int(name, i64::MIN..=i64::MAX, None) {
        Ok(value) => value,
        Err(_) => {
            errors.push(name, "must be an integer amount in minor units");
            None
        }
    };
    let min_price = price("min_price");
    let max_price = price("max_price");
    let category = request.query("category");
    let query = ProductQuery {
        category: category.as_deref(),
        min_price,
        max_price,
    };
    product_filter(query, errors)
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        request.only_query_params(&["category", "min_price", "max_price", "limit", "cursor"])?;
        let filter = filter_of(&request)?;
        let limit = page_limit(&request)?;
        let cursor = request.query("cursor");
        let page = product_page(deps.products.as_ref(), &deps.cursors, &filter, limit, cursor.as_deref()).await?;
        catalogue_response(&request, &page, deps.max_age_secs)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request, secret};
    use domain::{NewProduct, ProductId};
    use store::memory::InMemoryProducts;
    use store::products::ProductEditor as _;

    async fn deps() -> Deps {
        let products = Arc::new(InMemoryProducts::default());
        for (name, category, price) in [
            ("Mug", "kitchen", 1299),
            ("Kettle", "kitchen", 3999),
            ("Chess", "games", 2500),
            ("Go", "games", 4500),
            ("Spoon", "kitchen", 299),
        ] {
            let product = NewProduct::parse(name, None, category, price, None, 10)
                .unwrap()
                .into_product(ProductId::generate(), "2026-01-01T00:00:00Z".into());
            products.create(&product).await.unwrap();
        }
        Deps {
            products,
            cursors: secret().cursors(),
            max_age_secs: 30,
        }
    }

    fn names(body: &serde_json::Value) -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn with_query(query: &str) -> Request {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/products-list.json")).unwrap();
        event["rawQueryString"] = query.into();
        let params: serde_json::Map<String, serde_json::Value> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        event["queryStringParameters"] = params.into();
        request(&event.to_string())
    }

    #[tokio::test]
    async fn the_sample_event_filters_by_category_and_price() {
        let response = handle(
            &deps().await,
            request(include_str!("../../../events/products-list.json")),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(names(&json_of(&response)), ["Mug", "Kettle"]);
    }

    #[tokio::test]
    async fn pages_follow_each_other_without_gaps_or_repeats() {
        let deps = deps().await;
        let first = json_of(&handle(&deps, with_query("limit=2")).await);
        assert_eq!(names(&first), ["Spoon", "Mug"]);
        let cursor = first["next_cursor"].as_str().unwrap();
        let second = json_of(&handle(&deps, with_query(&format!("limit=2&cursor={cursor}"))).await);
        assert_eq!(names(&second), ["Chess", "Kettle"]);
        let cursor = second["next_cursor"].as_str().unwrap();
        let third = json_of(&handle(&deps, with_query(&format!("limit=2&cursor={cursor}"))).await);
        assert_eq!(names(&third), ["Go"]);
        assert!(third["next_cursor"].is_null());
    }

    #[tokio::test]
    async fn a_cursor_from_another_filter_is_refused() {
        let deps = deps().await;
        let first = json_of(&handle(&deps, with_query("limit=1")).await);
        let cursor = first["next_cursor"].as_str().unwrap();
        let response = handle(&deps, with_query(&format!("limit=1&category=games&cursor={cursor}"))).await;
        assert_eq!(response.status(), 400);
        assert_eq!(json_of(&response)["errors"][0]["field"], "cursor");
    }

    #[tokio::test]
    async fn out_of_range_limits_and_bad_filters_are_400() {
        let deps = deps().await;
        for query in [
            "limit=0",
            "limit=101",
            "limit=x",
            "min_price=-1",
            "min_price=10&max_price=5",
            "category=%%",
            "colour=red",
        ] {
            assert_eq!(handle(&deps, with_query(query)).await.status(), 400, "{query}");
        }
        let response = handle(
            &deps,
            request(include_str!("../../../events/products-list.bad-limit.json")),
        )
        .await;
        assert_eq!(response.status(), 400);
    }
}
