//! Configuration read once from the environment at init; a missing or malformed variable stops the
//! function at cold start with a message that names it.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub users_table: String,
    pub products_table: String,
    pub orders_table: String,
    pub idempotency_table: String,
    pub notifications_table: String,
    pub inventory_adjustments_table: String,
    /// Name or ARN of the Secrets Manager secret that signs tokens and cursors.
    pub jwt_secret_id: String,
    pub token_ttl_secs: u64,
}

/// A variable only some functions need (their own resources), read at init with the same fail-fast message.
pub fn required_env(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or(ConfigError::Missing(name))
}

/// A required variable holding a number.
pub fn required_number<T: std::str::FromStr>(name: &'static str) -> Result<T, ConfigError> {
    let raw = required_env(name)?;
    raw.parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("{raw:?} is not a whole number"),
    })
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|value| !value.trim().is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let token_ttl_secs = match lookup("TOKEN_TTL_SECONDS") {
            None => 3600,
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|ttl| (60..=86_400).contains(ttl))
                .ok_or(ConfigError::Invalid {
                    name: "TOKEN_TTL_SECONDS",
                    reason: format!("{raw:?} is not a number of seconds between 60 and 86400"),
                })?,
        };
        Ok(Self {
            users_table: required("USERS_TABLE")?,
            products_table: required("PRODUCTS_TABLE")?,
            orders_table: required("ORDERS_TABLE")?,
            idempotency_table: required("IDEMPOTENCY_TABLE")?,
            notifications_table: required("NOTIFICATIONS_TABLE")?,
            inventory_adjustments_table: required("INVENTORY_ADJUSTMENTS_TABLE")?,
            jwt_secret_id: required("JWT_SECRET_ID")?,
            token_ttl_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const COMPLETE: &[(&str, &str)] = &[
        ("USERS_TABLE", "users"),
        ("PRODUCTS_TABLE", "products"),
        ("ORDERS_TABLE", "orders"),
        ("IDEMPOTENCY_TABLE", "idempotency"),
        ("NOTIFICATIONS_TABLE", "notifications"),
        ("INVENTORY_ADJUSTMENTS_TABLE", "adjustments"),
        ("JWT_SECRET_ID", "shop/jwt"),
    ];

    #[test]
    fn a_complete_environment_loads_with_defaults() {
        let config = Config::from_lookup(env(COMPLETE)).unwrap();
        assert_eq!(config.users_table, "users");
        assert_eq!(config.token_ttl_secs, 3600);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let error = Config::from_lookup(env(&COMPLETE[1..])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable USERS_TABLE is required but not set"
        );
    }

    #[test]
    fn a_malformed_ttl_is_refused() {
        let mut pairs = COMPLETE.to_vec();
        pairs.push(("TOKEN_TTL_SECONDS", "forever"));
        assert!(
            Config::from_lookup(env(&pairs))
                .unwrap_err()
                .to_string()
                .contains("TOKEN_TTL_SECONDS")
        );
    }
}
