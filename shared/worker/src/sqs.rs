//! The per-message batch runner of every SQS consumer: one span per message, failures reported per
//! message (`ReportBatchItemFailures`), never the whole batch for one bad message.

use std::future::Future;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use tracing::Instrument;

use domain::events::CORRELATION_ATTRIBUTE;
use wiring::telemetry::error_chain;

/// Why one message could not be handled now.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Worth another delivery (a dependency failed); retried after the queue's visibility timeout,
    /// then dead-lettered after the configured receives.
    #[error("retry later: {0}")]
    Retry(String),
    /// Can never succeed (malformed body); it is left to the queue's receive limit to dead-letter it.
    #[error("poison message: {0}")]
    Poison(String),
    /// Not attempted now by choice (e.g. the provider's circuit is open): comes back no sooner than
    /// `secs`, and no sooner than the usual backoff, so deferrals stretch over the queue's receive
    /// limit. Past that limit it is dead-lettered (alarmed, redrivable): deferred, never dropped.
    #[error("deferred for {secs}s: {reason}")]
    RetryAfter { secs: i32, reason: String },
}

impl MessageError {
    /// A deferral for at least `after`, rounded up to whole seconds (SQS visibility granularity).
    pub fn retry_after(after: std::time::Duration, reason: impl Into<String>) -> Self {
        let whole = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        Self::RetryAfter {
            secs: i32::try_from(whole).unwrap_or(i32::MAX).clamp(0, MAX_VISIBILITY_SECS),
            reason: reason.into(),
        }
    }
}

impl MessageError {
    /// Of two reasons to see a message again, the one that asks for the later retry (a deferral over a
    /// plain retry, the longer of two deferrals); poison wins, since nothing can fix it.
    pub fn or_later(self, other: Self) -> Self {
        match (self, other) {
            (poison @ Self::Poison(_), _) | (_, poison @ Self::Poison(_)) => poison,
            (Self::RetryAfter { secs: a, reason: ra }, Self::RetryAfter { secs: b, reason: rb }) => {
                if a >= b {
                    Self::RetryAfter { secs: a, reason: ra }
                } else {
                    Self::RetryAfter { secs: b, reason: rb }
                }
            }
            (deferred @ Self::RetryAfter { .. }, _) | (_, deferred @ Self::RetryAfter { .. }) => deferred,
            (retry, _) => retry,
        }
    }
}

/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_SECS: i32 = 43_200;

impl From<crate::once::GuardError> for MessageError {
    fn from(error: crate::once::GuardError) -> Self {
        Self::Retry(error.to_string())
    }
}

/// How many times SQS has delivered this message (1 on the first delivery).
pub fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

/// The correlation id the message carries as an attribute, if any.
pub fn correlation_id(message: &SqsMessage) -> Option<&str> {
    string_attribute(message, CORRELATION_ATTRIBUTE)
}

/// The trace context the message carries as an attribute, if any.
pub fn trace_parent(message: &SqsMessage) -> Option<&str> {
    string_attribute(message, wiring::telemetry::TRACE_PARENT)
}

fn string_attribute<'a>(message: &'a SqsMessage, name: &str) -> Option<&'a str> {
    message
        .message_attributes
        .get(name)
        .and_then(|attribute| attribute.string_value.as_deref())
}

/// How long a batch may start new messages: past it, the ones not started go back to the queue at
/// once, untouched, so a slow dependency (each call bounded by its own timeout) rarely gets the
/// invocation killed by the functions' 10 s halfway through a batch.
pub const BATCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);

/// Handles each message of `event` with `handle`, in order, and reports exactly the ones that failed.
pub async fn run_batch<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>>,
{
    let mut failures = Vec::new();
    for message in event.records {
        let message_id = message.message_id.clone().unwrap_or_default();
        let correlation_id = correlation_id(&message).unwrap_or("");
        wiring::telemetry::set_correlation_id(correlation_id);
        let span = tracing::info_span!(
            "message",
            "otel.name" = format!("{} process", wiring::telemetry::service_name()),
            "otel.kind" = "consumer",
            message_id = %message_id,
            correlation_id = %correlation_id,
            receive_count = receive_count(&message),
        );
        // The work continues the trace of the change that published the message (OpenTelemetry's
        // messaging conventions: the producer's context as parent of the processing span).
        wiring::telemetry::continue_trace(&span, trace_parent(&message));
        if let Some(probe) = string_attribute(&message, store::probe::PROBE_ATTRIBUTE) {
            let _entered = span.enter();
            tracing::info!(probe = %probe, "delivery probe passed");
            continue;
        }
        let outcome = handle(message).instrument(span.clone()).await;
        let _entered = span.enter();
        match outcome {
            Ok(()) => tracing::info!("message handled"),
            Err(error) => {
                if let MessageError::RetryAfter { .. } = error {
                    tracing::info!(error = %error, "message deferred");
                } else {
                    tracing::warn!(error = %error, "message failed");
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                failures.push(failure);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// Delays the next delivery of a message (its SQS visibility), so retries back off.
#[async_trait]
pub trait RetryDelay: Send + Sync {
    async fn delay(&self, message: &SqsMessage, seconds: i32);
}

pub struct SqsRetryDelay {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

#[async_trait]
impl RetryDelay for SqsRetryDelay {
    async fn delay(&self, message: &SqsMessage, seconds: i32) {
        let Some(receipt) = &message.receipt_handle else { return };
        let result = self
            .client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await;
        if let Err(error) = result {
            // The queue's own visibility timeout then applies: a slower retry, nothing lost.
            tracing::warn!(error = %error_chain(&error), "could not set the retry delay");
        }
    }
}

/// The delay before the next delivery after `receives` failed ones: `base`, doubling, at most 15 min.
pub fn backoff_secs(base: i32, receives: u32) -> i32 {
    const MAX: i32 = 900;
    let exponent = receives.saturating_sub(1).min(16);
    base.saturating_mul(1 << exponent).clamp(0, MAX)
}

/// `run_batch`, plus the retry timing: a message to retry comes back after a growing delay; a poison
/// message comes back at once, so it reaches the dead-letter queue after the configured receives.
pub async fn run_batch_with_backoff<F, Fut>(
    event: SqsEvent,
    delay: &dyn RetryDelay,
    base_secs: i32,
    handle: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>>,
{
    let started = std::time::Instant::now();
    run_batch(event, |message| {
        let out_of_time = started.elapsed() > BATCH_BUDGET;
        let outcome = (!out_of_time).then(|| handle(message.clone()));
        async move {
            let Some(outcome) = outcome else {
                delay.delay(&message, 0).await;
                return Err(MessageError::RetryAfter {
                    secs: 0,
                    reason: "batch out of time; back to the queue untouched".into(),
                });
            };
            let outcome = outcome.await;
            match &outcome {
                Err(MessageError::Poison(_)) => delay.delay(&message, 0).await,
                Err(MessageError::Retry(_)) => {
                    delay
                        .delay(&message, backoff_secs(base_secs, receive_count(&message)))
                        .await
                }
                Err(MessageError::RetryAfter { secs, .. }) => {
                    let backoff = backoff_secs(base_secs, receive_count(&message));
                    delay
                        .delay(&message, (*secs).max(backoff).clamp(0, MAX_VISIBILITY_SECS))
                        .await
                }
                Ok(()) => {}
            }
            outcome
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.body = Some(body.into());
        message
    }

    #[tokio::test]
    async fn only_the_failed_messages_are_reported() {
        let mut event = SqsEvent::default();
        event.records = vec![
            message("a", "ok"),
            message("b", "bad"),
            message("c", "ok"),
            message("d", "later"),
        ];
        let response = run_batch(event, |message| async move {
            match message.body.as_deref() {
                Some("ok") => Ok(()),
                Some("bad") => Err(MessageError::Poison("unreadable".into())),
                _ => Err(MessageError::Retry("provider down".into())),
            }
        })
        .await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["b", "d"]);
    }

    #[tokio::test]
    async fn a_delivery_probe_passes_without_being_handled() {
        let mut probe = message("p", "not an event");
        let mut attribute = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
        attribute.string_value = Some("local-stack".into());
        attribute.data_type = Some("String".into());
        probe
            .message_attributes
            .insert(store::probe::PROBE_ATTRIBUTE.into(), attribute);
        let mut event = SqsEvent::default();
        event.records = vec![probe];
        let handled = std::sync::atomic::AtomicUsize::new(0);
        let response = run_batch(event, |_| {
            handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(MessageError::Poison("a probe must not get here".into())) }
        })
        .await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_empty_batch_reports_nothing() {
        let response = run_batch(SqsEvent::default(), |_| async { Ok(()) }).await;
        assert!(response.batch_item_failures.is_empty());
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(backoff_secs(10, 1), 10);
        assert_eq!(backoff_secs(10, 2), 20);
        assert_eq!(backoff_secs(10, 4), 80);
        assert_eq!(backoff_secs(10, 40), 900);
    }

    #[tokio::test]
    async fn retries_back_off_and_poison_comes_back_at_once() {
        let delays = crate::testing::RecordedDelays::default();
        let mut event = SqsEvent::default();
        let mut later = message("later", "later");
        later.attributes.insert("ApproximateReceiveCount".into(), "3".into());
        event.records = vec![message("bad", "bad"), later, message("ok", "ok")];
        run_batch_with_backoff(event, &delays, 5, |message| async move {
            match message.body.as_deref() {
                Some("ok") => Ok(()),
                Some("bad") => Err(MessageError::Poison("unreadable".into())),
                _ => Err(MessageError::Retry("provider down".into())),
            }
        })
        .await;
        assert_eq!(delays.recorded(), [0, 20]);
    }

    #[tokio::test]
    async fn a_deferred_message_is_reported_and_comes_back_no_sooner_than_asked_nor_than_the_backoff() {
        let delays = crate::testing::RecordedDelays::default();
        let mut event = SqsEvent::default();
        let mut third = message("third", "short");
        third.attributes.insert("ApproximateReceiveCount".into(), "3".into());
        event.records = vec![message("first", "long"), third];
        let response = run_batch_with_backoff(event, &delays, 5, |message| async move {
            let wait = if message.body.as_deref() == Some("long") {
                45_500
            } else {
                2_000
            };
            Err(MessageError::retry_after(
                std::time::Duration::from_millis(wait),
                "circuit open",
            ))
        })
        .await;
        assert_eq!(
            response.batch_item_failures.len(),
            2,
            "deferred messages are not deleted"
        );
        assert_eq!(delays.recorded(), [46, 20], "rounded up; the backoff when it is longer");
    }

    #[test]
    fn the_receive_count_defaults_to_one() {
        let mut message = message("a", "x");
        assert_eq!(receive_count(&message), 1);
        message.attributes.insert("ApproximateReceiveCount".into(), "3".into());
        assert_eq!(receive_count(&message), 3);
    }
}
