//! The payment provider: the trait a real adapter implements, the mock provider (docs/api.md "Order
//! life cycle") with a durable ledger of its charges and refunds (so reconciliation can be checked),
//! and the guard every provider is called through (timeout and fault injection).
//!
//! The provider's idempotency key is the order id: a repeated charge of an order never charges twice,
//! a repeated refund never refunds twice, and [`PaymentProvider::find_charge`] tells what the provider
//! holds for an order when an answer was lost.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use domain::{OrderId, now_rfc3339};
use serde::{Deserialize, Serialize};
use store::{StoreError, applied};
use wiring::FaultPlan;
pub use worker::provider::PROVIDER_TIMEOUT;
use worker::provider::{CallFailure, guarded};

/// A charge to make: the order (the provider's idempotency key), its total in minor units and its
/// currency (ISO 4217, lower case), and the customer's payment token if they gave one.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRequest<'a> {
    pub order_id: &'a OrderId,
    pub amount: i64,
    pub currency: &'a str,
    pub token: Option<&'a str>,
}

/// What a payment provider said about a charge.
#[derive(Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved,
    Declined,
    /// The card asks the customer to authenticate (3-D Secure): nothing is charged until they do,
    /// in their browser, with this secret.
    ActionRequired {
        client_secret: String,
    },
}

/// Never prints the client secret.
impl std::fmt::Debug for ChargeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Approved => f.write_str("Approved"),
            Self::Declined => f.write_str("Declined"),
            Self::ActionRequired { .. } => f.write_str("ActionRequired"),
        }
    }
}

/// Where a payment that waits for its customer's authentication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Authenticated and charged.
    Charged(ChargeRecord),
    /// Still waiting for the customer.
    Waiting,
    /// Failed (authentication refused, card declined): nothing was charged.
    Failed,
    /// Cancelled: only the shop cancels a payment that waits for its customer (an expiry whose
    /// answer was lost), so the order expires.
    Cancelled,
}

/// No answer, or an error worth retrying: the charge may or may not have happened.
#[derive(Debug, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct TransientPaymentError(pub String);

/// What the provider holds for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeRecord {
    pub amount: i64,
    pub refunded: bool,
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges the order; the order id is the provider's idempotency key, so a repeated call never
    /// charges twice.
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError>;
    /// Refunds `amount` of the order's charge; idempotent per order id like `charge`.
    async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError>;
    /// The charge the provider holds for the order, looked up by its idempotency key.
    async fn find_charge(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError>;
    /// Where the payment of an order whose customer was asked to authenticate stands.
    async fn action_outcome(&self, order_id: &OrderId) -> Result<ActionOutcome, TransientPaymentError>;
    /// Makes sure no payment of the order can complete from now on (with Stripe: its PaymentIntent
    /// is cancelled). The charge, if one completed first: then it is the caller's to refund.
    async fn void(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError>;
}

/// The mock provider's own books: one entry per charged order.
#[async_trait]
pub trait ChargeBook: Send + Sync {
    /// Records the charge unless the order already has one; whether this call recorded it.
    async fn charge_once(&self, order_id: &OrderId, amount: i64) -> Result<bool, StoreError>;
    /// Marks the order's charge refunded, once; `false` when there is no unrefunded charge.
    async fn refund_once(&self, order_id: &OrderId, amount: i64) -> Result<bool, StoreError>;
    async fn get(&self, order_id: &OrderId) -> Result<Option<ChargeEntry>, StoreError>;
}

/// An entry of the mock provider's ledger table (`order_id` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeEntry {
    pub order_id: String,
    pub amount: i64,
    pub charged_at: String,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_at: Option<String>,
}

impl ChargeEntry {
    /// A charge of `amount` made now, not refunded.
    pub fn new(order_id: &OrderId, amount: i64) -> Self {
        Self {
            order_id: order_id.to_string(),
            amount,
            charged_at: now_rfc3339(),
            refunded_amount: 0,
            refunded_at: None,
        }
    }
}

/// The mock provider's ledger table.
pub struct DynamoChargeBook {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoChargeBook {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }
}

#[async_trait]
impl ChargeBook for DynamoChargeBook {
    async fn charge_once(&self, order_id: &OrderId, amount: i64) -> Result<bool, StoreError> {
        let entry = ChargeEntry::new(order_id, amount);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(serde_dynamo::to_item(entry)?))
            .condition_expression("attribute_not_exists(order_id)")
            .send()
            .await;
        applied(result)
    }

    async fn refund_once(&self, order_id: &OrderId, amount: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("order_id", AttributeValue::S(order_id.to_string()))
            .update_expression("SET refunded_amount = :amount, refunded_at = :now")
            .condition_expression("attribute_exists(order_id) AND refunded_amount = :zero")
            .expression_attribute_values(":amount", serde_dynamo::to_attribute_value(amount)?)
            .expression_attribute_values(":zero", serde_dynamo::to_attribute_value(0_i64)?)
            .expression_attribute_values(":now", AttributeValue::S(now_rfc3339()))
            .return_values(ReturnValue::None)
            .send()
            .await;
        applied(result)
    }

    async fn get(&self, order_id: &OrderId) -> Result<Option<ChargeEntry>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("order_id", AttributeValue::S(order_id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(output.item.map(serde_dynamo::from_item).transpose()?)
    }
}

/// The mock provider (docs/api.md "Order life cycle"): `tok_decline` declines, `tok_error` fails
/// transiently, anything else (or no token) is approved and written to its books, once per order.
/// Named as a mock; a real provider implements the same trait.
pub struct MockPaymentProvider {
    pub book: Arc<dyn ChargeBook>,
}

fn unavailable(error: StoreError) -> TransientPaymentError {
    TransientPaymentError(format!(
        "mock provider books: {}",
        wiring::telemetry::error_chain(&error)
    ))
}

#[async_trait]
impl PaymentProvider for MockPaymentProvider {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError> {
        let ChargeRequest { order_id, amount, .. } = *request;
        let outcome = match request.token {
            Some("tok_decline") => ChargeOutcome::Declined,
            Some("tok_error") => return Err(TransientPaymentError("mock provider: simulated outage".into())),
            _ => {
                let new = self.book.charge_once(order_id, amount).await.map_err(unavailable)?;
                tracing::info!(order_id = %order_id, amount, replayed = !new, "mock payment provider charge");
                ChargeOutcome::Approved
            }
        };
        Ok(outcome)
    }

    async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError> {
        let new = self.book.refund_once(order_id, amount).await.map_err(unavailable)?;
        tracing::info!(order_id = %order_id, amount, replayed = !new, "mock payment provider refund");
        Ok(())
    }

    async fn find_charge(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        let entry = self.book.get(order_id).await.map_err(unavailable)?;
        Ok(entry.map(|entry| ChargeRecord {
            amount: entry.amount,
            refunded: entry.refunded_amount > 0,
        }))
    }

    /// The mock never asks a customer to authenticate: a charge it holds, or none.
    async fn action_outcome(&self, order_id: &OrderId) -> Result<ActionOutcome, TransientPaymentError> {
        Ok(match self.find_charge(order_id).await? {
            Some(charge) => ActionOutcome::Charged(charge),
            None => ActionOutcome::Failed,
        })
    }

    /// The mock's charges complete at once: nothing is left to cancel.
    async fn void(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        self.find_charge(order_id).await
    }
}

/// Every provider call through a timeout and the deployment's fault injection (target `payment`):
/// no answer in time, or an injected fault, is a transient failure whose outcome is unknown.
pub struct GuardedProvider {
    pub inner: Arc<dyn PaymentProvider>,
    pub faults: FaultPlan,
    /// How long one call of the provider may take: [`PROVIDER_TIMEOUT`] for the mock, more for a
    /// provider whose charge is several HTTP requests (Stripe: read, create, store, confirm).
    pub timeout: std::time::Duration,
}

fn transient(failure: CallFailure<TransientPaymentError>) -> TransientPaymentError {
    match failure {
        CallFailure::Failed(error) => error,
        other => TransientPaymentError(other.to_string()),
    }
}

#[async_trait]
impl PaymentProvider for GuardedProvider {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError> {
        guarded(&self.faults, "payment", "charge", self.timeout, || {
            self.inner.charge(request)
        })
        .await
        .map_err(transient)
    }

    async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError> {
        guarded(&self.faults, "payment", "refund", self.timeout, || {
            self.inner.refund(order_id, amount)
        })
        .await
        .map_err(transient)
    }

    async fn find_charge(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        guarded(&self.faults, "payment", "find_charge", self.timeout, || {
            self.inner.find_charge(order_id)
        })
        .await
        .map_err(transient)
    }

    async fn action_outcome(&self, order_id: &OrderId) -> Result<ActionOutcome, TransientPaymentError> {
        guarded(&self.faults, "payment", "action_outcome", self.timeout, || {
            self.inner.action_outcome(order_id)
        })
        .await
        .map_err(transient)
    }

    async fn void(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        guarded(&self.faults, "payment", "void", self.timeout, || {
            self.inner.void(order_id)
        })
        .await
        .map_err(transient)
    }
}

/// The mock provider's books in memory, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct InMemoryChargeBook {
    entries: std::sync::Mutex<std::collections::HashMap<OrderId, ChargeEntry>>,
}

#[cfg(test)]
#[async_trait]
impl ChargeBook for InMemoryChargeBook {
    async fn charge_once(&self, order_id: &OrderId, amount: i64) -> Result<bool, StoreError> {
        let mut entries = self.entries.lock().map_err(|_| StoreError::Failed("poisoned".into()))?;
        if entries.contains_key(order_id) {
            return Ok(false);
        }
        let entry = ChargeEntry::new(order_id, amount);
        entries.insert(order_id.clone(), entry);
        Ok(true)
    }

    async fn refund_once(&self, order_id: &OrderId, amount: i64) -> Result<bool, StoreError> {
        let mut entries = self.entries.lock().map_err(|_| StoreError::Failed("poisoned".into()))?;
        match entries.get_mut(order_id) {
            Some(entry) if entry.refunded_amount == 0 => {
                entry.refunded_amount = amount;
                entry.refunded_at = Some(now_rfc3339());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get(&self, order_id: &OrderId) -> Result<Option<ChargeEntry>, StoreError> {
        let entries = self.entries.lock().map_err(|_| StoreError::Failed("poisoned".into()))?;
        Ok(entries.get(order_id).cloned())
    }
}
