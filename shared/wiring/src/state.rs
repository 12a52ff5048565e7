//! What every function builds once at cold start and reuses for every invocation: its settings, the
//! AWS SDK configuration and the storage adapters of the deployment's tables.

use std::sync::Arc;

use aws_config::BehaviorVersion;
use store::idempotency::DynamoIdempotencyStore;
use store::notifications::DynamoNotificationRepository;
use store::orders::{DynamoOrderRepository, OrderTables};
use store::payments::DynamoPaymentLedger;
use store::products::DynamoProductRepository;
use store::users::DynamoUserRepository;

use crate::config::{Config, ConfigError, Env};

/// Settings and AWS clients, all built from one SDK configuration, so `AWS_ENDPOINT_URL` (an
/// emulator) redirects every client at once.
#[derive(Clone)]
pub struct AppState {
    pub config: Config,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl AppState {
    /// Reads the process environment once and loads the SDK configuration.
    pub async fn from_env() -> Result<(Self, Env), ConfigError> {
        let env = Env::process();
        let config = Config::from_env(&env)?;
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        Ok((Self { config, sdk, dynamodb }, env))
    }

    pub fn users(&self) -> Arc<DynamoUserRepository> {
        Arc::new(DynamoUserRepository::new(
            self.dynamodb.clone(),
            &self.config.tables.users,
        ))
    }

    /// The products table: callers keep only the capability they need (`ProductCatalog`,
    /// `ProductEditor`, `Inventory`).
    pub fn products(&self) -> Arc<DynamoProductRepository> {
        Arc::new(DynamoProductRepository::new(
            self.dynamodb.clone(),
            &self.config.tables.products,
            &self.config.tables.inventory_adjustments,
        ))
    }

    pub fn idempotency(&self) -> Arc<DynamoIdempotencyStore> {
        Arc::new(DynamoIdempotencyStore::new(
            self.dynamodb.clone(),
            &self.config.tables.idempotency,
        ))
    }

    pub fn notifications(&self) -> Arc<DynamoNotificationRepository> {
        Arc::new(DynamoNotificationRepository::new(
            self.dynamodb.clone(),
            &self.config.tables.notifications,
        ))
    }

    pub fn orders(&self) -> Arc<DynamoOrderRepository> {
        let tables = OrderTables {
            orders: self.config.tables.orders.clone(),
            products: self.config.tables.products.clone(),
            users: self.config.tables.users.clone(),
        };
        let idempotency = DynamoIdempotencyStore::new(self.dynamodb.clone(), &self.config.tables.idempotency);
        Arc::new(DynamoOrderRepository::new(self.dynamodb.clone(), tables, idempotency))
    }

    pub fn payment_ledger(&self) -> Arc<DynamoPaymentLedger> {
        Arc::new(DynamoPaymentLedger::new(
            self.dynamodb.clone(),
            &self.config.tables.orders,
        ))
    }
}
