//! Everything the shop's Lambda functions share: the domain, storage adapters, HTTP plumbing, auth,
//! configuration and telemetry. Functions stay thin: parse, call the domain and a repository, answer.

pub mod auth;
pub mod breaker;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod listing;
pub mod login_guard;
pub mod orders;
pub mod ratelimit;
pub mod repo;
pub mod sqs;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod validation;

pub use error::ApiError;
pub use state::AppState;
