use std::sync::Arc;

use store::unsettled::DynamoUnsettledOrders;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, env| {
            let sink = worker::publish::SnsSink::events_topic(state, env)?;
            Ok(orders_sweeper::Deps {
                unsettled: Arc::new(DynamoUnsettledOrders::new(
                    state.dynamodb.clone(),
                    &state.config.tables.orders,
                )),
                sink: Arc::new(sink),
                settings: orders_sweeper::Settings::from_env(env)?,
            })
        },
        |deps, scheduled: serde_json::Value| async move { Ok(orders_sweeper::handle(&deps, scheduled).await?) },
    )
    .await
}
