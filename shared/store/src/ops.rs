//! The DynamoDB calls every adapter shares: batch reads and transactions.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, KeysAndAttributes};

use crate::{StoreError, cancellation_reasons};

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

/// The `ClientRequestToken` of one logical write: the first 36 characters of a digest of what
/// identifies it (an order id, an adjustment's record id, a transition with its time and cause).
/// Every retry of that write (the SDK's, after a lost response; ours, below) sends the same token, so
/// DynamoDB applies it once and answers the replay with the first success.
pub fn request_token(parts: &[&str]) -> String {
    let mut token = domain::fingerprint(parts.join("\u{1f}").as_bytes());
    token.truncate(36);
    token
}

/// Runs a transaction, idempotently under `token` (see [`request_token`]): `Ok(Err(reasons))` when
/// it was cancelled by a condition (one reason per item, in order). A cancellation caused only by
/// another transaction on the same items says nothing about the conditions, so it is retried with
/// full-jitter backoff; hot items see many of them. A failure that leaves the outcome unknown (a
/// timeout or a lost answer, after the SDK's own retries) is retried with the same token as well,
/// so "done but not told" becomes a success instead of an error the caller would act on twice.
pub async fn transact(
    client: &aws_sdk_dynamodb::Client,
    items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    token: &str,
) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
    const MAX_ATTEMPTS: u32 = 8;
    const MAX_UNKNOWN_OUTCOMES: u32 = 4;
    // Retries of an unknown outcome stop in time for the caller to answer within its own timeout.
    const UNKNOWN_OUTCOME_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    let (mut attempt, mut unknown) = (0, 0);
    loop {
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .client_request_token(token)
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(Ok(())),
            Err(error) => error,
        };
        let Some(reasons) = cancellation_reasons(&error) else {
            // No answer, an answer lost, the same token still running, or a server error after the
            // SDK's retries: it may have committed.
            let outcome_unknown = match &error {
                SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
                SdkError::ServiceError(service) => matches!(
                    service.err().code(),
                    Some("TransactionInProgressException" | "InternalServerError")
                ),
                _ => false,
            };
            unknown += 1;
            if outcome_unknown && unknown < MAX_UNKNOWN_OUTCOMES && started.elapsed() < UNKNOWN_OUTCOME_BUDGET {
                tracing::warn!(
                    token,
                    attempt = unknown,
                    "transaction outcome unknown; retrying with its token"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50 << unknown)).await;
                continue;
            }
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
