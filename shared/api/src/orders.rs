//! What the routes acting on orders share: the client view, and loading an order for a caller.
//! (Moving an order through its life cycle is `store::orders::step`, shared with the payment worker.)

use std::sync::Arc;

use serde::Serialize;

use domain::{CancelReason, Cause, Order, OrderId, OrderStatus, PaymentStatus, Transition};
use store::orders::{OrderRepository, step};

use crate::auth::{Identity, TokenService};
use crate::error::ApiError;
use crate::state::{ApiState, InitError};

/// What the routes acting on one order by id need: the orders, and the token service that says who
/// the caller is.
pub struct OrderDeps {
    pub orders: Arc<dyn OrderRepository>,
    pub tokens: TokenService,
}

impl OrderDeps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            orders: state.orders(),
            tokens: state.tokens().await?,
        })
    }
}

/// An order as clients see it (docs/api.md "Routes"): no payment token, no internal fields.
#[derive(Debug, Serialize)]
pub struct OrderView<'a> {
    pub id: &'a OrderId,
    pub user_id: String,
    /// Never empty for a real order; skipped when a richer view (details) replaces the lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<LineView>,
    pub total_amount: i64,
    pub currency: &'static str,
    pub status: OrderStatus,
    pub payment_status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// Only in the owner's view, while the payment waits for them (see [`OrderView::for_caller`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_action: Option<PaymentActionView<'a>>,
    pub created_at: &'a str,
    pub updated_at: &'a str,
}

/// What the customer's browser needs to complete a payment that waits for them (3-D Secure with
/// Stripe.js): the PaymentIntent's client secret.
#[derive(Serialize)]
pub struct PaymentActionView<'a> {
    pub client_secret: &'a str,
}

/// Never prints the secret.
impl std::fmt::Debug for PaymentActionView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentActionView { client_secret: [redacted] }")
    }
}

#[derive(Debug, Serialize)]
pub struct LineView {
    pub product_id: String,
    pub quantity: i64,
    pub price: i64,
}

impl<'a> From<&'a Order> for OrderView<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            id: &order.id,
            user_id: order.user_id.to_string(),
            items: order
                .items
                .iter()
                .map(|line| LineView {
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity.units(),
                    price: line.price.minor_units(),
                })
                .collect(),
            total_amount: order.total_amount,
            currency: order.currency.code(),
            status: order.status,
            payment_status: order.payment_status,
            cancel_reason: order.cancel_reason,
            payment_action: None,
            created_at: &order.created_at,
            updated_at: &order.updated_at,
        }
    }
}

impl<'a> OrderView<'a> {
    /// The order as `caller` sees it: a payment waiting for the customer shows its client secret to
    /// the owner alone (whoever holds it can complete the payment), never to an admin reading
    /// someone else's order, and only until the shop gives up on it (`expires_at`).
    pub fn for_caller(order: &'a Order, caller: &Identity) -> Self {
        let mut view = Self::from(order);
        if caller.user_id == order.user_id && order.payment_status == PaymentStatus::ActionRequired {
            view.payment_action = order
                .payment_action
                .as_ref()
                .filter(|action| !action.has_expired())
                .map(|action| PaymentActionView {
                    client_secret: &action.client_secret,
                });
        }
        view
    }
}

/// The order with this id if the caller may see it; 404 when it does not exist *or* is someone else's.
pub async fn order_for_caller(
    orders: &dyn OrderRepository,
    identity: &Identity,
    raw_id: &str,
) -> Result<Order, ApiError> {
    let not_found = || ApiError::NotFound("order");
    let id = OrderId::parse(raw_id).map_err(|_| not_found())?;
    let order = orders.get(&id).await?.ok_or_else(not_found)?;
    if identity.may_access(&order.user_id) {
        Ok(order)
    } else {
        Err(not_found())
    }
}

/// Cancels the order with this id for the caller (its owner or an admin; 404 for anyone else): the
/// status change and the release of every line's stock are one transaction, conditional on the status
/// read, so the stock comes back exactly once; cancelling a cancelled order changes nothing and answers
/// it again; a shipped order is 409.
pub async fn cancel_for_caller(
    orders: &dyn OrderRepository,
    identity: &Identity,
    raw_id: &str,
    cause: &Cause,
) -> Result<Order, ApiError> {
    let order = order_for_caller(orders, identity, raw_id).await?;
    let reason = if order.user_id == identity.user_id {
        CancelReason::CustomerCancelled
    } else {
        CancelReason::AdminCancelled
    };
    Ok(step(orders, order, Transition::Cancel, Some(reason), cause)
        .await?
        .into_order())
}
