//! The HTTP edge of the shop: requests in, RFC 9457 problems and JSON out. Tokens and passwords,
//! pagination cursors and listings, the per-client rate limiter and the login guard, the WebSocket
//! edge, and [`run_api`] / [`run_socket`], the entry points of the API functions' `main.rs`.

pub mod auth;
pub mod catalogue;
pub mod cursor;
pub mod error;
pub mod http;
pub mod listing;
pub mod login_guard;
pub mod orders;
pub mod placement;
pub mod ratelimit;
pub mod state;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod users;
pub mod websocket;

use std::future::Future;
use std::sync::Arc;

use lambda_http::{Body, Request, Response};

pub use error::ApiError;
pub use state::{ApiState, InitError};

/// Runs an API function (`service`: its crate name): logs, traces and metrics, settings and clients built once, the function's dependencies
/// built once by `build`, then every request through the per-client rate limiter into `handler`.
pub async fn run_api<D, H, Fut>(
    service: &'static str,
    build: impl AsyncFnOnce(&ApiState) -> Result<D, InitError>,
    handler: H,
) -> Result<(), lambda_http::Error>
where
    D: Send + Sync + 'static,
    H: Fn(Arc<D>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    run_api_refusing_with(service, build, http::problem, handler).await
}

/// [`run_api`] for a route whose clients read something else than problems: a request over the rate
/// limit is answered by `render` (its status and `Retry-After` from the error).
pub async fn run_api_refusing_with<D, H, Fut>(
    service: &'static str,
    build: impl AsyncFnOnce(&ApiState) -> Result<D, InitError>,
    render: http::RenderRefusal,
    handler: H,
) -> Result<(), lambda_http::Error>
where
    D: Send + Sync + 'static,
    H: Fn(Arc<D>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    let (state, deps) = init(service, build).await?;
    let limiter = state.rate_limiter().await?;
    http::serve(limiter, render, move |request| handler(Arc::clone(&deps), request)).await
}

/// [`run_api`] without the rate limiter: only for `/health`, which docs/api.md "Rate limits" exempts.
pub async fn run_api_unlimited<D, H, Fut>(
    service: &'static str,
    build: impl AsyncFnOnce(&ApiState) -> Result<D, InitError>,
    handler: H,
) -> Result<(), lambda_http::Error>
where
    D: Send + Sync + 'static,
    H: Fn(Arc<D>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    let (_, deps) = init(service, build).await?;
    http::serve_unlimited(move |request| handler(Arc::clone(&deps), request)).await
}

/// Runs a WebSocket route function (`$connect`, `$disconnect`, `$default`): the same cold start as
/// [`run_api`], then every socket event into `handler`. No rate limiter: API Gateway's stage
/// throttling limits handshakes, and a connection costs one write.
pub async fn run_socket<D, H, Fut>(
    service: &'static str,
    build: impl AsyncFnOnce(&ApiState) -> Result<D, InitError>,
    handler: H,
) -> Result<(), lambda_http::Error>
where
    D: Send + Sync + 'static,
    H: Fn(Arc<D>, websocket::SocketEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = websocket::SocketResponse> + Send,
{
    let (_, deps) = init(service, build).await?;
    websocket::serve(move |event| handler(Arc::clone(&deps), event)).await
}

/// Cold start: telemetry (`service` is the function's crate name), then the wiring, then the
/// function's own dependencies.
async fn init<D>(
    service: &'static str,
    build: impl AsyncFnOnce(&ApiState) -> Result<D, InitError>,
) -> Result<(ApiState, Arc<D>), InitError> {
    wiring::telemetry::init(service);
    let state = ApiState::from_env().await?;
    let deps = Arc::new(build(&state).await?);
    Ok((state, deps))
}
