//! Products table (`id` key). Listings are served by two indexes sorted by price, never by a Scan:
//! `by_price` (every product under one constant partition `catalog = ALL`) and `by_category`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};

use domain::{Category, Price, Product, ProductId, ProductPatch, StockQuantity};

use crate::{Page, StoreError, batch_get, condition_failed, is_condition_failure, query_page, request_token, transact};

pub const BY_PRICE_INDEX: &str = "by_price";
pub const BY_CATEGORY_INDEX: &str = "by_category";
const CATALOG_PARTITION: &str = "ALL";

/// Filters of a product listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    pub category: Option<Category>,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
}

impl ProductFilter {
    /// Identifies the listing, so a cursor is only honoured by the listing that issued it.
    pub fn scope(&self) -> String {
        format!(
            "products|{}|{}|{}",
            self.category.as_ref().map_or("", Category::as_str),
            self.min_price.map_or(-1, Price::minor_units),
            self.max_price.map_or(-1, Price::minor_units),
        )
    }

    pub fn matches(&self, product: &Product) -> bool {
        self.category
            .as_ref()
            .is_none_or(|category| &product.category == category)
            && self.min_price.is_none_or(|min| product.price >= min)
            && self.max_price.is_none_or(|max| product.price <= max)
    }
}

/// Where a product listing resumes: after the product with this price and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCursor {
    pub price: i64,
    pub id: String,
}

impl ProductCursor {
    pub fn after(product: &Product) -> Self {
        Self {
            price: product.price.minor_units(),
            id: product.id.to_string(),
        }
    }
}

/// Reading the catalogue: all the read routes may do (their IAM policies allow reads only).
#[async_trait]
pub trait ProductCatalog: Send + Sync {
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, StoreError>;
    /// The products with these ids that exist, in one round trip (at most 100 ids).
    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError>;
    /// Products matching `filter`, cheapest first, resuming after `after`.
    async fn list(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductCursor>,
        limit: usize,
    ) -> Result<Page<Product, ProductCursor>, StoreError>;
}

/// Editing the catalogue (admins): new products and changes that leave the stock alone.
#[async_trait]
pub trait ProductEditor: Send + Sync {
    /// Stores a new product; `AlreadyExists` if its id is taken.
    async fn create(&self, product: &Product) -> Result<(), StoreError>;
    /// Applies `patch` to an existing product without touching its stock; `None` when there is none.
    async fn update(&self, id: &ProductId, patch: &ProductPatch, now: &str) -> Result<Option<Product>, StoreError>;
}

/// Stock changes outside orders, and their record.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// Adds `adjustment.delta` to the stock, never below zero, and records the adjustment with it
    /// (one transaction).
    async fn adjust_stock(
        &self,
        id: &ProductId,
        adjustment: &Adjustment,
        correlation_id: &str,
    ) -> Result<AdjustOutcome, StoreError>;
    /// The latest adjustments of a product, newest first.
    async fn recent_adjustments(&self, id: &ProductId, limit: usize) -> Result<Vec<Adjustment>, StoreError>;
}

#[derive(Debug, Serialize, Deserialize)]
struct ProductItem {
    #[serde(flatten)]
    product: Product,
    /// Constant partition of the `by_price` index.
    catalog: String,
    /// The request that last moved the stock, so a low-stock alert can name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_correlation_id: Option<String>,
}

/// The key of an index entry, for resuming a query after it.
#[derive(Serialize)]
struct IndexPosition<'a> {
    id: &'a str,
    price: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
}

pub struct DynamoProductRepository {
    client: Client,
    table: String,
    adjustments_table: String,
}

impl DynamoProductRepository {
    pub fn new(client: Client, table: &str, adjustments_table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            adjustments_table: adjustments_table.to_owned(),
        }
    }
}

/// A recorded change of stock outside orders: who, why, when, by how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub delta: i64,
    pub reason: String,
    pub by: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdjustOutcome {
    /// Applied; the stock it left.
    Adjusted(StockQuantity),
    /// Refused, nothing changed: the stock would leave its bounds (below 0 or above the maximum).
    OutOfBounds {
        current: StockQuantity,
    },
    NotFound,
}

#[derive(Serialize, Deserialize)]
struct AdjustmentItem {
    product_id: String,
    /// Sort key: time first, so the newest come first; a random suffix keeps same-instant ones apart.
    at_id: String,
    #[serde(flatten)]
    adjustment: Adjustment,
}

/// The product a products-table stream image holds, and the correlation id of the request that last
/// moved its stock.
pub fn product_from_image(item: serde_dynamo::Item) -> Result<(Product, Option<String>), StoreError> {
    let item: ProductItem = serde_dynamo::from_item(item)?;
    Ok((item.product, item.last_correlation_id))
}

/// Products from raw items of the products table.
pub fn products_from_items(items: Vec<HashMap<String, AttributeValue>>) -> Result<Vec<Product>, StoreError> {
    let items: Vec<ProductItem> = serde_dynamo::from_items(items)?;
    Ok(items.into_iter().map(|item| item.product).collect())
}

pub fn id_key(id: &ProductId) -> HashMap<String, AttributeValue> {
    HashMap::from([("id".to_string(), AttributeValue::S(id.to_string()))])
}

#[async_trait]
impl ProductCatalog for DynamoProductRepository {
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(id_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let item: Option<ProductItem> = output.item.map(serde_dynamo::from_item).transpose()?;
        Ok(item.map(|item| item.product))
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        let keys = ids.iter().map(id_key).collect();
        let mut found = batch_get(&self.client, HashMap::from([(self.table.clone(), keys)])).await?;
        products_from_items(found.remove(&self.table).unwrap_or_default())
    }

    async fn list(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductCursor>,
        limit: usize,
    ) -> Result<Page<Product, ProductCursor>, StoreError> {
        let (index, partition_attribute, partition) = match &filter.category {
            Some(category) => (BY_CATEGORY_INDEX, "category", category.as_str()),
            None => (BY_PRICE_INDEX, "catalog", CATALOG_PARTITION),
        };
        // Attribute names go through placeholders: `catalog` is a DynamoDB reserved word.
        let mut key_condition = "#partition = :partition".to_string();
        let mut names = HashMap::from([("#partition".to_string(), partition_attribute.to_string())]);
        let mut values = HashMap::from([(":partition".to_string(), AttributeValue::S(partition.to_owned()))]);
        if filter.min_price.is_some() || filter.max_price.is_some() {
            key_condition.push_str(" AND #price BETWEEN :min_price AND :max_price");
            names.insert("#price".into(), "price".into());
            let min = filter.min_price.map_or(0, Price::minor_units);
            let max = filter.max_price.map_or(Price::MAX, Price::minor_units);
            values.insert(":min_price".into(), AttributeValue::N(min.to_string()));
            values.insert(":max_price".into(), AttributeValue::N(max.to_string()));
        }
        let start_key = after
            .map(|cursor| {
                serde_dynamo::to_item(IndexPosition {
                    id: &cursor.id,
                    price: cursor.price,
                    catalog: filter.category.is_none().then_some(CATALOG_PARTITION),
                    category: filter.category.as_ref().map(Category::as_str),
                })
            })
            .transpose()?;
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(key_condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values));
        let page = query_page(query, start_key, limit, |item: &ProductItem| {
            ProductCursor::after(&item.product)
        })
        .await?;
        Ok(page.map(|item| item.product))
    }
}

#[async_trait]
impl ProductEditor for DynamoProductRepository {
    async fn create(&self, product: &Product) -> Result<(), StoreError> {
        let item = ProductItem {
            product: product.clone(),
            catalog: CATALOG_PARTITION.into(),
            last_correlation_id: None,
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(serde_dynamo::to_item(item)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(StoreError::AlreadyExists),
            Err(error) => Err(StoreError::from_sdk(error)),
        }
    }

    async fn update(&self, id: &ProductId, patch: &ProductPatch, now: &str) -> Result<Option<Product>, StoreError> {
        let mut sets = vec!["updated_at = :updated_at".to_string()];
        let mut values = HashMap::from([(":updated_at".to_string(), AttributeValue::S(now.to_owned()))]);
        let mut names = HashMap::new();
        let mut set = |name: &str, value: AttributeValue| {
            sets.push(format!("#{name} = :{name}"));
            names.insert(format!("#{name}"), name.to_owned());
            values.insert(format!(":{name}"), value);
        };
        if let Some(name) = &patch.name {
            set("name", AttributeValue::S(name.clone()));
        }
        if let Some(description) = &patch.description {
            set("description", AttributeValue::S(description.clone()));
        }
        if let Some(category) = &patch.category {
            set("category", AttributeValue::S(category.to_string()));
        }
        if let Some(price) = patch.price {
            set("price", serde_dynamo::to_attribute_value(price)?);
        }
        if let Some(threshold) = patch.low_stock_threshold {
            set("low_stock_threshold", serde_dynamo::to_attribute_value(threshold)?);
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(id_key(id)))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_exists(id)")
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let item: Option<ProductItem> = output.attributes.map(serde_dynamo::from_item).transpose()?;
                Ok(item.map(|item| item.product))
            }
            Err(error) if is_condition_failure(&error) => Ok(None),
            Err(error) => Err(StoreError::from_sdk(error)),
        }
    }
}

#[async_trait]
impl Inventory for DynamoProductRepository {
    async fn adjust_stock(
        &self,
        id: &ProductId,
        adjustment: &Adjustment,
        correlation_id: &str,
    ) -> Result<AdjustOutcome, StoreError> {
        // Bounds as conditions on the stock before the change: stock + delta must stay in 0..=MAX.
        let minimum_before = adjustment.delta.checked_neg().unwrap_or(i64::MAX).max(0);
        let maximum_before = StockQuantity::MAX.saturating_sub(adjustment.delta.max(0));
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(id_key(id)))
            .update_expression("SET stock_quantity = stock_quantity + :delta, last_correlation_id = :correlation_id")
            .expression_attribute_values(":correlation_id", AttributeValue::S(correlation_id.to_owned()))
            .condition_expression(
                "attribute_exists(id) AND stock_quantity >= :minimum_before AND stock_quantity <= :maximum_before",
            )
            .expression_attribute_values(":delta", AttributeValue::N(adjustment.delta.to_string()))
            .expression_attribute_values(":minimum_before", AttributeValue::N(minimum_before.to_string()))
            .expression_attribute_values(":maximum_before", AttributeValue::N(maximum_before.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|error| StoreError::Failed(Box::new(error)))?;
        let record = AdjustmentItem {
            product_id: id.to_string(),
            at_id: format!("{}#{}", adjustment.at, uuid::Uuid::new_v4()),
            adjustment: adjustment.clone(),
        };
        // One adjustment, one record id: retries of this call apply it once.
        let token = request_token(&["adjust", &record.product_id, &record.at_id]);
        let put = Put::builder()
            .table_name(&self.adjustments_table)
            .set_item(Some(serde_dynamo::to_item(record)?))
            .build()
            .map_err(|error| StoreError::Failed(Box::new(error)))?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        if let Err(reasons) = transact(&self.client, items, &token).await? {
            let Some(refused) = reasons.first().filter(|reason| condition_failed(reason)) else {
                return Err(StoreError::Failed(format!("adjustment cancelled: {reasons:?}").into()));
            };
            return match refused.item() {
                None => Ok(AdjustOutcome::NotFound),
                Some(item) => {
                    let product: ProductItem = serde_dynamo::from_item(item.clone())?;
                    Ok(AdjustOutcome::OutOfBounds {
                        current: product.product.stock_quantity,
                    })
                }
            };
        }
        // The transaction returns no values: read the stock it left (orders may have moved it since).
        match ProductCatalog::get(self, id).await? {
            Some(product) => Ok(AdjustOutcome::Adjusted(product.stock_quantity)),
            None => Ok(AdjustOutcome::NotFound),
        }
    }

    async fn recent_adjustments(&self, id: &ProductId, limit: usize) -> Result<Vec<Adjustment>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.adjustments_table)
            .key_condition_expression("product_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let items: Vec<AdjustmentItem> = serde_dynamo::from_items(output.items.unwrap_or_default())?;
        Ok(items.into_iter().map(|item| item.adjustment).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::NewProduct;

    #[test]
    fn a_product_item_round_trips_with_numbers_as_numbers() {
        let product = NewProduct::parse("Mug", Some("Blue"), "kitchen", 1299, None, 7)
            .unwrap()
            .into_product(ProductId::generate(), "2026-01-01T00:00:00Z".into());
        let item = ProductItem {
            product: product.clone(),
            catalog: CATALOG_PARTITION.into(),
            last_correlation_id: None,
        };
        let attributes: HashMap<String, AttributeValue> = serde_dynamo::to_item(&item).unwrap();
        assert_eq!(attributes["price"], AttributeValue::N("1299".into()));
        assert_eq!(attributes["catalog"], AttributeValue::S("ALL".into()));
        let back: ProductItem = serde_dynamo::from_item(attributes).unwrap();
        assert_eq!(back.product, product);
    }

    #[test]
    fn listing_scopes_differ_by_filter() {
        let all = ProductFilter::default();
        let cheap = ProductFilter {
            max_price: Some(Price::new(500).unwrap()),
            ..ProductFilter::default()
        };
        assert_ne!(all.scope(), cheap.scope());
    }
}
