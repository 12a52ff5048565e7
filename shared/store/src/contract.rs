//! The storage contract: what every implementation of the storage traits must do, written once and
//! run against the in-memory fakes (in this crate's unit tests) and against the DynamoDB adapters on
//! the emulator's real tables (`tests/store_contract.rs`, in `make test-e2e`). The handlers' unit tests
//! run on the fakes, so this is what makes them evidence about the real thing: conditional writes
//! that refuse, transactions cancelled as a whole with the failing item named, listings that read on
//! past DynamoDB's 1 MB page limit, counters that roll their windows.
//!
//! Each check works on data of its own (fresh ids and keys), so the checks run in parallel on one
//! set of tables. [`storage_contract!`] turns the list into one test per check.
//! Test-only code: failing loudly is its job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use domain::{
    CancelReason, Email, NewOrder, NewProduct, Order, OrderStatus, PaymentStatus, Product, ProductId, Role, Transition,
    User, UserId, now_rfc3339,
};

use crate::StoreError;
use crate::connections::{Connection, ConnectionRegistry};
use crate::idempotency::{Claim, IdempotencyStore, StoredResponse};
use crate::login_failures::{LoginFailures, Subject};
use crate::notifications::{Channel, DeliveryStatus, Notification, NotificationRepository, notification_id};
use crate::orders::{OrderRepository, PlaceOutcome, StepError, StepOutcome, step};
use crate::payments::PaymentLedger;
use crate::products::{AdjustOutcome, Adjustment, Inventory, ProductCatalog, ProductEditor};
use crate::rate_counter::{WindowCounter, WindowCounts};
use crate::unsettled::{UnsettledOrders, WaitingOrder};
use crate::users::UserRepository;

/// One implementation of every storage trait, over the same data.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserRepository>,
    pub catalogue: Arc<dyn ProductCatalog>,
    pub editor: Arc<dyn ProductEditor>,
    pub inventory: Arc<dyn Inventory>,
    pub orders: Arc<dyn OrderRepository>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub notifications: Arc<dyn NotificationRepository>,
    pub counters: Arc<dyn WindowCounter>,
    pub login_failures: Arc<dyn LoginFailures>,
    pub ledger: Arc<dyn PaymentLedger>,
    pub connections: Arc<dyn ConnectionRegistry>,
    pub unsettled: Arc<dyn UnsettledOrders>,
}

impl Stores {
    /// The in-memory fakes, wired to each other as the tables are.
    pub fn in_memory() -> Self {
        use crate::idempotency::InMemoryIdempotency;
        use crate::login_failures::InMemoryLoginFailures;
        use crate::memory::{
            InMemoryConnections, InMemoryNotifications, InMemoryOrders, InMemoryPaymentLedger, InMemoryProducts,
            InMemoryUsers,
        };
        use crate::rate_counter::InMemoryWindowCounter;
        let products = Arc::new(InMemoryProducts::default());
        let users = Arc::new(InMemoryUsers::default());
        let idempotency = Arc::new(InMemoryIdempotency::default());
        let orders = Arc::new(InMemoryOrders::new(
            products.clone(),
            users.clone(),
            idempotency.clone(),
        ));
        Self {
            users,
            catalogue: products.clone(),
            editor: products.clone(),
            inventory: products,
            orders: orders.clone(),
            idempotency,
            notifications: Arc::new(InMemoryNotifications::default()),
            counters: Arc::new(InMemoryWindowCounter::default()),
            login_failures: Arc::new(InMemoryLoginFailures::default()),
            ledger: Arc::new(InMemoryPaymentLedger::new(orders.clone())),
            connections: Arc::new(InMemoryConnections::default()),
            unsettled: orders,
        }
    }
}

/// One test per check of the contract, each on `$stores` (an expression that may `.await`).
#[macro_export]
macro_rules! storage_contract {
    ($stores:expr) => {
        $crate::storage_contract!(@each $stores;
            a_second_account_with_a_taken_email_is_refused,
            a_product_id_is_created_once_and_updates_need_the_product,
            stock_adjustments_stay_in_bounds_and_are_recorded,
            a_placement_reserves_every_line_or_nothing,
            a_transition_holds_only_from_the_status_it_was_read_in,
            life_cycle_steps_follow_the_rules_and_release_stock_once,
            each_change_keeps_the_trace_of_the_span_that_made_it,
            an_idempotency_claim_is_exclusive_until_completed_or_released,
            order_listings_page_newest_first_without_gaps,
            listings_read_on_past_a_one_megabyte_page,
            rate_counters_roll_their_windows,
            login_failures_are_counted_forgotten_and_cleared,
            the_payment_ledger_counts_attempts_only_while_pending,
            a_pending_order_keeps_one_payment_intent_and_its_customers_action_until_it_moves_on,
            payment_status_follows_the_life_cycle,
            login_reservations_count_attempts_in_flight,
            connections_are_found_by_user_until_forgotten_or_expired,
            a_users_live_connections_are_found_past_any_number_of_stale_ones,
            orders_waiting_for_the_payment_step_are_found_until_settled,
        );
    };
    (@each $stores:expr; $($check:ident,)*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let stores: $crate::contract::Stores = $stores;
                $crate::contract::$check(&stores).await;
            }
        )*
    };
}

fn fresh_email() -> Email {
    Email::parse(&format!("contract-{}@example.com", uuid::Uuid::new_v4().simple())).unwrap()
}

async fn fresh_user(stores: &Stores) -> User {
    let user = User {
        id: UserId::generate(),
        email: fresh_email(),
        name: "Contract Tester".into(),
        phone: None,
        role: Role::Customer,
        created_at: now_rfc3339(),
    };
    stores.users.create(&user, "hash", "contract").await.unwrap();
    user
}

/// A product of its own category (so listings of it see nothing else) with `stock` units.
async fn fresh_product(stores: &Stores, price: i64, stock: i64) -> Product {
    let category = format!("contract-{}", uuid::Uuid::new_v4().simple());
    let product = NewProduct::parse("Contract mug", None, &category, price, None, stock)
        .unwrap()
        .into_product(ProductId::generate(), now_rfc3339());
    stores.editor.create(&product).await.unwrap();
    product
}

fn order_of(user: &User, lines: &[(&Product, i64)]) -> Order {
    order_paid_with(user, lines, None)
}

fn order_paid_with(user: &User, lines: &[(&Product, i64)], payment_token: Option<&str>) -> Order {
    let request: Vec<(String, i64)> = lines
        .iter()
        .map(|(product, units)| (product.id.to_string(), *units))
        .collect();
    let catalogue: Vec<Product> = lines.iter().map(|(product, _)| (*product).clone()).collect();
    let priced = NewOrder::parse(&request, payment_token)
        .unwrap()
        .price(&catalogue)
        .unwrap();
    Order::place(
        user.id.clone(),
        priced,
        payment_token.map(str::to_owned),
        &domain::Cause::untraced("contract"),
        now_rfc3339(),
    )
    .unwrap()
}

async fn stock_of(stores: &Stores, product: &Product) -> i64 {
    stores
        .catalogue
        .get(&product.id)
        .await
        .unwrap()
        .unwrap()
        .stock_quantity
        .units()
}

async fn placed(stores: &Stores, user: &User, lines: &[(&Product, i64)]) -> Order {
    let order = order_of(user, lines);
    assert_eq!(stores.orders.place(&order, None).await.unwrap(), PlaceOutcome::Placed);
    order
}

pub async fn a_second_account_with_a_taken_email_is_refused(stores: &Stores) {
    // Given an account
    let first = fresh_user(stores).await;
    // When another registers with the same email
    let second = User {
        id: UserId::generate(),
        ..first.clone()
    };
    let refused = stores.users.create(&second, "other-hash", "contract").await;
    // Then it is refused and the email still signs in as the first
    assert!(matches!(refused, Err(StoreError::AlreadyExists)), "{refused:?}");
    let login = stores.users.find_login(&first.email).await.unwrap().unwrap();
    assert_eq!(
        (login.user_id, login.password_hash.as_str()),
        (first.id.clone(), "hash")
    );
    assert_eq!(stores.users.get(&second.id).await.unwrap(), None);
}

pub async fn a_product_id_is_created_once_and_updates_need_the_product(stores: &Stores) {
    let product = fresh_product(stores, 1299, 4).await;
    let again = stores.editor.create(&product).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");
    let patch = domain::ProductPatch {
        price: Some(domain::Price::new(999).unwrap()),
        ..Default::default()
    };
    let updated = stores
        .editor
        .update(&product.id, &patch, &now_rfc3339())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((updated.price.minor_units(), updated.stock_quantity.units()), (999, 4));
    let missing = stores
        .editor
        .update(&ProductId::generate(), &patch, &now_rfc3339())
        .await
        .unwrap();
    assert_eq!(missing, None, "an update never creates a product");
}

pub async fn stock_adjustments_stay_in_bounds_and_are_recorded(stores: &Stores) {
    let product = fresh_product(stores, 500, 3).await;
    let adjustment = |delta: i64, reason: &str| Adjustment {
        delta,
        reason: reason.into(),
        by: "contract".into(),
        at: now_rfc3339(),
    };
    // Below zero: refused as a whole, nothing recorded
    let refused = stores
        .inventory
        .adjust_stock(&product.id, &adjustment(-5, "too much"), "c1")
        .await
        .unwrap();
    assert!(
        matches!(refused, AdjustOutcome::OutOfBounds { current } if current.units() == 3),
        "{refused:?}"
    );
    // Down to zero, then up again: applied and recorded, newest first
    let emptied = stores
        .inventory
        .adjust_stock(&product.id, &adjustment(-3, "breakage"), "c2")
        .await
        .unwrap();
    assert!(
        matches!(emptied, AdjustOutcome::Adjusted(stock) if stock.units() == 0),
        "{emptied:?}"
    );
    let restocked = stores
        .inventory
        .adjust_stock(&product.id, &adjustment(7, "delivery"), "c3")
        .await
        .unwrap();
    assert!(
        matches!(restocked, AdjustOutcome::Adjusted(stock) if stock.units() == 7),
        "{restocked:?}"
    );
    let missing = stores
        .inventory
        .adjust_stock(&ProductId::generate(), &adjustment(1, "x"), "c4")
        .await
        .unwrap();
    assert_eq!(missing, AdjustOutcome::NotFound);
    let recent = stores.inventory.recent_adjustments(&product.id, 10).await.unwrap();
    let reasons: Vec<&str> = recent.iter().map(|a| a.reason.as_str()).collect();
    assert_eq!(reasons, ["delivery", "breakage"]);
    assert_eq!(stock_of(stores, &product).await, 7);
}

pub async fn a_placement_reserves_every_line_or_nothing(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let plenty = fresh_product(stores, 1000, 5).await;
    let scarce = fresh_product(stores, 2000, 1).await;
    // One line short: the transaction is cancelled as a whole, and the short line is named
    let greedy = order_of(&buyer, &[(&plenty, 2), (&scarce, 2)]);
    let outcome = stores.orders.place(&greedy, None).await.unwrap();
    assert_eq!(outcome, PlaceOutcome::OutOfStock(scarce.id.clone()));
    assert_eq!(stores.orders.get(&greedy.id).await.unwrap(), None);
    assert_eq!(
        (stock_of(stores, &plenty).await, stock_of(stores, &scarce).await),
        (5, 1)
    );
    // Every line available: all reserved with the order
    let order = placed(stores, &buyer, &[(&plenty, 2), (&scarce, 1)]).await;
    assert_eq!(
        (stock_of(stores, &plenty).await, stock_of(stores, &scarce).await),
        (3, 0)
    );
    let stored = stores.orders.get(&order.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.total_amount), (OrderStatus::Pending, 4000));
    // The same order twice (a retried write): refused by its id's condition, or answered by the
    // replay of its idempotent transaction; either way nothing changes
    let twice = stores.orders.place(&order, None).await;
    assert!(twice.is_ok(), "{twice:?}");
    assert_eq!(stock_of(stores, &plenty).await, 3);
    assert_eq!(
        stores
            .orders
            .list_for_user(&buyer.id, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

pub async fn a_transition_holds_only_from_the_status_it_was_read_in(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    let read = placed(stores, &buyer, &[(&product, 2)]).await;
    let now = now_rfc3339();
    let confirmed = stores
        .orders
        .transition(
            &read,
            OrderStatus::Confirmed,
            None,
            &now,
            &domain::Cause::untraced("c1"),
        )
        .await
        .unwrap();
    assert_eq!(confirmed.map(|order| order.status), Some(OrderStatus::Confirmed));
    // A writer still holding the PENDING copy loses: nothing changes, no stock moves
    let stale = stores
        .orders
        .transition(
            &read,
            OrderStatus::Cancelled,
            Some(CancelReason::CustomerCancelled),
            &now,
            &domain::Cause::untraced("c2"),
        )
        .await
        .unwrap();
    assert_eq!(stale, None);
    assert_eq!(
        stores.orders.get(&read.id).await.unwrap().unwrap().status,
        OrderStatus::Confirmed
    );
    assert_eq!(stock_of(stores, &product).await, 3);
}

pub async fn each_change_keeps_the_trace_of_the_span_that_made_it(stores: &Stores) {
    // Given an order placed by a traced request
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    let placing = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut order = order_of(&buyer, &[(&product, 1)]);
    order.trace_parent = Some(placing.to_owned());
    stores.orders.place(&order, None).await.unwrap();
    assert_eq!(
        stores
            .orders
            .get(&order.id)
            .await
            .unwrap()
            .unwrap()
            .trace_parent
            .as_deref(),
        Some(placing)
    );
    // When a traced worker confirms it, its trace replaces the request's
    let paying = domain::Cause {
        correlation_id: "pay".into(),
        trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into()),
    };
    let now = now_rfc3339();
    let confirmed = stores
        .orders
        .transition(&order, OrderStatus::Confirmed, None, &now, &paying)
        .await
        .unwrap()
        .unwrap();
    let stored = stores.orders.get(&order.id).await.unwrap().unwrap();
    assert_eq!(stored.trace_parent, paying.trace_parent);
    assert_eq!(confirmed, stored);
    // And an untraced change passes on no trace at all
    stores
        .orders
        .transition(
            &stored,
            OrderStatus::Shipped,
            None,
            &now,
            &domain::Cause::untraced("ship"),
        )
        .await
        .unwrap();
    assert_eq!(stores.orders.get(&order.id).await.unwrap().unwrap().trace_parent, None);
}

pub async fn life_cycle_steps_follow_the_rules_and_release_stock_once(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    let read = placed(stores, &buyer, &[(&product, 2)]).await;
    // Cancelling from a stale copy re-reads and still cancels; the stock comes back once
    let cause = domain::Cause::untraced("c");
    let cancel = |order: Order| {
        step(
            stores.orders.as_ref(),
            order,
            Transition::Cancel,
            Some(CancelReason::CustomerCancelled),
            &cause,
        )
    };
    let moved = cancel(read.clone()).await.unwrap();
    assert!(matches!(moved, StepOutcome::Moved(ref order) if order.status == OrderStatus::Cancelled));
    assert_eq!(stock_of(stores, &product).await, 5);
    let repeated = cancel(read.clone()).await.unwrap();
    assert!(matches!(repeated, StepOutcome::AlreadyThere(_)), "{repeated:?}");
    assert_eq!(stock_of(stores, &product).await, 5, "stock is released once");
    // Shipping a cancelled order is refused by the life cycle
    let ship = step(
        stores.orders.as_ref(),
        read,
        Transition::Ship,
        None,
        &domain::Cause::untraced("c"),
    )
    .await;
    assert!(matches!(ship, Err(StepError::Refused(_))), "{ship:?}");
}

pub async fn an_idempotency_claim_is_exclusive_until_completed_or_released(stores: &Stores) {
    let key = format!("contract#{}", uuid::Uuid::new_v4());
    let Claim::Acquired(lease) = stores.idempotency.claim(&key, "h").await.unwrap() else {
        panic!("the first claim of a fresh key acquires it")
    };
    assert_eq!(stores.idempotency.claim(&key, "h").await.unwrap(), Claim::InProgress);
    assert_eq!(stores.idempotency.claim(&key, "other").await.unwrap(), Claim::Mismatch);
    let response = StoredResponse {
        status: 201,
        body: "{\"id\":1}".into(),
    };
    stores.idempotency.complete(&lease, &response).await.unwrap();
    assert_eq!(
        stores.idempotency.claim(&key, "h").await.unwrap(),
        Claim::Completed(response)
    );
    // A released claim can be taken again
    let other_key = format!("contract#{}", uuid::Uuid::new_v4());
    let Claim::Acquired(lease) = stores.idempotency.claim(&other_key, "h").await.unwrap() else {
        panic!("fresh key")
    };
    stores.idempotency.release(&lease).await.unwrap();
    assert!(matches!(
        stores.idempotency.claim(&other_key, "h").await.unwrap(),
        Claim::Acquired(_)
    ));
}

pub async fn order_listings_page_newest_first_without_gaps(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 100, 10).await;
    let mut placed_ids = Vec::new();
    for _ in 0..3 {
        placed_ids.push(placed(stores, &buyer, &[(&product, 1)]).await.id);
    }
    let first = stores.orders.list_for_user(&buyer.id, None, 2).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let cursor = first.next.clone().expect("a second page");
    let second = stores.orders.list_for_user(&buyer.id, Some(&cursor), 2).await.unwrap();
    assert_eq!(second.next, None);
    let listed: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|order| order.id.clone())
        .collect();
    placed_ids.reverse();
    assert_eq!(listed, placed_ids, "newest first, each once");
}

/// Notifications big enough that four of them pass DynamoDB's 1 MB limit of one query read.
pub async fn listings_read_on_past_a_one_megabyte_page(stores: &Stores) {
    const BODY_BYTES: usize = 300 * 1024;
    let user_id = UserId::generate().to_string();
    let body = "x".repeat(BODY_BYTES);
    for n in 0..4 {
        let event_id = format!("contract-{}-{n}", uuid::Uuid::new_v4().simple());
        let draft = Notification {
            id: notification_id(&event_id, &user_id, Channel::Email),
            user_id: user_id.clone(),
            event_id,
            event_type: "contract.test".into(),
            channel: Channel::Email,
            recipient: "contract@example.com".into(),
            subject: None,
            body: body.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            correlation_id: "contract".into(),
            created_at: now_rfc3339(),
            sent_at: None,
        };
        stores.notifications.record_attempt(&draft).await.unwrap();
    }
    // More than 1 MB matches: the page is still full, and the cursor leads to the rest
    let first = stores.notifications.list_for_user(&user_id, None, 3).await.unwrap();
    assert_eq!(first.items.len(), 3, "a page is filled across reads");
    let rest = stores
        .notifications
        .list_for_user(&user_id, first.next.as_ref(), 3)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next), (1, None));
    assert!(
        rest.items
            .iter()
            .chain(&first.items)
            .all(|n| n.body.len() == BODY_BYTES)
    );
}

pub async fn rate_counters_roll_their_windows(stores: &Stores) {
    let key = format!("rate#contract#{}", uuid::Uuid::new_v4());
    let counts = |current, previous| WindowCounts { current, previous };
    let expires_at = domain::unix_now() + 600;
    let counters = stores.counters.as_ref();
    assert_eq!(counters.count(&key, 1, expires_at).await.unwrap(), counts(1, 0));
    assert_eq!(counters.count(&key, 1, expires_at).await.unwrap(), counts(2, 0));
    // The next window starts from one, remembering the last
    assert_eq!(counters.count(&key, 2, expires_at).await.unwrap(), counts(1, 2));
    // A refused request comes off the current window only
    counters.uncount(&key, 2).await.unwrap();
    counters.uncount(&key, 1).await.unwrap();
    assert_eq!(counters.count(&key, 2, expires_at).await.unwrap(), counts(1, 2));
    // A window long gone weighs nothing; other keys are apart
    assert_eq!(counters.count(&key, 4, expires_at).await.unwrap(), counts(1, 0));
    let other = format!("{key}-other");
    assert_eq!(counters.count(&other, 4, expires_at).await.unwrap(), counts(1, 0));
}

pub async fn login_failures_are_counted_forgotten_and_cleared(stores: &Stores) {
    let email = Subject::email(&fresh_email());
    let ip = Subject::Ip(format!("contract-{}", uuid::Uuid::new_v4().simple()));
    let failures = stores.login_failures.as_ref();
    let expires_at = domain::unix_now() + 600;
    assert_eq!(failures.get(&email).await.unwrap(), None);
    for at in [1_000, 2_000, 3_000] {
        failures.record(&email, at, 0, expires_at).await.unwrap();
    }
    failures.record(&ip, 3_000, 0, expires_at).await.unwrap();
    let (by_email, by_ip) = failures.get_both(&email, &ip).await.unwrap();
    assert_eq!(by_email.map(|f| (f.count, f.last_at_ms)), Some((3, 3_000)));
    assert_eq!(by_ip.map(|f| f.count), Some(1));
    // Failures older than the memory are forgotten before counting the new one
    failures.record(&email, 10_000, 5_000, expires_at).await.unwrap();
    assert_eq!(failures.get(&email).await.unwrap().map(|f| f.count), Some(1));
    failures.clear(&email).await.unwrap();
    assert_eq!(failures.get(&email).await.unwrap(), None);
    assert_eq!(
        failures.get(&ip).await.unwrap().map(|f| f.count),
        Some(1),
        "the IP's count stays"
    );
}

async fn payment_of(stores: &Stores, order: &Order) -> PaymentStatus {
    stores.orders.get(&order.id).await.unwrap().unwrap().payment_status
}

fn store_reservation_ms() -> u64 {
    crate::login_failures::RESERVATION_MS
}

pub async fn login_reservations_count_attempts_in_flight(stores: &Stores) {
    let ip = Subject::Ip(format!("contract-{}", uuid::Uuid::new_v4().simple()));
    let failures = stores.login_failures.as_ref();
    let expires_at = domain::unix_now() + 600;
    // Concurrent reservations each see the ones before them
    let now = 1_000_000;
    let first = failures.reserve(&ip, now, expires_at).await.unwrap();
    let second = failures.reserve(&ip, now, expires_at).await.unwrap();
    assert_eq!((first.pending(now), second.pending(now), second.count), (1, 2, 0));
    // A reservation never settled (a crash) stops counting on its own
    assert_eq!(second.pending(now + store_reservation_ms() + 1), 0);
    // A failure counts on the same counter; releases give the reservations back
    failures.record(&ip, 5_000, 0, expires_at).await.unwrap();
    failures.release(&ip).await.unwrap();
    failures.release(&ip).await.unwrap();
    let settled = failures.get(&ip).await.unwrap().unwrap();
    assert_eq!((settled.count, settled.pending(now)), (1, 0));
    // Releasing a cleared counter creates nothing
    failures.clear(&ip).await.unwrap();
    failures.release(&ip).await.unwrap();
    assert_eq!(failures.get(&ip).await.unwrap(), None);
}

pub async fn payment_status_follows_the_life_cycle(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    let paid = placed(stores, &buyer, &[(&product, 1)]).await;
    assert_eq!(payment_of(stores, &paid).await, PaymentStatus::Pending);
    let confirmed = step(
        stores.orders.as_ref(),
        paid,
        Transition::ConfirmPayment,
        None,
        &domain::Cause::untraced("c"),
    )
    .await
    .unwrap();
    let confirmed = confirmed.into_order();
    assert_eq!(payment_of(stores, &confirmed).await, PaymentStatus::Paid);
    // Cancelling a paid order owes its money back, in the same write as the cancellation
    let cancelled = step(
        stores.orders.as_ref(),
        confirmed,
        Transition::Cancel,
        None,
        &domain::Cause::untraced("c"),
    )
    .await
    .unwrap();
    assert_eq!(
        payment_of(stores, &cancelled.into_order()).await,
        PaymentStatus::RefundPending
    );
    let declined = placed(stores, &buyer, &[(&product, 1)]).await;
    let reason = Some(CancelReason::PaymentDeclined);
    step(
        stores.orders.as_ref(),
        declined.clone(),
        Transition::DeclinePayment,
        reason,
        &domain::Cause::untraced("c"),
    )
    .await
    .unwrap();
    assert_eq!(payment_of(stores, &declined).await, PaymentStatus::Declined);
}

pub async fn the_payment_ledger_counts_attempts_only_while_pending(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    let order = placed(stores, &buyer, &[(&product, 1)]).await;
    let ledger = stores.ledger.as_ref();
    assert_eq!(ledger.record_attempt(&order.id).await.unwrap(), Some(1));
    assert_eq!(ledger.record_attempt(&order.id).await.unwrap(), Some(2));
    assert!(
        ledger.owe_refund(&order.id, 1000).await.is_err(),
        "only a cancelled order is owed a refund"
    );
    let cancelled = step(
        stores.orders.as_ref(),
        order.clone(),
        Transition::Cancel,
        None,
        &domain::Cause::untraced("c"),
    )
    .await
    .unwrap();
    assert!(matches!(cancelled, StepOutcome::Moved(_)));
    assert_eq!(
        ledger.record_attempt(&order.id).await.unwrap(),
        None,
        "no charge after cancelling"
    );
    ledger.owe_refund(&order.id, 1000).await.unwrap();
    assert_eq!(ledger.refund_owed(&order.id).await.unwrap(), Some(1000));
    assert_eq!(payment_of(stores, &order).await, PaymentStatus::RefundPending);
    ledger.refund_made(&order.id).await.unwrap();
    assert_eq!(ledger.refund_owed(&order.id).await.unwrap(), None);
    assert_eq!(payment_of(stores, &order).await, PaymentStatus::Refunded);
    let unknown = domain::OrderId::generate();
    assert_eq!(
        ledger.record_attempt(&unknown).await.unwrap(),
        None,
        "attempts never create an order"
    );
    assert!(ledger.refund_made(&unknown).await.is_err());
}

pub async fn a_pending_order_keeps_one_payment_intent_and_its_customers_action_until_it_moves_on(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    let order = placed(stores, &buyer, &[(&product, 1)]).await;
    let ledger = stores.ledger.as_ref();
    assert_eq!(ledger.intent_of(&order.id).await.unwrap(), None);
    // The first id stored wins; a second delivery's is answered with it.
    assert_eq!(
        ledger.remember_intent(&order.id, "pi_first").await.unwrap().as_deref(),
        Some("pi_first")
    );
    assert_eq!(
        ledger.remember_intent(&order.id, "pi_second").await.unwrap().as_deref(),
        Some("pi_first")
    );
    assert_eq!(ledger.intent_of(&order.id).await.unwrap().as_deref(), Some("pi_first"));
    let action = domain::PaymentAction {
        client_secret: "pi_first_secret_x".into(),
        expires_at: "2099-01-01T00:00:00.000000Z".into(),
    };
    assert!(ledger.require_action(&order.id, &action).await.unwrap());
    let waiting = stores.orders.get(&order.id).await.unwrap().unwrap();
    assert_eq!(waiting.payment_status, PaymentStatus::ActionRequired);
    assert_eq!(waiting.payment_action, Some(action.clone()));
    // Cancelling takes the secret away; nothing of the payment can be stored or asked for any more.
    let cancelled = stepped(stores, waiting, Transition::Cancel).await;
    let read = stores.orders.get(&cancelled.id).await.unwrap().unwrap();
    assert_eq!(
        (read.payment_status, read.payment_action),
        (PaymentStatus::Pending, None)
    );
    assert!(!ledger.require_action(&order.id, &action).await.unwrap());
    let other = placed(stores, &buyer, &[(&product, 1)]).await;
    stepped(stores, other.clone(), Transition::Cancel).await;
    assert_eq!(
        ledger.remember_intent(&other.id, "pi_late").await.unwrap(),
        None,
        "a cancelled order's payment is never stored"
    );
    assert_eq!(
        ledger
            .remember_intent(&domain::OrderId::generate(), "pi_x")
            .await
            .unwrap(),
        None,
        "never creates an order"
    );
}

/// `order` after the life-cycle step `transition` (with no reason), which must be allowed.
pub async fn stepped(stores: &Stores, order: Order, transition: Transition) -> Order {
    step(
        stores.orders.as_ref(),
        order,
        transition,
        None,
        &domain::Cause::untraced("contract"),
    )
    .await
    .unwrap()
    .into_order()
}

/// `order` as the sweep's index shows it now, among every order of its partition waiting since
/// before now.
async fn waiting(stores: &Stores, order: &Order) -> Option<WaitingOrder> {
    // The tables are shared with other checks and suites: look among many.
    waiting_in_its_shard(stores, order, &now_rfc3339()).await
}

async fn waiting_in_its_shard(stores: &Stores, order: &Order, before: &str) -> Option<WaitingOrder> {
    let shard = crate::unsettled::shard_of(&order.id);
    let found = stores.unsettled.waiting_in(&shard, before, 10_000).await.unwrap();
    found.into_iter().find(|found| found.order.id == order.id)
}

/// Checks on the emulator run against a live stack, whose payment worker acts on every order placed
/// here: what it may do first is allowed for, and only that.
pub async fn orders_waiting_for_the_payment_step_are_found_until_settled(stores: &Stores) {
    let buyer = fresh_user(stores).await;
    let product = fresh_product(stores, 1000, 5).await;
    // A placed order waits for its charge from the moment it was placed. (Its card fails transiently,
    // so a live stack's payment worker keeps it pending for seconds, until its attempts run out.)
    let order = order_paid_with(&buyer, &[(&product, 1)], Some("tok_error"));
    assert_eq!(stores.orders.place(&order, None).await.unwrap(), PlaceOutcome::Placed);
    let found = waiting(stores, &order).await.expect("a new order waits for its charge");
    assert_eq!(
        (found.since.as_str(), found.order.status),
        (order.created_at.as_str(), OrderStatus::Pending)
    );
    assert_eq!(
        waiting_in_its_shard(stores, &order, &order.created_at).await,
        None,
        "not before it began to wait"
    );
    // A sweep restarts its wait once: a second sweep holding the same sighting is refused
    let later = now_rfc3339();
    assert!(stores.unsettled.restart_wait(&found, &later).await.unwrap());
    assert!(
        !stores.unsettled.restart_wait(&found, &later).await.unwrap(),
        "taken already"
    );
    let again = waiting(stores, &order).await.expect("still waiting");
    assert_eq!(again.since, later);
    // Paid: no longer waiting, and a sweep that saw it before leaves it alone
    let confirmed = stepped(stores, order.clone(), Transition::ConfirmPayment).await;
    assert_eq!(waiting(stores, &order).await, None, "settled");
    assert!(!stores.unsettled.restart_wait(&again, &now_rfc3339()).await.unwrap());
    // Cancelled after payment: it waits for its refund until the refund is made
    stepped(stores, confirmed, Transition::Cancel).await;
    owed_until_refunded(stores, &order).await;
    // Cancelled before any charge: nothing to settle, until a charge turns up and is owed back
    let never_charged = placed(stores, &buyer, &[(&product, 1)]).await;
    stepped(stores, never_charged.clone(), Transition::Cancel).await;
    assert_eq!(waiting(stores, &never_charged).await, None);
    if stores.ledger.owe_refund(&never_charged.id, 1000).await.is_ok() {
        owed_until_refunded(stores, &never_charged).await;
    } else {
        // Only a live stack's worker can have refunded it first; nothing else refuses the debt.
        assert_eq!(payment_of(stores, &never_charged).await, PaymentStatus::Refunded);
    }
}

/// A cancelled order owed a refund waits in the index until the refund is made (by this check, or
/// first by a live stack's payment worker, whose own refund_made takes it out the same way).
async fn owed_until_refunded(stores: &Stores, order: &Order) {
    match waiting(stores, order).await {
        Some(owed) => assert_eq!(owed.order.payment_status, PaymentStatus::RefundPending),
        None => assert_eq!(
            payment_of(stores, order).await,
            PaymentStatus::Refunded,
            "neither owed nor refunded"
        ),
    }
    stores.ledger.refund_made(&order.id).await.unwrap();
    assert_eq!(waiting(stores, order).await, None, "refunded");
}

pub async fn connections_are_found_by_user_until_forgotten_or_expired(stores: &Stores) {
    // Given two connections of one user and one of another, recorded at `now`
    let (owner, other) = (UserId::generate(), UserId::generate());
    let now = 1_800_000_000;
    let open = |user: &UserId| {
        Connection::opened(
            &format!("conn-{}", uuid::Uuid::new_v4().simple()),
            user,
            now_rfc3339(),
            now,
        )
    };
    let (first, second, others) = (open(&owner), open(&owner), open(&other));
    for connection in [&first, &second, &others] {
        stores.connections.register(connection).await.unwrap();
    }
    // When the owner's connections are read, then exactly theirs are found
    let mut found = stores.connections.of_user(&owner.to_string(), now).await.unwrap();
    found.sort();
    let mut expected = vec![first.connection_id.clone(), second.connection_id.clone()];
    expected.sort();
    assert_eq!(found, expected);
    // When one is forgotten (twice: forgetting is idempotent), then only the other is left
    stores.connections.forget(&first.connection_id).await.unwrap();
    stores.connections.forget(&first.connection_id).await.unwrap();
    let found = stores.connections.of_user(&owner.to_string(), now).await.unwrap();
    assert_eq!(found, vec![second.connection_id.clone()]);
    // When the records' lifetime has passed, then no connection is found, even before TTL deletes them
    let found = stores
        .connections
        .of_user(&owner.to_string(), second.expires_at)
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    // A connection names its user until it is forgotten or expired
    let user_of = |id: String, at: u64| async move { stores.connections.user_of(&id, at).await.unwrap() };
    assert_eq!(
        user_of(second.connection_id.clone(), now).await,
        Some(owner.to_string())
    );
    assert_eq!(user_of(second.connection_id.clone(), second.expires_at).await, None);
    assert_eq!(user_of(first.connection_id.clone(), now).await, None);
}

pub async fn a_users_live_connections_are_found_past_any_number_of_stale_ones(stores: &Stores) {
    // Given a user whose 150 connections of an earlier day expired unseen, and one open now
    let user = UserId::generate();
    let earlier = 1_800_000_000;
    let now = earlier + 86_400;
    for n in 0..150 {
        let stale = Connection::opened(
            &format!("stale-{n}-{}", uuid::Uuid::new_v4().simple()),
            &user,
            now_rfc3339(),
            earlier,
        );
        stores.connections.register(&stale).await.unwrap();
    }
    let live = Connection::opened(
        &format!("live-{}", uuid::Uuid::new_v4().simple()),
        &user,
        now_rfc3339(),
        now,
    );
    stores.connections.register(&live).await.unwrap();
    // When their connections are read, the live one is found (the lookup pages past the others)
    let found = stores.connections.of_user(&user.to_string(), now).await.unwrap();
    assert_eq!(found, vec![live.connection_id]);
}

#[cfg(test)]
mod on_the_fakes {
    crate::storage_contract!(crate::contract::Stores::in_memory());
}
