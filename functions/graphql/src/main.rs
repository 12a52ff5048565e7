#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api_refusing_with(
        env!("CARGO_PKG_NAME"),
        graphql::Deps::from_state,
        graphql::errors::refusal,
        |deps, request| async move { graphql::handle(&deps, request).await },
    )
    .await
}
