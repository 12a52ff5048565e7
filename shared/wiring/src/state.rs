//! What every function builds once at cold start and reuses for every invocation: its settings, the
//! AWS SDK configuration and the storage adapters of the deployment's tables.

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls;
use store::catalogue_cache::{CachedCatalog, CatalogueCache};
use store::idempotency::DynamoIdempotencyStore;
use store::notifications::DynamoNotificationRepository;
use store::orders::{DynamoOrderRepository, OrderTables};
use store::payments::DynamoPaymentLedger;
use store::products::{DynamoProductRepository, ProductCatalog};
use store::users::DynamoUserRepository;

use crate::config::{Config, ConfigError, Env};
use crate::faults::FaultPlan;

/// How long an AWS call may take with the SDK's retries (`AWS_CALL_TIMEOUT_SECONDS`, 2 to 9, default
/// 5), each attempt 2/5 of it: well inside the functions' 10 s timeout, so a hanging dependency fails
/// the request (503) or the message (retried) instead of getting the invocation killed mid-way.
pub const AWS_CALL_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 2..=9;
pub const AWS_CALL_TIMEOUT_DEFAULT_SECS: u64 = 5;

/// The SDK's operation and attempt timeouts for a call budget of `seconds`.
pub fn call_timeouts(seconds: u64) -> (Duration, Duration) {
    let operation = Duration::from_secs(seconds);
    (operation, operation * 2 / 5)
}
/// The same for calls made once at cold start (the signing secret), which a burst of cold starts can
/// slow down: still inside the init phase's 10 s.
pub const AWS_INIT_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(4), Duration::from_secs(8));
const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings and AWS clients, all built from one SDK configuration, so `AWS_ENDPOINT_URL` (an
/// emulator) redirects every client at once, and every client has the same timeouts and the same
/// fault injection (`FaultInjection`).
#[derive(Clone)]
pub struct AppState {
    pub config: Config,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The deployment's fault injection rules (empty: none), for the provider adapters.
    pub faults: FaultPlan,
    /// The instance's catalogue cache, when this function serves catalogue reads with one.
    pub catalogue_cache: Option<Arc<CatalogueCache>>,
}

impl AppState {
    /// Reads the process environment once and loads the SDK configuration.
    pub async fn from_env() -> Result<(Self, Env), ConfigError> {
        let env = Env::process();
        let config = Config::from_env(&env)?;
        let faults = FaultPlan::from_env(&env)?;
        let (operation, attempt) = call_timeouts(env.number(
            "AWS_CALL_TIMEOUT_SECONDS",
            AWS_CALL_TIMEOUT_SECS,
            Some(AWS_CALL_TIMEOUT_DEFAULT_SECS),
        )?);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(AWS_CONNECT_TIMEOUT)
            .operation_attempt_timeout(attempt)
            .operation_timeout(operation)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if !faults.is_empty() {
            tracing::warn!("fault injection is on (FAULT_INJECTION)");
            let https = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .build_https();
            loader = loader.http_client(faults.http_client(https));
        }
        let sdk = loader.load().await;
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(crate::telemetry::CountDynamoDbRequests)
                .build(),
        );
        let catalogue_cache = CatalogueCache::new(Duration::from_secs(config.catalogue_cache_secs));
        Ok((
            Self {
                config,
                sdk,
                dynamodb,
                faults,
                catalogue_cache,
            },
            env,
        ))
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

    /// The catalogue as the read routes see it: through the instance's cache when there is one.
    /// Never for stock decisions or prices at placement (those read [`Self::products`]).
    pub fn catalogue(&self) -> Arc<dyn ProductCatalog> {
        let table: Arc<dyn ProductCatalog> = self.products();
        match &self.catalogue_cache {
            Some(cache) => Arc::new(CachedCatalog::new(table, Arc::clone(cache))),
            None => table,
        }
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
        Arc::new(
            DynamoOrderRepository::new(self.dynamodb.clone(), tables, idempotency)
                .with_catalogue_cache(self.catalogue_cache.clone()),
        )
    }

    pub fn payment_ledger(&self) -> Arc<DynamoPaymentLedger> {
        Arc::new(DynamoPaymentLedger::new(
            self.dynamodb.clone(),
            &self.config.tables.orders,
        ))
    }
}
