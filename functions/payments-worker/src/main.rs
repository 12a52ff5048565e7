use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use payments_worker::Deps;
use payments_worker::provider::{
    DynamoChargeBook, GuardedProvider, MockPaymentProvider, PROVIDER_TIMEOUT, PaymentProvider,
};
use payments_worker::stripe::{STRIPE_CALL_TIMEOUT, StripeProvider};
use worker::breaker::{BreakerPolicy, CircuitBreaker};
use worker::sqs::SqsRetryDelay;

/// The payment provider adapters (`PAYMENT_PROVIDER`).
#[derive(Clone, Copy)]
enum Provider {
    Mock,
    Stripe,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, env| {
            // Each provider reads only its own settings: nothing of Stripe's with the mock.
            let (inner, timeout): (Arc<dyn PaymentProvider>, _) = match env.choice(
                "PAYMENT_PROVIDER",
                &[("mock", Provider::Mock), ("stripe", Provider::Stripe)],
            )? {
                Provider::Mock => {
                    let book =
                        DynamoChargeBook::new(state.dynamodb.clone(), env.required("MOCK_PAYMENTS_LEDGER_TABLE")?);
                    (Arc::new(MockPaymentProvider { book: Arc::new(book) }), PROVIDER_TIMEOUT)
                }
                // A charge is up to four requests (each within the client's own timeout): a slow
                // 3-D Secure confirm must not be cut off as a lost answer.
                Provider::Stripe => (
                    Arc::new(StripeProvider::from_env(state, env).await?),
                    STRIPE_CALL_TIMEOUT,
                ),
            };
            let provider = Arc::new(GuardedProvider {
                inner,
                faults: state.faults.clone(),
                timeout,
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
                payment_action_window: time::Duration::minutes(env.number(
                    "PAYMENT_ACTION_MINUTES",
                    1..=1_440,
                    Some(30),
                )?),
            })
        },
        |deps, event: SqsEvent| async move { Ok(payments_worker::handle(&deps, event).await) },
    )
    .await
}
