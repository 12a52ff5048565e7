#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        products_update::Deps::from_state,
        |deps, request| async move { products_update::handle(&deps, request).await },
    )
    .await
}
