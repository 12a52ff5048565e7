//! Fixtures for tests: sample data and an in-memory shop. Test-only code: failing loudly is its job.
#![allow(clippy::panic)]

use domain::{Role, UserId};

/// A pending order of two mugs (12.99 each), with no storage behind it.
pub fn sample_order() -> domain::Order {
    use domain::{NewOrder, NewProduct, Order, ProductId};
    let product = NewProduct::parse("Mug", None, "kitchen", 1299, None, 5)
        .ok()
        .zip(ProductId::parse(MUG_ID).ok())
        .map(|(product, id)| product.into_product(id, "2026-01-01T00:00:00.000000Z".into()));
    let Some(product) = product else {
        panic!("sample product")
    };
    let Ok(request) = NewOrder::parse(&[(MUG_ID.into(), 2)], None) else {
        panic!("sample order")
    };
    let Ok(lines) = request.price(&[product]) else {
        panic!("sample lines")
    };
    match Order::place(
        UserId::generate(),
        lines,
        None,
        &domain::Cause::untraced("sample"),
        "2026-01-01T00:00:00.000000Z".into(),
    ) {
        Some(order) => order,
        None => panic!("sample total"),
    }
}

pub const MUG_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-000000000001";
pub const KETTLE_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-000000000002";
pub const SAMPLE_ORDER_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-0000000000a1";
pub const SAMPLE_BUYER_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-0000000000b1";

/// An in-memory shop for the order functions' tests: a Mug (12.99) and a Kettle (45.99) in stock, a
/// registered buyer, and optionally the sample order (2 mugs and a kettle, `SAMPLE_ORDER_ID`).
pub struct OrderWorld {
    pub orders: std::sync::Arc<crate::memory::InMemoryOrders>,
    pub products: std::sync::Arc<crate::memory::InMemoryProducts>,
    pub users: std::sync::Arc<crate::memory::InMemoryUsers>,
    pub idempotency: std::sync::Arc<crate::idempotency::InMemoryIdempotency>,
    pub buyer: UserId,
}

impl OrderWorld {
    pub async fn new(mug_stock: i64) -> Self {
        use crate::products::ProductEditor as _;
        use crate::users::UserRepository as _;
        use domain::{Email, NewProduct, ProductId, User};
        use std::sync::Arc;

        let products = Arc::new(crate::memory::InMemoryProducts::default());
        for (id, name, price, stock) in [(MUG_ID, "Mug", 1299, mug_stock), (KETTLE_ID, "Kettle", 4599, 10)] {
            let product = NewProduct::parse(name, Some("sample"), "kitchen", price, None, stock).and_then(|p| {
                Ok(p.into_product(
                    ProductId::parse(id).map_err(|_| Default::default())?,
                    domain::now_rfc3339(),
                ))
            });
            let Ok(product) = product else {
                panic!("sample product is invalid")
            };
            if products.create(&product).await.is_err() {
                panic!("cannot create sample product");
            }
        }
        let users = Arc::new(crate::memory::InMemoryUsers::default());
        let Ok(buyer) = UserId::parse(SAMPLE_BUYER_ID) else {
            panic!("sample buyer id")
        };
        let Ok(email) = Email::parse("buyer@example.com") else {
            panic!("sample email")
        };
        let user = User {
            id: buyer.clone(),
            email,
            name: "Bea Buyer".into(),
            phone: None,
            role: Role::Customer,
            created_at: domain::now_rfc3339(),
        };
        if users.create(&user, "hash", "test").await.is_err() {
            panic!("cannot create sample buyer");
        }
        let idempotency = Arc::new(crate::idempotency::InMemoryIdempotency::default());
        let orders = Arc::new(crate::memory::InMemoryOrders::new(
            products.clone(),
            users.clone(),
            idempotency.clone(),
        ));
        Self {
            orders,
            products,
            users,
            idempotency,
            buyer,
        }
    }

    /// The world with the sample order placed (stock taken) in status `PENDING`.
    pub async fn with_sample_order() -> Self {
        use crate::orders::{OrderRepository as _, PlaceOutcome};
        use crate::products::ProductCatalog as _;
        use domain::{NewOrder, Order, OrderId};

        let world = Self::new(5).await;
        let Ok(request) = NewOrder::parse(&[(MUG_ID.into(), 2), (KETTLE_ID.into(), 1)], None) else {
            panic!("sample order")
        };
        let Ok(catalogue) = world.products.get_many(&request.product_ids()).await else {
            panic!("catalogue")
        };
        let Ok(lines) = request.price(&catalogue) else {
            panic!("sample order lines")
        };
        let Some(mut order) = Order::place(
            world.buyer.clone(),
            lines,
            None,
            &domain::Cause::untraced("sample-correlation"),
            domain::now_rfc3339(),
        ) else {
            panic!("sample order total")
        };
        let Ok(id) = OrderId::parse(SAMPLE_ORDER_ID) else {
            panic!("sample order id")
        };
        order.id = id;
        if !matches!(world.orders.place(&order, None).await, Ok(PlaceOutcome::Placed)) {
            panic!("cannot place sample order");
        }
        world
    }

    pub async fn sample_order(&self) -> domain::Order {
        use crate::orders::OrderRepository as _;
        let Ok(id) = domain::OrderId::parse(SAMPLE_ORDER_ID) else {
            panic!("sample order id")
        };
        match self.orders.get(&id).await {
            Ok(Some(order)) => order,
            _ => panic!("sample order missing"),
        }
    }

    /// Moves the sample order to `status` through the repository, as the payment step would.
    pub async fn set_sample_status(&self, status: domain::OrderStatus) {
        use crate::orders::OrderRepository as _;
        let order = self.sample_order().await;
        if !matches!(
            self.orders
                .transition(
                    &order,
                    status,
                    None,
                    &domain::now_rfc3339(),
                    &domain::Cause::untraced("test-set-up")
                )
                .await,
            Ok(Some(_))
        ) {
            panic!("cannot move the sample order to {status:?}");
        }
    }

    pub async fn stock(&self, id: &str) -> i64 {
        use crate::products::ProductCatalog as _;
        let Ok(id) = domain::ProductId::parse(id) else {
            panic!("product id")
        };
        match self.products.get(&id).await {
            Ok(Some(product)) => product.stock_quantity.units(),
            _ => panic!("product missing"),
        }
    }

    /// Gives the sample order a payment token (the worker reads it from the stored order).
    pub async fn set_sample_payment_token(&self, token: Option<&str>) {
        self.orders.set_payment_token_for_tests(SAMPLE_ORDER_ID, token);
    }
}
