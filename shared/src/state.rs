//! What a function builds once at cold start and reuses for every invocation.

use std::sync::Arc;

use aws_config::BehaviorVersion;

use crate::auth::TokenService;
use crate::config::{Config, ConfigError};
use crate::cursor::CursorCodec;
use crate::idempotency::{DynamoIdempotencyStore, IdempotencyStore};
use crate::login_guard::{DynamoLoginFailures, LoginGuard};
use crate::ratelimit::{DynamoWindowCounter, RateLimiter};
use crate::repo::notifications::{DynamoNotificationRepository, NotificationRepository};
use crate::repo::orders::{DynamoOrderRepository, OrderRepository, OrderTables};
use crate::repo::products::{DynamoProductRepository, ProductRepository};
use crate::repo::users::{DynamoUserRepository, UserRepository};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not read the signing secret {secret_id}")]
    Secret {
        secret_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Configuration and AWS clients, all built from one SDK configuration, so `AWS_ENDPOINT_URL`
/// (an emulator) redirects every client at once.
#[derive(Clone)]
pub struct AppState {
    pub config: Config,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Read once per cold start however many parts of the function need it.
    signing_secret: Arc<tokio::sync::OnceCell<SigningSecret>>,
}

impl AppState {
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        Ok(Self {
            config,
            sdk,
            dynamodb,
            signing_secret: Arc::default(),
        })
    }

    pub fn users(&self) -> Arc<dyn UserRepository> {
        Arc::new(DynamoUserRepository::new(
            self.dynamodb.clone(),
            &self.config.users_table,
        ))
    }

    pub fn products(&self) -> Arc<dyn ProductRepository> {
        Arc::new(DynamoProductRepository::new(
            self.dynamodb.clone(),
            &self.config.products_table,
            &self.config.inventory_adjustments_table,
        ))
    }

    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(DynamoIdempotencyStore::new(
            self.dynamodb.clone(),
            &self.config.idempotency_table,
        ))
    }

    pub fn notifications(&self) -> Arc<dyn NotificationRepository> {
        Arc::new(DynamoNotificationRepository::new(
            self.dynamodb.clone(),
            &self.config.notifications_table,
        ))
    }

    pub fn orders(&self) -> Arc<dyn OrderRepository> {
        let tables = OrderTables {
            orders: self.config.orders_table.clone(),
            products: self.config.products_table.clone(),
            users: self.config.users_table.clone(),
        };
        let idempotency = DynamoIdempotencyStore::new(self.dynamodb.clone(), &self.config.idempotency_table);
        Arc::new(DynamoOrderRepository::new(self.dynamodb.clone(), tables, idempotency))
    }

    /// The per-client rate limiter of an API function, configured from the environment
    /// (see [`RateLimiter::settings_from_env`]).
    pub async fn rate_limiter(&self) -> Result<RateLimiter, InitError> {
        let (window, scope, table) = RateLimiter::settings_from_env()?;
        let counter = Arc::new(DynamoWindowCounter::new(self.dynamodb.clone(), table));
        Ok(RateLimiter::new(counter, window, scope, self.tokens().await?))
    }

    /// The pagination cursor codec of the deployment's signing secret.
    pub async fn cursors(&self) -> Result<CursorCodec, InitError> {
        Ok(self.signing_secret().await?.cursors())
    }

    /// The token service of the deployment's signing secret and token lifetime.
    pub async fn tokens(&self) -> Result<TokenService, InitError> {
        Ok(self.signing_secret().await?.tokens(self.config.token_ttl_secs))
    }

    /// Login protection, configured from the environment (see [`LoginGuard::policies_from_env`]).
    pub fn login_guard(&self) -> Result<LoginGuard, InitError> {
        let (per_email, per_ip) = LoginGuard::policies_from_env()?;
        let table = crate::config::required_env("GUARDS_TABLE")?;
        Ok(LoginGuard {
            failures: Arc::new(DynamoLoginFailures::new(self.dynamodb.clone(), table)),
            per_email,
            per_ip,
        })
    }

    /// The deployment's signing secret (one Secrets Manager call per cold start).
    pub async fn signing_secret(&self) -> Result<SigningSecret, InitError> {
        self.signing_secret
            .get_or_try_init(|| self.read_signing_secret())
            .await
            .cloned()
    }

    async fn read_signing_secret(&self) -> Result<SigningSecret, InitError> {
        let secret_id = self.config.jwt_secret_id.clone();
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let output = client
            .get_secret_value()
            .secret_id(&secret_id)
            .send()
            .await
            .map_err(|error| InitError::Secret {
                secret_id: secret_id.clone(),
                source: Box::new(error),
            })?;
        let value = output.secret_string().unwrap_or_default();
        if value.len() < 32 {
            return Err(InitError::Secret {
                secret_id,
                source: "the secret is shorter than 32 characters".into(),
            });
        }
        Ok(SigningSecret(value.as_bytes().to_vec()))
    }
}

/// The deployment's signing secret, from which token and cursor keys are made.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn tokens(&self, ttl_secs: u64) -> TokenService {
        TokenService::new(&self.0, ttl_secs)
    }

    pub fn cursors(&self) -> CursorCodec {
        CursorCodec::new(&self.0)
    }
}
