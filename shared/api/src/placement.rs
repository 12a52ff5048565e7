//! Placing an order for a caller, the rules of `POST /api/orders` and GraphQL's `placeOrder` alike:
//! prices and totals from the catalogue, every line's stock reserved, the order stored and the
//! idempotency record completed in one DynamoDB transaction, so two buyers can never both get the
//! last item and a retried request never creates a second order.
//!
//! Round trips on success: the product read (one `BatchGetItem`, issued together with the
//! idempotency claim when a key is sent) and the `TransactWriteItems`.

use std::sync::Arc;

use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

use domain::validation::FieldErrors;
use domain::{
    Cause, IdempotencyKey, NewOrder, Order, PaymentTokenRule, Product, ProductId, UserId, fingerprint, now_rfc3339,
};
use store::idempotency::{Claim, IdempotencyStore, Lease, StoredResponse};
use store::orders::{OrderRepository, PlaceOutcome};
use store::products::ProductCatalog;

use crate::error::ApiError;
use crate::orders::OrderView;
use crate::state::{ApiState, InitError};

/// Idempotency records of placements are kept under this operation name, whichever API placed them.
const OPERATION: &str = "orders-create";

/// What placing an order needs: the catalogue as it is now (never a cache), the orders, the
/// idempotency records, and what the deployment's payment provider takes as a payment token.
pub struct PlacementDeps {
    pub products: Arc<dyn ProductCatalog>,
    pub orders: Arc<dyn OrderRepository>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub payment_tokens: PaymentTokenRule,
}

impl PlacementDeps {
    pub fn from_state(state: &ApiState) -> Result<Self, InitError> {
        let payment_tokens = state.env().choice(
            "PAYMENT_PROVIDER",
            &[
                ("mock", PaymentTokenRule::Mock),
                ("stripe", PaymentTokenRule::StripePaymentMethod),
            ],
        )?;
        Ok(Self {
            products: state.products(),
            orders: state.orders(),
            idempotency: state.idempotency(),
            payment_tokens,
        })
    }
}

/// A placement as the client asked for it: `{items: [{product_id, quantity}], payment_token?}`.
/// Its canonical JSON is what an `Idempotency-Key` is bound to, so REST and GraphQL requests with
/// the same key and the same lines are the same request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    pub items: Vec<LineRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub product_id: String,
    pub quantity: i64,
}

/// How a placement answered.
#[derive(Debug)]
pub enum Placement {
    /// A new order, and the response stored for replays of its key.
    Placed {
        order: Box<Order>,
        response: StoredResponse,
    },
    /// The key's original response (the order placed by the first request with it).
    Replayed(StoredResponse),
}

impl Placement {
    /// The client view of the order (`OrderView`'s JSON, status 201).
    pub fn response(&self) -> &StoredResponse {
        match self {
            Self::Placed { response, .. } | Self::Replayed(response) => response,
        }
    }

    /// The id of the order the response describes.
    pub fn order_id(&self) -> Option<String> {
        match self {
            Self::Placed { order, .. } => Some(order.id.to_string()),
            Self::Replayed(stored) => serde_json::from_str::<serde_json::Value>(&stored.body)
                .ok()
                .and_then(|order| order["id"].as_str().map(str::to_owned)),
        }
    }
}

/// Parses an `Idempotency-Key` (`field` names it in the 400).
pub fn idempotency_key(raw: Option<&str>, field: &str) -> Result<Option<IdempotencyKey>, ApiError> {
    raw.map(|raw| IdempotencyKey::parse(raw).map_err(|invalid| ApiError::invalid_field(field, invalid.0)))
        .transpose()
}

/// Places `request` for `user_id`. With a `key`, the same key and request answer the original
/// response again (nothing created), another request under the key is 422, a key still being
/// processed is 409; any failure gives the key back.
pub async fn place_order(
    deps: &PlacementDeps,
    user_id: &UserId,
    request: &PlacementRequest,
    key: Option<&IdempotencyKey>,
    cause: &Cause,
) -> Result<Placement, ApiError> {
    let lines: Vec<(String, i64)> = request
        .items
        .iter()
        .map(|line| (line.product_id.clone(), line.quantity))
        .collect();
    let new_order = NewOrder::parse(&lines, request.payment_token.as_deref())?;
    new_order.check_payment_token(deps.payment_tokens)?;

    // The claim and the catalogue read do not depend on each other: one round trip for both.
    let product_ids = new_order.product_ids();
    let catalogue = deps.products.get_many(&product_ids);
    let (claim, catalogue) = match key {
        Some(key) => {
            let record_key = key.record_key(OPERATION, &user_id.to_string());
            let canonical = serde_json::to_vec(request).map_err(ApiError::internal)?;
            let hash = fingerprint(&canonical);
            let (claim, catalogue) = tokio::join!(deps.idempotency.claim(&record_key, &hash), catalogue);
            (Some(claim?), catalogue)
        }
        None => (None, catalogue.await),
    };
    let lease = match claim {
        None => None,
        Some(Claim::Acquired(lease)) => Some(lease),
        Some(Claim::Completed(stored)) => return Ok(Placement::Replayed(stored)),
        Some(Claim::InProgress) => return Err(key_in_progress()),
        Some(Claim::Mismatch) => {
            return Err(ApiError::Unprocessable(
                "This Idempotency-Key was used with a different request body.".into(),
            ));
        }
    };

    // Any failure from here on changed nothing, including a failed catalogue read: release the key.
    let result = match catalogue {
        Ok(catalogue) => place_with(deps, user_id, new_order, catalogue, lease.as_ref(), cause).await,
        Err(error) => Err(error.into()),
    };
    if result.is_err()
        && let Some(lease) = &lease
    {
        // Nothing was changed: give the key back so the client can retry with it.
        if let Err(error) = deps.idempotency.release(lease).await {
            tracing::warn!(error = %error, "could not release idempotency claim; it expires with its lease");
        }
    }
    result
}

fn key_in_progress() -> ApiError {
    ApiError::Conflict("A request with this Idempotency-Key is still being processed; retry shortly.".into())
}

async fn place_with(
    deps: &PlacementDeps,
    user_id: &UserId,
    new_order: NewOrder,
    catalogue: Vec<Product>,
    lease: Option<&Lease>,
    cause: &Cause,
) -> Result<Placement, ApiError> {
    let lines = new_order
        .price(&catalogue)
        .map_err(|missing| unknown_products(&new_order.product_ids(), &missing))?;
    let order = Order::place(user_id.clone(), lines, new_order.payment_token, cause, now_rfc3339())
        .ok_or_else(|| ApiError::invalid_field("items", "the order total is too large"))?;
    let body = serde_json::to_string(&OrderView::from(&order)).map_err(ApiError::internal)?;
    let stored = StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        body,
    };
    match deps.orders.place(&order, lease.map(|lease| (lease, &stored))).await? {
        PlaceOutcome::Placed => {
            metrics::counter!("OrdersPlaced").increment(1);
            // Minor units (cents): CloudWatch sums and averages them per period.
            metrics::histogram!("OrderValue").record(order.total_amount as f64);
            tracing::info!(order_id = %order.id, total = order.total_amount, lines = order.items.len(), "order placed");
            Ok(Placement::Placed {
                order: Box::new(order),
                response: stored,
            })
        }
        PlaceOutcome::OutOfStock(product_id) => {
            let name = order
                .items
                .iter()
                .find(|l| l.product_id == product_id)
                .map_or("", |l| l.product_name.as_str());
            Err(ApiError::Conflict(format!(
                "Not enough stock of product {product_id} ({name}) for this order; nothing was reserved."
            )))
        }
        PlaceOutcome::ProductGone(product_id) => {
            let ordered: Vec<_> = order.items.iter().map(|line| line.product_id.clone()).collect();
            Err(unknown_products(&ordered, &[product_id]))
        }
        PlaceOutcome::LeaseLost => Err(key_in_progress()),
    }
}

/// 400 naming each missing product by the line (`ordered` is the lines' product ids, in order).
fn unknown_products(ordered: &[ProductId], missing: &[ProductId]) -> ApiError {
    let mut errors = FieldErrors::default();
    for id in missing {
        let index = ordered.iter().position(|ordered_id| ordered_id == id);
        let field = index.map_or_else(|| "items".to_string(), |index| format!("items[{index}].product_id"));
        errors.push(field, format!("product {id} does not exist"));
    }
    errors.into()
}
