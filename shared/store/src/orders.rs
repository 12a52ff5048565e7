//! Orders table (`id` key, `by_user` index on user id + creation time). Every write that must happen
//! together is one DynamoDB transaction: placement reserves the stock of every line, stores the order
//! and completes the idempotency record; a cancellation changes the status and releases the stock.
//! Status changes are conditional on the status they start from, so racing transitions cannot both win.
//! Each order item carries everything its events need (status, user, lines, totals, correlation id).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};

use domain::{
    CancelReason, Cause, DomainError, Order, OrderId, OrderLine, OrderStatus, Product, ProductId, Step, Transition,
    User, UserId, now_rfc3339,
};

use crate::catalogue_cache::CatalogueCache;
use crate::idempotency::{DynamoIdempotencyStore, Lease, StoredResponse};
use crate::products::{id_key as product_key, products_from_items};
use crate::unsettled;
use crate::users::{UserItem, user_key};
use crate::{
    NewestFirstCursor, Page, StoreError, batch_get, condition_failed, newest_for_user, request_token, transact,
};

/// How a placement ended when nothing went wrong with storage itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    Placed,
    /// Not enough stock of this product; nothing was changed.
    OutOfStock(ProductId),
    /// The product disappeared between reading and reserving; nothing was changed.
    ProductGone(ProductId),
    /// The idempotency claim expired and was taken over; nothing was changed.
    LeaseLost,
}

/// The order of an orders-table stream image (`None` for an empty image, the record's other side, and
/// for a delivery probe).
pub fn order_from_image(item: &serde_dynamo::Item) -> Result<Option<Order>, StoreError> {
    if item.is_empty() || crate::probe::is_probe(item) {
        return Ok(None);
    }
    Ok(Some(serde_dynamo::from_item(item.clone())?))
}

/// Where a listing of a user's orders resumes (newest first).
pub type OrderCursor = NewestFirstCursor;

/// The listing position of `order`.
pub fn order_position(order: &Order) -> OrderCursor {
    NewestFirstCursor {
        created_at: order.created_at.clone(),
        id: order.id.to_string(),
    }
}

#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// Reserves every line's stock, stores the order and (when given) completes the idempotency
    /// record, all in one transaction.
    async fn place(
        &self,
        order: &Order,
        completion: Option<(&Lease, &StoredResponse)>,
    ) -> Result<PlaceOutcome, StoreError>;
    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;
    /// A user's orders, newest first.
    async fn list_for_user(
        &self,
        user_id: &UserId,
        after: Option<&OrderCursor>,
        limit: usize,
    ) -> Result<Page<Order, OrderCursor>, StoreError>;
    /// Moves `order` from the status it was read with to `to`, releasing its stock in the same
    /// transaction when `to` gives it up. `None` when the order's status changed in the meantime.
    /// `cause` (the request or event that caused the change, and its trace) goes on the order, and so
    /// into the change's event.
    async fn transition(
        &self,
        order: &Order,
        to: OrderStatus,
        reason: Option<CancelReason>,
        now: &str,
        cause: &Cause,
    ) -> Result<Option<Order>, StoreError>;
    /// These users and products as they are now (those that exist), in one round trip: at most 100
    /// ids in all.
    async fn users_and_products(
        &self,
        users: &[UserId],
        products: &[ProductId],
    ) -> Result<(Vec<User>, Vec<Product>), StoreError>;
    /// The order's user and its products as they are now, in one round trip.
    async fn details(&self, order: &Order) -> Result<(Option<User>, Vec<Product>), StoreError> {
        let products: Vec<ProductId> = order.items.iter().map(|line| line.product_id.clone()).collect();
        let (users, products) = self
            .users_and_products(std::slice::from_ref(&order.user_id), &products)
            .await?;
        Ok((users.into_iter().next(), products))
    }
}

/// The order after a transition, as the transition writes it.
pub fn transitioned(order: &Order, to: OrderStatus, reason: Option<CancelReason>, now: &str, cause: &Cause) -> Order {
    Order {
        status: to,
        cancel_reason: reason.or(order.cancel_reason),
        payment_status: order.payment_status.after_move(order.status, to, reason),
        // Only a pending order waits for its customer.
        payment_action: order.payment_action.clone().filter(|_| to == OrderStatus::Pending),
        updated_at: now.to_owned(),
        correlation_id: cause.correlation_id.clone(),
        trace_parent: cause.trace_parent.clone(),
        ..order.clone()
    }
}

/// Whether moving from `from` to `to` hands the order's stock back.
pub fn releases_stock(from: OrderStatus, to: OrderStatus) -> bool {
    from.holds_stock() && !to.holds_stock()
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

/// Why a life-cycle step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The life cycle does not allow it from the order's current status.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// The order disappeared while the step was retried.
    #[error("the order no longer exists")]
    Gone,
    /// Other writers kept changing the order; the caller may try again.
    #[error("the order is changing concurrently")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `transition` to `order` (the rule is `OrderStatus::step`), re-reading and re-deciding if
/// another writer changed its status first, since every status write is conditional on the status
/// it starts from.
pub async fn step(
    orders: &dyn OrderRepository,
    mut order: Order,
    transition: Transition,
    reason: Option<CancelReason>,
    cause: &Cause,
) -> Result<StepOutcome, StepError> {
    const MAX_ATTEMPTS: usize = 5;
    for _ in 0..MAX_ATTEMPTS {
        let to = match order.status.step(transition)? {
            Step::AlreadyThere => return Ok(StepOutcome::AlreadyThere(order)),
            Step::To(to) => to,
        };
        if let Some(moved) = orders.transition(&order, to, reason, &now_rfc3339(), cause).await? {
            tracing::info!(order_id = %moved.id, from = order.status.as_str(), to = to.as_str(), "order status changed");
            return Ok(StepOutcome::Moved(moved));
        }
        // Someone else changed the order first: decide again from what it is now.
        order = orders.get(&order.id).await?.ok_or(StepError::Gone)?;
    }
    Err(StepError::Contended)
}

#[derive(Debug, Clone)]
pub struct OrderTables {
    pub orders: String,
    pub products: String,
    pub users: String,
}

pub struct DynamoOrderRepository {
    client: Client,
    tables: OrderTables,
    idempotency: DynamoIdempotencyStore,
    /// Where [`OrderRepository::details`] finds product names before reading the table.
    catalogue: Option<Arc<CatalogueCache>>,
}

impl DynamoOrderRepository {
    pub fn new(client: Client, tables: OrderTables, idempotency: DynamoIdempotencyStore) -> Self {
        Self {
            client,
            tables,
            idempotency,
            catalogue: None,
        }
    }

    /// Order details take the products they can from `cache` (never a stock decision).
    pub fn with_catalogue_cache(mut self, cache: Option<Arc<CatalogueCache>>) -> Self {
        self.catalogue = cache;
        self
    }

    fn stock_change(
        &self,
        line: &OrderLine,
        reserve: bool,
        correlation_id: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        let quantity = AttributeValue::N(line.quantity.units().to_string());
        let builder = Update::builder()
            .table_name(&self.tables.products)
            .set_key(Some(product_key(&line.product_id)))
            .expression_attribute_values(":quantity", quantity)
            .expression_attribute_values(":correlation_id", AttributeValue::S(correlation_id.to_owned()));
        let builder = if reserve {
            builder
                .update_expression(
                    "SET stock_quantity = stock_quantity - :quantity, last_correlation_id = :correlation_id",
                )
                .condition_expression("attribute_exists(id) AND stock_quantity >= :quantity")
                // A refusal then shows whether the product is gone or just short.
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        } else {
            builder
                .update_expression(
                    "SET stock_quantity = stock_quantity + :quantity, last_correlation_id = :correlation_id",
                )
                .condition_expression("attribute_exists(id)")
        };
        let update = builder.build().map_err(|error| StoreError::Failed(Box::new(error)))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn status_change(
        &self,
        order: &Order,
        to: OrderStatus,
        reason: Option<CancelReason>,
        now: &str,
        cause: &Cause,
    ) -> Result<TransactWriteItem, StoreError> {
        let payment = order.payment_status.after_move(order.status, to, reason);
        let mut expression =
            "SET #status = :to, payment_status = :payment, updated_at = :now, correlation_id = :correlation_id"
                .to_string();
        let mut values = HashMap::from([
            (":to".to_string(), serde_dynamo::to_attribute_value(to)?),
            (":payment".to_string(), serde_dynamo::to_attribute_value(payment)?),
            (":from".to_string(), serde_dynamo::to_attribute_value(order.status)?),
            (":now".to_string(), AttributeValue::S(now.to_owned())),
            (
                ":correlation_id".to_string(),
                AttributeValue::S(cause.correlation_id.clone()),
            ),
        ]);
        if let Some(reason) = reason {
            expression.push_str(", cancel_reason = :reason");
            values.insert(":reason".into(), serde_dynamo::to_attribute_value(reason)?);
        }
        let mut removed = Vec::new();
        if to != OrderStatus::Pending {
            // Only a pending order waits for its customer: the secret goes with the wait.
            removed.push("payment_action");
        }
        match &cause.trace_parent {
            Some(trace_parent) => {
                expression.push_str(", trace_parent = :trace_parent");
                values.insert(":trace_parent".into(), AttributeValue::S(trace_parent.clone()));
            }
            // An untraced change must not pass on the trace of the change before it.
            None => removed.push("trace_parent"),
        }
        // In the sweep's index while it waits for the payment step, from the moment it began to.
        if payment.awaits_payment_step(to) {
            for (name, value) in unsettled::waiting_attributes(&order.id, now) {
                expression.push_str(&format!(", {name} = :{name}"));
                values.insert(format!(":{name}"), value);
            }
        } else {
            removed.extend([unsettled::SHARD_ATTRIBUTE, unsettled::SINCE_ATTRIBUTE]);
        }
        if !removed.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        let update = Update::builder()
            .table_name(&self.tables.orders)
            .key("id", AttributeValue::S(order.id.to_string()))
            .update_expression(expression)
            .condition_expression("#status = :from")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|error| StoreError::Failed(Box::new(error)))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

fn order_from_item(item: HashMap<String, AttributeValue>) -> Result<Order, StoreError> {
    Ok(serde_dynamo::from_item(item)?)
}

#[async_trait]
impl OrderRepository for DynamoOrderRepository {
    async fn place(
        &self,
        order: &Order,
        completion: Option<(&Lease, &StoredResponse)>,
    ) -> Result<PlaceOutcome, StoreError> {
        let mut items = order
            .items
            .iter()
            .map(|line| self.stock_change(line, true, &order.correlation_id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(order)?;
        if order.payment_status.awaits_payment_step(order.status) {
            item.extend(unsettled::waiting_attributes(&order.id, &order.created_at));
        }
        let put = Put::builder()
            .table_name(&self.tables.orders)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|error| StoreError::Failed(Box::new(error)))?;
        items.push(TransactWriteItem::builder().put(put).build());
        if let Some((lease, response)) = completion {
            items.push(self.idempotency.completion_item(lease, response)?);
        }
        let reasons = match transact(&self.client, items, &request_token(&["place", &order.id.to_string()])).await? {
            Ok(()) => return Ok(PlaceOutcome::Placed),
            Err(reasons) => reasons,
        };
        for (line, reason) in order.items.iter().zip(&reasons) {
            if condition_failed(reason) {
                return Ok(if reason.item().is_some() {
                    PlaceOutcome::OutOfStock(line.product_id.clone())
                } else {
                    PlaceOutcome::ProductGone(line.product_id.clone())
                });
            }
        }
        if completion.is_some() && reasons.last().is_some_and(condition_failed) {
            return Ok(PlaceOutcome::LeaseLost);
        }
        Err(StoreError::Failed(
            format!("order transaction cancelled: {reasons:?}").into(),
        ))
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.orders)
            .key("id", AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        output.item.map(order_from_item).transpose()
    }

    async fn list_for_user(
        &self,
        user_id: &UserId,
        after: Option<&OrderCursor>,
        limit: usize,
    ) -> Result<Page<Order, OrderCursor>, StoreError> {
        newest_for_user(
            &self.client,
            &self.tables.orders,
            &user_id.to_string(),
            after,
            limit,
            order_position,
        )
        .await
    }

    async fn transition(
        &self,
        order: &Order,
        to: OrderStatus,
        reason: Option<CancelReason>,
        now: &str,
        cause: &Cause,
    ) -> Result<Option<Order>, StoreError> {
        let mut items = vec![self.status_change(order, to, reason, now, cause)?];
        if releases_stock(order.status, to) {
            for line in &order.items {
                items.push(self.stock_change(line, false, &cause.correlation_id)?);
            }
        }
        // Every parameter is in the token: the same token with other parameters is refused.
        let token = request_token(&[
            "transition",
            &order.id.to_string(),
            order.status.as_str(),
            to.as_str(),
            now,
            &cause.correlation_id,
            cause.trace_parent.as_deref().unwrap_or(""),
        ]);
        match transact(&self.client, items, &token).await? {
            Ok(()) => Ok(Some(transitioned(order, to, reason, now, cause))),
            Err(reasons) if reasons.first().is_some_and(condition_failed) => Ok(None),
            Err(reasons) => Err(StoreError::Failed(format!("transition cancelled: {reasons:?}").into())),
        }
    }

    async fn users_and_products(
        &self,
        users: &[UserId],
        products: &[ProductId],
    ) -> Result<(Vec<User>, Vec<Product>), StoreError> {
        let user_keys = users
            .iter()
            .map(|id| HashMap::from([("pk".to_string(), AttributeValue::S(user_key(id)))]))
            .collect();
        let (mut cached, missing) = match &self.catalogue {
            Some(cache) => cache.split(products),
            None => (Vec::new(), products.to_vec()),
        };
        let mut keys = HashMap::from([(self.tables.users.clone(), user_keys)]);
        if !missing.is_empty() {
            keys.insert(self.tables.products.clone(), missing.iter().map(product_key).collect());
        }
        let mut found = batch_get(&self.client, keys).await?;
        let users = found
            .remove(&self.tables.users)
            .unwrap_or_default()
            .into_iter()
            .map(|item| Ok(serde_dynamo::from_item::<_, UserItem>(item)?.user))
            .collect::<Result<Vec<User>, StoreError>>()?;
        let read = products_from_items(found.remove(&self.tables.products).unwrap_or_default())?;
        if let Some(cache) = &self.catalogue {
            read.iter().for_each(|product| cache.keep(product));
        }
        cached.extend(read);
        Ok((users, cached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Transition;

    /// Every path through the life cycle (up to four steps, illegal steps refused as the API refuses
    /// them): the order's stock is released at most once, and exactly when the order ends cancelled.
    /// Stock + what live orders hold therefore stays constant.
    #[test]
    fn stock_is_released_exactly_once_on_every_path_to_cancelled() {
        fn walk(status: OrderStatus, released: u32, depth: u32) {
            assert!(released <= 1, "released twice");
            assert_eq!(
                released == 1,
                status == OrderStatus::Cancelled,
                "an order {status:?} has released its stock {released} times"
            );
            if depth == 0 {
                return;
            }
            for transition in Transition::ALL {
                if let Some(next) = status.apply(transition) {
                    walk(next, released + u32::from(releases_stock(status, next)), depth - 1);
                }
            }
        }
        walk(OrderStatus::Pending, 0, 4);
    }

    #[test]
    fn a_transition_records_the_request_that_caused_it() {
        let order = crate::testing::sample_order();
        let moved = transitioned(
            &order,
            OrderStatus::Cancelled,
            Some(CancelReason::CustomerCancelled),
            "t1",
            &Cause::untraced("cid-cancel"),
        );
        assert_eq!(moved.correlation_id, "cid-cancel");
        assert_eq!(moved.cancel_reason, Some(CancelReason::CustomerCancelled));
        assert_eq!(moved.items, order.items);
    }
}
