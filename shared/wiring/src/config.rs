//! Settings read once from the environment at init. Every concern reads its own settings through one
//! [`Env`], with one parser for bounded numbers; a missing or malformed variable stops the function
//! at cold start with a message that names it.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads one variable by name.
type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where settings come from: the process environment, or (in tests) any lookup.
pub struct Env {
    lookup: Lookup,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// The value of `name`, unless it is unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// A whole number within `bounds`; `default` when unset (required when `default` is `None`).
    pub fn number<T>(&self, name: &'static str, bounds: RangeInclusive<T>, default: Option<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(raw) = self.optional(name) else {
            return default.ok_or(ConfigError::Missing(name));
        };
        raw.trim()
            .parse::<T>()
            .ok()
            .filter(|value| bounds.contains(value))
            .ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!(
                    "{raw:?} is not a whole number between {} and {}",
                    bounds.start(),
                    bounds.end()
                ),
            })
    }

    /// One of `choices`, by name.
    pub fn choice<T: Copy>(&self, name: &'static str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
        let raw = self.required(name)?;
        choices
            .iter()
            .find(|(choice, _)| *choice == raw)
            .map(|(_, value)| *value)
            .ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!(
                    "{raw:?} is not one of {}",
                    choices
                        .iter()
                        .map(|(choice, _)| format!("{choice:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// The tables of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub users: String,
    pub products: String,
    pub orders: String,
    pub idempotency: String,
    pub notifications: String,
    pub inventory_adjustments: String,
}

/// What every function of the deployment is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub tables: Tables,
    /// Name or ARN of the Secrets Manager secret that signs tokens and cursors.
    pub jwt_secret_id: String,
    pub token_ttl_secs: u64,
    /// How long catalogue reads may be served from the instance's cache and by HTTP caches
    /// (`CatalogueCacheSeconds`; set only on the catalogue read routes, 0 = off).
    pub catalogue_cache_secs: u64,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            tables: Tables {
                users: env.required("USERS_TABLE")?,
                products: env.required("PRODUCTS_TABLE")?,
                orders: env.required("ORDERS_TABLE")?,
                idempotency: env.required("IDEMPOTENCY_TABLE")?,
                notifications: env.required("NOTIFICATIONS_TABLE")?,
                inventory_adjustments: env.required("INVENTORY_ADJUSTMENTS_TABLE")?,
            },
            jwt_secret_id: env.required("JWT_SECRET_ID")?,
            token_ttl_secs: env.number("TOKEN_TTL_SECONDS", 60..=86_400, Some(3600))?,
            catalogue_cache_secs: env.number("CATALOGUE_CACHE_SECONDS", 0..=86_400, Some(0))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(move |name| map.get(name).cloned())
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
        let config = Config::from_env(&env(COMPLETE)).unwrap();
        assert_eq!(config.tables.users, "users");
        assert_eq!(config.token_ttl_secs, 3600);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let error = Config::from_env(&env(&COMPLETE[1..])).unwrap_err();
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
            Config::from_env(&env(&pairs))
                .unwrap_err()
                .to_string()
                .contains("TOKEN_TTL_SECONDS")
        );
    }

    #[test]
    fn numbers_are_bounded_defaulted_or_required() {
        let settings = env(&[("N", "7"), ("BIG", "70"), ("NEG", "-1"), ("WORD", "lots")]);
        assert_eq!(settings.number("N", 1..=10, None).unwrap(), 7);
        assert_eq!(settings.number("UNSET", 1..=10, Some(3)).unwrap(), 3);
        for name in ["BIG", "NEG", "WORD"] {
            let error = settings.number::<u32>(name, 1..=10, Some(3)).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
        assert!(matches!(
            settings.number::<u32>("UNSET", 1..=10, None),
            Err(ConfigError::Missing("UNSET"))
        ));
    }

    #[test]
    fn a_choice_names_the_accepted_values() {
        let settings = env(&[("MODE", "loud")]);
        let error = settings.choice("MODE", &[("aws", 1), ("mock", 2)]).unwrap_err();
        assert!(error.to_string().contains("\"mock\""), "{error}");
        assert_eq!(
            env(&[("MODE", "mock")])
                .choice("MODE", &[("aws", 1), ("mock", 2)])
                .unwrap(),
            2
        );
    }
}
