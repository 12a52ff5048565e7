#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_socket(
        env!("CARGO_PKG_NAME"),
        async |_| Ok(()),
        |_, event| async move { ws_default::handle(event).await },
    )
    .await
}
