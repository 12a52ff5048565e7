#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, _| Ok(state.users()),
        |users, request: users_promote::PromoteRequest| async move {
            Ok(users_promote::handle(&**users, request).await?)
        },
    )
    .await
}
