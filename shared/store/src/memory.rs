//! In-memory fakes of the storage traits, for handler unit tests. They keep the same invariants as
//! the DynamoDB adapters (unique emails, conditional updates); the storage contract suite
//! (`store::contract`) runs the same assertions against both.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use std::sync::Arc;

use crate::connections::{Connection, ConnectionRegistry, MAX_CONNECTIONS_PER_USER};
use crate::idempotency::{IdempotencyStore, InMemoryIdempotency, Lease, StoredResponse};
use crate::orders::{OrderCursor, OrderRepository, PlaceOutcome, releases_stock, transitioned};
use crate::payments::PaymentLedger;
use crate::products::{
    AdjustOutcome, Adjustment, Inventory, ProductCatalog, ProductCursor, ProductEditor, ProductFilter,
};
use crate::unsettled::{UnsettledOrders, WaitingOrder};
use crate::users::{LoginRecord, UserRepository};
use crate::{Page, StoreError};
use domain::{
    CancelReason, Email, Order, OrderId, OrderStatus, PaymentAction, PaymentStatus, Product, ProductId, ProductPatch,
    Role, StockQuantity, User, UserId,
};

fn poisoned() -> StoreError {
    StoreError::Failed("in-memory store lock poisoned".into())
}

#[derive(Default)]
pub struct InMemoryUsers {
    users: Mutex<HashMap<UserId, (User, String)>>,
}

#[async_trait]
impl UserRepository for InMemoryUsers {
    async fn create(&self, user: &User, password_hash: &str, _correlation_id: &str) -> Result<(), StoreError> {
        let mut users = self.users.lock().map_err(|_| poisoned())?;
        if users.values().any(|(existing, _)| existing.email == user.email) {
            return Err(StoreError::AlreadyExists);
        }
        users.insert(user.id.clone(), (user.clone(), password_hash.to_owned()));
        Ok(())
    }

    async fn get(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users.get(id).map(|(user, _)| user.clone()))
    }

    async fn find_login(&self, email: &Email) -> Result<Option<LoginRecord>, StoreError> {
        let users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users
            .values()
            .find(|(user, _)| &user.email == email)
            .map(|(user, hash)| LoginRecord {
                user_id: user.id.clone(),
                role: user.role,
                password_hash: hash.clone(),
            }))
    }

    async fn set_role(&self, email: &Email, role: Role) -> Result<Option<User>, StoreError> {
        let mut users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users
            .values_mut()
            .find(|(user, _)| &user.email == email)
            .map(|(user, _)| {
                user.role = role;
                user.clone()
            }))
    }

    async fn admins(&self) -> Result<Vec<User>, StoreError> {
        let users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users
            .values()
            .filter(|(user, _)| user.role == Role::Admin)
            .map(|(user, _)| user.clone())
            .collect())
    }
}

#[derive(Default)]
pub struct InMemoryProducts {
    products: Mutex<HashMap<ProductId, Product>>,
    adjustments: Mutex<Vec<(ProductId, Adjustment)>>,
}

#[async_trait]
impl ProductCatalog for InMemoryProducts {
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        Ok(self.products.lock().map_err(|_| poisoned())?.get(id).cloned())
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        let products = self.products.lock().map_err(|_| poisoned())?;
        Ok(ids.iter().filter_map(|id| products.get(id).cloned()).collect())
    }

    async fn list(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductCursor>,
        limit: usize,
    ) -> Result<Page<Product, ProductCursor>, StoreError> {
        let products = self.products.lock().map_err(|_| poisoned())?;
        let mut matching: Vec<Product> = products.values().filter(|p| filter.matches(p)).cloned().collect();
        let position = |p: &Product| (p.price.minor_units(), p.id.to_string());
        matching.sort_by_key(position);
        let remaining = matching
            .into_iter()
            .filter(|p| after.is_none_or(|cursor| position(p) > (cursor.price, cursor.id.clone())))
            .take(limit + 1)
            .collect();
        Ok(Page::from_overfetch(remaining, limit, ProductCursor::after))
    }
}

#[async_trait]
impl ProductEditor for InMemoryProducts {
    async fn create(&self, product: &Product) -> Result<(), StoreError> {
        let mut products = self.products.lock().map_err(|_| poisoned())?;
        if products.contains_key(&product.id) {
            return Err(StoreError::AlreadyExists);
        }
        products.insert(product.id.clone(), product.clone());
        Ok(())
    }

    async fn update(&self, id: &ProductId, patch: &ProductPatch, now: &str) -> Result<Option<Product>, StoreError> {
        let mut products = self.products.lock().map_err(|_| poisoned())?;
        Ok(products.get_mut(id).map(|product| {
            patch.clone().apply(product, now.to_owned());
            product.clone()
        }))
    }
}

#[async_trait]
impl Inventory for InMemoryProducts {
    async fn adjust_stock(
        &self,
        id: &ProductId,
        adjustment: &Adjustment,
        _correlation_id: &str,
    ) -> Result<AdjustOutcome, StoreError> {
        let mut products = self.products.lock().map_err(|_| poisoned())?;
        let Some(product) = products.get_mut(id) else {
            return Ok(AdjustOutcome::NotFound);
        };
        let Ok(after) = StockQuantity::new(product.stock_quantity.units() + adjustment.delta) else {
            return Ok(AdjustOutcome::OutOfBounds {
                current: product.stock_quantity,
            });
        };
        product.stock_quantity = after;
        self.adjustments
            .lock()
            .map_err(|_| poisoned())?
            .push((id.clone(), adjustment.clone()));
        Ok(AdjustOutcome::Adjusted(after))
    }

    async fn recent_adjustments(&self, id: &ProductId, limit: usize) -> Result<Vec<Adjustment>, StoreError> {
        let adjustments = self.adjustments.lock().map_err(|_| poisoned())?;
        Ok(adjustments
            .iter()
            .rev()
            .filter(|(p, _)| p == id)
            .take(limit)
            .map(|(_, a)| a.clone())
            .collect())
    }
}

impl InMemoryProducts {
    /// Restocks (or takes stock from) one product, for test set-up.
    pub fn move_stock_for_tests(&self, id: &str, delta: i64) {
        if let Ok(id) = ProductId::parse(id) {
            let _ = self.move_stock(&[(id, delta)]);
        }
    }

    /// Deletes a product, for tests of what happens to orders of products that are gone.
    pub fn remove_for_tests(&self, id: &str) {
        if let (Ok(id), Ok(mut products)) = (ProductId::parse(id), self.products.lock()) {
            products.remove(&id);
        }
    }

    /// Adds `delta` to the stock of each product, all or nothing; the failing product when one is
    /// missing or would go below zero.
    fn move_stock(&self, changes: &[(ProductId, i64)]) -> Result<Result<(), (ProductId, bool)>, StoreError> {
        let mut products = self.products.lock().map_err(|_| poisoned())?;
        for (id, delta) in changes {
            match products.get(id) {
                None => return Ok(Err((id.clone(), false))),
                Some(product) if product.stock_quantity.units() + delta < 0 => return Ok(Err((id.clone(), true))),
                Some(_) => {}
            }
        }
        for (id, delta) in changes {
            if let Some(product) = products.get_mut(id) {
                let units = product.stock_quantity.units() + delta;
                product.stock_quantity = StockQuantity::new(units).map_err(|e| StoreError::Failed(e.0.into()))?;
            }
        }
        Ok(Ok(()))
    }
}

/// Orders over the in-memory products, users and idempotency records, with the same all-or-nothing
/// placement and conditional transitions as the DynamoDB adapter.
pub struct InMemoryOrders {
    orders: Mutex<HashMap<OrderId, Order>>,
    /// The sweep's index: since when each order waits for the payment step.
    waiting: Mutex<HashMap<OrderId, String>>,
    pub products: Arc<InMemoryProducts>,
    pub users: Arc<InMemoryUsers>,
    pub idempotency: Arc<InMemoryIdempotency>,
}

impl InMemoryOrders {
    pub fn new(
        products: Arc<InMemoryProducts>,
        users: Arc<InMemoryUsers>,
        idempotency: Arc<InMemoryIdempotency>,
    ) -> Self {
        Self {
            orders: Mutex::default(),
            waiting: Mutex::default(),
            products,
            users,
            idempotency,
        }
    }

    /// Changes the stored order with `change`, as an `UpdateItem` would (`restart_wait`: the write also
    /// restarts the order's wait in the sweep's index, as the table's write sets it); what `change`
    /// answered, or `None` when there is no such order.
    fn update<T>(
        &self,
        id: &OrderId,
        restart_wait: bool,
        change: impl FnOnce(&mut Order) -> T,
    ) -> Result<Option<T>, StoreError> {
        let mut orders = self.orders.lock().map_err(|_| poisoned())?;
        let Some(order) = orders.get_mut(id) else {
            return Ok(None);
        };
        let answer = change(order);
        if restart_wait {
            self.note_wait(order, &domain::now_rfc3339())?;
        }
        Ok(Some(answer))
    }

    /// What the payment ledger writes on the order besides status changes.
    fn set_payment_status(&self, id: &OrderId, status: PaymentStatus) -> Result<(), StoreError> {
        let mut orders = self.orders.lock().map_err(|_| poisoned())?;
        if let Some(order) = orders.get_mut(id) {
            order.payment_status = status;
            self.note_wait(order, &domain::now_rfc3339())?;
        }
        Ok(())
    }

    /// Keeps the sweep's index in step with a write of `order` at `now`, as the table's writes do.
    fn note_wait(&self, order: &Order, now: &str) -> Result<(), StoreError> {
        let mut waiting = self.waiting.lock().map_err(|_| poisoned())?;
        if order.payment_status.awaits_payment_step(order.status) {
            waiting.insert(order.id.clone(), now.to_owned());
        } else {
            waiting.remove(&order.id);
        }
        Ok(())
    }

    pub fn set_payment_token_for_tests(&self, id: &str, token: Option<&str>) {
        if let (Ok(id), Ok(mut orders)) = (OrderId::parse(id), self.orders.lock())
            && let Some(order) = orders.get_mut(&id)
        {
            order.payment_token = token.map(str::to_owned);
        }
    }

    pub fn count(&self) -> usize {
        self.orders.lock().map_or(0, |orders| orders.len())
    }
}

#[async_trait]
impl OrderRepository for InMemoryOrders {
    async fn place(
        &self,
        order: &Order,
        completion: Option<(&Lease, &StoredResponse)>,
    ) -> Result<PlaceOutcome, StoreError> {
        let changes: Vec<(ProductId, i64)> = order
            .items
            .iter()
            .map(|line| (line.product_id.clone(), -line.quantity.units()))
            .collect();
        match self.products.move_stock(&changes)? {
            Ok(()) => {}
            Err((id, true)) => return Ok(PlaceOutcome::OutOfStock(id)),
            Err((id, false)) => return Ok(PlaceOutcome::ProductGone(id)),
        }
        if let Some((lease, response)) = completion
            && self.idempotency.complete(lease, response).await.is_err()
        {
            let undo: Vec<(ProductId, i64)> = changes.into_iter().map(|(id, delta)| (id, -delta)).collect();
            self.products.move_stock(&undo)?.map_err(|_| poisoned())?;
            return Ok(PlaceOutcome::LeaseLost);
        }
        self.orders
            .lock()
            .map_err(|_| poisoned())?
            .insert(order.id.clone(), order.clone());
        self.note_wait(order, &order.created_at)?;
        Ok(PlaceOutcome::Placed)
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        Ok(self.orders.lock().map_err(|_| poisoned())?.get(id).cloned())
    }

    async fn list_for_user(
        &self,
        user_id: &UserId,
        after: Option<&OrderCursor>,
        limit: usize,
    ) -> Result<Page<Order, OrderCursor>, StoreError> {
        let orders = self.orders.lock().map_err(|_| poisoned())?;
        let mut mine: Vec<Order> = orders.values().filter(|o| &o.user_id == user_id).cloned().collect();
        let position = |o: &Order| (o.created_at.clone(), o.id.to_string());
        mine.sort_by_key(|o| std::cmp::Reverse(position(o)));
        let remaining = mine
            .into_iter()
            .filter(|o| after.is_none_or(|cursor| position(o) < (cursor.created_at.clone(), cursor.id.clone())))
            .take(limit + 1)
            .collect();
        Ok(Page::from_overfetch(remaining, limit, crate::orders::order_position))
    }

    async fn transition(
        &self,
        order: &Order,
        to: OrderStatus,
        reason: Option<CancelReason>,
        now: &str,
        cause: &domain::Cause,
    ) -> Result<Option<Order>, StoreError> {
        let mut orders = self.orders.lock().map_err(|_| poisoned())?;
        let Some(stored) = orders.get_mut(&order.id) else {
            return Ok(None);
        };
        if stored.status != order.status {
            return Ok(None);
        }
        if releases_stock(order.status, to) {
            let changes: Vec<(ProductId, i64)> = order
                .items
                .iter()
                .map(|line| (line.product_id.clone(), line.quantity.units()))
                .collect();
            self.products.move_stock(&changes)?.map_err(|_| poisoned())?;
        }
        *stored = transitioned(order, to, reason, now, cause);
        self.note_wait(stored, now)?;
        Ok(Some(stored.clone()))
    }

    async fn users_and_products(
        &self,
        users: &[UserId],
        products: &[ProductId],
    ) -> Result<(Vec<User>, Vec<Product>), StoreError> {
        let mut found = Vec::new();
        for id in users {
            found.extend(self.users.get(id).await?);
        }
        Ok((found, self.products.get_many(products).await?))
    }
}

#[derive(Default)]
pub struct InMemoryNotifications {
    items: Mutex<HashMap<String, crate::notifications::Notification>>,
}

#[async_trait]
impl crate::notifications::NotificationRepository for InMemoryNotifications {
    async fn record_attempt(
        &self,
        draft: &crate::notifications::Notification,
    ) -> Result<crate::notifications::Notification, StoreError> {
        let mut items = self.items.lock().map_err(|_| poisoned())?;
        let item = items.entry(draft.id.clone()).or_insert_with(|| draft.clone());
        item.recipient = draft.recipient.clone();
        item.subject = draft.subject.clone();
        item.body = draft.body.clone();
        item.attempts += 1;
        Ok(item.clone())
    }

    async fn record_outcome(
        &self,
        id: &str,
        status: crate::notifications::DeliveryStatus,
        _error: Option<&str>,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut items = self.items.lock().map_err(|_| poisoned())?;
        if let Some(item) = items.get_mut(id) {
            item.status = status;
            if status == crate::notifications::DeliveryStatus::Sent {
                item.sent_at = Some(now.to_owned());
            }
        }
        Ok(())
    }

    async fn list_for_user(
        &self,
        user_id: &str,
        after: Option<&crate::notifications::NotificationCursor>,
        limit: usize,
    ) -> Result<Page<crate::notifications::Notification, crate::notifications::NotificationCursor>, StoreError> {
        let items = self.items.lock().map_err(|_| poisoned())?;
        let mut mine: Vec<_> = items.values().filter(|n| n.user_id == user_id).cloned().collect();
        let position = |n: &crate::notifications::Notification| (n.created_at.clone(), n.id.clone());
        mine.sort_by_key(|n| std::cmp::Reverse(position(n)));
        let remaining = mine
            .into_iter()
            .filter(|n| after.is_none_or(|c| position(n) < (c.created_at.clone(), c.id.clone())))
            .take(limit + 1)
            .collect();
        Ok(Page::from_overfetch(
            remaining,
            limit,
            crate::notifications::notification_position,
        ))
    }

    async fn record_suppressed(&self, draft: &crate::notifications::Notification) -> Result<(), StoreError> {
        use crate::notifications::DeliveryStatus;
        let mut items = self.items.lock().map_err(|_| poisoned())?;
        let item = items
            .entry(draft.id.clone())
            .or_insert_with(|| crate::notifications::Notification {
                attempts: 0,
                sent_at: None,
                ..draft.clone()
            });
        if item.status != DeliveryStatus::Sent {
            item.recipient = draft.recipient.clone();
            item.subject = draft.subject.clone();
            item.body = draft.body.clone();
            item.status = DeliveryStatus::Suppressed;
        }
        Ok(())
    }

    async fn count_recent(
        &self,
        user_id: &str,
        since: &str,
        excluding_id: &str,
        up_to: u32,
    ) -> Result<u32, StoreError> {
        let items = self.items.lock().map_err(|_| poisoned())?;
        let counted = items
            .values()
            .filter(|n| {
                n.user_id == user_id
                    && n.created_at.as_str() >= since
                    && n.id != excluding_id
                    && n.status != crate::notifications::DeliveryStatus::Suppressed
            })
            .count();
        Ok(u32::try_from(counted).unwrap_or(u32::MAX).min(up_to))
    }
}

#[async_trait]
impl UnsettledOrders for InMemoryOrders {
    async fn waiting_in(&self, shard: &str, before: &str, limit: usize) -> Result<Vec<WaitingOrder>, StoreError> {
        let orders = self.orders.lock().map_err(|_| poisoned())?;
        let waiting = self.waiting.lock().map_err(|_| poisoned())?;
        let mut found: Vec<WaitingOrder> = waiting
            .iter()
            .filter(|(id, since)| since.as_str() < before && crate::unsettled::shard_of(id) == shard)
            .filter_map(|(id, since)| {
                orders.get(id).map(|order| WaitingOrder {
                    order: order.clone(),
                    since: since.clone(),
                })
            })
            .collect();
        found.sort_by(|a, b| a.since.cmp(&b.since));
        found.truncate(limit);
        Ok(found)
    }

    async fn restart_wait(&self, found: &WaitingOrder, now: &str) -> Result<bool, StoreError> {
        let mut waiting = self.waiting.lock().map_err(|_| poisoned())?;
        match waiting.get_mut(&found.order.id) {
            Some(since) if *since == found.since => {
                *since = now.to_owned();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The payment ledger beside in-memory orders, with the table's conditions: attempts are counted only
/// while the order is pending, a refund is owed only by a cancelled order, and only an existing
/// order's refund is marked made.
pub struct InMemoryPaymentLedger {
    orders: Arc<InMemoryOrders>,
    attempts: Mutex<HashMap<OrderId, u32>>,
    owed: Mutex<HashMap<OrderId, i64>>,
}

impl InMemoryPaymentLedger {
    pub fn new(orders: Arc<InMemoryOrders>) -> Self {
        Self {
            orders,
            attempts: Mutex::default(),
            owed: Mutex::default(),
        }
    }

    /// Charge attempts recorded for an order.
    pub fn attempts(&self, order_id: &OrderId) -> u32 {
        self.attempts
            .lock()
            .map(|attempts| attempts.get(order_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    async fn status(&self, order_id: &OrderId) -> Result<Option<OrderStatus>, StoreError> {
        Ok(self.orders.get(order_id).await?.map(|order| order.status))
    }
}

fn condition_failed_in_memory() -> StoreError {
    StoreError::Failed("in-memory ledger: the condition did not hold".into())
}

#[async_trait]
impl PaymentLedger for InMemoryPaymentLedger {
    async fn record_attempt(&self, order_id: &OrderId) -> Result<Option<u32>, StoreError> {
        if self.status(order_id).await? != Some(OrderStatus::Pending) {
            return Ok(None);
        }
        let mut attempts = self.attempts.lock().map_err(|_| poisoned())?;
        let count = attempts.entry(order_id.clone()).or_default();
        *count += 1;
        Ok(Some(*count))
    }

    async fn owe_refund(&self, order_id: &OrderId, amount: i64) -> Result<(), StoreError> {
        if self.status(order_id).await? != Some(OrderStatus::Cancelled) {
            return Err(condition_failed_in_memory());
        }
        self.orders.set_payment_status(order_id, PaymentStatus::RefundPending)?;
        self.owed
            .lock()
            .map_err(|_| poisoned())?
            .insert(order_id.clone(), amount);
        Ok(())
    }

    async fn refund_owed(&self, order_id: &OrderId) -> Result<Option<i64>, StoreError> {
        Ok(self.owed.lock().map_err(|_| poisoned())?.get(order_id).copied())
    }

    async fn refund_made(&self, order_id: &OrderId) -> Result<(), StoreError> {
        if self.status(order_id).await? != Some(OrderStatus::Cancelled) {
            return Err(condition_failed_in_memory());
        }
        self.orders.set_payment_status(order_id, PaymentStatus::Refunded)?;
        self.owed.lock().map_err(|_| poisoned())?.remove(order_id);
        Ok(())
    }

    async fn remember_intent(&self, order_id: &OrderId, intent_id: &str) -> Result<Option<String>, StoreError> {
        let stored = self.orders.update(order_id, false, |order| {
            (order.status == OrderStatus::Pending).then(|| {
                order
                    .payment_intent_id
                    .get_or_insert_with(|| intent_id.to_owned())
                    .clone()
            })
        })?;
        Ok(stored.flatten())
    }

    async fn intent_of(&self, order_id: &OrderId) -> Result<Option<String>, StoreError> {
        Ok(self
            .orders
            .get(order_id)
            .await?
            .and_then(|order| order.payment_intent_id))
    }

    async fn require_action(&self, order_id: &OrderId, action: &PaymentAction) -> Result<bool, StoreError> {
        let noted = self.orders.update(order_id, true, |order| {
            let unpaid = matches!(
                order.payment_status,
                PaymentStatus::Pending | PaymentStatus::ActionRequired
            );
            if order.status == OrderStatus::Pending && unpaid {
                order.payment_status = PaymentStatus::ActionRequired;
                order.payment_action = Some(action.clone());
                true
            } else {
                false
            }
        })?;
        Ok(noted.unwrap_or(false))
    }
}

/// Open WebSocket connections, by id.
#[derive(Default)]
pub struct InMemoryConnections {
    connections: Mutex<HashMap<String, Connection>>,
}

impl InMemoryConnections {
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .connections
            .lock()
            .map(|connections| connections.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

#[async_trait]
impl ConnectionRegistry for InMemoryConnections {
    async fn register(&self, connection: &Connection) -> Result<(), StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        connections.insert(connection.connection_id.clone(), connection.clone());
        Ok(())
    }

    async fn forget(&self, connection_id: &str) -> Result<(), StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        connections.remove(connection_id);
        Ok(())
    }

    async fn of_user(&self, user_id: &str, now_epoch_secs: u64) -> Result<Vec<String>, StoreError> {
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        let mut ids: Vec<String> = connections
            .values()
            .filter(|connection| connection.user_id == user_id && connection.expires_at > now_epoch_secs)
            .map(|connection| connection.connection_id.clone())
            .collect();
        ids.sort();
        ids.truncate(MAX_CONNECTIONS_PER_USER);
        Ok(ids)
    }

    async fn user_of(&self, connection_id: &str, now_epoch_secs: u64) -> Result<Option<String>, StoreError> {
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        Ok(connections
            .get(connection_id)
            .filter(|connection| connection.expires_at > now_epoch_secs)
            .map(|connection| connection.user_id.clone()))
    }
}
