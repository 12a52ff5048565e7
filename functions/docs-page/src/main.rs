#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        async |_state| Ok(()),
        |_, request| docs_page::handle(request),
    )
    .await
}
