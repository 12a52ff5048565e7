//! Stripe's webhook events: the `Stripe-Signature` check and the typed events the shop settles orders
//! from. Pure: no clock, no I/O (the caller passes the time), so the function and tools share it.
//!
//! Stripe signs each delivery with the endpoint's signing secret (`whsec_...`, used as the HMAC key
//! as it is, prefix included): the header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, each `v1` an
//! HMAC-SHA256 of `<t>.` followed by the raw body. While a secret is being rolled, a delivery carries
//! one `v1` per live secret, so any one matching is enough. Other schemes (`v0`, test-mode) are
//! ignored.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header Stripe signs its deliveries in (HTTP header names compare case-insensitively).
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// How far a signature's timestamp may be from now, either way, before the delivery counts as a
/// replay (Stripe's own libraries default to the same five minutes).
pub const TOLERANCE_SECS: i64 = 300;

/// Headers longer than this are refused unread (a real one holds a few signatures of 64 hex digits).
const MAX_HEADER_CHARS: usize = 4096;

/// Why a delivery's signature is refused. The messages name the rule, never the header's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header, or an empty one.
    #[error("the Stripe-Signature header is missing")]
    Missing,
    /// Not a list of `key=value` pairs, or a timestamp that is not a number.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the Stripe-Signature header has no timestamp")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    /// The signature is right but its timestamp is more than [`TOLERANCE_SECS`] away from now.
    #[error("the Stripe-Signature timestamp is outside the tolerance")]
    Stale,
    /// No `v1` signature matches the body with this secret.
    #[error("no Stripe-Signature signature matches the body")]
    Mismatch,
}

/// Checks that `body` (the raw bytes, exactly as delivered) was signed by Stripe with `secret` no
/// more than [`TOLERANCE_SECS`] from `now_unix`, per `header` (the `Stripe-Signature` value). The
/// comparison is constant-time; any one `v1` matching is enough.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_unix: i64) -> Result<(), SignatureError> {
    let parsed = parse_header(header)?;
    let Some(mac) = signed_payload_mac(secret, parsed.timestamp, body) else {
        return Err(SignatureError::Mismatch);
    };
    let matches = parsed
        .v1
        .iter()
        .filter_map(|candidate| hex::decode(candidate).ok())
        // `verify_slice` compares in constant time; a candidate of the wrong length fails at once,
        // which tells nothing of the expected value.
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let timestamp: i64 = parsed.timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    let within = now_unix
        .checked_sub(timestamp)
        .is_some_and(|age| age.unsigned_abs() <= TOLERANCE_SECS.unsigned_abs());
    if within { Ok(()) } else { Err(SignatureError::Stale) }
}

/// The `Stripe-Signature` value Stripe would send for `body` signed with `secret` at `timestamp`
/// (`t=<timestamp>,v1=<hex>`): for tests, and tools that replay events to a local stack.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let signature = signed_payload_mac(secret, &timestamp, body)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={signature}")
}

/// The MAC over `<timestamp>.<body>`, the timestamp exactly as the header spells it.
fn signed_payload_mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    // HMAC accepts keys of any length, so this is never `None`.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The parts of a `Stripe-Signature` header this check reads.
#[derive(Debug)]
struct ParsedHeader<'a> {
    /// The timestamp's digits, as signed.
    timestamp: &'a str,
    v1: Vec<&'a str>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    if header.len() > MAX_HEADER_CHARS {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item.split_once('=').ok_or(SignatureError::Malformed)?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "t" => {
                let digits = !value.is_empty() && value.len() <= 18 && value.bytes().all(|b| b.is_ascii_digit());
                // One timestamp only: which of two was signed would be a guess.
                if !digits || timestamp.replace(value).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            "v1" => v1.push(value),
            // v0 (test-mode) and future schemes.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(ParsedHeader { timestamp, v1 })
}

/// The event types the shop acts on.
pub mod types {
    pub const PAYMENT_INTENT_SUCCEEDED: &str = "payment_intent.succeeded";
    pub const PAYMENT_INTENT_PAYMENT_FAILED: &str = "payment_intent.payment_failed";
    pub const PAYMENT_INTENT_CANCELED: &str = "payment_intent.canceled";
    pub const CHARGE_REFUNDED: &str = "charge.refunded";
}

/// A Stripe event as delivered to the webhook (fields the shop does not read are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stripe's id of the event (`evt_...`): the same on every redelivery.
    pub id: String,
    /// The event's type, e.g. `payment_intent.succeeded`.
    pub kind: String,
    /// When Stripe created the event (unix seconds).
    pub created: i64,
    pub object: EventObject,
}

/// The object of an event, typed for the event types the shop acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventObject {
    /// `payment_intent.succeeded`, `payment_intent.payment_failed`, `payment_intent.canceled`.
    PaymentIntent(PaymentIntent),
    /// `charge.refunded`.
    Charge(Charge),
    /// Any other type: its object is not read.
    Other,
}

/// The fields of a PaymentIntent the shop reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaymentIntent {
    /// `pi_...`
    pub id: String,
    /// `succeeded`, `requires_action`, `canceled`, ...
    pub status: String,
    /// What the PaymentIntent asks for, in minor units.
    pub amount: i64,
    /// What was actually received, in minor units (absent from some emulators: then `amount`).
    #[serde(default)]
    pub amount_received: Option<i64>,
    /// Three-letter ISO code, lower case.
    pub currency: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}

impl PaymentIntent {
    /// What was received, in minor units: `amount_received`, else `amount`.
    pub fn received(&self) -> i64 {
        self.amount_received.unwrap_or(self.amount)
    }
}

/// The fields of a Charge the shop reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Charge {
    /// `ch_...`
    pub id: String,
    /// The PaymentIntent that made the charge, if one did.
    #[serde(default)]
    pub payment_intent: Option<String>,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    /// Whether the whole charge was refunded.
    #[serde(default)]
    pub refunded: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}

impl Charge {
    /// Whether nothing of the charge is kept any more.
    pub fn fully_refunded(&self) -> bool {
        self.refunded || self.amount_refunded >= self.amount
    }
}

/// The metadata the shop puts on its PaymentIntents (Stripe copies it onto their charges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    /// The shop's order id, as a string (parsed by the caller).
    #[serde(default)]
    pub order_id: Option<String>,
}

/// Why a signed body is not an event the shop can read. The messages name the part at fault but
/// quote none of the body (the JSON errors, which may, are only their sources).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a Stripe event")]
    NotAnEvent(#[source] serde_json::Error),
    #[error("the event id is not a Stripe id")]
    BadId,
    #[error("the {kind} event's object is not what that type carries")]
    BadObject {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Event ids longer than this are refused (Stripe's are about 30 characters).
const MAX_ID_CHARS: usize = 255;

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: serde_json::Value,
}

/// Reads a (verified) webhook body: the envelope always, the object only for the types the shop acts
/// on. Unknown fields are ignored.
pub fn parse_event(body: &[u8]) -> Result<Event, EventError> {
    let raw: RawEvent = serde_json::from_slice(body).map_err(EventError::NotAnEvent)?;
    let id_ok = !raw.id.is_empty()
        && raw.id.len() <= MAX_ID_CHARS
        && raw
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return Err(EventError::BadId);
    }
    let bad_object = |source| EventError::BadObject {
        kind: raw.kind.clone(),
        source,
    };
    let object = match raw.kind.as_str() {
        types::PAYMENT_INTENT_SUCCEEDED | types::PAYMENT_INTENT_PAYMENT_FAILED | types::PAYMENT_INTENT_CANCELED => {
            EventObject::PaymentIntent(serde_json::from_value(raw.data.object).map_err(bad_object)?)
        }
        types::CHARGE_REFUNDED => EventObject::Charge(serde_json::from_value(raw.data.object).map_err(bad_object)?),
        _ => EventObject::Other,
    };
    Ok(Event {
        id: raw.id,
        kind: raw.kind,
        created: raw.created,
        object,
    })
}

/// `null` reads as the type's default (Stripe sends `metadata: {}`, some emulators `null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_unit_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_795_608_000;

    #[test]
    fn a_valid_signature_is_accepted() {
        let header = sign(SECRET, NOW, BODY);
        assert_eq!(verify(SECRET, &header, BODY, NOW), Ok(()));
        assert_eq!(
            verify(SECRET, &header, BODY, NOW + TOLERANCE_SECS),
            Ok(()),
            "at the edge"
        );
        assert_eq!(
            verify(SECRET, &header, BODY, NOW - TOLERANCE_SECS),
            Ok(()),
            "at the edge"
        );
    }

    #[test]
    fn the_signature_matches_stripes_documented_scheme() {
        // HMAC-SHA256(secret, "<t>.<body>"), computed independently of `sign`.
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(format!("{NOW}.").as_bytes());
        mac.update(BODY);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sign(SECRET, NOW, BODY), format!("t={NOW},v1={expected}"));
        let header =
            format!("t={NOW}, v1={expected}, v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
        assert_eq!(verify(SECRET, &header, BODY, NOW), Ok(()));
    }

    #[test]
    fn one_matching_v1_among_several_is_enough() {
        let good = sign(SECRET, NOW, BODY);
        let good_v1 = good.split("v1=").nth(1).unwrap();
        let other = sign(b"whsec_rolled_out_secret", NOW, BODY);
        let other_v1 = other.split("v1=").nth(1).unwrap();
        let header = format!("t={NOW},v1={other_v1},v1=zz-not-hex,v1={good_v1}");
        assert_eq!(verify(SECRET, &header, BODY, NOW), Ok(()));
        let header = format!("t={NOW},v1={other_v1},v1={}", "0".repeat(64));
        assert_eq!(verify(SECRET, &header, BODY, NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        let tampered = br#"{"id":"evt_1","type":"payment_intent.succeedeD"}"#;
        assert_eq!(verify(SECRET, &header, tampered, NOW), Err(SignatureError::Mismatch));
        assert_eq!(verify(SECRET, &header, b"", NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_tampered_timestamp_is_refused() {
        let header = sign(SECRET, NOW, BODY).replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(verify(SECRET, &header, BODY, NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn another_secret_is_refused() {
        let header = sign(b"whsec_someone_else", NOW, BODY);
        assert_eq!(verify(SECRET, &header, BODY, NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_stale_signature_is_refused() {
        let header = sign(SECRET, NOW - TOLERANCE_SECS - 1, BODY);
        assert_eq!(verify(SECRET, &header, BODY, NOW), Err(SignatureError::Stale));
    }

    #[test]
    fn a_signature_from_beyond_the_tolerance_in_the_future_is_refused() {
        let header = sign(SECRET, NOW + TOLERANCE_SECS + 1, BODY);
        assert_eq!(verify(SECRET, &header, BODY, NOW), Err(SignatureError::Stale));
    }

    #[test]
    fn a_header_without_a_timestamp_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        let without_t = header.split(',').nth(1).unwrap();
        assert_eq!(verify(SECRET, without_t, BODY, NOW), Err(SignatureError::NoTimestamp));
    }

    #[test]
    fn a_header_without_v1_is_refused() {
        let header = format!("t={NOW},v0=abcdef");
        assert_eq!(verify(SECRET, &header, BODY, NOW), Err(SignatureError::NoSignature));
        assert_eq!(
            verify(SECRET, &format!("t={NOW}"), BODY, NOW),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(verify(SECRET, "", BODY, NOW), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, "   ", BODY, NOW), Err(SignatureError::Missing));
        for garbage in [
            "garbage",
            "t=abc,v1=00",
            "t=-5,v1=00",
            "t=,v1=00",
            "t=1,t=2,v1=00",
            "t=99999999999999999999999,v1=00",
            ",,,",
        ] {
            assert_eq!(
                verify(SECRET, garbage, BODY, NOW),
                Err(SignatureError::Malformed),
                "{garbage}"
            );
        }
        assert_eq!(
            verify(SECRET, &format!("t={NOW},v1={}", "a".repeat(5000)), BODY, NOW),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn errors_never_echo_the_header() {
        let header = format!("t={NOW},v1=deadbeefcafe");
        let error = verify(SECRET, &header, BODY, NOW).unwrap_err();
        assert!(!error.to_string().contains("deadbeef"), "{error}");
    }

    #[test]
    fn a_payment_intent_event_is_typed() {
        let body = br#"{
            "id": "evt_3PQ", "object": "event", "type": "payment_intent.succeeded", "created": 1795608000,
            "livemode": false, "pending_webhooks": 1,
            "data": {"object": {
                "id": "pi_3PQ", "object": "payment_intent", "status": "succeeded",
                "amount": 7197, "amount_received": 7197, "currency": "usd",
                "metadata": {"order_id": "0190f5a4-7b3e-7c1a-9d2e-0000000000a1", "other": "x"},
                "latest_charge": "ch_1"
            }}
        }"#;
        let event = parse_event(body).unwrap();
        assert_eq!(
            (event.id.as_str(), event.kind.as_str(), event.created),
            ("evt_3PQ", types::PAYMENT_INTENT_SUCCEEDED, 1_795_608_000)
        );
        let EventObject::PaymentIntent(intent) = event.object else {
            panic!("a payment intent")
        };
        assert_eq!(intent.id, "pi_3PQ");
        assert_eq!(intent.status, "succeeded");
        assert_eq!((intent.amount, intent.received()), (7197, 7197));
        assert_eq!(intent.currency, "usd");
        assert_eq!(
            intent.metadata.order_id.as_deref(),
            Some("0190f5a4-7b3e-7c1a-9d2e-0000000000a1")
        );
    }

    #[test]
    fn a_payment_intent_without_amount_received_or_metadata_still_reads() {
        let body = br#"{"id":"evt_1","type":"payment_intent.canceled","created":1,
            "data":{"object":{"id":"pi_1","status":"canceled","amount":100,"currency":"usd","metadata":null}}}"#;
        let EventObject::PaymentIntent(intent) = parse_event(body).unwrap().object else {
            panic!("a payment intent")
        };
        assert_eq!(intent.received(), 100);
        assert_eq!(intent.metadata.order_id, None);
    }

    #[test]
    fn a_charge_event_is_typed() {
        let body = br#"{"id":"evt_2","type":"charge.refunded","created":2,"data":{"object":{
            "id":"ch_1","object":"charge","payment_intent":"pi_1","amount":7197,"amount_refunded":7197,
            "refunded":true,"currency":"usd","metadata":{"order_id":"o1"}}}}"#;
        let EventObject::Charge(charge) = parse_event(body).unwrap().object else {
            panic!("a charge")
        };
        assert_eq!(charge.payment_intent.as_deref(), Some("pi_1"));
        assert!(charge.fully_refunded());
        let partial = Charge {
            refunded: false,
            amount_refunded: 100,
            ..charge
        };
        assert!(!partial.fully_refunded());
    }

    #[test]
    fn other_types_are_read_without_their_object() {
        let body = br#"{"id":"evt_3","type":"customer.created","created":3,"data":{"object":{"id":"cus_1"}}}"#;
        let event = parse_event(body).unwrap();
        assert_eq!(event.object, EventObject::Other);
        assert_eq!(event.kind, "customer.created");
    }

    #[test]
    fn unreadable_events_are_errors() {
        assert!(matches!(parse_event(b"{oops"), Err(EventError::NotAnEvent(_))));
        assert!(matches!(
            parse_event(br#"{"id":"evt_1"}"#),
            Err(EventError::NotAnEvent(_))
        ));
        let bad_id = br#"{"id":"evt 1#x","type":"customer.created","created":3,"data":{"object":{}}}"#;
        assert!(matches!(parse_event(bad_id), Err(EventError::BadId)));
        let wrong_object =
            br#"{"id":"evt_1","type":"payment_intent.succeeded","created":3,"data":{"object":{"id":"pi_1"}}}"#;
        assert!(matches!(parse_event(wrong_object), Err(EventError::BadObject { .. })));
    }
}
