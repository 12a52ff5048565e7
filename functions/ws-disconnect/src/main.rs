#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_socket(
        env!("CARGO_PKG_NAME"),
        ws_disconnect::Deps::from_state,
        |deps, event| async move { ws_disconnect::handle(&deps, event).await },
    )
    .await
}
