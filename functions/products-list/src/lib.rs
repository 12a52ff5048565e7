//! `GET /api/products`: the catalogue, cheapest first, filtered by `category`, `min_price` and
//! `max_price` (minor units), paged with `limit` and an opaque `cursor`. Served by an index query.

use std::sync::Arc;

use api::InitError;
use api::cursor::CursorCodec;
use api::http::{ApiRequest, catalogue_response, respond};
use api::listing::{PageBody, page_limit};
use api::{ApiError, ApiState};
use domain::validation::FieldErrors;
use domain::{Category, Price};
use lambda_http::{Body, Request, Response};
use store::products::{ProductCatalog, ProductCursor, ProductFilter};

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

fn filter_of(request: &ApiRequest) -> Result<ProductFilter, ApiError> {
    let mut errors = FieldErrors::default();
    let category = request
        .query("category")
        .map(|raw| errors.check("category", Category::parse(&raw)));
    let mut price = |name: &str| match request.query_int(name, 0..=Price::MAX, None) {
        Ok(value) => value.and_then(|minor| Price::new(minor).ok()),
        Err(ApiError::Validation(found)) => {
            found
                .into_vec()
                .into_iter()
                .for_each(|e| errors.push(e.field, e.message));
            None
        }
        Err(_) => None,
    };
    let min_price = price("min_price");
    let max_price = price("max_price");
    if let (Some(min), Some(max)) = (min_price, max_price)
        && min > max
    {
        errors.push("min_price", "must not be greater than max_price");
    }
    Ok(errors.finish(|| {
        Some(ProductFilter {
            category: category.map_or(Some(None), |parsed| parsed.map(Some))?,
            min_price,
            max_price,
        })
    })?)
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        request.only_query_params(&["category", "min_price", "max_price", "limit", "cursor"])?;
        let filter = filter_of(&request)?;
        let limit = page_limit(&request)?;
        let scope = filter.scope();
        let after: Option<ProductCursor> = request
            .query("cursor")
            .map(|cursor| deps.cursors.decode(&scope, &cursor))
            .transpose()?;
        let page = deps.products.list(&filter, after.as_ref(), limit).await?;
        let next_cursor = page.next.map(|next| deps.cursors.encode(&scope, &next)).transpose()?;
        catalogue_response(
            &request,
            &PageBody {
                items: page.items,
                next_cursor,
            },
            deps.max_age_secs,
        )
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
