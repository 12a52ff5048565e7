use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, env| {
            let sink = events_publisher::SnsSink::events_topic(state, env)?;
            let parking = events_publisher::SqsParking {
                client: aws_sdk_sqs::Client::new(&state.sdk),
                queue_url: env.required("FAILED_RECORDS_QUEUE_URL")?,
            };
            Ok(events_publisher::Deps {
                sink: Arc::new(sink),
                tables: events_publisher::SourceTables::from_config(&state.config),
                parking: Arc::new(parking),
            })
        },
        |deps, event: Event| async move {
            events_publisher::handle(&deps, event).await?;
            Ok(DynamoDbEventResponse::default())
        },
    )
    .await
}
