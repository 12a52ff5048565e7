//! What an API function builds once at cold start: the deployment's wiring plus the signing secret
//! its tokens and cursors are made from, the rate limiter and the login guard.

use std::ops::Deref;
use std::sync::Arc;

use store::login_failures::DynamoLoginFailures;
use store::rate_counter::DynamoWindowCounter;
use wiring::{AppState, ConfigError, Env};

use crate::auth::TokenService;
use crate::cursor::CursorCodec;
use crate::login_guard::LoginGuard;
use crate::ratelimit::{RateLimitSettings, RateLimiter};

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

/// The wiring of an API function; dereferences to [`AppState`] for the storage adapters.
pub struct ApiState {
    app: AppState,
    env: Env,
    /// Read once per cold start however many parts of the function need it.
    signing_secret: tokio::sync::OnceCell<SigningSecret>,
}

impl Deref for ApiState {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl ApiState {
    pub async fn from_env() -> Result<Self, InitError> {
        let (app, env) = AppState::from_env().await?;
        Ok(Self {
            app,
            env,
            signing_secret: tokio::sync::OnceCell::new(),
        })
    }

    /// The settings this function was deployed with.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The per-client rate limiter of an API function (see [`RateLimitSettings`]).
    pub async fn rate_limiter(&self) -> Result<RateLimiter, InitError> {
        let settings = RateLimitSettings::from_env(&self.env)?;
        let counter = Arc::new(DynamoWindowCounter::new(self.dynamodb.clone(), settings.table));
        Ok(RateLimiter::new(
            counter,
            settings.window,
            settings.scope,
            self.tokens().await?,
        ))
    }

    /// The per-client rate limiter for callers known by their user id (no token to verify, so no
    /// signing secret to read).
    pub fn user_rate_limiter(&self) -> Result<RateLimiter, InitError> {
        let settings = RateLimitSettings::from_env(&self.env)?;
        let counter = Arc::new(DynamoWindowCounter::new(self.dynamodb.clone(), settings.table));
        Ok(RateLimiter::of_users(counter, settings.window))
    }

    /// The pagination cursor codec of the deployment's signing secret.
    pub async fn cursors(&self) -> Result<CursorCodec, InitError> {
        Ok(self.signing_secret().await?.cursors())
    }

    /// The token service of the deployment's signing secret and token lifetime.
    pub async fn tokens(&self) -> Result<TokenService, InitError> {
        Ok(self.signing_secret().await?.tokens(self.config.token_ttl_secs))
    }

    /// Login protection (see [`LoginGuard::policies_from_env`]).
    pub fn login_guard(&self) -> Result<LoginGuard, InitError> {
        let policies = LoginGuard::policies_from_env(&self.env)?;
        let table = self.env.required("GUARDS_TABLE")?;
        Ok(LoginGuard {
            failures: Arc::new(DynamoLoginFailures::new(self.dynamodb.clone(), table)),
            per_email: policies.per_email,
            per_account: policies.per_account,
            per_ip: policies.per_ip,
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
        let (attempt, operation) = wiring::state::AWS_INIT_TIMEOUTS;
        let timeouts = aws_sdk_secretsmanager::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(attempt)
            .operation_timeout(operation)
            .build();
        let config = aws_sdk_secretsmanager::config::Builder::from(&self.sdk)
            .timeout_config(timeouts)
            .build();
        let client = aws_sdk_secretsmanager::Client::from_conf(config);
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
