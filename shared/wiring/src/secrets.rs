//! Secrets read once at cold start from Secrets Manager (a function's keys), within the init phase's
//! timeouts ([`AWS_INIT_TIMEOUTS`]): a burst of cold starts may slow the call down, a hanging one must
//! still fail the init rather than the first invocation. Behind the `secrets` feature, so that only the
//! functions that hold a key link the Secrets Manager client.
#![cfg(feature = "secrets")]

use crate::state::AWS_INIT_TIMEOUTS;

/// A secret's text. Never printed: `Debug` shows its length only.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text, for the one parser or key that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretString({} characters, redacted)", self.0.len())
    }
}

/// Why a secret could not be read. Names the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read the secret {secret_id}")]
    Read {
        secret_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the secret {secret_id} holds no text (a binary secret, or an empty one)")]
    NoText { secret_id: String },
}

/// The text of the secret `secret_id` (a name or an ARN), read with `sdk`'s credentials, endpoint and
/// connect timeout, and the init timeouts for the call and each attempt.
pub async fn read_secret_string(sdk: &aws_config::SdkConfig, secret_id: &str) -> Result<SecretString, SecretError> {
    let (attempt, operation) = AWS_INIT_TIMEOUTS;
    let timeouts = aws_sdk_secretsmanager::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build();
    // The unset timeouts (the connect timeout) come from `sdk`.
    let config = aws_sdk_secretsmanager::config::Builder::from(sdk)
        .timeout_config(timeouts)
        .build();
    let output = aws_sdk_secretsmanager::Client::from_conf(config)
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|error| SecretError::Read {
            secret_id: secret_id.to_owned(),
            source: Box::new(error),
        })?;
    match output.secret_string {
        Some(text) if !text.is_empty() => Ok(SecretString(text)),
        _ => Err(SecretError::NoText {
            secret_id: secret_id.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_text() {
        let secret = SecretString::new("sk_test_do_not_print");
        let printed = format!("{secret:?}");
        assert!(!printed.contains("sk_test"), "{printed}");
        assert_eq!(secret.expose(), "sk_test_do_not_print");
    }
}
