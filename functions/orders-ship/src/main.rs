#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        orders_ship::Deps::from_state,
        |deps, request| async move { orders_ship::handle(&deps, request).await },
    )
    .await
}
