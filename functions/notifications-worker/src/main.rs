use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use notifications_worker::notifier::{ByChannel, MockNotifier, Notifier, SesEmail, SnsSms};
use shared::breaker::BreakerPolicy;
use shared::config::{ConfigError, required_env, required_number};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = shared::AppState::from_env().await?;
    let notifier: Arc<dyn Notifier> = match required_env("NOTIFIER")?.as_str() {
        "mock" => Arc::new(MockNotifier::default()),
        "aws" => Arc::new(ByChannel {
            email: Box::new(SesEmail::new(
                aws_sdk_sesv2::Client::new(&state.sdk),
                required_env("EMAIL_SENDER")?,
            )),
            sms: Box::new(SnsSms::new(aws_sdk_sns::Client::new(&state.sdk))),
        }),
        other => {
            return Err(ConfigError::Invalid {
                name: "NOTIFIER",
                reason: format!("{other:?} is neither \"aws\" nor \"mock\""),
            }
            .into());
        }
    };
    let deps = Arc::new(notifications_worker::Deps {
        users: state.users(),
        history: state.notifications(),
        idempotency: state.idempotency(),
        notifier,
        retry_delay: Arc::new(shared::sqs::SqsRetryDelay {
            client: aws_sdk_sqs::Client::new(&state.sdk),
            queue_url: required_env("NOTIFICATIONS_QUEUE_URL")?,
        }),
        templates: notifications_worker::templates::Templates::load()?,
        retry_base_secs: required_number("RETRY_BASE_SECONDS")?,
        breakers: notifications_worker::ChannelBreakers::new(BreakerPolicy::from_env()?),
        hourly_cap: notifications_worker::hourly_cap_from_env()?,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let deps = Arc::clone(&deps);
        async move { Ok::<_, lambda_runtime::Error>(notifications_worker::handle(&deps, event.payload).await) }
    }))
    .await
}
