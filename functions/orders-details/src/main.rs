use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let deps = Arc::new(orders_details::Deps::from_state(&state).await?);
    let limiter = state.rate_limiter().await?;
    shared::http::serve(limiter, move |request| {
        let deps = Arc::clone(&deps);
        async move { orders_details::handle(&deps, request).await }
    })
    .await
}
