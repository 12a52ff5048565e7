//! Orders: validated placement requests, server-side totals, and the life cycle as a state machine.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Currency, Invalid, OrderId, Price, Product, ProductId, UserId};
use crate::{DomainError, validation::FieldErrors};

/// Units of one product on an order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 100;

    pub fn new(units: i64) -> Result<Self, Invalid> {
        if (1..=Self::MAX).contains(&units) {
            Ok(Self(units))
        } else {
            Err(Invalid::new(format!("must be an integer between 1 and {}", Self::MAX)))
        }
    }

    pub fn units(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = Invalid;
    fn try_from(units: i64) -> Result<Self, Invalid> {
        Self::new(units)
    }
}

impl From<Quantity> for i64 {
    fn from(quantity: Quantity) -> i64 {
        quantity.0
    }
}

/// One line of a placement request, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// A validated placement request: 1 to 50 lines, each product once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub lines: Vec<LineRequest>,
    pub payment_token: Option<String>,
}

impl NewOrder {
    pub const MAX_LINES: usize = 50;
    pub const MAX_PAYMENT_TOKEN_CHARS: usize = 255;

    /// `lines` are (product id, quantity) as sent.
    pub fn parse(lines: &[(String, i64)], payment_token: Option<&str>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        if lines.is_empty() || lines.len() > Self::MAX_LINES {
            errors.push("items", format!("must have between 1 and {} lines", Self::MAX_LINES));
        }
        let mut seen = HashSet::new();
        let mut parsed = Vec::with_capacity(lines.len());
        for (index, (product_id, quantity)) in lines.iter().enumerate() {
            let product_id = errors.check(&format!("items[{index}].product_id"), ProductId::parse(product_id));
            let quantity = errors.check(&format!("items[{index}].quantity"), Quantity::new(*quantity));
            if let Some(id) = &product_id
                && !seen.insert(id.clone())
            {
                errors.push(
                    format!("items[{index}].product_id"),
                    "appears on more than one line; put the whole quantity on one line",
                );
            }
            if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
                parsed.push(LineRequest { product_id, quantity });
            }
        }
        let payment_token = payment_token.map(|token| {
            let valid = !token.is_empty()
                && token.chars().count() <= Self::MAX_PAYMENT_TOKEN_CHARS
                && token.chars().all(|c| c.is_ascii_graphic());
            if !valid {
                errors.push(
                    "payment_token",
                    format!(
                        "must be 1 to {} visible ASCII characters",
                        Self::MAX_PAYMENT_TOKEN_CHARS
                    ),
                );
            }
            token.to_owned()
        });
        errors.finish(|| {
            Some(Self {
                lines: parsed,
                payment_token,
            })
        })
    }

    /// Checks the payment token against what the deployment's payment provider takes (a refusal
    /// names `payment_token`).
    pub fn check_payment_token(&self, rule: PaymentTokenRule) -> Result<(), FieldErrors> {
        rule.check(self.payment_token.as_deref())
            .map_err(|invalid| FieldErrors::single("payment_token", invalid.0))
    }

    pub fn product_ids(&self) -> Vec<ProductId> {
        self.lines.iter().map(|line| line.product_id.clone()).collect()
    }

    /// Prices each line from the catalogue as it is now. Unknown products are named in the error.
    pub fn price(&self, catalogue: &[Product]) -> Result<Vec<OrderLine>, Vec<ProductId>> {
        let mut missing = Vec::new();
        let mut priced = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            match catalogue.iter().find(|product| product.id == line.product_id) {
                Some(product) => priced.push(OrderLine {
                    product_id: line.product_id.clone(),
                    quantity: line.quantity,
                    price: product.price,
                    product_name: product.name.clone(),
                }),
                None => missing.push(line.product_id.clone()),
            }
        }
        if missing.is_empty() { Ok(priced) } else { Err(missing) }
    }
}

/// What a placement's `payment_token` must be, by the deployment's payment provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentTokenRule {
    /// The mock provider: optional, any visible token (`tok_decline` declines, `tok_error` fails).
    Mock,
    /// Stripe: required, the id of a PaymentMethod the client created with Stripe.js (`pm_...`).
    StripePaymentMethod,
}

impl PaymentTokenRule {
    pub fn check(self, token: Option<&str>) -> Result<(), Invalid> {
        match (self, token) {
            (Self::Mock, _) => Ok(()),
            (Self::StripePaymentMethod, None) => {
                Err(Invalid::new("is required: the id of a Stripe PaymentMethod (pm_...)"))
            }
            (Self::StripePaymentMethod, Some(token)) => {
                let id = token.strip_prefix("pm_").unwrap_or_default();
                if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    Ok(())
                } else {
                    Err(Invalid::new(
                        "must be the id of a Stripe PaymentMethod: pm_ then letters, digits or underscores",
                    ))
                }
            }
        }
    }
}

/// A line of a placed order, priced at placement time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    /// Unit price at placement, in minor units.
    pub price: Price,
    /// Catalogue name at placement, kept so the line reads well even if the product changes.
    pub product_name: String,
}

/// `sum(price * quantity)` in minor units. Bounded inputs (price <= 10^9, quantity <= 100, lines <= 50)
/// keep it far below overflow; checked arithmetic guards the bound anyway.
pub fn order_total(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0_i64, |total, line| {
        line.price
            .minor_units()
            .checked_mul(line.quantity.units())
            .and_then(|amount| total.checked_add(amount))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Confirmed, Self::Shipped, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Shipped => "SHIPPED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Where `transition` takes an order in this status, or `None` when it is not allowed.
    pub fn apply(self, transition: Transition) -> Option<Self> {
        use OrderStatus::{Cancelled, Confirmed, Pending, Shipped};
        match (self, transition) {
            (Pending, Transition::ConfirmPayment) => Some(Confirmed),
            (Pending, Transition::DeclinePayment) => Some(Cancelled),
            (Pending | Confirmed, Transition::Cancel) => Some(Cancelled),
            (Confirmed, Transition::Ship) => Some(Shipped),
            _ => None,
        }
    }

    /// The life-cycle step `transition` makes from this status: a move, nothing (a repeated cancel), or
    /// a refusal that names the rule.
    pub fn step(self, transition: Transition) -> Result<Step, DomainError> {
        if transition == Transition::Cancel && self == Self::Cancelled {
            return Ok(Step::AlreadyThere);
        }
        self.apply(transition)
            .map(Step::To)
            .ok_or(DomainError::IllegalTransition { from: self, transition })
    }

    /// Whether the order's stock is still held by it.
    pub fn holds_stock(self) -> bool {
        !matches!(self, Self::Cancelled)
    }
}

/// The events that move an order through its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    ConfirmPayment,
    DeclinePayment,
    Cancel,
    Ship,
}

impl Transition {
    pub const ALL: [Self; 4] = [Self::ConfirmPayment, Self::DeclinePayment, Self::Cancel, Self::Ship];

    /// How an order that went through this transition is described ("cannot be cancelled").
    pub fn past_tense(self) -> &'static str {
        match self {
            Self::ConfirmPayment => "confirmed",
            Self::DeclinePayment => "declined",
            Self::Cancel => "cancelled",
            Self::Ship => "shipped",
        }
    }
}

/// What a life-cycle step does to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The order moves to this status.
    To(OrderStatus),
    /// The order already is where the step leads (a repeated cancel): nothing changes.
    AlreadyThere,
}

/// Where the money of an order stands (docs/api.md "Payment status and money safety"). Once the system is
/// quiet: `CONFIRMED`/`SHIPPED` orders are `paid`; `CANCELLED` ones `pending` (never charged),
/// `declined` or `refunded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// No charge has succeeded yet.
    #[default]
    Pending,
    /// The card asks the customer to authenticate (3-D Secure): nothing is charged until they do.
    ActionRequired,
    Paid,
    Declined,
    /// Charged, and cancelled: the money is owed back.
    RefundPending,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::ActionRequired => "action_required",
            Self::Paid => "paid",
            Self::Declined => "declined",
            Self::RefundPending => "refund_pending",
            Self::Refunded => "refunded",
        }
    }

    /// Whether an order in `status` with this payment status waits for the payment step: a charge not
    /// yet made, a customer's authentication not yet completed (it expires), or a refund owed. Nothing
    /// may stay here for long; the sweep looks for orders that did.
    pub fn awaits_payment_step(self, status: OrderStatus) -> bool {
        matches!(
            (status, self),
            (OrderStatus::Pending, Self::Pending | Self::ActionRequired) | (_, Self::RefundPending)
        )
    }

    /// Where an order's move from `from` to `to` takes its payment: confirming is being paid, a
    /// payment decline is declined, cancelling a paid order owes the money back, and cancelling one
    /// whose authentication was still outstanding (or expired) leaves it never charged.
    pub fn after_move(self, from: OrderStatus, to: OrderStatus, reason: Option<CancelReason>) -> Self {
        match (from, to) {
            (OrderStatus::Pending, OrderStatus::Confirmed) => Self::Paid,
            (_, OrderStatus::Cancelled) if reason == Some(CancelReason::PaymentDeclined) => Self::Declined,
            (_, OrderStatus::Cancelled) if self == Self::Paid => Self::RefundPending,
            (_, OrderStatus::Cancelled) if self == Self::ActionRequired => Self::Pending,
            _ => self,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    CustomerCancelled,
    AdminCancelled,
    PaymentDeclined,
    /// The customer did not complete the card's authentication in time; nothing was charged.
    PaymentExpired,
}

/// An order as stored and shown (the API view leaves out the payment token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub items: Vec<OrderLine>,
    pub total_amount: i64,
    pub currency: Currency,
    pub status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// Orders stored before payment status existed read as `pending`.
    #[serde(default)]
    pub payment_status: PaymentStatus,
    pub created_at: String,
    pub updated_at: String,
    /// The request that placed the order, carried into its events.
    pub correlation_id: String,
    /// The W3C trace context of the span that made the last change, when traces are exported: a
    /// stream record carries no headers, so the change's event continues the trace through this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_token: Option<String>,
    /// The payment provider's own id for the order's payment (a Stripe PaymentIntent), stored before
    /// anything depends on it so that a lost answer is found again by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_intent_id: Option<String>,
    /// What the customer must do to complete the payment, while `payment_status` is
    /// `action_required`: shown to the owner only, never in events, logs or admin views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_action: Option<PaymentAction>,
}

/// A payment waiting for the customer (3-D Secure): the secret their browser completes it with, and
/// when the shop gives up on it (`PaymentActionMinutes` after it was asked for).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAction {
    pub client_secret: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl PaymentAction {
    /// Whether the shop has given up on it (a deadline that cannot be read counts as passed: nothing
    /// waits forever).
    pub fn has_expired(&self) -> bool {
        crate::parse_rfc3339(&self.expires_at).is_none_or(|expires_at| expires_at <= time::OffsetDateTime::now_utc())
    }
}

/// Never prints the client secret: it lets whoever holds it complete the payment.
impl std::fmt::Debug for PaymentAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentAction")
            .field("client_secret", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What caused a change: the request or event it serves (its correlation id) and, when traces are
/// exported, the trace context of the span that made it. Both go on the changed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub correlation_id: String,
    pub trace_parent: Option<String>,
}

impl Cause {
    /// A cause that continues no trace (tests, tools).
    pub fn untraced(correlation_id: &str) -> Self {
        Self {
            correlation_id: correlation_id.to_owned(),
            trace_parent: None,
        }
    }
}

impl Order {
    pub fn place(
        user_id: UserId,
        lines: Vec<OrderLine>,
        payment_token: Option<String>,
        cause: &Cause,
        now: String,
    ) -> Option<Self> {
        Some(Self {
            id: OrderId::generate(),
            user_id,
            total_amount: order_total(&lines)?,
            items: lines,
            currency: Currency::Usd,
            status: OrderStatus::Pending,
            cancel_reason: None,
            payment_status: PaymentStatus::Pending,
            created_at: now.clone(),
            updated_at: now,
            correlation_id: cause.correlation_id.clone(),
            trace_parent: cause.trace_parent.clone(),
            payment_token,
            payment_intent_id: None,
            payment_action: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewProduct;

    fn product(name: &str, price: i64) -> Product {
        NewProduct::parse(name, None, "kitchen", price, None, 10)
            .unwrap()
            .into_product(ProductId::generate(), "2026-01-01T00:00:00.000000Z".into())
    }

    #[test]
    fn the_total_is_the_sum_of_price_times_quantity() {
        let (mug, kettle) = (product("Mug", 1299), product("Kettle", 4599));
        let order = NewOrder::parse(&[(mug.id.to_string(), 3), (kettle.id.to_string(), 1)], None).unwrap();
        let lines = order.price(&[mug, kettle]).unwrap();
        assert_eq!(order_total(&lines), Some(3 * 1299 + 4599));
    }

    #[test]
    fn prices_come_from_the_catalogue() {
        let mug = product("Mug", 1299);
        let order = NewOrder::parse(&[(mug.id.to_string(), 2)], None).unwrap();
        let lines = order.price(std::slice::from_ref(&mug)).unwrap();
        assert_eq!(lines[0].price, mug.price);
        assert_eq!(lines[0].product_name, "Mug");
    }

    #[test]
    fn unknown_products_are_named() {
        let mug = product("Mug", 1299);
        let ghost = ProductId::generate();
        let order = NewOrder::parse(&[(mug.id.to_string(), 1), (ghost.to_string(), 1)], None).unwrap();
        assert_eq!(order.price(&[mug]), Err(vec![ghost]));
    }

    #[test]
    fn line_counts_quantities_and_duplicates_are_validated() {
        let id = ProductId::generate().to_string();
        assert!(NewOrder::parse(&[], None).is_err());
        let fifty_one: Vec<(String, i64)> = (0..51).map(|_| (ProductId::generate().to_string(), 1)).collect();
        assert!(NewOrder::parse(&fifty_one, None).is_err());
        let fifty: Vec<(String, i64)> = (0..50).map(|_| (ProductId::generate().to_string(), 100)).collect();
        assert!(NewOrder::parse(&fifty, None).is_ok());
        for quantity in [0, -1, 101] {
            assert!(NewOrder::parse(&[(id.clone(), quantity)], None).is_err(), "{quantity}");
        }
        let errors = NewOrder::parse(&[(id.clone(), 1), (id.clone(), 2)], None).unwrap_err();
        assert_eq!(errors.iter().next().unwrap().field, "items[1].product_id");
        assert!(NewOrder::parse(&[("nope".into(), 1)], None).is_err());
    }

    #[test]
    fn stripe_takes_only_payment_method_ids_and_requires_one() {
        let id = ProductId::generate().to_string();
        let rule = PaymentTokenRule::StripePaymentMethod;
        let with = |token: Option<&str>| NewOrder::parse(&[(id.clone(), 1)], token).unwrap();
        assert!(with(Some("pm_card_visa")).check_payment_token(rule).is_ok());
        assert!(with(Some("pm_1PQx2yZ")).check_payment_token(rule).is_ok());
        for refused in [
            None,
            Some("tok_visa"),
            Some("pm_"),
            Some("pm_card-visa"),
            Some("card_pm_x"),
        ] {
            let errors = with(refused).check_payment_token(rule).unwrap_err();
            assert_eq!(errors.iter().next().unwrap().field, "payment_token", "{refused:?}");
        }
        assert!(with(None).check_payment_token(PaymentTokenRule::Mock).is_ok());
        assert!(
            with(Some("tok_decline"))
                .check_payment_token(PaymentTokenRule::Mock)
                .is_ok()
        );
    }

    #[test]
    fn payment_tokens_are_bounded() {
        let id = ProductId::generate().to_string();
        assert!(NewOrder::parse(&[(id.clone(), 1)], Some("tok_visa")).is_ok());
        assert!(NewOrder::parse(&[(id.clone(), 1)], Some("")).is_err());
        assert!(NewOrder::parse(&[(id.clone(), 1)], Some(&"x".repeat(256))).is_err());
        assert!(NewOrder::parse(&[(id, 1)], Some("tok visa")).is_err());
    }

    #[test]
    fn the_transition_table_is_exactly_the_life_cycle() {
        use OrderStatus::*;
        use Transition::*;
        let allowed = [
            (Pending, ConfirmPayment, Confirmed),
            (Pending, DeclinePayment, Cancelled),
            (Pending, Cancel, Cancelled),
            (Confirmed, Cancel, Cancelled),
            (Confirmed, Ship, Shipped),
        ];
        for status in OrderStatus::ALL {
            for transition in Transition::ALL {
                let expected = allowed
                    .iter()
                    .find(|(s, t, _)| *s == status && *t == transition)
                    .map(|(_, _, to)| *to);
                assert_eq!(status.apply(transition), expected, "{status:?} + {transition:?}");
            }
        }
    }

    #[test]
    fn only_cancelled_orders_release_their_stock() {
        assert!(OrderStatus::Pending.holds_stock());
        assert!(OrderStatus::Shipped.holds_stock());
        assert!(!OrderStatus::Cancelled.holds_stock());
    }
}
