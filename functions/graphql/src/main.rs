#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        graphql::Deps::from_state,
        |deps, request| async move { graphql::handle(&deps, request).await },
    )
    .await
}
