use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let check = Arc::new(health::DynamoTablesCheck::new(
        state.dynamodb.clone(),
        vec![state.config.users_table.clone(), state.config.products_table.clone()],
    ));
    shared::http::serve_unlimited(move |request| {
        let check = Arc::clone(&check);
        async move { health::handle(check.as_ref(), request).await }
    })
    .await
}
