//! Storage behind one narrow trait per aggregate, with a DynamoDB adapter each (items mapped by
//! `serde_dynamo`, invariants kept by conditional writes) and, for handler unit tests, an in-memory one.

pub mod notifications;
pub mod orders;
pub mod products;
pub mod users;

#[cfg(any(test, feature = "test-util"))]
pub mod memory;
