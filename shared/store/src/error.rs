//! Storage errors shared by every adapter, and how DynamoDB failures map onto them.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Whether a conditional single-item write applied: `false` when its condition did not hold, an
/// error for any other failure.
pub fn applied<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if is_condition_failure(&error) => Ok(false),
        Err(error) => Err(StoreError::from_sdk(error)),
    }
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

/// True when a transaction item was refused by its condition.
pub fn condition_failed(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}
