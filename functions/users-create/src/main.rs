#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        users_create::Deps::from_state,
        |deps, request| async move { users_create::handle(&deps, request).await },
    )
    .await
}
