#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api(
        env!("CARGO_PKG_NAME"),
        auth_login::Deps::from_state,
        |deps, request| async move { auth_login::handle(&deps, request).await },
    )
    .await
}
