#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        orders_cancel::Deps::from_state,
        |deps, request| async move { orders_cancel::handle(&deps, request).await },
    )
    .await
}
