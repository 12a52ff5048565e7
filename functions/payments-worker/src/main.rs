use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use payments_worker::{Deps, DynamoPaymentLedger, MockPaymentProvider, PaymentProvider};
use shared::breaker::{BreakerPolicy, CircuitBreaker};
use shared::config::{ConfigError, required_env, required_number};
use shared::sqs::SqsRetryDelay;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let provider: Arc<dyn PaymentProvider> = match required_env("PAYMENT_PROVIDER")?.as_str() {
        "mock" => Arc::new(MockPaymentProvider),
        other => {
            return Err(ConfigError::Invalid {
                name: "PAYMENT_PROVIDER",
                reason: format!("{other:?} is not a known provider (available: \"mock\")"),
            }
            .into());
        }
    };
    let deps = Arc::new(Deps {
        orders: state.orders(),
        idempotency: state.idempotency(),
        provider,
        retry_delay: Arc::new(SqsRetryDelay {
            client: aws_sdk_sqs::Client::new(&state.sdk),
            queue_url: required_env("PAYMENTS_QUEUE_URL")?,
        }),
        max_attempts: required_number("PAYMENT_MAX_ATTEMPTS")?,
        retry_base_secs: required_number("RETRY_BASE_SECONDS")?,
        ledger: Arc::new(DynamoPaymentLedger::new(
            state.dynamodb.clone(),
            &state.config.orders_table,
        )),
        breaker: CircuitBreaker::new("payment-provider", BreakerPolicy::from_env()?),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let deps = Arc::clone(&deps);
        async move { Ok::<_, lambda_runtime::Error>(payments_worker::handle(&deps, event.payload).await) }
    }))
    .await
}
