//! The rate limiter's counters: per key, the request counts of the current and the previous fixed
//! window, moved atomically in the guards table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::Deserialize;

use crate::{StoreError, is_condition_failure};

/// Requests counted in the current fixed window (including the one being decided) and the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct WindowCounts {
    #[serde(rename = "c", default)]
    pub current: u64,
    #[serde(rename = "p", default)]
    pub previous: u64,
}

/// Atomic per-key counters of the current and previous fixed windows.
#[async_trait]
pub trait WindowCounter: Send + Sync {
    /// Counts one request for `key` in fixed window `window` and returns both windows' counts.
    /// `expires_at` (epoch seconds) lets the table's TTL remove idle keys.
    async fn count(&self, key: &str, window: u64, expires_at: u64) -> Result<WindowCounts, StoreError>;
    /// Takes one refused request off `key`'s count in `window`, if that window is still current.
    async fn uncount(&self, key: &str, window: u64) -> Result<(), StoreError>;
}

/// The guards table's counters: one item per key with the window index `w`, its count `c` and the
/// previous window's count `p`. A new client and the common case take one conditional `UpdateItem`;
/// a window roll-over takes one or two more.
pub struct DynamoWindowCounter {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoWindowCounter {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// One conditional update; `None` when its condition did not hold.
    async fn update(
        &self,
        key: &str,
        update: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Option<WindowCounts>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let counts = output
                    .attributes
                    .map(serde_dynamo::from_item::<_, WindowCounts>)
                    .transpose()?
                    .unwrap_or_default();
                Ok(Some(counts))
            }
            Err(error) if is_condition_failure(&error) => Ok(None),
            Err(error) => Err(StoreError::from_sdk(error)),
        }
    }
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[async_trait]
impl WindowCounter for DynamoWindowCounter {
    async fn count(&self, key: &str, window: u64, expires_at: u64) -> Result<WindowCounts, StoreError> {
        let values = |extra: &[(&str, u64)]| {
            let mut values: HashMap<String, AttributeValue> = [(":w", window), (":exp", expires_at)]
                .iter()
                .chain(extra)
                .map(|(name, value)| ((*name).to_owned(), number(*value)))
                .collect();
            values.insert(":one".into(), number(1));
            values
        };
        let previous = window.saturating_sub(1);
        // Two instances may roll the same key over at once; the loser counts in the winner's window.
        for _ in 0..2 {
            // A new key, or the same window (or a clock slightly ahead of ours already rolled it): count.
            if let Some(counts) = self
                .update(
                    key,
                    "ADD c :one SET expires_at = :exp, w = if_not_exists(w, :w), p = if_not_exists(p, :zero)",
                    "attribute_not_exists(w) OR w >= :w",
                    values(&[(":zero", 0)]),
                )
                .await?
            {
                return Ok(counts);
            }
            // The next window: this one becomes the previous.
            if let Some(counts) = self
                .update(
                    key,
                    "SET p = c, c = :one, w = :w, expires_at = :exp",
                    "w = :prev",
                    values(&[(":prev", previous)]),
                )
                .await?
            {
                return Ok(counts);
            }
            // A key idle for more than a window.
            if let Some(counts) = self
                .update(
                    key,
                    "SET p = :zero, c = :one, w = :w, expires_at = :exp",
                    "w < :prev",
                    values(&[(":prev", previous), (":zero", 0)]),
                )
                .await?
            {
                return Ok(counts);
            }
        }
        Err(StoreError::Failed(
            format!("the rate counter {key} kept changing under us").into(),
        ))
    }

    async fn uncount(&self, key: &str, window: u64) -> Result<(), StoreError> {
        let values = HashMap::from([
            (":w".to_owned(), number(window)),
            (":minus_one".to_owned(), AttributeValue::N("-1".into())),
            (":zero".to_owned(), number(0)),
        ]);
        // A window that rolled over meanwhile keeps its count: the refusal was right when it was made.
        self.update(key, "ADD c :minus_one", "w = :w AND c > :zero", values)
            .await
            .map(|_| ())
    }
}

/// An in-process counter, for tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct InMemoryWindowCounter {
    keys: std::sync::Mutex<HashMap<String, (u64, WindowCounts)>>,
}

#[cfg(any(test, feature = "test-util"))]
#[async_trait]
impl WindowCounter for InMemoryWindowCounter {
    async fn count(&self, key: &str, window: u64, _expires_at: u64) -> Result<WindowCounts, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stored_window, counts) = keys.entry(key.to_owned()).or_insert((window, WindowCounts::default()));
        if *stored_window < window {
            let previous = if *stored_window + 1 == window {
                counts.current
            } else {
                0
            };
            *counts = WindowCounts { current: 0, previous };
            *stored_window = window;
        }
        counts.current += 1;
        Ok(*counts)
    }

    async fn uncount(&self, key: &str, window: u64) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((stored_window, counts)) = keys.get_mut(key)
            && *stored_window == window
        {
            counts.current = counts.current.saturating_sub(1);
        }
        Ok(())
    }
}
