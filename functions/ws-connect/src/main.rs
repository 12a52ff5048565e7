#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_socket(
        env!("CARGO_PKG_NAME"),
        ws_connect::Deps::from_state,
        |deps, event| async move { ws_connect::handle(&deps, event).await },
    )
    .await
}
