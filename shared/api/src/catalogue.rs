//! Reading the catalogue, the rules of `GET /api/products`, `GET /api/products/{id}` and GraphQL's
//! `products` and `product` alike: the listing's filters, its limit and its cursors bound to the
//! filter, and one product by id.

use domain::validation::FieldErrors;
use domain::{Category, Price, Product, ProductId};
use store::products::{ProductCatalog, ProductCursor, ProductFilter};

use crate::cursor::CursorCodec;
use crate::error::ApiError;
use crate::listing::PageBody;

/// A listing's filters as the client sent them (prices in minor units).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProductQuery<'a> {
    pub category: Option<&'a str>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
}

/// The filter `query` asks for, or 400 naming each bad field (`category`, `min_price`, `max_price`),
/// together with the `errors` the caller found already while reading the request.
pub fn product_filter(query: ProductQuery<'_>, mut errors: FieldErrors) -> Result<ProductFilter, ApiError> {
    let category = query.category.map(|raw| errors.check("category", Category::parse(raw)));
    let min_price = query
        .min_price
        .and_then(|minor| errors.check("min_price", Price::new(minor)));
    let max_price = query
        .max_price
        .and_then(|minor| errors.check("max_price", Price::new(minor)));
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

/// One page of the listing `filter`, cheapest first, resuming after `cursor` (which only the same
/// filter's listing honours: another one's is 400).
pub async fn product_page(
    catalogue: &dyn ProductCatalog,
    cursors: &CursorCodec,
    filter: &ProductFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<PageBody<Product>, ApiError> {
    let scope = filter.scope();
    let after: Option<ProductCursor> = cursor.map(|cursor| cursors.decode(&scope, cursor)).transpose()?;
    let page = catalogue.list(filter, after.as_ref(), limit).await?;
    let next_cursor = page.next.map(|next| cursors.encode(&scope, &next)).transpose()?;
    Ok(PageBody {
        items: page.items,
        next_cursor,
    })
}

/// The product with this id; 404 when there is none (or the id is not one).
pub async fn product_by_id(catalogue: &dyn ProductCatalog, raw_id: &str) -> Result<Product, ApiError> {
    let not_found = || ApiError::NotFound("product");
    let id = ProductId::parse(raw_id).map_err(|_| not_found())?;
    catalogue.get(&id).await?.ok_or_else(not_found)
}
