//! Storage: the error type of every adapter, the DynamoDB calls they share, and one adapter per
//! table, mapped with `serde_dynamo`. Each aggregate's trait is sized to what a function does, so a
//! function's types match its IAM policy (the read routes get a read-only catalogue). In-memory fakes
//! of every trait and the storage contract suite they and the DynamoDB adapters pass sit behind the
//! `test-util` feature.

mod error;
mod ops;
mod paging;

pub mod catalogue_cache;
pub mod connections;
pub mod idempotency;
pub mod login_failures;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod probe;
pub mod products;
pub mod rate_counter;
pub mod secrets;
pub mod unsettled;
pub mod users;

#[cfg(any(test, feature = "test-util"))]
pub mod contract;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use error::{BoxError, StoreError, applied, cancellation_reasons, condition_failed, is_condition_failure};
pub use ops::{batch_get, request_token, transact};
pub use paging::{MAX_QUERY_READS, NewestFirstCursor, Page, newest_for_user, query_page};
