//! Storage errors shared by every repository, and how DynamoDB failures map onto them.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, KeysAndAttributes};
use std::collections::HashMap;

use crate::error::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the item already exists")]
    AlreadyExists,
    #[error("storage is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("storage request failed")]
    Failed(#[source] BoxError),
    #[error("a stored item could not be read or written")]
    Mapping(#[from] serde_dynamo::Error),
}

/// Error codes DynamoDB uses for "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
];

impl StoreError {
    /// Classifies an SDK failure: throttling, timeouts and connection failures are "unavailable" (503),
    /// anything else is a failure of ours (500).
    pub fn from_sdk<E, R>(error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let transient = match &error {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
            SdkError::ServiceError(service) => service.err().code().is_some_and(|code| RETRYABLE_CODES.contains(&code)),
            _ => false,
        };
        if transient {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Failed(Box::new(error))
        }
    }
}

/// True when a single-item write was refused by its condition expression.
pub fn is_condition_failure<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// For a cancelled transaction, the reason of each of its items, in order; `None` when the transaction
/// failed for another reason.
pub fn cancellation_reasons<R>(error: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<CancellationReason>> {
    match error.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            Some(cancelled.cancellation_reasons().to_vec())
        }
        _ => None,
    }
}

/// Reads many items, possibly from several tables, in one `BatchGetItem` (plus retries of any keys
/// DynamoDB leaves unprocessed under load). At most 100 keys.
pub async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    keys_by_table: HashMap<String, Vec<HashMap<String, AttributeValue>>>,
) -> Result<HashMap<String, Vec<HashMap<String, AttributeValue>>>, StoreError> {
    const MAX_ATTEMPTS: u32 = 5;
    let mut request: HashMap<String, KeysAndAttributes> = HashMap::new();
    for (table, keys) in keys_by_table {
        if keys.is_empty() {
            continue;
        }
        let keys_and_attributes = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|error| StoreError::Failed(Box::new(error)))?;
        request.insert(table, keys_and_attributes);
    }
    let mut found: HashMap<String, Vec<HashMap<String, AttributeValue>>> = HashMap::new();
    for attempt in 0..MAX_ATTEMPTS {
        if request.is_empty() {
            return Ok(found);
        }
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
        }
        let output = client
            .batch_get_item()
            .set_request_items(Some(request))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        for (table, items) in output.responses.unwrap_or_default() {
            found.entry(table).or_default().extend(items);
        }
        request = output.unprocessed_keys.unwrap_or_default();
    }
    if request.is_empty() {
        Ok(found)
    } else {
        Err(StoreError::Unavailable(
            "BatchGetItem left keys unprocessed after retries".into(),
        ))
    }
}

/// Where a newest-first listing of one user's items resumes: after the item created at this time with
/// this id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewestFirstCursor {
    pub created_at: String,
    pub id: String,
}

/// One page of a user's items from a table keyed by `id` with a `by_user` index on
/// (`user_id`, `created_at`), newest first, resuming after `after`.
pub async fn newest_for_user<T: serde::de::DeserializeOwned>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    user_id: &str,
    after: Option<&NewestFirstCursor>,
    limit: usize,
    position: impl Fn(&T) -> NewestFirstCursor,
) -> Result<Page<T, NewestFirstCursor>, StoreError> {
    let start_key = after.map(|cursor| {
        HashMap::from([
            ("id".to_string(), AttributeValue::S(cursor.id.clone())),
            ("user_id".to_string(), AttributeValue::S(user_id.to_owned())),
            ("created_at".to_string(), AttributeValue::S(cursor.created_at.clone())),
        ])
    });
    let mut items: Vec<T> = Vec::with_capacity(limit + 1);
    let mut start_key = start_key;
    // DynamoDB ends a page at 1 MB as well as at the limit: keep reading until the page is full.
    for _ in 0..MAX_QUERY_READS {
        let wanted = limit + 1 - items.len();
        let output = client
            .query()
            .table_name(table)
            .index_name("by_user")
            .key_condition_expression("user_id = :user_id")
            .expression_attribute_values(":user_id", AttributeValue::S(user_id.to_owned()))
            .scan_index_forward(false)
            .set_exclusive_start_key(start_key)
            // One more than asked for tells whether another page exists.
            .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        items.extend(serde_dynamo::from_items::<_, T>(output.items.unwrap_or_default())?);
        start_key = output.last_evaluated_key;
        if items.len() > limit || start_key.is_none() {
            break;
        }
    }
    Ok(Page::from_reads(items, limit, start_key.is_some(), position))
}

/// Reads of one query page at most (each up to 1 MB); past it the page ends early, with a cursor.
pub const MAX_QUERY_READS: usize = 4;

/// Runs a transaction: `Ok(Err(reasons))` when it was cancelled by a condition (one reason per item,
/// in order). A cancellation caused only by another transaction on the same items says nothing about
/// the conditions, so it is retried with full-jitter backoff; hot items see many of them.
pub async fn transact(
    client: &aws_sdk_dynamodb::Client,
    items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
    const MAX_ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    loop {
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(Ok(())),
            Err(error) => error,
        };
        let Some(reasons) = cancellation_reasons(&error) else {
            return Err(StoreError::from_sdk(error));
        };
        let codes: Vec<&str> = reasons.iter().filter_map(CancellationReason::code).collect();
        let conflict_only = codes.contains(&"TransactionConflict") && !codes.contains(&"ConditionalCheckFailed");
        attempt += 1;
        if !conflict_only {
            return Ok(Err(reasons));
        }
        if attempt >= MAX_ATTEMPTS {
            return Err(StoreError::Unavailable(Box::new(error)));
        }
        let ceiling = (20_u64 << attempt).min(500);
        let random = uuid::Uuid::new_v4();
        let jitter = u64::from(u16::from_le_bytes([random.as_bytes()[0], random.as_bytes()[1]]));
        tokio::time::sleep(std::time::Duration::from_millis(5 + jitter % ceiling)).await;
    }
}

/// True when a transaction item was refused by its condition.
pub fn condition_failed(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page from what a query read: up to `limit + 1` items, and whether the query stopped before the
    /// end (then the page resumes after its last item even if it is short).
    pub fn from_reads(items: Vec<T>, limit: usize, stopped_early: bool, cursor_of: impl Fn(&T) -> C) -> Self {
        let mut page = Self::from_overfetch(items, limit, &cursor_of);
        if page.next.is_none() && stopped_early {
            page.next = page.items.last().map(cursor_of);
        }
        page
    }

    /// Builds a page from up to `limit + 1` fetched items: the extra item only proves there is more.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> C) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor_of)
        } else {
            None
        };
        Self { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overfetched_page_points_at_its_last_item() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(
            page,
            Page {
                items: vec![1, 2],
                next: Some(2)
            }
        );
    }

    #[test]
    fn a_short_page_cut_by_the_read_size_still_points_onwards() {
        let page = Page::from_reads(vec![1, 2], 5, true, |n| *n);
        assert_eq!(page.next, Some(2));
        assert_eq!(Page::from_reads(vec![1, 2], 5, false, |n| *n).next, None);
    }

    #[test]
    fn a_short_page_is_the_last() {
        let page = Page::from_overfetch(vec![1, 2], 2, |n| *n);
        assert_eq!(page.next, None);
    }
}
