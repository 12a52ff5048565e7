use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use store::connections::DynamoConnectionRegistry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, env| {
            let table = env.required("CONNECTIONS_TABLE")?;
            Ok(ws_pusher::Deps {
                connections: Arc::new(DynamoConnectionRegistry::new(state.dynamodb.clone(), &table)),
                poster: Arc::new(wiring::management::ManagementApi::from_env(&state.sdk, env)?),
            })
        },
        |deps, event: Event| async move {
            ws_pusher::handle(&deps, event).await?;
            Ok(DynamoDbEventResponse::default())
        },
    )
    .await
}
