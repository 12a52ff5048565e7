use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// An amount of money in minor units (cents). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Price(i64);

impl Price {
    /// Ten million in major units: far above any catalogue price, far below i64 overflow when multiplied
    /// by order quantities.
    pub const MAX: i64 = 1_000_000_000;

    pub fn new(minor_units: i64) -> Result<Self, Invalid> {
        if (0..=Self::MAX).contains(&minor_units) {
            Ok(Self(minor_units))
        } else {
            Err(Invalid::new(format!(
                "must be an integer amount in minor units between 0 and {}",
                Self::MAX
            )))
        }
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Price {
    type Error = Invalid;
    fn try_from(value: i64) -> Result<Self, Invalid> {
        Self::new(value)
    }
}

impl From<Price> for i64 {
    fn from(price: Price) -> i64 {
        price.0
    }
}

/// The currencies the shop sells in. One for now: totals are only meaningful in a single currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Currency {
    #[default]
    #[serde(rename = "USD")]
    Usd,
}

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "USD" => Ok(Self::Usd),
            _ => Err(Invalid::new("unsupported currency; the shop sells in USD")),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Usd => "USD",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_non_negative_and_bounded() {
        assert_eq!(Price::new(0).unwrap().minor_units(), 0);
        assert_eq!(Price::new(1999).unwrap().minor_units(), 1999);
        assert!(Price::new(-1).is_err());
        assert!(Price::new(Price::MAX + 1).is_err());
    }

    #[test]
    fn only_the_shop_currency_is_accepted() {
        assert_eq!(Currency::parse("USD").unwrap(), Currency::Usd);
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("EUR").is_err());
    }
}
