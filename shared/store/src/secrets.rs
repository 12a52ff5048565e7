//! Attributes of stored items that hold secrets: a password hash (users), a payment token or method
//! and the client secret of a payment waiting for its customer (orders). They never leave their table: a copy made elsewhere (the outbox's parked records, a log)
//! carries [`REDACTED`] in their place, which keeps the item readable.

use serde_dynamo::{AttributeValue, Item};

pub const SECRET_ATTRIBUTES: [&str; 3] = ["password_hash", "payment_token", "payment_action"];
pub const REDACTED: &str = "redacted";

/// `image` with every secret attribute's value replaced by [`REDACTED`].
pub fn redacted(image: &Item) -> Item {
    let mut copy = image.clone();
    for name in SECRET_ATTRIBUTES {
        if let Some(value) = copy.get_mut(name)
            && !matches!(value, AttributeValue::Null(_))
        {
            *value = AttributeValue::S(REDACTED.to_owned());
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
}
