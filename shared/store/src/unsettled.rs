//! Orders that wait for the payment step (a charge not yet made, a refund owed), found through the
//! orders table's sparse `by_unsettled` index, so that the sweep never scans the table.
//!
//! While an order waits (`PaymentStatus::awaits_payment_step`), its item carries `unsettled_shard`
//! (the last hex digit of its id, one of 16 index partitions, so no single partition takes every
//! placement) and `unsettled_since` (when it began to wait). Every write that starts a wait sets
//! both, every write that ends one removes both: placement, status changes and the payment ledger.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use domain::{Order, OrderId};

use crate::{StoreError, applied};

pub const UNSETTLED_INDEX: &str = "by_unsettled";
pub const SHARD_ATTRIBUTE: &str = "unsettled_shard";
pub const SINCE_ATTRIBUTE: &str = "unsettled_since";
/// The index partitions: one per hex digit an order id can end with.
pub const SHARDS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f',
];

/// The index partition of an order (ids end with a random hex digit).
pub fn shard_of(id: &OrderId) -> String {
    id.to_string()
        .chars()
        .next_back()
        .map_or_else(|| "0".to_string(), |last| last.to_ascii_lowercase().to_string())
}

/// The attributes that put an order in the index, waiting since `since`.
pub fn waiting_attributes(id: &OrderId, since: &str) -> [(String, AttributeValue); 2] {
    [
        (SHARD_ATTRIBUTE.to_string(), AttributeValue::S(shard_of(id))),
        (SINCE_ATTRIBUTE.to_string(), AttributeValue::S(since.to_owned())),
    ]
}

/// An order found waiting, and since when (as the index holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingOrder {
    pub order: Order,
    pub since: String,
}

/// What the sweep reads and writes.
#[async_trait]
pub trait UnsettledOrders: Send + Sync {
    /// Orders of one index partition (`shard`, see [`shard_of`]) waiting since before `before`
    /// (RFC 3339), at most `limit`, oldest first. Read from an index: an order may already have moved on.
    async fn waiting_in(&self, shard: &str, before: &str, limit: usize) -> Result<Vec<WaitingOrder>, StoreError>;
    /// Orders waiting since before `before`, at most `limit`: partition after partition, oldest first
    /// within each.
    async fn waiting_since_before(&self, before: &str, limit: usize) -> Result<Vec<WaitingOrder>, StoreError> {
        let mut found = Vec::new();
        for shard in SHARDS {
            if found.len() >= limit {
                break;
            }
            found.extend(self.waiting_in(&shard.to_string(), before, limit - found.len()).await?);
        }
        Ok(found)
    }
    /// Starts the order's wait again at `now`, if it still waits since the time it was found with:
    /// `false` when it has moved on (or another sweep took it first), and then it is not to be touched.
    async fn restart_wait(&self, waiting: &WaitingOrder, now: &str) -> Result<bool, StoreError>;
}

pub struct DynamoUnsettledOrders {
    client: Client,
    orders_table: String,
}

impl DynamoUnsettledOrders {
    pub fn new(client: Client, orders_table: &str) -> Self {
        Self {
            client,
            orders_table: orders_table.to_owned(),
        }
    }
}

#[async_trait]
impl UnsettledOrders for DynamoUnsettledOrders {
    async fn waiting_in(&self, shard: &str, before: &str, limit: usize) -> Result<Vec<WaitingOrder>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.orders_table)
            .index_name(UNSETTLED_INDEX)
            .key_condition_expression("#shard = :shard AND #since < :before")
            .expression_attribute_names("#shard", SHARD_ATTRIBUTE)
            .expression_attribute_names("#since", SINCE_ATTRIBUTE)
            .expression_attribute_values(":shard", AttributeValue::S(shard.to_owned()))
            .expression_attribute_values(":before", AttributeValue::S(before.to_owned()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        // The index projects the whole order, and when it began to wait.
        let mut found = Vec::new();
        for mut item in output.items.unwrap_or_default().into_iter().take(limit) {
            let Some(AttributeValue::S(since)) = item.remove(SINCE_ATTRIBUTE) else {
                continue;
            };
            let order: Order = serde_dynamo::from_item(item)?;
            found.push(WaitingOrder { order, since });
        }
        Ok(found)
    }

    async fn restart_wait(&self, waiting: &WaitingOrder, now: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", AttributeValue::S(waiting.order.id.to_string()))
            .update_expression("SET #since = :now")
            .condition_expression("#since = :seen")
            .expression_attribute_names("#since", SINCE_ATTRIBUTE)
            .set_expression_attribute_values(Some(HashMap::from([
                (":now".to_string(), AttributeValue::S(now.to_owned())),
                (":seen".to_string(), AttributeValue::S(waiting.since.clone())),
            ])))
            .send()
            .await;
        applied(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_spread_over_the_shards_by_their_last_digit() {
        let shards: std::collections::BTreeSet<String> = (0..400).map(|_| shard_of(&OrderId::generate())).collect();
        let all: std::collections::BTreeSet<String> = SHARDS.iter().map(char::to_string).collect();
        assert_eq!(shards, all);
    }
}
