//! The shop's vocabulary and rules: values that can only exist once they have been parsed and
//! checked, the order life cycle as a pure function, event envelopes and fingerprints.
//! Nothing here knows about HTTP, AWS or an async runtime (`tests/layout.rs` checks it).

mod email;
pub mod events;
mod idempotency_key;
mod ids;
mod money;
mod order;
mod product;
mod text;
mod user;
pub mod validation;

pub use email::Email;
pub use idempotency_key::{IdempotencyKey, fingerprint};
pub use ids::{OrderId, ProductId, UserId};
pub use money::{Currency, Price};
pub use order::{
    CancelReason, Cause, LineRequest, NewOrder, Order, OrderLine, OrderStatus, PaymentAction, PaymentStatus,
    PaymentTokenRule, Quantity, Step, Transition, order_total,
};
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

/// A rule of the shop refused an operation on an existing aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("An order that is {} cannot be {}.", from.as_str(), transition.past_tense())]
    IllegalTransition { from: OrderStatus, transition: Transition },
}

/// Seconds since the Unix epoch (token claims, TTL attributes).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Current time as an RFC 3339 UTC timestamp, the one format the API and the tables use.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

/// RFC 3339 in UTC with exactly six fractional digits, so that timestamps sort as strings
/// (index sort keys rely on it).
pub fn format_rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    // Formatting a UTC date with a fixed, valid description cannot fail; fall back to epoch seconds.
    at.format(&format).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A timestamp this code wrote (or any RFC 3339 one); `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_a_fixed_width_and_sort_as_strings() {
        let whole = format_rfc3339(time::macros::datetime!(2026-01-01 00:00:09 UTC));
        let fraction = format_rfc3339(time::macros::datetime!(2026-01-01 00:00:09.5 UTC));
        assert_eq!(whole, "2026-01-01T00:00:09.000000Z");
        assert!(whole < fraction);
        assert!(time::OffsetDateTime::parse(&fraction, &time::format_description::well_known::Rfc3339).is_ok());
    }
}
