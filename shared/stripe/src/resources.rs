//! The Stripe objects the payment step reads, with only the fields it uses (Stripe adds fields
//! freely; unknown ones are ignored, an unknown status is [`IntentStatus::Unknown`]). Shaped after the
//! API version every request pins (`STRIPE_VERSION`) and what localstripe (the local emulator) answers.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where a PaymentIntent stands (Stripe's life cycle of a payment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// No payment method, or the last attempt failed (a decline, a failed 3-D Secure): nothing charged.
    RequiresPaymentMethod,
    /// Created with a payment method, not confirmed yet: nothing charged.
    RequiresConfirmation,
    /// The customer must authenticate (3-D Secure) with the intent's client secret.
    RequiresAction,
    /// The payment is on its way (asynchronous methods): not settled either way.
    Processing,
    /// Authorized, waiting for a capture (manual capture only).
    RequiresCapture,
    /// Cancelled: no payment can complete from it any more.
    Canceled,
    /// Charged.
    Succeeded,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPaymentMethod => "requires_payment_method",
            Self::RequiresConfirmation => "requires_confirmation",
            Self::RequiresAction => "requires_action",
            Self::Processing => "processing",
            Self::RequiresCapture => "requires_capture",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
            Self::Unknown => "unknown",
        }
    }

    /// Whether `POST /v1/payment_intents/{id}/cancel` accepts the intent in this status.
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            Self::RequiresPaymentMethod | Self::RequiresConfirmation | Self::RequiresAction | Self::RequiresCapture
        )
    }
}

impl std::fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The secret a customer's browser completes 3-D Secure with. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(redacted)")
    }
}

/// A field Stripe answers with an object's id, or with the object itself when the request expanded it
/// (`expand[]=`). localstripe always inlines the object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

impl<T> Expandable<T> {
    /// The object, when it was inlined.
    pub fn object(&self) -> Option<&T> {
        match self {
            Self::Object(object) => Some(object),
            Self::Id(_) => None,
        }
    }
}

/// Why the last payment attempt failed (a decline code, say); the message is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
}

/// A PaymentIntent: one per order, created unconfirmed, then confirmed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub status: IntentStatus,
    /// What the intent asks for, in minor units.
    pub amount: i64,
    /// What it collected (Stripe; localstripe does not say).
    #[serde(default)]
    pub amount_received: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub client_secret: Option<ClientSecret>,
    /// The charge of the last attempt: an id, or the charge itself when expanded.
    #[serde(default)]
    pub latest_charge: Option<Expandable<Charge>>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A charge, as far as refunds go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub refunded: bool,
    #[serde(default)]
    pub status: Option<String>,
}

/// What a succeeded PaymentIntent charged, and how much of it was refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeSummary {
    /// The charge's amount (else the amount received, else the amount asked for).
    pub amount: i64,
    pub amount_refunded: i64,
    /// Refunded in full.
    pub refunded: bool,
    /// Whether the refund fields are known: only when the latest charge was inlined (expanded).
    pub refunds_known: bool,
}

impl PaymentIntent {
    /// The charge of a succeeded intent (`None` in any other status).
    pub fn charged(&self) -> Option<ChargeSummary> {
        if self.status != IntentStatus::Succeeded {
            return None;
        }
        let charge = self.latest_charge.as_ref().and_then(Expandable::object);
        let amount = charge
            .map(|charge| charge.amount)
            .or(self.amount_received)
            .unwrap_or(self.amount);
        Some(match charge {
            Some(charge) => ChargeSummary {
                amount,
                amount_refunded: charge.amount_refunded,
                refunded: charge.refunded || (amount > 0 && charge.amount_refunded >= amount),
                refunds_known: true,
            },
            None => ChargeSummary {
                amount,
                amount_refunded: 0,
                refunded: false,
                refunds_known: false,
            },
        })
    }

    /// The id of the latest charge, expanded or not.
    pub fn latest_charge_id(&self) -> Option<&str> {
        self.latest_charge.as_ref().map(|charge| match charge {
            Expandable::Id(id) => id.as_str(),
            Expandable::Object(charge) => charge.id.as_str(),
        })
    }
}

/// A refund.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    /// `succeeded`, `pending` (card refunds may settle later), `requires_action`, `failed`, `canceled`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
}

impl Refund {
    /// A refund Stripe gave up on (it will not return the money).
    pub fn failed(&self) -> bool {
        matches!(self.status.as_deref(), Some("failed" | "canceled"))
    }
}

/// A page of a list (`GET /v1/refunds?payment_intent=...`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A succeeded intent as localstripe answers it: the latest charge inlined.
    const LOCALSTRIPE_SUCCEEDED: &str = r#"{
        "id": "pi_1a2b3c", "object": "payment_intent", "amount": 2598, "currency": "eur",
        "client_secret": "pi_1a2b3c_secret_xyz", "status": "succeeded", "capture_method": "automatic_async",
        "latest_charge": {"id": "ch_9", "object": "charge", "amount": 2598, "amount_refunded": 0,
                          "refunded": false, "status": "succeeded", "payment_intent": "pi_1a2b3c"},
        "last_payment_error": null, "metadata": {"order_id": "0190f5a4"}, "next_action": null
    }"#;

    /// The same as Stripe answers it without `expand[]=latest_charge` (API version 2024-06-20).
    const STRIPE_SUCCEEDED: &str = r#"{
        "id": "pi_1a2b3c", "object": "payment_intent", "amount": 2598, "amount_received": 2598,
        "currency": "eur", "client_secret": "pi_1a2b3c_secret_xyz", "status": "succeeded",
        "latest_charge": "ch_9", "metadata": {"order_id": "0190f5a4"}, "livemode": false
    }"#;

    #[test]
    fn latest_charge_parses_inlined_or_as_an_id() {
        let inlined: PaymentIntent = serde_json::from_str(LOCALSTRIPE_SUCCEEDED).unwrap();
        let by_id: PaymentIntent = serde_json::from_str(STRIPE_SUCCEEDED).unwrap();
        assert_eq!(inlined.latest_charge_id(), Some("ch_9"));
        assert_eq!(by_id.latest_charge_id(), Some("ch_9"));
        assert!(matches!(inlined.latest_charge, Some(Expandable::Object(_))));
        assert!(matches!(by_id.latest_charge, Some(Expandable::Id(_))));
        assert_eq!(
            inlined.charged(),
            Some(ChargeSummary {
                amount: 2598,
                amount_refunded: 0,
                refunded: false,
                refunds_known: true
            })
        );
        assert_eq!(
            by_id.charged(),
            Some(ChargeSummary {
                amount: 2598,
                amount_refunded: 0,
                refunded: false,
                refunds_known: false
            })
        );
        assert_eq!(inlined.metadata.get("order_id").map(String::as_str), Some("0190f5a4"));
    }

    #[test]
    fn a_refund_in_full_shows_on_the_charge() {
        let mut intent: PaymentIntent = serde_json::from_str(LOCALSTRIPE_SUCCEEDED).unwrap();
        let Some(Expandable::Object(charge)) = intent.latest_charge.as_mut() else {
            panic!("inlined")
        };
        charge.amount_refunded = 2598;
        let summary = intent.charged().unwrap();
        assert!(summary.refunded);
        assert_eq!(summary.amount_refunded, 2598);
    }

    #[test]
    fn only_a_succeeded_intent_has_charged() {
        for status in ["requires_payment_method", "requires_action", "processing", "canceled"] {
            let json = STRIPE_SUCCEEDED.replace("\"succeeded\"", &format!("\"{status}\""));
            let intent: PaymentIntent = serde_json::from_str(&json).unwrap();
            assert_eq!(intent.status.as_str(), status);
            assert_eq!(intent.charged(), None, "{status}");
        }
    }

    #[test]
    fn unknown_statuses_and_fields_do_not_break_parsing() {
        let json = STRIPE_SUCCEEDED.replace("\"succeeded\"", "\"requires_something_new\"");
        let intent: PaymentIntent = serde_json::from_str(&json).unwrap();
        assert_eq!(intent.status, IntentStatus::Unknown);
        // A fresh intent: no charge at all, nothing in metadata.
        let fresh: PaymentIntent = serde_json::from_str(
            r#"{"id": "pi_2", "amount": 100, "status": "requires_confirmation", "latest_charge": null}"#,
        )
        .unwrap();
        assert_eq!(fresh.latest_charge, None);
        assert_eq!(fresh.client_secret, None);
    }

    #[test]
    fn the_client_secret_is_kept_but_never_printed() {
        let intent: PaymentIntent = serde_json::from_str(LOCALSTRIPE_SUCCEEDED).unwrap();
        assert_eq!(
            intent.client_secret.as_ref().map(ClientSecret::expose),
            Some("pi_1a2b3c_secret_xyz")
        );
        let printed = format!("{intent:?}");
        assert!(!printed.contains("secret_xyz"), "{printed}");
    }

    #[test]
    fn cancellable_statuses_are_the_requires_ones() {
        use IntentStatus::*;
        for status in [
            RequiresPaymentMethod,
            RequiresConfirmation,
            RequiresAction,
            RequiresCapture,
        ] {
            assert!(status.is_cancellable(), "{status}");
        }
        for status in [Processing, Canceled, Succeeded, Unknown] {
            assert!(!status.is_cancellable(), "{status}");
        }
    }
}
