//! Idempotency records: the same request under the same key is done once, within 24 hours.
//!
//! A handler *claims* a key (a conditional write that records `IN_PROGRESS` with a short lease), does
//! its work, and *completes* the record with the response it gave, ideally inside the same transaction
//! as the work itself, so that "done" and "recorded as done" cannot disagree. A duplicate then gets the
//! stored response; a different request under the same key is refused; a duplicate that arrives while
//! the first still runs is told so; and a claim left by a crashed invocation expires with its lease.
//! Event consumers use the same records, keyed by event id.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How long a completed record answers duplicates.
pub const RETENTION_SECS: u64 = 24 * 60 * 60;
/// How long a claim stays exclusive without being completed; longer than any function's timeout.
pub const LEASE_SECS: u64 = 60;

/// The response a completed request gave, replayed verbatim to duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// The exclusive right to run the request under a key, until completed, released or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub record_key: String,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time (or the previous attempt expired): do the work, then complete or release.
    Acquired(Lease),
    /// Done before with the same request: answer with this.
    Completed(StoredResponse),
    /// The same request is running right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordStatus {
    InProgress,
    Completed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    pk: String,
    status: RecordStatus,
    request_hash: String,
    owner: String,
    lease_expires_at: u64,
    /// DynamoDB TTL attribute (epoch seconds); reads also treat an expired record as absent, since
    /// TTL deletion can lag.
    expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<StoredResponse>,
}

/// What a claim finds when the key already has a live record.
fn judge_existing(
    status: RecordStatus,
    stored_hash: &str,
    request_hash: &str,
    response: Option<StoredResponse>,
) -> Claim {
    if stored_hash != request_hash {
        return Claim::Mismatch;
    }
    match (status, response) {
        (RecordStatus::Completed, Some(response)) => Claim::Completed(response),
        _ => Claim::InProgress,
    }
}

use domain::unix_now;

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn claim(&self, record_key: &str, request_hash: &str) -> Result<Claim, StoreError>;
    /// Records the response on its own (when the work was not a DynamoDB transaction of ours).
    async fn complete(&self, lease: &Lease, response: &StoredResponse) -> Result<(), StoreError>;
    /// Gives the key up after a failure that changed nothing, so the client may retry with it.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;
}

pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
}

impl DynamoIdempotencyStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    /// The completion as an item of the caller's own transaction; it fails the transaction if the
    /// lease was lost, so work and record commit together or not at all.
    pub fn completion_item(&self, lease: &Lease, response: &StoredResponse) -> Result<TransactWriteItem, StoreError> {
        let (expression, names, values) = completion_update(lease, response)?;
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease.record_key.clone()))
            .update_expression(expression)
            .condition_expression("#status = :in_progress AND #owner = :owner")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|error| StoreError::Failed(Box::new(error)))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

type Expression = (String, HashMap<String, String>, HashMap<String, AttributeValue>);

fn completion_update(lease: &Lease, response: &StoredResponse) -> Result<Expression, StoreError> {
    let names = HashMap::from([
        ("#status".to_string(), "status".to_string()),
        ("#owner".to_string(), "owner".to_string()),
        ("#response".to_string(), "response".to_string()),
        ("#expires_at".to_string(), "expires_at".to_string()),
    ]);
    let values = HashMap::from([
        (
            ":completed".to_string(),
            serde_dynamo::to_attribute_value(RecordStatus::Completed)?,
        ),
        (
            ":in_progress".to_string(),
            serde_dynamo::to_attribute_value(RecordStatus::InProgress)?,
        ),
        (":owner".to_string(), AttributeValue::S(lease.owner.clone())),
        (":response".to_string(), serde_dynamo::to_attribute_value(response)?),
        (
            ":expires_at".to_string(),
            AttributeValue::N((unix_now() + RETENTION_SECS).to_string()),
        ),
    ]);
    Ok((
        "SET #status = :completed, #response = :response, #expires_at = :expires_at".to_string(),
        names,
        values,
    ))
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn claim(&self, record_key: &str, request_hash: &str) -> Result<Claim, StoreError> {
        let now = unix_now();
        let lease = Lease {
            record_key: record_key.to_owned(),
            owner: uuid::Uuid::new_v4().to_string(),
        };
        let record = Record {
            pk: record_key.to_owned(),
            status: RecordStatus::InProgress,
            request_hash: request_hash.to_owned(),
            owner: lease.owner.clone(),
            lease_expires_at: now + LEASE_SECS,
            expires_at: now + RETENTION_SECS,
            response: None,
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(serde_dynamo::to_item(&record)?))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at < :now OR (#status = :in_progress AND lease_expires_at < :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(
                ":in_progress",
                serde_dynamo::to_attribute_value(RecordStatus::InProgress)?,
            )
            // The record that blocked the claim comes back with the refusal: no second read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Acquired(lease)),
            Err(error) => {
                let existing = error.as_service_error().and_then(|service| match service {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed) => {
                        failed.item.clone()
                    }
                    _ => None,
                });
                match existing {
                    Some(item) => {
                        let existing: Record = serde_dynamo::from_item(item)?;
                        if existing.owner == lease.owner {
                            // Our own claim: its answer was lost and the SDK's retry met it.
                            return Ok(Claim::Acquired(lease));
                        }
                        Ok(judge_existing(
                            existing.status,
                            &existing.request_hash,
                            request_hash,
                            existing.response,
                        ))
                    }
                    None if crate::is_condition_failure(&error) => Ok(Claim::InProgress),
                    None => Err(StoreError::from_sdk(error)),
                }
            }
        }
    }

    async fn complete(&self, lease: &Lease, response: &StoredResponse) -> Result<(), StoreError> {
        let (expression, names, values) = completion_update(lease, response)?;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease.record_key.clone()))
            .update_expression(expression)
            .condition_expression("#status = :in_progress AND #owner = :owner")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease.record_key.clone()))
            .condition_expression("#owner = :owner AND #status = :in_progress")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
            .expression_attribute_values(
                ":in_progress",
                serde_dynamo::to_attribute_value(RecordStatus::InProgress)?,
            )
            .send()
            .await;
        match result {
            // Someone else holds it now (our lease expired): theirs to finish.
            Err(error) if crate::is_condition_failure(&error) => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from_sdk),
        }
    }
}

/// In-memory store with the same rules, for handler unit tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct InMemoryIdempotency {
    records: std::sync::Mutex<HashMap<String, Record>>,
}

#[cfg(any(test, feature = "test-util"))]
impl InMemoryIdempotency {
    pub fn record_status(&self, record_key: &str) -> Option<RecordStatus> {
        self.records.lock().ok()?.get(record_key).map(|record| record.status)
    }
}

#[cfg(any(test, feature = "test-util"))]
#[async_trait]
impl IdempotencyStore for InMemoryIdempotency {
    async fn claim(&self, record_key: &str, request_hash: &str) -> Result<Claim, StoreError> {
        let now = unix_now();
        let mut records = self
            .records
            .lock()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
        if let Some(existing) = records.get(record_key) {
            let live = existing.expires_at >= now
                && !(existing.status == RecordStatus::InProgress && existing.lease_expires_at < now);
            if live {
                return Ok(judge_existing(
                    existing.status,
                    &existing.request_hash,
                    request_hash,
                    existing.response.clone(),
                ));
            }
        }
        let owner = uuid::Uuid::new_v4().to_string();
        records.insert(
            record_key.to_owned(),
            Record {
                pk: record_key.to_owned(),
                status: RecordStatus::InProgress,
                request_hash: request_hash.to_owned(),
                owner: owner.clone(),
                lease_expires_at: now + LEASE_SECS,
                expires_at: now + RETENTION_SECS,
                response: None,
            },
        );
        Ok(Claim::Acquired(Lease {
            record_key: record_key.to_owned(),
            owner,
        }))
    }

    async fn complete(&self, lease: &Lease, response: &StoredResponse) -> Result<(), StoreError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
        match records.get_mut(&lease.record_key) {
            Some(record) if record.owner == lease.owner && record.status == RecordStatus::InProgress => {
                record.status = RecordStatus::Completed;
                record.response = Some(response.clone());
                Ok(())
            }
            _ => Err(StoreError::Failed("lease lost".into())),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
        if records
            .get(&lease.record_key)
            .is_some_and(|r| r.owner == lease.owner && r.status == RecordStatus::InProgress)
        {
            records.remove(&lease.record_key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_record_is_judged_by_request_and_state() {
        let done = StoredResponse {
            status: 201,
            body: "{}".into(),
        };
        assert_eq!(
            judge_existing(RecordStatus::Completed, "h", "h", Some(done.clone())),
            Claim::Completed(done.clone())
        );
        assert_eq!(
            judge_existing(RecordStatus::Completed, "h", "other", Some(done)),
            Claim::Mismatch
        );
        assert_eq!(
            judge_existing(RecordStatus::InProgress, "h", "h", None),
            Claim::InProgress
        );
        assert_eq!(
            judge_existing(RecordStatus::InProgress, "h", "other", None),
            Claim::Mismatch
        );
    }

    #[tokio::test]
    async fn a_claim_is_exclusive_until_completed_then_replays() {
        let store = InMemoryIdempotency::default();
        let Claim::Acquired(lease) = store.claim("k", "h").await.unwrap() else {
            panic!("first claim")
        };
        assert_eq!(store.claim("k", "h").await.unwrap(), Claim::InProgress);
        assert_eq!(store.claim("k", "other").await.unwrap(), Claim::Mismatch);
        let response = StoredResponse {
            status: 201,
            body: "{\"id\":1}".into(),
        };
        store.complete(&lease, &response).await.unwrap();
        assert_eq!(store.claim("k", "h").await.unwrap(), Claim::Completed(response));
    }

    #[tokio::test]
    async fn a_released_claim_can_be_taken_again() {
        let store = InMemoryIdempotency::default();
        let Claim::Acquired(lease) = store.claim("k", "h").await.unwrap() else {
            panic!("first claim")
        };
        store.release(&lease).await.unwrap();
        assert!(matches!(store.claim("k", "h").await.unwrap(), Claim::Acquired(_)));
    }

    #[tokio::test]
    async fn an_abandoned_claim_expires_with_its_lease() {
        let store = InMemoryIdempotency::default();
        store.claim("k", "h").await.unwrap();
        store.records.lock().unwrap().get_mut("k").unwrap().lease_expires_at = unix_now() - 1;
        assert!(matches!(store.claim("k", "h").await.unwrap(), Claim::Acquired(_)));
    }
}
