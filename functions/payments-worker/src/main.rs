use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use payments_worker::Deps;
use payments_worker::provider::{DynamoChargeBook, GuardedProvider, MockPaymentProvider};
use worker::breaker::{BreakerPolicy, CircuitBreaker};
use worker::sqs::SqsRetryDelay;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, env| {
            // Only the mock provider exists yet; a real one is another choice behind the same trait.
            env.choice("PAYMENT_PROVIDER", &[("mock", ())])?;
            let book = DynamoChargeBook::new(state.dynamodb.clone(), env.required("MOCK_PAYMENTS_LEDGER_TABLE")?);
            let provider = Arc::new(GuardedProvider {
                inner: Arc::new(MockPaymentProvider { book: Arc::new(book) }),
                faults: state.faults.clone(),
            });
            Ok(Deps {
                orders: state.orders(),
                idempotency: state.idempotency(),
                provider,
                retry_delay: Arc::new(SqsRetryDelay {
                    client: aws_sdk_sqs::Client::new(&state.sdk),
                    queue_url: env.required("PAYMENTS_QUEUE_URL")?,
                }),
                max_attempts: env.number("PAYMENT_MAX_ATTEMPTS", 1..=100, None)?,
                retry_base_secs: env.number("RETRY_BASE_SECONDS", 0..=3600, None)?,
                ledger: state.payment_ledger(),
                breaker: CircuitBreaker::new("payment-provider", BreakerPolicy::from_env(env)?),
            })
        },
        |deps, event: SqsEvent| async move { Ok(payments_worker::handle(&deps, event).await) },
    )
    .await
}
