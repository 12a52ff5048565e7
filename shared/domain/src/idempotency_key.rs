//! Client-chosen idempotency keys and the request fingerprints stored with them.

use sha2::{Digest, Sha256};

use crate::Invalid;

/// A client-chosen `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !raw.is_empty() && raw.len() <= Self::MAX_CHARS && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new(format!(
                "must be 1 to {} visible ASCII characters",
                Self::MAX_CHARS
            )))
        }
    }

    /// The record key: the same client key from another user or for another operation is another record.
    pub fn record_key(&self, operation: &str, caller: &str) -> String {
        format!("{operation}#{caller}#{}", self.0)
    }
}

/// A stable fingerprint of a request (hex SHA-256 of its canonical bytes).
pub fn fingerprint(canonical_request: &[u8]) -> String {
    Sha256::digest(canonical_request)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse("order-2026-11-25-abc").is_ok());
        for raw in ["", "has space", "naïve", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn record_keys_separate_callers_and_operations() {
        let key = IdempotencyKey::parse("k1").unwrap();
        assert_ne!(
            key.record_key("orders-create", "u1"),
            key.record_key("orders-create", "u2")
        );
        assert_ne!(
            key.record_key("orders-create", "u1"),
            key.record_key("orders-cancel", "u1")
        );
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"").len(), 64);
    }
}
