#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        inventory_get::Deps::from_state,
        |deps, request| async move { inventory_get::handle(&deps, request).await },
    )
    .await
}
