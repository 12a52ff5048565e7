#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Public and outside the per-client rate limiter: Stripe sends from a few addresses and holds no
    // token of ours; the signature guards the route, and API Gateway's route throttling bounds it.
    api::run_api_unlimited(
        env!("CARGO_PKG_NAME"),
        payments_webhook::Deps::from_state,
        |deps, request| async move { payments_webhook::handle(&deps, request).await },
    )
    .await
}
