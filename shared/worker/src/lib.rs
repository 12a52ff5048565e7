//! What every event consumer shares: the SQS batch runner with per-message failures and retry
//! delays, the circuit breaker around providers, provider timeouts and fault injection, the
//! at-most-once guard, publishing to the events topic, and [`run_worker`], the entry point of a
//! worker's `main.rs`. No HTTP stack: workers link neither `lambda_http` nor the
//! token and password crates (`tests/layout.rs` checks it).

pub mod breaker;
pub mod once;
pub mod provider;
pub mod publish;
pub mod sqs;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::future::Future;
use std::sync::Arc;

use lambda_runtime::layers::OpenTelemetryFaasTrigger;
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wiring::{AppState, Env};

/// Runs an event consumer (`service`: its crate name): logs, traces and metrics, settings and clients built once, the worker's dependencies
/// built once by `build`, then every event into `handler`.
pub async fn run_worker<D, E, R, H, Fut>(
    service: &'static str,
    build: impl AsyncFnOnce(&AppState, &Env) -> Result<D, lambda_runtime::Error>,
    handler: H,
) -> Result<(), lambda_runtime::Error>
where
    D: Send + Sync + 'static,
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    H: Fn(Arc<D>, E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, lambda_runtime::Error>> + Send,
{
    wiring::telemetry::init(service);
    let (state, env) = AppState::from_env().await?;
    let deps = Arc::new(build(&state, &env).await?);
    lambda_runtime::Runtime::new(service_fn(move |event: LambdaEvent<E>| {
        handler(Arc::clone(&deps), event.payload)
    }))
    .layer(wiring::telemetry::invocation_layer(OpenTelemetryFaasTrigger::PubSub))
    .run()
    .await
}
