use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let users = state.users();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<users_promote::PromoteRequest>| {
        let users = Arc::clone(&users);
        async move {
            users_promote::handle(users.as_ref(), event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
