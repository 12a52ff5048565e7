//! Publishing domain events to the events topic (SNS), with the attributes its subscriptions filter
//! on (`event_type`) and consumers continue from (correlation id, trace context). The outbox relay
//! publishes what the tables' streams announce; the sweep publishes again what was lost.

use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use domain::events::{CORRELATION_ATTRIBUTE, EVENT_TYPE_ATTRIBUTE, Envelope};
use wiring::telemetry::TRACE_PARENT;
use wiring::{AppState, ConfigError, Env};

#[derive(Debug, thiserror::Error)]
#[error("publishing events failed: {0}")]
pub struct PublishError(pub String);

/// Where events go. The SNS topic in production; a recorder in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(&self, events: &[Envelope]) -> Result<(), PublishError>;
}

pub struct SnsSink {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsSink {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Self { client, topic_arn }
    }

    /// The deployment's events topic (`EVENTS_TOPIC_ARN`), through a client of the function's SDK
    /// configuration (its timeouts and fault injection).
    pub fn events_topic(state: &AppState, env: &Env) -> Result<Self, ConfigError> {
        Ok(Self::new(
            aws_sdk_sns::Client::new(&state.sdk),
            env.required("EVENTS_TOPIC_ARN")?,
        ))
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, PublishError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|error| PublishError(error.to_string()))
}

#[async_trait]
impl EventSink for SnsSink {
    async fn publish(&self, events: &[Envelope]) -> Result<(), PublishError> {
        let mut entries = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let message = serde_json::to_string(event).map_err(|error| PublishError(error.to_string()))?;
            let entry = PublishBatchRequestEntry::builder()
                .id(index.to_string())
                .message(message)
                .message_attributes(EVENT_TYPE_ATTRIBUTE, string_attribute(event.event_type.as_str())?)
                .message_attributes(CORRELATION_ATTRIBUTE, string_attribute(&event.correlation_id)?);
            let entry = match &event.trace_parent {
                Some(trace_parent) => entry.message_attributes(TRACE_PARENT, string_attribute(trace_parent)?),
                None => entry,
            };
            let entry = entry.build().map_err(|error| PublishError(error.to_string()))?;
            entries.push(entry);
        }
        let output = self
            .client
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await
            .map_err(|error| PublishError(wiring::telemetry::error_chain(&error)))?;
        match output.failed() {
            [] => Ok(()),
            failed => Err(PublishError(format!(
                "{} of {} entries failed",
                failed.len(),
                events.len()
            ))),
        }
    }
}
