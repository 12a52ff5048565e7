//! Order logic shared by the order functions and the payment worker: the client view, loading an
//! order for a caller, and moving it through its life cycle.

use std::sync::Arc;

use serde::Serialize;

use crate::auth::{Identity, TokenService};
use crate::domain::{CancelReason, Order, OrderId, OrderStatus, Transition, now_rfc3339};
use crate::error::ApiError;
use crate::repo::orders::OrderRepository;

/// What the routes acting on one order by id need: the orders, and the token service that says who
/// the caller is.
pub struct OrderDeps {
    pub orders: Arc<dyn OrderRepository>,
    pub tokens: TokenService,
}

impl OrderDeps {
    pub async fn from_state(state: &crate::AppState) -> Result<Self, crate::state::InitError> {
        Ok(Self {
            orders: state.orders(),
            tokens: state.tokens().await?,
        })
    }
}

/// An order as clients see it (API.md): no payment token, no internal fields.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    pub created_at: &'a str,
    pub updated_at: &'a str,
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
            cancel_reason: order.cancel_reason,
            created_at: &order.created_at,
            updated_at: &order.updated_at,
        }
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

/// What a life-cycle step did.
#[derive(Debug)]
pub enum StepOutcome {
    /// The order moved to its new status (and released its stock if that status gives it up).
    Moved(Order),
    /// The order already was where the step leads (a repeated cancel): nothing changed.
    AlreadyThere(Order),
}

impl StepOutcome {
    pub fn into_order(self) -> Order {
        match self {
            Self::Moved(order) | Self::AlreadyThere(order) => order,
        }
    }
}

/// Applies `transition` to `order`, re-reading and re-deciding if another writer changed its status
/// first. Illegal transitions are 409; a cancel of a cancelled order changes nothing.
pub async fn step(
    orders: &dyn OrderRepository,
    mut order: Order,
    transition: Transition,
    reason: Option<CancelReason>,
    correlation_id: &str,
) -> Result<StepOutcome, ApiError> {
    const MAX_ATTEMPTS: usize = 5;
    for _ in 0..MAX_ATTEMPTS {
        if transition == Transition::Cancel && order.status == OrderStatus::Cancelled {
            return Ok(StepOutcome::AlreadyThere(order));
        }
        let to = order.status.apply(transition).ok_or_else(|| {
            ApiError::Conflict(format!(
                "An order that is {} cannot be {}.",
                order.status.as_str(),
                past_tense(transition)
            ))
        })?;
        if let Some(moved) = orders
            .transition(&order, to, reason, &now_rfc3339(), correlation_id)
            .await?
        {
            tracing::info!(order_id = %moved.id, from = order.status.as_str(), to = to.as_str(), "order status changed");
            return Ok(StepOutcome::Moved(moved));
        }
        // Someone else changed the order first: decide again from what it is now.
        order = orders.get(&order.id).await?.ok_or(ApiError::NotFound("order"))?;
    }
    Err(ApiError::Conflict(
        "The order is changing concurrently; try again.".into(),
    ))
}

fn past_tense(transition: Transition) -> &'static str {
    match transition {
        Transition::ConfirmPayment => "confirmed",
        Transition::DeclinePayment => "declined",
        Transition::Cancel => "cancelled",
        Transition::Ship => "shipped",
    }
}
