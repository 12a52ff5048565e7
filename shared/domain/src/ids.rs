use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;

macro_rules! opaque_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                uuid::Uuid::try_parse(raw)
                    .map(Self)
                    .map_err(|_| Invalid::new(concat!("not a valid ", $what, " id")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(raw: String) -> Result<Self, Invalid> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }
    };
}

opaque_id!(
    /// Identifies a user; opaque to clients.
    UserId,
    "user"
);
opaque_id!(
    /// Identifies a catalogue product; opaque to clients.
    ProductId,
    "product"
);
opaque_id!(
    /// Identifies an order; opaque to clients.
    OrderId,
    "order"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_through_their_text_form() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn garbage_is_not_an_id() {
        for raw in ["", "me", "123", "../etc/passwd", "USER#x"] {
            assert!(ProductId::parse(raw).is_err(), "{raw}");
        }
    }
}
