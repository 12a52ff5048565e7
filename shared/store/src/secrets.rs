//! Attributes of stored items that hold secrets: a password hash (users), a payment token or method
//! and the client secret of a payment waiting for its customer (orders). They never leave their
//! table: a copy made elsewhere (the outbox's parked records, a log) carries [`REDACTED`] in place of
//! a secret string, and leaves out a secret map (a payment action: an order without one reads the
//! same), which keeps the item readable.

use serde_dynamo::{AttributeValue, Item};

pub const SECRET_ATTRIBUTES: [&str; 3] = ["password_hash", "payment_token", "payment_action"];
pub const REDACTED: &str = "redacted";

/// `image` with every secret string replaced by [`REDACTED`] and every secret map left out.
pub fn redacted(image: &Item) -> Item {
    let mut copy = image.clone();
    for name in SECRET_ATTRIBUTES {
        match copy.get_mut(name) {
            Some(AttributeValue::M(_)) => {
                copy.remove(name);
            }
            Some(AttributeValue::Null(_)) | None => {}
            Some(value) => *value = AttributeValue::S(REDACTED.to_owned()),
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn secrets_are_replaced_and_everything_else_kept() {
        let image = Item::from(HashMap::from([
            ("id".to_string(), AttributeValue::S("u1".into())),
            (
                "password_hash".to_string(),
                AttributeValue::S("$argon2id$v=19$...".into()),
            ),
            ("payment_token".to_string(), AttributeValue::S("tok_visa".into())),
        ]));
        let copy = redacted(&image);
        assert_eq!(copy.get("id"), image.get("id"));
        assert_eq!(copy.get("password_hash"), Some(&AttributeValue::S(REDACTED.into())));
        assert_eq!(copy.get("payment_token"), Some(&AttributeValue::S(REDACTED.into())));
    }

    #[test]
    fn a_payment_action_is_left_out_and_the_order_still_reads() {
        let mut order = crate::testing::sample_order();
        order.payment_token = Some("pm_card_visa".into());
        order.payment_action = Some(domain::PaymentAction {
            client_secret: "pi_1_secret_2".into(),
            expires_at: "2026-01-01T00:00:00.000000Z".into(),
        });
        let image: Item = serde_dynamo::to_item(&order).unwrap();
        let copy = redacted(&image);
        assert!(copy.get("payment_action").is_none());
        let read: domain::Order = serde_dynamo::from_item(copy).unwrap();
        assert_eq!(read.payment_action, None);
        assert_eq!(read.payment_token.as_deref(), Some(REDACTED));
    }
}
