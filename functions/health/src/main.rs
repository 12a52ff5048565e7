#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    api::run_api_unlimited(
        env!("CARGO_PKG_NAME"),
        async |state| {
            let tables = vec![state.config.tables.users.clone(), state.config.tables.products.clone()];
            Ok(health::DynamoTablesCheck::new(state.dynamodb.clone(), tables))
        },
        |check, request| async move { health::handle(check.as_ref(), request).await },
    )
    .await
}
