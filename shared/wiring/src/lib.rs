//! Wiring: what a function's `main.rs` builds once at cold start. Settings read from the environment
//! (one bounded-number parser), the AWS SDK configuration, JSON logs, and the DynamoDB adapters of
//! the deployment's tables. Used by API functions (through `api::run_api`) and workers alike.

pub mod config;
pub mod faults;
pub mod management;
pub mod secrets;
pub mod state;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use config::{ConfigError, Env};
pub use faults::{FaultKind, FaultPlan};
pub use state::AppState;
