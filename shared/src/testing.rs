//! Fixtures for handler unit tests: requests from `events/*.json`, tokens signed with a test secret,
//! and response decoding. Test-only code: failing loudly is its job.
#![allow(clippy::panic)]

use lambda_http::http::HeaderValue;
use lambda_http::{Body, Request, Response};

use crate::auth::TokenService;
use crate::domain::{Role, UserId};
use crate::state::SigningSecret;

pub const TEST_SECRET: &[u8] = b"unit-test-signing-secret-0123456789abcdef";

pub fn secret() -> SigningSecret {
    SigningSecret::new(TEST_SECRET)
}

pub fn tokens() -> TokenService {
    secret().tokens(3600)
}

/// The request an API Gateway event file describes.
pub fn request(event_json: &str) -> Request {
    match crate::http::request_from_event(event_json) {
        Ok(request) => request,
        Err(error) => panic!("event fixture does not parse: {error}"),
    }
}

/// The same request, carrying a valid token for `user_id` with `role`.
pub fn as_user(mut request: Request, user_id: &UserId, role: Role) -> Request {
    let token = match tokens().issue(user_id, role) {
        Ok(token) => token.access_token,
        Err(error) => panic!("cannot issue test token: {error}"),
    };
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        request.headers_mut().insert("authorization", value);
    }
    request
}

/// The request without any Authorization header.
pub fn anonymous(mut request: Request) -> Request {
    request.headers_mut().remove("authorization");
    request
}

pub fn json_of(response: &Response<Body>) -> serde_json::Value {
    match serde_json::from_slice(response.body().as_ref()) {
        Ok(value) => value,
        Err(error) => panic!("response body is not JSON: {error}"),
    }
}

/// A pending order of two mugs (12.99 each), with no storage behind it.
pub fn sample_order() -> crate::domain::Order {
    use crate::domain::{NewOrder, NewProduct, Order, ProductId};
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
        "sample",
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
    pub orders: std::sync::Arc<crate::repo::memory::InMemoryOrders>,
    pub products: std::sync::Arc<crate::repo::memory::InMemoryProducts>,
    pub users: std::sync::Arc<crate::repo::memory::InMemoryUsers>,
    pub idempotency: std::sync::Arc<crate::idempotency::InMemoryIdempotency>,
    pub buyer: UserId,
}

impl OrderWorld {
    pub async fn new(mug_stock: i64) -> Self {
        use crate::domain::{Email, NewProduct, ProductId, User};
        use crate::repo::products::ProductRepository as _;
        use crate::repo::users::UserRepository as _;
        use std::sync::Arc;

        let products = Arc::new(crate::repo::memory::InMemoryProducts::default());
        for (id, name, price, stock) in [(MUG_ID, "Mug", 1299, mug_stock), (KETTLE_ID, "Kettle", 4599, 10)] {
            let product = NewProduct::parse(name, Some("sample"), "kitchen", price, None, stock).and_then(|p| {
                Ok(p.into_product(
                    ProductId::parse(id).map_err(|_| Default::default())?,
                    crate::domain::now_rfc3339(),
                ))
            });
            let Ok(product) = product else {
                panic!("sample product is invalid")
            };
            if products.create(&product).await.is_err() {
                panic!("cannot create sample product");
            }
        }
        let users = Arc::new(crate::repo::memory::InMemoryUsers::default());
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
            created_at: crate::domain::now_rfc3339(),
        };
        if users.create(&user, "hash", "test").await.is_err() {
            panic!("cannot create sample buyer");
        }
        let idempotency = Arc::new(crate::idempotency::InMemoryIdempotency::default());
        let orders = Arc::new(crate::repo::memory::InMemoryOrders::new(
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
        use crate::domain::{NewOrder, Order, OrderId};
        use crate::repo::orders::{OrderRepository as _, PlaceOutcome};
        use crate::repo::products::ProductRepository as _;

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
            "sample-correlation",
            crate::domain::now_rfc3339(),
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

    pub async fn sample_order(&self) -> crate::domain::Order {
        use crate::repo::orders::OrderRepository as _;
        let Ok(id) = crate::domain::OrderId::parse(SAMPLE_ORDER_ID) else {
            panic!("sample order id")
        };
        match self.orders.get(&id).await {
            Ok(Some(order)) => order,
            _ => panic!("sample order missing"),
        }
    }

    /// Moves the sample order to `status` through the repository, as the payment step would.
    pub async fn set_sample_status(&self, status: crate::domain::OrderStatus) {
        use crate::repo::orders::OrderRepository as _;
        let order = self.sample_order().await;
        if !matches!(
            self.orders
                .transition(&order, status, None, &crate::domain::now_rfc3339(), "test-set-up")
                .await,
            Ok(Some(_))
        ) {
            panic!("cannot move the sample order to {status:?}");
        }
    }

    pub async fn stock(&self, id: &str) -> i64 {
        use crate::repo::products::ProductRepository as _;
        let Ok(id) = crate::domain::ProductId::parse(id) else {
            panic!("product id")
        };
        match self.products.get(&id).await {
            Ok(Some(product)) => product.stock_quantity.units(),
            _ => panic!("product missing"),
        }
    }
}

/// Counts the requests a DynamoDB client sends (retries included): how round trips are measured.
#[derive(Debug, Clone, Default)]
pub struct RoundTripCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl RoundTripCounter {
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.0.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// A DynamoDB client built from `sdk` that reports every request it sends to this counter.
    pub fn client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(self.clone())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

impl aws_sdk_dynamodb::config::Intercept for RoundTripCounter {
    fn name(&self) -> &'static str {
        "RoundTripCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _config: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl OrderWorld {
    /// What the routes acting on one order need, on this world's orders and the test signing key.
    pub fn order_deps(&self) -> crate::orders::OrderDeps {
        crate::orders::OrderDeps {
            orders: self.orders.clone(),
            tokens: tokens(),
        }
    }

    /// Gives the sample order a payment token (the worker reads it from the stored order).
    pub async fn set_sample_payment_token(&self, token: Option<&str>) {
        self.orders.set_payment_token_for_tests(SAMPLE_ORDER_ID, token);
    }
}

/// Records the retry delays a consumer asks for, instead of talking to SQS.
#[derive(Default)]
pub struct RecordedDelays(std::sync::Mutex<Vec<i32>>);

impl RecordedDelays {
    pub fn recorded(&self) -> Vec<i32> {
        self.0.lock().map(|delays| delays.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl crate::sqs::RetryDelay for RecordedDelays {
    async fn delay(&self, _message: &aws_lambda_events::event::sqs::SqsMessage, seconds: i32) {
        if let Ok(mut delays) = self.0.lock() {
            delays.push(seconds);
        }
    }
}
