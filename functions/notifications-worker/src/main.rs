use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use notifications_worker::notifier::{ByChannel, Guarded, MockNotifier, Notifier, SesEmail, SnsSms};
use notifications_worker::templates::Templates;
use notifications_worker::{ChannelBreakers, Deps, hourly_cap};
use worker::breaker::BreakerPolicy;
use worker::sqs::SqsRetryDelay;

#[derive(Clone, Copy)]
enum Mode {
    Aws,
    Mock,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run_worker(
        env!("CARGO_PKG_NAME"),
        async |state, env| {
            let notifier: Box<dyn Notifier> =
                match env.choice("NOTIFIER", &[("aws", Mode::Aws), ("mock", Mode::Mock)])? {
                    Mode::Mock => Box::new(MockNotifier::default()),
                    Mode::Aws => Box::new(ByChannel {
                        email: Box::new(SesEmail::new(
                            aws_sdk_sesv2::Client::new(&state.sdk),
                            env.required("EMAIL_SENDER")?,
                        )),
                        sms: Box::new(SnsSms::new(aws_sdk_sns::Client::new(&state.sdk))),
                    }),
                };
            Ok(Deps {
                users: state.users(),
                history: state.notifications(),
                idempotency: state.idempotency(),
                notifier: Arc::new(Guarded {
                    inner: notifier,
                    faults: state.faults.clone(),
                }),
                retry_delay: Arc::new(SqsRetryDelay {
                    client: aws_sdk_sqs::Client::new(&state.sdk),
                    queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
                }),
                templates: Templates::load()?,
                retry_base_secs: env.number("RETRY_BASE_SECONDS", 0..=3600, None)?,
                breakers: ChannelBreakers::new(BreakerPolicy::from_env(env)?),
                hourly_cap: hourly_cap(env)?,
            })
        },
        |deps, event: SqsEvent| async move { Ok(notifications_worker::handle(&deps, event).await) },
    )
    .await
}
