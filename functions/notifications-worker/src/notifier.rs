//! Delivery channels behind one trait: SES v2 for email, SNS for SMS, and a mock that records what it
//! would send (chosen by configuration; the local stack uses the mock).

use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use store::notifications::Channel;
use worker::provider::{CallFailure, PROVIDER_TIMEOUT};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub channel: Channel,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{channel} delivery failed: {reason}")]
pub struct SendError {
    pub channel: &'static str,
    pub reason: String,
    pub kind: FailureKind,
}

/// Whether a failed send says something about the provider's health (the circuit breaker counts
/// only those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider is failing: timeout, connection failure, 5xx, throttling, sending paused.
    Unavailable,
    /// The provider answered and refused this message (bad address, content): retried like any
    /// failure, but the provider is healthy.
    Rejected,
}

impl SendError {
    pub fn counts_against_provider(&self) -> bool {
        self.kind == FailureKind::Unavailable
    }
}

/// Error codes of SES and SNS that mean "the provider cannot take messages now" rather than "this
/// message is wrong".
const UNAVAILABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "ThrottledException",
    "LimitExceededException",
    "SendingPausedException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalErrorException",
    "KMSThrottlingException",
    "RequestTimeout",
];

/// Classifies an SDK failure (SES and SNS share the SDK's error type).
fn failure_kind<E: aws_sdk_sesv2::error::ProvideErrorMetadata>(
    error: &aws_sdk_sesv2::error::SdkError<E>,
) -> FailureKind {
    use aws_sdk_sesv2::error::SdkError;
    let unavailable = match error {
        SdkError::ServiceError(service) => {
            service.raw().status().is_server_error()
                || service
                    .err()
                    .code()
                    .is_some_and(|code| UNAVAILABLE_CODES.contains(&code))
        }
        // Timeouts, connection failures, unreadable responses: the provider did not answer properly.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // The request could not even be built: our fault, not the provider's.
        _ => false,
    };
    if unavailable {
        FailureKind::Unavailable
    } else {
        FailureKind::Rejected
    }
}

#[async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError>;
}

/// Email through SES v2 from a verified sender identity.
pub struct SesEmail {
    client: aws_sdk_sesv2::Client,
    sender: String,
}

impl SesEmail {
    pub fn new(client: aws_sdk_sesv2::Client, sender: String) -> Self {
        Self { client, sender }
    }
}

fn content(text: &str) -> Result<Content, SendError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|error| SendError {
            channel: "email",
            reason: error.to_string(),
            kind: FailureKind::Rejected,
        })
}

#[async_trait]
impl Notifier for SesEmail {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        let email = Message::builder()
            .subject(content(message.subject.as_deref().unwrap_or("Your shop"))?)
            .body(Body::builder().text(content(&message.body)?).build())
            .build();
        self.client
            .send_email()
            .from_email_address(&self.sender)
            .destination(Destination::builder().to_addresses(&message.recipient).build())
            .content(EmailContent::builder().simple(email).build())
            .send()
            .await
            .map_err(|error| SendError {
                channel: "email",
                reason: wiring::telemetry::error_chain(&error),
                kind: failure_kind(&error),
            })?;
        Ok(())
    }
}

/// SMS through SNS direct publish to a phone number.
pub struct SnsSms {
    client: aws_sdk_sns::Client,
}

impl SnsSms {
    pub fn new(client: aws_sdk_sns::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Notifier for SnsSms {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        self.client
            .publish()
            .phone_number(&message.recipient)
            .message(&message.body)
            .send()
            .await
            .map_err(|error| SendError {
                channel: "sms",
                reason: wiring::telemetry::error_chain(&error),
                kind: failure_kind(&error),
            })?;
        Ok(())
    }
}

/// Sends each message through the adapter of its channel.
pub struct ByChannel {
    pub email: Box<dyn Notifier>,
    pub sms: Box<dyn Notifier>,
}

#[async_trait]
impl Notifier for ByChannel {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        match message.channel {
            Channel::Email => self.email.send(message).await,
            Channel::Sms => self.sms.send(message).await,
        }
    }
}

/// The mock provider: records (and logs) every message instead of sending it. Never used in
/// production configuration; `NOTIFIER=mock` selects it (the local stack does).
/// A notifier's calls with a timeout and the deployment's fault injection (targets `email`, `sms`):
/// what every notifier is wrapped in. No answer in time, or an injected fault, is an unavailable
/// provider: retried, and counted by the channel's breaker.
pub struct Guarded {
    pub inner: Box<dyn Notifier>,
    pub faults: wiring::FaultPlan,
}

#[async_trait]
impl Notifier for Guarded {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        let channel = message.channel.as_str();
        worker::provider::guarded(&self.faults, channel, "send", PROVIDER_TIMEOUT, || {
            self.inner.send(message)
        })
        .await
        .map_err(|failure| match failure {
            CallFailure::Failed(error) => error,
            other => SendError {
                channel,
                reason: other.to_string(),
                kind: FailureKind::Unavailable,
            },
        })
    }
}

#[derive(Default)]
pub struct MockNotifier {
    sent: Mutex<Vec<OutboundMessage>>,
    /// Recipients whose delivery fails, to exercise retries in tests.
    failing_recipients: Vec<String>,
    /// How those deliveries fail.
    failure: Option<FailureKind>,
    /// Every call, failed ones included (what reached the provider).
    calls: std::sync::atomic::AtomicUsize,
    /// While set, every delivery fails as an outage would.
    down: std::sync::atomic::AtomicBool,
}

impl MockNotifier {
    /// A mock that fails these recipients (as a provider outage would).
    pub fn failing_for(recipients: &[&str]) -> Self {
        Self {
            failing_recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            failure: Some(FailureKind::Unavailable),
            ..Self::default()
        }
    }

    /// A mock that refuses these recipients (as a provider refuses a bad address).
    pub fn rejecting(recipients: &[&str]) -> Self {
        Self {
            failure: Some(FailureKind::Rejected),
            ..Self::failing_for(recipients)
        }
    }

    /// Makes every delivery fail as an outage (`true`) or go through again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn sent(&self) -> Vec<OutboundMessage> {
        self.sent.lock().map(|sent| sent.clone()).unwrap_or_default()
    }

    /// How many sends reached the provider, failed ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl Notifier for MockNotifier {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let failure = if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Some(FailureKind::Unavailable)
        } else if self.failing_recipients.contains(&message.recipient) {
            self.failure
        } else {
            None
        };
        if let Some(kind) = failure {
            return Err(SendError {
                channel: message.channel.as_str(),
                reason: "mock provider refused this recipient".into(),
                kind,
            });
        }
        tracing::info!(
            channel = message.channel.as_str(),
            recipient = %message.recipient,
            subject = message.subject.as_deref().unwrap_or(""),
            "mock notifier recorded a message instead of sending it"
        );
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(message.clone());
        }
        Ok(())
    }
}
