use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let sink = events_publisher::SnsSink::new(
        aws_sdk_sns::Client::new(&state.sdk),
        shared::config::required_env("EVENTS_TOPIC_ARN")?,
    );
    let deps = Arc::new(events_publisher::Deps {
        sink: Arc::new(sink),
        tables: events_publisher::SourceTables::from_config(&state.config),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| {
        let deps = Arc::clone(&deps);
        async move { Ok::<_, lambda_runtime::Error>(events_publisher::handle(&deps, event.payload).await) }
    }))
    .await
}
