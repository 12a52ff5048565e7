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
use sha2::{Digest, Sha256};

use crate::domain::Invalid;
use crate::store::StoreError;

/// How long a completed record answers duplicates.
pub const RETENTION_SECS: u64 = 24 * 60 * 60;
/// How long a claim stays exclusive without being completed; longer than any function's timeout.
pub const LEASE_SECS: u64 = 60;

/// A client-chosen `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !raw.is_empty() && raw.len() <= Self::MAX_CHARS && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new(format!(
                "must be 1 to {} visible ASCII characters",
                Self::MAX_CHARS
            )))
        }
    }

    /// The record key: the same client key from another user or for another operation is another record.
    pub fn record_key(&self, operation: &str, caller: &str) -> String {
        format!("{operation}#{caller}#{}", self.0)
    }
}

/// A stable fingerprint of a request (hex SHA-256 of its canonical bytes).
pub fn fingerprint(canonical_request: &[u8]) -> String {
    Sha256::digest(canonical_request)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

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

pub use crate::domain::unix_now;

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
                        Ok(judge_existing(
                            existing.status,
                            &existing.request_hash,
                            request_hash,
                            existing.response,
                        ))
                    }
                    None if crate::store::is_condition_failure(&error) => Ok(Claim::InProgress),
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
            Err(error) if crate::store::is_condition_failure(&error) => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from_sdk),
        }
    }
}

/// What a guarded piece of work came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once<T> {
    /// It ran now (and is recorded as done).
    Ran(T),
    /// It had been done before: a duplicate, dropped.
    AlreadyDone,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("another run of this work is in progress")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The idempotency guard of event consumers: runs `work` unless the record `record_key` says it was
/// done, holding the record's lease while it runs. Success completes the record; failure releases it,
/// so a redelivery tries again; a crash leaves a lease that expires.
pub async fn at_most_once<T, E, F, Fut>(
    store: &dyn IdempotencyStore,
    record_key: &str,
    fingerprint: &str,
    work: F,
) -> Result<Once<T>, E>
where
    T: std::fmt::Debug,
    E: From<GuardError>,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let lease = match store
        .claim(record_key, fingerprint)
        .await
        .map_err(|e| E::from(GuardError::Store(e)))?
    {
        Claim::Acquired(lease) => lease,
        Claim::Completed(_) | Claim::Mismatch => return Ok(Once::AlreadyDone),
        Claim::InProgress => return Err(E::from(GuardError::Busy)),
    };
    match work().await {
        Ok(value) => {
            let done = StoredResponse {
                status: 200,
                body: format!("{value:?}"),
            };
            if let Err(error) = store.complete(&lease, &done).await {
                // The work's own state must make a repeat harmless; the lease expires meanwhile.
                tracing::warn!(record_key, error = %error, "could not mark the work done");
            }
            Ok(Once::Ran(value))
        }
        Err(error) => {
            if let Err(release_error) = store.release(&lease).await {
                tracing::warn!(record_key, error = %release_error, "could not release the claim; it expires with its lease");
            }
            Err(error)
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
    fn keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse("order-2026-11-25-abc").is_ok());
        for raw in ["", "has space", "naïve", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn record_keys_separate_callers_and_operations() {
        let key = IdempotencyKey::parse("k1").unwrap();
        assert_ne!(
            key.record_key("orders-create", "u1"),
            key.record_key("orders-create", "u2")
        );
        assert_ne!(
            key.record_key("orders-create", "u1"),
            key.record_key("orders-cancel", "u1")
        );
    }

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

    #[derive(Debug, PartialEq)]
    enum WorkError {
        Guard,
        Failed,
    }

    impl From<GuardError> for WorkError {
        fn from(_: GuardError) -> Self {
            Self::Guard
        }
    }

    #[tokio::test]
    async fn guarded_work_runs_once_and_again_only_after_a_failure() {
        let store = InMemoryIdempotency::default();
        let failed: Result<Once<u8>, WorkError> =
            at_most_once(&store, "k", "e1", || async { Err(WorkError::Failed) }).await;
        assert_eq!(failed, Err(WorkError::Failed));
        let ran = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(7) }).await;
        assert_eq!(ran, Ok(Once::Ran(7)));
        let again = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(8) }).await;
        assert_eq!(again, Ok(Once::AlreadyDone));
    }

    #[tokio::test]
    async fn guarded_work_is_not_run_while_another_holds_it() {
        let store = InMemoryIdempotency::default();
        store.claim("k", "e1").await.unwrap();
        let busy = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(1) }).await;
        assert_eq!(busy, Err(WorkError::Guard));
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"").len(), 64);
    }
}
