use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Currency, Invalid, Price, ProductId, parse_text};
use crate::validation::FieldErrors;

/// A catalogue category: a lower-case slug such as `kitchen` or `board-games`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Category(String);

impl Category {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let slug = raw.trim().to_ascii_lowercase();
        let valid = (1..=50).contains(&slug.len())
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !slug.starts_with('-')
            && !slug.ends_with('-');
        if valid {
            Ok(Self(slug))
        } else {
            Err(Invalid::new("must be 1 to 50 letters, digits or inner hyphens"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Category {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}

impl From<Category> for String {
    fn from(category: Category) -> String {
        category.0
    }
}

/// Units of a product on hand. Never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct StockQuantity(i64);

impl StockQuantity {
    pub const MAX: i64 = 1_000_000;

    pub fn new(units: i64) -> Result<Self, Invalid> {
        if (0..=Self::MAX).contains(&units) {
            Ok(Self(units))
        } else {
            Err(Invalid::new(format!("must be an integer between 0 and {}", Self::MAX)))
        }
    }

    pub fn units(self) -> i64 {
        self.0
    }

    pub const DEFAULT_LOW_STOCK_THRESHOLD: i64 = 5;

    pub fn default_low_stock_threshold() -> Self {
        Self(Self::DEFAULT_LOW_STOCK_THRESHOLD)
    }

    /// Whether going from `before` to `self` crosses `threshold` downwards (was above, now at or below).
    pub fn crossed_below(self, before: Self, threshold: Self) -> bool {
        before > threshold && self <= threshold
    }
}

impl TryFrom<i64> for StockQuantity {
    type Error = Invalid;
    fn try_from(units: i64) -> Result<Self, Invalid> {
        Self::new(units)
    }
}

impl From<StockQuantity> for i64 {
    fn from(quantity: StockQuantity) -> i64 {
        quantity.0
    }
}

/// A catalogue product as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub category: Category,
    pub price: Price,
    pub currency: Currency,
    pub stock_quantity: StockQuantity,
    /// At or below this many units the product is low on stock (admins are alerted when it crosses).
    #[serde(default = "StockQuantity::default_low_stock_threshold")]
    pub low_stock_threshold: StockQuantity,
    pub created_at: String,
    pub updated_at: String,
}

const NAME_MAX_CHARS: usize = 200;
const DESCRIPTION_MAX_CHARS: usize = 2000;

/// A validated product to add to the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub category: Category,
    pub price: Price,
    pub currency: Currency,
    pub stock_quantity: StockQuantity,
    pub low_stock_threshold: StockQuantity,
}

impl NewProduct {
    pub fn parse(
        name: &str,
        description: Option<&str>,
        category: &str,
        price: i64,
        currency: Option<&str>,
        stock_quantity: i64,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = errors.check("name", parse_text(name, 1, NAME_MAX_CHARS));
        let description = errors.check(
            "description",
            parse_text(description.unwrap_or(""), 0, DESCRIPTION_MAX_CHARS),
        );
        let category = errors.check("category", Category::parse(category));
        let price = errors.check("price", Price::new(price));
        let currency = errors.check("currency", currency.map_or(Ok(Currency::Usd), Currency::parse));
        let stock_quantity = errors.check("stock_quantity", StockQuantity::new(stock_quantity));
        errors.finish(|| {
            Some(Self {
                name: name?,
                description: description?,
                category: category?,
                price: price?,
                currency: currency?,
                stock_quantity: stock_quantity?,
                low_stock_threshold: StockQuantity::default_low_stock_threshold(),
            })
        })
    }

    /// The same product with its own low-stock threshold.
    pub fn with_low_stock_threshold(mut self, threshold: Option<i64>) -> Result<Self, FieldErrors> {
        if let Some(raw) = threshold {
            let mut errors = FieldErrors::default();
            let parsed = errors.check("low_stock_threshold", StockQuantity::new(raw));
            self.low_stock_threshold = errors.finish(|| parsed)?;
        }
        Ok(self)
    }

    pub fn into_product(self, id: ProductId, now: String) -> Product {
        Product {
            id,
            name: self.name,
            description: self.description,
            category: self.category,
            price: self.price,
            currency: self.currency,
            stock_quantity: self.stock_quantity,
            low_stock_threshold: self.low_stock_threshold,
            created_at: now.clone(),
            updated_at: now,
        }
    }
}

/// A validated partial update of a product's catalogue data. Stock moves through inventory, not here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<Category>,
    pub price: Option<Price>,
    pub low_stock_threshold: Option<StockQuantity>,
}

impl ProductPatch {
    pub fn parse(
        name: Option<&str>,
        description: Option<&str>,
        category: Option<&str>,
        price: Option<i64>,
        low_stock_threshold: Option<i64>,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = name.map(|raw| errors.check("name", parse_text(raw, 1, NAME_MAX_CHARS)));
        let description = description.map(|raw| errors.check("description", parse_text(raw, 0, DESCRIPTION_MAX_CHARS)));
        let category = category.map(|raw| errors.check("category", Category::parse(raw)));
        let price = price.map(|raw| errors.check("price", Price::new(raw)));
        let threshold = low_stock_threshold.map(|raw| errors.check("low_stock_threshold", StockQuantity::new(raw)));
        if name.is_none() && description.is_none() && category.is_none() && price.is_none() && threshold.is_none() {
            errors.push(
                "body",
                "must change at least one of name, description, category, price, low_stock_threshold",
            );
        }
        // `Some(None)` means the field was given but invalid; that was recorded above.
        errors.finish(|| {
            Some(Self {
                name: name.map_or(Some(None), |v| v.map(Some))?,
                description: description.map_or(Some(None), |v| v.map(Some))?,
                category: category.map_or(Some(None), |v| v.map(Some))?,
                price: price.map_or(Some(None), |v| v.map(Some))?,
                low_stock_threshold: threshold.map_or(Some(None), |v| v.map(Some))?,
            })
        })
    }

    pub fn apply(self, product: &mut Product, now: String) {
        if let Some(name) = self.name {
            product.name = name;
        }
        if let Some(description) = self.description {
            product.description = description;
        }
        if let Some(category) = self.category {
            product.category = category;
        }
        if let Some(price) = self.price {
            product.price = price;
        }
        if let Some(threshold) = self.low_stock_threshold {
            product.low_stock_threshold = threshold;
        }
        product.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_slugs() {
        assert_eq!(Category::parse(" Board-Games ").unwrap().as_str(), "board-games");
        for raw in ["", "-x", "x-", "a b", "ä", &"x".repeat(51)] {
            assert!(Category::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_new_product_defaults_to_the_shop_currency_and_no_description() {
        let product = NewProduct::parse("Mug", None, "kitchen", 1299, None, 5).unwrap();
        assert_eq!(product.currency, Currency::Usd);
        assert_eq!(product.description, "");
    }

    #[test]
    fn every_invalid_product_field_is_reported() {
        let errors = NewProduct::parse("", None, "??", -1, Some("EUR"), -5).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "category", "price", "currency", "stock_quantity"]);
    }

    #[test]
    fn only_a_downward_crossing_counts() {
        let q = |n| StockQuantity::new(n).unwrap();
        assert!(q(5).crossed_below(q(6), q(5)));
        assert!(q(0).crossed_below(q(10), q(5)));
        assert!(!q(4).crossed_below(q(5), q(5)), "already low");
        assert!(!q(7).crossed_below(q(8), q(5)), "still above");
        assert!(!q(6).crossed_below(q(3), q(5)), "restocked");
    }

    #[test]
    fn an_empty_patch_is_refused() {
        assert!(ProductPatch::parse(None, None, None, None, None).is_err());
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let mut product = NewProduct::parse("Mug", None, "kitchen", 1299, None, 5)
            .unwrap()
            .into_product(ProductId::generate(), "2026-01-01T00:00:00Z".into());
        let patch = ProductPatch::parse(None, None, None, Some(999), None).unwrap();
        patch.apply(&mut product, "2026-01-02T00:00:00Z".into());
        assert_eq!(product.price.minor_units(), 999);
        assert_eq!(product.name, "Mug");
        assert_eq!(product.stock_quantity.units(), 5);
        assert_eq!(product.updated_at, "2026-01-02T00:00:00Z");
    }

    #[test]
    fn an_invalid_patch_field_is_reported() {
        let errors = ProductPatch::parse(Some(""), None, None, Some(-3), None).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "price"]);
    }
}
