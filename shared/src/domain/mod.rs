//! The shop's vocabulary: values that can only exist once they have been parsed and checked.
//! Nothing here knows about HTTP or AWS.

mod email;
mod ids;
mod money;
mod product;
mod text;
mod user;

pub use email::Email;
pub use ids::{ProductId, UserId};
pub use money::{Currency, Price};
pub use product::{Category, NewProduct, Product, ProductPatch, StockQuantity};
pub use text::parse_text;
pub use user::{NewUser, Password, Phone, Role, User};

/// Why a value was refused; `field` is filled in by the caller that knows the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Current time as an RFC 3339 UTC timestamp, the one format the API and the tables use.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

pub fn format_rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    // Formatting a UTC OffsetDateTime with a fixed, valid description cannot fail.
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
