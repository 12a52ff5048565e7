//! What can go wrong talking to Stripe, typed by what a caller does about it: a decline (the card said
//! no), a rejected request, our own misconfiguration (the key), and everything worth retrying
//! (conflicts, rate limits, Stripe's errors, timeouts, the network). Errors keep their causes; they
//! never carry a key, a client secret or a whole response body: only the fields of Stripe's error
//! object, with its message cut short and anything shaped like a secret in it blanked.

use std::time::Duration;

use serde::Deserialize;

/// The useful fields of Stripe's error object (`{"error": {"type", "code", "decline_code", "param",
/// "message"}}`). localstripe fills `type` and `message`, and `code` for declines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiErrorDetail {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The longest part of Stripe's message an error keeps.
const MESSAGE_LIMIT: usize = 160;

/// `message` cut to [`MESSAGE_LIMIT`] characters, with every word that looks like a secret (an API
/// key, a webhook secret, a client secret) blanked.
fn scrubbed(message: &str) -> String {
    let secret_like = |word: &str| {
        let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
        ["sk_", "rk_", "whsec_"].iter().any(|prefix| word.starts_with(prefix)) || word.contains("_secret_")
    };
    let mut text = message
        .split(' ')
        .map(|word| if secret_like(word) { "[redacted]" } else { word })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some((cut, _)) = text.char_indices().nth(MESSAGE_LIMIT) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl ApiErrorDetail {
    /// The detail of an error answer's body; an empty one when the body is not Stripe's error object.
    pub fn from_body(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: ApiErrorDetail,
        }
        let mut detail = serde_json::from_slice::<Envelope>(body)
            .map(|envelope| envelope.error)
            .unwrap_or_default();
        detail.message = detail.message.as_deref().map(scrubbed);
        detail
    }

    /// Whether the detail says the request's payment method is the problem: it does not exist, or
    /// it cannot be used (`payment_method_*` codes). A missing object that is not the payment method
    /// (`param` naming something else: the intent) is not.
    fn names_the_payment_method(&self) -> bool {
        let code = self.code.as_deref().unwrap_or_default();
        let param_is_payment_method = match self.param.as_deref() {
            None => true,
            Some(param) => param == "payment_method" || param.starts_with("payment_method["),
        };
        code.starts_with("payment_method_") || (code == "resource_missing" && param_is_payment_method)
    }
}

impl std::fmt::Display for ApiErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (name, value) in [
            ("type", &self.kind),
            ("code", &self.code),
            ("decline_code", &self.decline_code),
            ("param", &self.param),
        ] {
            if let Some(value) = value {
                parts.push(format!("{name} {value}"));
            }
        }
        if parts.is_empty() {
            f.write_str("no error detail")?;
        } else {
            f.write_str(&parts.join(", "))?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// A failed call to Stripe.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// The card was declined (HTTP 402, or an error of type `card_error`).
    #[error("Stripe declined the card (HTTP {status}; {detail})")]
    Declined { status: u16, detail: ApiErrorDetail },
    /// A request Stripe refused as it stands (HTTP 400 and the other 4xx not named here).
    #[error("Stripe rejected the request (HTTP {status}; {detail})")]
    Rejected { status: u16, detail: ApiErrorDetail },
    /// The API key is wrong, revoked or lacks a permission: the deployment's configuration, never the
    /// customer's doing.
    #[error("Stripe refused the API key (HTTP {status}): check the deployment's Stripe secret")]
    Unauthorized { status: u16 },
    /// No such object (HTTP 404). localstripe answers a bare `Not Found` for any missing object.
    #[error("Stripe has no such object (HTTP 404; {detail})")]
    NotFound { detail: ApiErrorDetail },
    /// Another request with the same idempotency key is in flight (HTTP 409).
    #[error("Stripe is still processing a request with the same idempotency key (HTTP 409; {detail})")]
    Conflict { detail: ApiErrorDetail },
    /// Too many requests (HTTP 429).
    #[error("Stripe is rate limiting the requests (HTTP 429)")]
    RateLimited,
    /// Stripe failed (HTTP 5xx): the request may or may not have been carried out.
    #[error("Stripe failed (HTTP {status})")]
    Server { status: u16 },
    /// No whole answer in time: the request may or may not have been carried out.
    #[error("no answer from Stripe within {0:?}")]
    Timeout(Duration),
    /// The connection failed, or broke before the whole answer came.
    #[error("could not reach Stripe")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A success answer that is not the object expected.
    #[error("could not read Stripe's answer")]
    Decode(#[source] serde_json::Error),
    /// An id that is not a Stripe id of the expected kind (it would not be put in a URL).
    #[error("{id:?} is not a Stripe {kind} id")]
    InvalidId { kind: &'static str, id: String },
    /// The client cannot be built as configured.
    #[error("the Stripe client is misconfigured: {0}")]
    Config(String),
    /// No trusted root certificates for Stripe's TLS.
    #[error("no root certificates to trust Stripe's TLS with")]
    Tls(#[source] std::io::Error),
}

impl StripeError {
    /// The error of a non-success answer, from its status and body (of which only Stripe's error
    /// fields are kept).
    pub fn from_answer(status: u16, body: &[u8]) -> Self {
        let detail = ApiErrorDetail::from_body(body);
        match status {
            402 => Self::Declined { status, detail },
            _ if detail.kind.as_deref() == Some("card_error") => Self::Declined { status, detail },
            401 | 403 => Self::Unauthorized { status },
            404 => Self::NotFound { detail },
            409 => Self::Conflict { detail },
            429 => Self::RateLimited,
            500..=599 => Self::Server { status },
            _ => Self::Rejected { status, detail },
        }
    }

    /// The HTTP status Stripe answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Declined { status, .. } | Self::Rejected { status, .. } | Self::Unauthorized { status } => {
                Some(*status)
            }
            Self::Server { status } => Some(*status),
            Self::NotFound { .. } => Some(404),
            Self::Conflict { .. } => Some(409),
            Self::RateLimited => Some(429),
            _ => None,
        }
    }

    /// Stripe's error detail, when it answered with one.
    pub fn detail(&self) -> Option<&ApiErrorDetail> {
        match self {
            Self::Declined { detail, .. }
            | Self::Rejected { detail, .. }
            | Self::NotFound { detail }
            | Self::Conflict { detail } => Some(detail),
            _ => None,
        }
    }

    /// Stripe's error code (`card_declined`, `resource_missing`, `charge_already_refunded`...).
    pub fn code(&self) -> Option<&str> {
        self.detail().and_then(|detail| detail.code.as_deref())
    }

    /// Whether the payment method cannot pay, as the answer to creating or confirming a PaymentIntent
    /// says: a decline, or a 400/404 about the payment method (it does not exist: `resource_missing`;
    /// it cannot be used: `payment_method_*`). A bare 404 counts too: localstripe's answer to a
    /// missing payment method has no code. (Not meaningful for other calls: a 404 to a GET of a
    /// stored PaymentIntent is no verdict on any card.)
    pub fn rejects_payment_method(&self) -> bool {
        match self {
            Self::Declined { .. } => true,
            Self::Rejected { status: 400, detail } => detail.names_the_payment_method(),
            Self::NotFound { detail } => detail.code.is_none() || detail.names_the_payment_method(),
            _ => false,
        }
    }

    /// Whether the same request may succeed later as it is: a conflict, a rate limit, Stripe's own
    /// failure, no answer, a broken connection.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::RateLimited | Self::Server { .. } | Self::Timeout(_) | Self::Transport(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> StripeError {
        StripeError::from_answer(status, body.as_bytes())
    }

    #[test]
    fn a_402_is_a_decline_as_localstripe_and_stripe_say_it() {
        let localstripe = answer(
            402,
            r#"{"error": {"code": "card_declined", "type": "invalid_request_error", "charge": "ch_1", "message": "Your card was declined."}}"#,
        );
        assert!(matches!(localstripe, StripeError::Declined { status: 402, .. }));
        assert_eq!(localstripe.code(), Some("card_declined"));
        assert!(localstripe.rejects_payment_method());
        assert!(!localstripe.is_retryable());
        let stripe = answer(
            402,
            r#"{"error": {"code": "card_declined", "decline_code": "insufficient_funds", "type": "card_error"}}"#,
        );
        assert!(stripe.rejects_payment_method());
        assert_eq!(
            stripe.to_string(),
            "Stripe declined the card (HTTP 402; type card_error, code card_declined, decline_code insufficient_funds)"
        );
        // A card error is a decline whatever the status.
        assert!(matches!(
            answer(400, r#"{"error": {"type": "card_error", "code": "expired_card"}}"#),
            StripeError::Declined { status: 400, .. }
        ));
    }

    #[test]
    fn a_missing_or_unusable_payment_method_rejects_it() {
        for (status, body) in [
            (
                404,
                r#"{"error": {"message": "Not Found", "type": "invalid_request_error"}}"#,
            ),
            (
                400,
                r#"{"error": {"code": "resource_missing", "param": "payment_method", "type": "invalid_request_error"}}"#,
            ),
            (
                400,
                r#"{"error": {"code": "payment_method_unexpected_state", "type": "invalid_request_error"}}"#,
            ),
            (
                404,
                r#"{"error": {"code": "resource_missing", "type": "invalid_request_error"}}"#,
            ),
        ] {
            assert!(answer(status, body).rejects_payment_method(), "{status} {body}");
        }
    }

    #[test]
    fn other_refusals_do_not_reject_the_payment_method() {
        for (status, body) in [
            // The intent is missing, not the card.
            (
                404,
                r#"{"error": {"code": "resource_missing", "param": "intent", "type": "invalid_request_error"}}"#,
            ),
            (
                400,
                r#"{"error": {"code": "payment_intent_unexpected_state", "type": "invalid_request_error"}}"#,
            ),
            (
                400,
                r#"{"error": {"message": "Bad request", "type": "invalid_request_error"}}"#,
            ),
            (
                401,
                r#"{"error": {"message": "Unauthorized", "type": "invalid_request_error"}}"#,
            ),
            (403, "{}"),
            (409, r#"{"error": {"type": "idempotency_error"}}"#),
            (429, ""),
            (500, "<html>oops</html>"),
            (503, ""),
        ] {
            assert!(!answer(status, body).rejects_payment_method(), "{status} {body}");
        }
    }

    #[test]
    fn statuses_map_to_their_kind() {
        assert!(matches!(answer(401, ""), StripeError::Unauthorized { status: 401 }));
        assert!(matches!(answer(403, ""), StripeError::Unauthorized { status: 403 }));
        assert!(matches!(answer(409, ""), StripeError::Conflict { .. }));
        assert!(matches!(answer(429, ""), StripeError::RateLimited));
        assert!(matches!(answer(502, ""), StripeError::Server { status: 502 }));
        assert!(matches!(answer(400, ""), StripeError::Rejected { status: 400, .. }));
        assert!(matches!(answer(422, ""), StripeError::Rejected { status: 422, .. }));
        for retryable in [409, 429, 500, 503] {
            assert!(answer(retryable, "").is_retryable(), "{retryable}");
        }
        for permanent in [400, 401, 402, 403, 404] {
            assert!(!answer(permanent, "").is_retryable(), "{permanent}");
        }
        assert_eq!(answer(404, "").status(), Some(404));
        assert!(StripeError::Timeout(Duration::from_secs(5)).is_retryable());
    }

    #[test]
    fn errors_keep_no_secret_and_no_whole_body() {
        let error = answer(
            401,
            r#"{"error": {"message": "Invalid API Key provided: sk_test_abcdef123456", "type": "invalid_request_error"}}"#,
        );
        assert!(!error.to_string().contains("sk_test"), "{error}");
        let error = answer(
            400,
            r#"{"error": {"message": "The client_secret pi_1_secret_abc does not match, nor does whsec_zzz or rk_live_1.", "type": "invalid_request_error"}}"#,
        );
        let text = error.to_string();
        for secret in ["pi_1_secret_abc", "whsec_zzz", "rk_live_1"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("[redacted]"), "{text}");
        let long = format!(
            r#"{{"error": {{"message": "{}", "type": "api_error"}}}}"#,
            "x".repeat(5000)
        );
        assert!(answer(400, &long).to_string().len() < 400);
        // A body that is not Stripe's error object is not kept at all.
        let error = answer(400, r#"{"customer_email": "a@b.c", "card": "4242424242424242"}"#);
        assert_eq!(
            error.to_string(),
            "Stripe rejected the request (HTTP 400; no error detail)"
        );
    }
}
