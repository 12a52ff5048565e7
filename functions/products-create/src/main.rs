use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let deps = Arc::new(products_create::Deps::from_state(&state).await?);
    let limiter = state.rate_limiter().await?;
    shared::http::serve(limiter, move |request| {
        let deps = Arc::clone(&deps);
        async move { products_create::handle(&deps, request).await }
    })
    .await
}
