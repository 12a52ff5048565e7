use std::sync::Arc;

use store::connections::DynamoConnectionRegistry;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_socket(
        env!("CARGO_PKG_NAME"),
        async |state| {
            let table = state.env().required("CONNECTIONS_TABLE")?;
            Ok(ws_default::Deps {
                connections: Arc::new(DynamoConnectionRegistry::new(state.dynamodb.clone(), &table)),
                limiter: state.user_rate_limiter()?,
                closer: Arc::new(wiring::management::ManagementApi::from_env(&state.sdk, state.env())?),
            })
        },
        |deps, event| async move { ws_default::handle(&deps, event).await },
    )
    .await
}
