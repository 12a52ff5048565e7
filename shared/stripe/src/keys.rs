//! The deployment's Stripe keys: one Secrets Manager secret (`StripeSecretName`) holding
//! `{"secret_key": "sk_...", "webhook_secret": "whsec_..."}`: the API key the payments worker charges
//! with, and the signing secret of the webhook endpoint registered in Stripe. Neither is ever printed:
//! every `Debug` here redacts them, and no error carries them.

use serde::Deserialize;

/// A Stripe secret API key (`sk_...`, or a restricted `rk_...`): the `Authorization: Bearer` of every
/// request.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

/// The signing secret of a webhook endpoint (`whsec_...`): the HMAC key of its `Stripe-Signature`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

/// Both keys, as the secret holds them.
#[derive(Clone)]
pub struct StripeKeys {
    secret_key: SecretKey,
    webhook_secret: WebhookSecret,
}

/// Why the secret's text is not a pair of Stripe keys. Never quotes the text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    /// Not the JSON object expected (the parser's message is left out: it may quote a value).
    #[error(
        "the Stripe keys are not a JSON object {{\"secret_key\": \"sk_...\", \"webhook_secret\": \"whsec_...\"}} \
         ({problem} at line {line}, column {column})"
    )]
    Shape {
        problem: &'static str,
        line: usize,
        column: usize,
    },
    #[error("the Stripe secret_key is not a secret API key (sk_... or rk_..., no spaces)")]
    SecretKey,
    #[error("the Stripe webhook_secret is not a webhook signing secret (whsec_..., no spaces)")]
    WebhookSecret,
}

/// `prefix` followed by at least one more character, all of them printable ASCII without spaces (so
/// the key is a valid header value as it is).
fn well_formed(value: &str, prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .any(|prefix| value.len() > prefix.len() && value.starts_with(prefix))
        && value.bytes().all(|byte| byte.is_ascii_graphic())
}

impl SecretKey {
    pub fn parse(value: impl Into<String>) -> Result<Self, KeysError> {
        let value = value.into();
        if well_formed(&value, &["sk_", "rk_"]) {
            Ok(Self(value))
        } else {
            Err(KeysError::SecretKey)
        }
    }

    /// The key itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl WebhookSecret {
    pub fn parse(value: impl Into<String>) -> Result<Self, KeysError> {
        let value = value.into();
        if well_formed(&value, &["whsec_"]) {
            Ok(Self(value))
        } else {
            Err(KeysError::WebhookSecret)
        }
    }

    /// The secret itself, the HMAC key of webhook signatures (its text as it is, prefix included, as
    /// Stripe signs with it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

impl std::fmt::Debug for StripeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeKeys")
            .field("secret_key", &self.secret_key)
            .field("webhook_secret", &self.webhook_secret)
            .finish()
    }
}

/// The secret's JSON (other fields, a publishable key say, are allowed and ignored).
#[derive(Deserialize)]
struct KeysJson {
    secret_key: String,
    webhook_secret: String,
}

impl StripeKeys {
    /// The keys from the secret's text.
    pub fn parse(json: &str) -> Result<Self, KeysError> {
        let keys: KeysJson = serde_json::from_str(json).map_err(|error| KeysError::Shape {
            problem: match error.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Data => "a field missing or not a string",
                serde_json::error::Category::Eof => "cut short",
            },
            line: error.line(),
            column: error.column(),
        })?;
        Ok(Self {
            secret_key: SecretKey::parse(keys.secret_key)?,
            webhook_secret: WebhookSecret::parse(keys.webhook_secret)?,
        })
    }

    pub fn new(secret_key: SecretKey, webhook_secret: WebhookSecret) -> Self {
        Self {
            secret_key,
            webhook_secret,
        }
    }

    pub fn secret_key(&self) -> &SecretKey {
        &self.secret_key
    }

    pub fn webhook_secret(&self) -> &WebhookSecret {
        &self.webhook_secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str =
        r#"{"secret_key": "sk_test_local_0123456789abcdef", "webhook_secret": "whsec_0123456789abcdef"}"#;

    #[test]
    fn the_secret_parses_into_both_keys() {
        let keys = StripeKeys::parse(KEYS).unwrap();
        assert_eq!(keys.secret_key().expose(), "sk_test_local_0123456789abcdef");
        assert_eq!(keys.webhook_secret().expose(), "whsec_0123456789abcdef");
        // Extra fields are ignored.
        let with_more = r#"{"secret_key": "rk_live_x", "webhook_secret": "whsec_y", "publishable_key": "pk_z"}"#;
        assert!(StripeKeys::parse(with_more).is_ok());
    }

    #[test]
    fn debug_redacts_both_keys() {
        let keys = StripeKeys::parse(KEYS).unwrap();
        let printed = format!("{keys:?} {:?} {:?}", keys.secret_key(), keys.webhook_secret());
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn malformed_secrets_are_refused_without_quoting_them() {
        for (json, expected) in [
            (
                r#"{"secret_key": "pk_test_abc", "webhook_secret": "whsec_x"}"#,
                KeysError::SecretKey,
            ),
            (
                r#"{"secret_key": "sk_", "webhook_secret": "whsec_x"}"#,
                KeysError::SecretKey,
            ),
            (
                r#"{"secret_key": "sk_test abc", "webhook_secret": "whsec_x"}"#,
                KeysError::SecretKey,
            ),
            (
                r#"{"secret_key": "sk_test_abc", "webhook_secret": "sk_test_abc"}"#,
                KeysError::WebhookSecret,
            ),
        ] {
            assert_eq!(StripeKeys::parse(json).unwrap_err(), expected, "{json}");
        }
        for json in [
            "sk_test_not_json",
            r#"{"secret_key": "sk_test_abc"}"#,
            r#"{"secret_key": 12, "webhook_secret": "whsec_sekrit"}"#,
            r#"{"secret_key": "sk_test_sekrit", "webhook_secret": "#,
        ] {
            let error = StripeKeys::parse(json).unwrap_err();
            assert!(matches!(error, KeysError::Shape { .. }), "{json}: {error:?}");
            assert!(!error.to_string().contains("sekrit"), "{error}");
        }
    }
}
