//! Opaque, tamper-proof pagination cursors. A cursor is bound to the listing (its scope: route, caller,
//! filters) it came from, so a forged or foreign cursor is refused rather than obeyed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

impl CursorCodec {
    /// `secret` is the deployment's signing secret; cursors get a key of their own derived from it.
    pub fn new(secret: &[u8]) -> Self {
        let key = mac_of(secret, &[b"shop pagination cursor v1"]);
        Self { key }
    }

    pub fn encode<T: Serialize>(&self, scope: &str, position: &T) -> Result<String, ApiError> {
        let payload = serde_json::to_vec(position).map_err(ApiError::internal)?;
        let tag = mac_of(&self.key, &[scope.as_bytes(), b"\0", &payload]);
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    pub fn decode<T: DeserializeOwned>(&self, scope: &str, cursor: &str) -> Result<T, ApiError> {
        let invalid = || ApiError::invalid_field("cursor", "is not a cursor this listing issued");
        let (payload, tag) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|_| invalid())?;
        mac.update(scope.as_bytes());
        mac.update(b"\0");
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| invalid())?;
        serde_json::from_slice(&payload).map_err(|_| invalid())
    }
}

fn mac_of(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Position {
        id: String,
        price: i64,
    }

    fn codec() -> CursorCodec {
        CursorCodec::new(b"secret")
    }

    #[test]
    fn a_cursor_decodes_in_its_own_scope() {
        let position = Position {
            id: "p1".into(),
            price: 10,
        };
        let cursor = codec().encode("products|all", &position).unwrap();
        assert_eq!(codec().decode::<Position>("products|all", &cursor).unwrap(), position);
    }

    #[test]
    fn a_cursor_from_another_listing_is_refused() {
        let cursor = codec()
            .encode(
                "products|all",
                &Position {
                    id: "p1".into(),
                    price: 10,
                },
            )
            .unwrap();
        assert_eq!(
            codec()
                .decode::<Position>("products|kitchen", &cursor)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn forged_cursors_are_refused() {
        let cursor = codec()
            .encode(
                "s",
                &Position {
                    id: "p1".into(),
                    price: 10,
                },
            )
            .unwrap();
        let (_, tag) = cursor.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(br#"{"id":"p1","price":0}"#));
        for bad in [forged.as_str(), "", "abc", "a.b", "...."] {
            assert!(codec().decode::<Position>("s", bad).is_err(), "{bad}");
        }
        assert!(CursorCodec::new(b"other").decode::<Position>("s", &cursor).is_err());
    }
}
