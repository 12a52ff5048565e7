#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        notifications_history::Deps::from_state,
        |deps, request| async move { notifications_history::handle(&deps, request).await },
    )
    .await
}
