//! Open WebSocket connections (`connection_id` key; `by_user` index on user id). One item per
//! connection, written at `$connect`, deleted at `$disconnect` or when the management API answers
//! 410 Gone; `expires_at` (the table's TTL) removes what neither path removed, since API Gateway
//! closes every connection after two hours.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use domain::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// API Gateway's limit on one connection's life; the record outlives it by a margin.
pub const CONNECTION_LIFETIME_SECS: u64 = 2 * 60 * 60;
const RECORD_MARGIN_SECS: u64 = 10 * 60;
/// More connections of one user than `$connect` ever lets them hold; the pusher reads no further.
pub const MAX_CONNECTIONS_PER_USER: usize = 100;
/// Index pages one lookup reads at most: past stale records (closed without `$disconnect`, not yet
/// removed by the TTL), but not without end.
const MAX_PAGES: usize = 20;

/// An open connection as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub user_id: String,
    pub connected_at: String,
    /// Epoch seconds after which the record is no longer a connection (the table's TTL attribute).
    pub expires_at: u64,
}

impl Connection {
    /// The record of a connection opened at `now_epoch_secs` (`connected_at` is the same instant, RFC 3339).
    pub fn opened(connection_id: &str, user_id: &UserId, connected_at: String, now_epoch_secs: u64) -> Self {
        Self {
            connection_id: connection_id.to_owned(),
            user_id: user_id.to_string(),
            connected_at,
            expires_at: now_epoch_secs + CONNECTION_LIFETIME_SECS + RECORD_MARGIN_SECS,
        }
    }
}

#[async_trait]
pub trait ConnectionRegistry: Send + Sync {
    /// Records an open connection (a retried `$connect` of the same id writes the same record).
    async fn register(&self, connection: &Connection) -> Result<(), StoreError>;
    /// Forgets a connection; forgetting one that is not recorded is no error.
    async fn forget(&self, connection_id: &str) -> Result<(), StoreError>;
    /// The ids of `user_id`'s connections that have not expired at `now_epoch_secs`, at most
    /// [`MAX_CONNECTIONS_PER_USER`].
    async fn of_user(&self, user_id: &str, now_epoch_secs: u64) -> Result<Vec<String>, StoreError>;
    /// The user a connection was opened by, unless it is not recorded or has expired.
    async fn user_of(&self, connection_id: &str, now_epoch_secs: u64) -> Result<Option<String>, StoreError>;
}

pub struct DynamoConnectionRegistry {
    client: Client,
    table: String,
}

impl DynamoConnectionRegistry {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct ConnectionKey {
    connection_id: String,
}

#[derive(Deserialize)]
struct ConnectionOwner {
    user_id: String,
    expires_at: u64,
}

#[async_trait]
impl ConnectionRegistry for DynamoConnectionRegistry {
    async fn register(&self, connection: &Connection) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(serde_dynamo::to_item(connection)?))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn forget(&self, connection_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn of_user(&self, user_id: &str, now_epoch_secs: u64) -> Result<Vec<String>, StoreError> {
        // The index projects keys and expiry only, so a page of 100 records is a few KB. `limit`
        // counts the records read before the expiry filter: pages go on past expired ones.
        let mut ids = Vec::new();
        let mut start = None;
        for _ in 0..MAX_PAGES {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("by_user")
                .key_condition_expression("user_id = :user")
                // TTL deletes lazily: an expired record is no longer a connection.
                .filter_expression("expires_at > :now")
                .expression_attribute_values(":user", AttributeValue::S(user_id.to_owned()))
                .expression_attribute_values(":now", AttributeValue::N(now_epoch_secs.to_string()))
                .limit(MAX_CONNECTIONS_PER_USER as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            let keys: Vec<ConnectionKey> = serde_dynamo::from_items(output.items().to_vec())?;
            ids.extend(keys.into_iter().map(|key| key.connection_id));
            start = output.last_evaluated_key;
            if start.is_none() || ids.len() >= MAX_CONNECTIONS_PER_USER {
                break;
            }
        }
        ids.truncate(MAX_CONNECTIONS_PER_USER);
        Ok(ids)
    }

    async fn user_of(&self, connection_id: &str, now_epoch_secs: u64) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .projection_expression("user_id, expires_at")
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let owner: ConnectionOwner = serde_dynamo::from_item(item)?;
        Ok((owner.expires_at > now_epoch_secs).then_some(owner.user_id))
    }
}
