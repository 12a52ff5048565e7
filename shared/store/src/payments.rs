//! The payment step's ledger on the order item: the charge attempts made (`payment_attempts`), a
//! refund owed (`refund_due`) and the order's `payment_status` outside status changes (a refund owed
//! and made on a cancelled order). They live on the orders table's items, mapped through
//! `serde_dynamo` like the rest of the order; other order writes leave them alone, and the event
//! relay ignores changes that are not status changes.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use domain::{OrderId, OrderStatus, PaymentAction, PaymentStatus, now_rfc3339};
use serde::Deserialize;

use crate::unsettled::{SHARD_ATTRIBUTE, SINCE_ATTRIBUTE, shard_of};
use crate::{StoreError, is_condition_failure};

/// What the payment step keeps on each order: the charge attempts made, and a refund owed.
#[async_trait]
pub trait PaymentLedger: Send + Sync {
    /// Counts one more charge attempt of `order_id`, only while it is `PENDING`; the count including
    /// this one, or `None` when the order is no longer pending (or gone): then it must not be charged.
    async fn record_attempt(&self, order_id: &OrderId) -> Result<Option<u32>, StoreError>;
    /// Notes that `amount` must be refunded for the (cancelled) order: `payment_status` becomes
    /// `refund_pending`.
    async fn owe_refund(&self, order_id: &OrderId, amount: i64) -> Result<(), StoreError>;
    /// The refund still owed for the order, if any.
    async fn refund_owed(&self, order_id: &OrderId) -> Result<Option<i64>, StoreError>;
    /// Forgets the refund owed, once made: the (cancelled) order's `payment_status` becomes `refunded`.
    async fn refund_made(&self, order_id: &OrderId) -> Result<(), StoreError>;
    /// Stores the provider's id for the order's payment (a Stripe PaymentIntent) unless one is stored
    /// already, and answers the id stored afterwards: the first one wins, so racing deliveries settle
    /// on one payment. Only while the order is `PENDING`: `None` when it is gone or has moved on (a
    /// cancelled order's payment must not be confirmed).
    async fn remember_intent(&self, order_id: &OrderId, intent_id: &str) -> Result<Option<String>, StoreError>;
    /// The provider's id for the order's payment, if one was stored.
    async fn intent_of(&self, order_id: &OrderId) -> Result<Option<String>, StoreError>;
    /// Notes that the customer must authenticate the payment: `payment_status` becomes
    /// `action_required` with `action`, only while the order is `PENDING` and unpaid. Whether it was
    /// noted (`false`: the order moved on meanwhile).
    async fn require_action(&self, order_id: &OrderId, action: &PaymentAction) -> Result<bool, StoreError>;
}

/// The payment fields of an order item.
#[derive(Debug, Default, Deserialize)]
struct PaymentFields {
    #[serde(default)]
    payment_attempts: Option<u32>,
    #[serde(default)]
    refund_due: Option<i64>,
    #[serde(default)]
    payment_intent_id: Option<String>,
}

/// The ledger on the orders table. Attempts move by a conditional `UpdateItem` (atomic, so concurrent
/// deliveries each get their own number).
pub struct DynamoPaymentLedger {
    client: aws_sdk_dynamodb::Client,
    orders_table: String,
}

impl DynamoPaymentLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, orders_table: &str) -> Self {
        Self {
            client,
            orders_table: orders_table.to_owned(),
        }
    }

    fn status_value(status: OrderStatus) -> Result<AttributeValue, StoreError> {
        Ok(serde_dynamo::to_attribute_value(status)?)
    }

    async fn fields(&self, order_id: &OrderId, projection: &str) -> Result<Option<PaymentFields>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.orders_table)
            .key("id", serde_dynamo::to_attribute_value(order_id)?)
            .projection_expression(projection)
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(output.item.map(serde_dynamo::from_item).transpose()?)
    }
}

#[async_trait]
impl PaymentLedger for DynamoPaymentLedger {
    async fn record_attempt(&self, order_id: &OrderId) -> Result<Option<u32>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", serde_dynamo::to_attribute_value(order_id)?)
            .update_expression("ADD payment_attempts :one")
            // Also false for a missing order, so ADD never creates one.
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":one", serde_dynamo::to_attribute_value(1_u32)?)
            .expression_attribute_values(":pending", Self::status_value(OrderStatus::Pending)?)
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) if is_condition_failure(&error) => return Ok(None),
            Err(error) => return Err(StoreError::from_sdk(error)),
        };
        let fields: PaymentFields = output
            .attributes
            .map(serde_dynamo::from_item)
            .transpose()?
            .unwrap_or_default();
        fields
            .payment_attempts
            .map(Some)
            .ok_or_else(|| StoreError::Failed("payment_attempts missing from the update's answer".into()))
    }

    async fn owe_refund(&self, order_id: &OrderId, amount: i64) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", serde_dynamo::to_attribute_value(order_id)?)
            // A refund owed waits for the payment step: in the sweep's index from now on.
            .update_expression(format!(
                "SET refund_due = :amount, payment_status = :refund_pending, {SHARD_ATTRIBUTE} = :shard, \
                 {SINCE_ATTRIBUTE} = :now"
            ))
            // Only a cancelled order is owed its money back (and ADD/SET never create an order); a
            // refund already made is not owed again (a late reconciliation must not undo it).
            .condition_expression(
                "#status = :cancelled AND (attribute_not_exists(payment_status) OR payment_status <> :refunded)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":amount", serde_dynamo::to_attribute_value(amount)?)
            .expression_attribute_values(":shard", AttributeValue::S(shard_of(order_id)))
            .expression_attribute_values(":now", AttributeValue::S(now_rfc3339()))
            .expression_attribute_values(":refunded", serde_dynamo::to_attribute_value(PaymentStatus::Refunded)?)
            .expression_attribute_values(
                ":refund_pending",
                serde_dynamo::to_attribute_value(PaymentStatus::RefundPending)?,
            )
            .expression_attribute_values(":cancelled", Self::status_value(OrderStatus::Cancelled)?)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn refund_owed(&self, order_id: &OrderId) -> Result<Option<i64>, StoreError> {
        let fields = self.fields(order_id, "refund_due").await?;
        Ok(fields.and_then(|fields| fields.refund_due))
    }

    async fn refund_made(&self, order_id: &OrderId) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", serde_dynamo::to_attribute_value(order_id)?)
            .update_expression(format!(
                "SET payment_status = :refunded REMOVE refund_due, {SHARD_ATTRIBUTE}, {SINCE_ATTRIBUTE}"
            ))
            .condition_expression("#status = :cancelled")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":refunded", serde_dynamo::to_attribute_value(PaymentStatus::Refunded)?)
            .expression_attribute_values(":cancelled", Self::status_value(OrderStatus::Cancelled)?)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn remember_intent(&self, order_id: &OrderId, intent_id: &str) -> Result<Option<String>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", serde_dynamo::to_attribute_value(order_id)?)
            .update_expression("SET payment_intent_id = if_not_exists(payment_intent_id, :intent)")
            // Also false for a missing order, so SET never creates one.
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", Self::status_value(OrderStatus::Pending)?)
            .expression_attribute_values(":intent", AttributeValue::S(intent_id.to_owned()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) if is_condition_failure(&error) => return Ok(None),
            Err(error) => return Err(StoreError::from_sdk(error)),
        };
        let fields: PaymentFields = output
            .attributes
            .map(serde_dynamo::from_item)
            .transpose()?
            .unwrap_or_default();
        fields
            .payment_intent_id
            .map(Some)
            .ok_or_else(|| StoreError::Failed("payment_intent_id missing from the update's answer".into()))
    }

    async fn intent_of(&self, order_id: &OrderId) -> Result<Option<String>, StoreError> {
        let fields = self.fields(order_id, "payment_intent_id").await?;
        Ok(fields.and_then(|fields| fields.payment_intent_id))
    }

    async fn require_action(&self, order_id: &OrderId, action: &PaymentAction) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", serde_dynamo::to_attribute_value(order_id)?)
            // Still in the sweep's index, from now: the sweep asks the provider about it (a lost
            // webhook) and expires it once `expires_at` has passed.
            .update_expression(format!(
                "SET payment_status = :action_required, payment_action = :action, {SHARD_ATTRIBUTE} = :shard, \
                 {SINCE_ATTRIBUTE} = :now"
            ))
            .condition_expression(
                "#status = :pending AND (attribute_not_exists(payment_status) OR payment_status IN (:unpaid, :action_required))",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":action", serde_dynamo::to_attribute_value(action)?)
            .expression_attribute_values(":shard", AttributeValue::S(shard_of(order_id)))
            .expression_attribute_values(":now", AttributeValue::S(now_rfc3339()))
            .expression_attribute_values(":pending", Self::status_value(OrderStatus::Pending)?)
            .expression_attribute_values(":unpaid", serde_dynamo::to_attribute_value(PaymentStatus::Pending)?)
            .expression_attribute_values(
                ":action_required",
                serde_dynamo::to_attribute_value(PaymentStatus::ActionRequired)?,
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failure(&error) => Ok(false),
            Err(error) => Err(StoreError::from_sdk(error)),
        }
    }
}
