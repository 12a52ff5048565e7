#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        inventory_adjust::Deps::from_state,
        |deps, request| async move { inventory_adjust::handle(&deps, request).await },
    )
    .await
}
