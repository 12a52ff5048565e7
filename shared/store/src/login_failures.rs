//! Failed sign-in counters per subject (an email, hashed, or a client IP) in the guards table
//! (keys `login#email#<sha256>` and `login#ip#<address>`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use domain::{Email, fingerprint};
use serde::Deserialize;

use crate::{StoreError, batch_get, is_condition_failure};

/// Failed attempts of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Failures {
    pub count: u32,
    /// Epoch milliseconds of the most recent failure (whole seconds would make a pause of 1 s end
    /// anywhere between 0 and 1 s after it).
    pub last_at_ms: u64,
    /// Attempts reserved and not settled yet (their password still being checked). Can be briefly
    /// negative when a success cleared the counter under them; read through [`Failures::pending`].
    #[serde(default)]
    pub in_flight: i64,
    /// When the latest reservation was made (epoch milliseconds).
    #[serde(default)]
    pub reserved_at_ms: u64,
}

/// How long a reservation may stay unsettled: far longer than any login takes (the function's
/// timeout is 10 s), so one left by a crash or a lost answer stops counting on its own.
pub const RESERVATION_MS: u64 = 30_000;

impl Failures {
    /// The attempts in flight at `now_ms`, never below zero; none once the latest reservation is
    /// older than [`RESERVATION_MS`] (those were abandoned).
    pub fn pending(&self, now_ms: u64) -> u32 {
        if now_ms.saturating_sub(self.reserved_at_ms) > RESERVATION_MS {
            return 0;
        }
        u32::try_from(self.in_flight.max(0)).unwrap_or(u32::MAX)
    }
}

/// Whose failures are counted: an account (by its email's hash), a client (by its IP), or one client's
/// attempts at one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Email(String),
    Ip(String),
    EmailFromIp { email: String, ip: String },
}

impl Subject {
    pub fn email(email: &Email) -> Self {
        Self::Email(fingerprint(email.as_str().as_bytes()))
    }

    /// One client's attempts at one account: `Some` for an email and an IP subject.
    pub fn email_from(email: &Subject, ip: &Subject) -> Option<Self> {
        match (email, ip) {
            (Self::Email(email), Self::Ip(ip)) => Some(Self::EmailFromIp {
                email: email.clone(),
                ip: ip.clone(),
            }),
            _ => None,
        }
    }

    pub fn key(&self) -> String {
        match self {
            Self::Email(hash) => format!("login#email#{hash}"),
            Self::Ip(ip) => format!("login#ip#{ip}"),
            Self::EmailFromIp { email, ip } => format!("login#email#{email}#ip#{ip}"),
        }
    }
}

/// Failure counters, per subject.
#[async_trait]
pub trait LoginFailures: Send + Sync {
    async fn get(&self, subject: &Subject) -> Result<Option<Failures>, StoreError>;
    /// The failures of two subjects (an email and an IP), read together.
    async fn get_both(
        &self,
        first: &Subject,
        second: &Subject,
    ) -> Result<(Option<Failures>, Option<Failures>), StoreError> {
        tokio::try_join!(self.get(first), self.get(second))
    }
    /// Counts a failure at `now_ms`, forgetting failures older than `forget_before_ms` first;
    /// `expires_at` (epoch seconds) is for the table's TTL.
    async fn record(
        &self,
        subject: &Subject,
        now_ms: u64,
        forget_before_ms: u64,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    async fn clear(&self, subject: &Subject) -> Result<(), StoreError>;
    /// Reserves one attempt of `subject` before its password is checked (atomically, so concurrent
    /// attempts each see the others) and returns the counter with it.
    async fn reserve(&self, subject: &Subject, now_ms: u64, expires_at: u64) -> Result<Failures, StoreError>;
    /// Gives a reserved attempt back once it is settled.
    async fn release(&self, subject: &Subject) -> Result<(), StoreError>;
}

/// Counters in the guards table: `{pk, count, last_at_ms, expires_at}`.
pub struct DynamoLoginFailures {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLoginFailures {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(subject: &Subject) -> HashMap<String, AttributeValue> {
        HashMap::from([("pk".to_owned(), AttributeValue::S(subject.key()))])
    }
}

#[async_trait]
impl LoginFailures for DynamoLoginFailures {
    async fn get(&self, subject: &Subject) -> Result<Option<Failures>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(subject)))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(output.item.map(serde_dynamo::from_item).transpose()?)
    }

    /// One `BatchGetItem` for both.
    async fn get_both(
        &self,
        first: &Subject,
        second: &Subject,
    ) -> Result<(Option<Failures>, Option<Failures>), StoreError> {
        let keys = vec![Self::key(first), Self::key(second)];
        let mut found = batch_get(&self.client, HashMap::from([(self.table.clone(), keys)])).await?;
        let items = found.remove(&self.table).unwrap_or_default();
        let failures_of = |subject: &Subject| -> Result<Option<Failures>, StoreError> {
            let key = AttributeValue::S(subject.key());
            items
                .iter()
                .find(|item| item.get("pk") == Some(&key))
                .map(|item| serde_dynamo::from_item(item.clone()))
                .transpose()
                .map_err(StoreError::from)
        };
        Ok((failures_of(first)?, failures_of(second)?))
    }

    async fn record(
        &self,
        subject: &Subject,
        now_ms: u64,
        forget_before_ms: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let number = |value: u64| AttributeValue::N(value.to_string());
        let values = HashMap::from([
            (":one".to_owned(), number(1)),
            (":now".to_owned(), number(now_ms)),
            (":forget".to_owned(), number(forget_before_ms)),
            (":exp".to_owned(), number(expires_at)),
        ]);
        // A recent failure: count on. Otherwise (new, or forgotten): start again at one.
        let attempts = [
            (
                "ADD #count :one SET last_at_ms = :now, expires_at = :exp",
                "last_at_ms >= :forget",
            ),
            (
                "SET #count = :one, last_at_ms = :now, expires_at = :exp",
                "attribute_not_exists(last_at_ms) OR last_at_ms < :forget",
            ),
        ];
        // Two concurrent failures may race on a fresh key; the loser counts on the winner's item.
        for _ in 0..2 {
            for (update, condition) in attempts {
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(subject)))
                    .update_expression(update)
                    .condition_expression(condition)
                    .expression_attribute_names("#count", "count")
                    .set_expression_attribute_values(Some(values.clone()))
                    .return_values(ReturnValue::None)
                    .send()
                    .await;
                match result {
                    Ok(_) => return Ok(()),
                    Err(error) if is_condition_failure(&error) => continue,
                    Err(error) => return Err(StoreError::from_sdk(error)),
                }
            }
        }
        Err(StoreError::Failed("the login failure counter kept changing".into()))
    }

    async fn reserve(&self, subject: &Subject, now_ms: u64, expires_at: u64) -> Result<Failures, StoreError> {
        let number = |value: i64| AttributeValue::N(value.to_string());
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(subject)))
            .update_expression(
                "ADD in_flight :one SET #count = if_not_exists(#count, :zero), \
                 last_at_ms = if_not_exists(last_at_ms, :zero), reserved_at_ms = :now, expires_at = :exp",
            )
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":exp", number(i64::try_from(expires_at).unwrap_or(i64::MAX)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let item = output
            .attributes
            .ok_or_else(|| StoreError::Failed("the reservation returned no counter".into()))?;
        Ok(serde_dynamo::from_item(item)?)
    }

    async fn release(&self, subject: &Subject) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(subject)))
            .update_expression("ADD in_flight :minus_one")
            // A counter cleared meanwhile (a success) has nothing left to give back.
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()))
            .send()
            .await;
        match result {
            Err(error) if !is_condition_failure(&error) => Err(StoreError::from_sdk(error)),
            _ => Ok(()),
        }
    }

    async fn clear(&self, subject: &Subject) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(subject)))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}

/// In-process counters for unit tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct InMemoryLoginFailures {
    subjects: std::sync::Mutex<HashMap<String, Failures>>,
}

#[cfg(any(test, feature = "test-util"))]
impl InMemoryLoginFailures {
    fn subjects(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.subjects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(any(test, feature = "test-util"))]
#[async_trait]
impl LoginFailures for InMemoryLoginFailures {
    async fn get(&self, subject: &Subject) -> Result<Option<Failures>, StoreError> {
        Ok(self.subjects().get(&subject.key()).copied())
    }

    async fn record(
        &self,
        subject: &Subject,
        now_ms: u64,
        forget_before_ms: u64,
        _expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut subjects = self.subjects();
        let failures = subjects.entry(subject.key()).or_insert(Failures {
            count: 0,
            last_at_ms: now_ms,
            in_flight: 0,
            reserved_at_ms: 0,
        });
        if failures.last_at_ms < forget_before_ms {
            failures.count = 0;
        }
        failures.count += 1;
        failures.last_at_ms = now_ms;
        Ok(())
    }

    async fn reserve(&self, subject: &Subject, now_ms: u64, _expires_at: u64) -> Result<Failures, StoreError> {
        let mut subjects = self.subjects();
        let failures = subjects.entry(subject.key()).or_insert(Failures {
            count: 0,
            last_at_ms: 0,
            in_flight: 0,
            reserved_at_ms: now_ms,
        });
        failures.in_flight += 1;
        failures.reserved_at_ms = now_ms;
        Ok(*failures)
    }

    async fn release(&self, subject: &Subject) -> Result<(), StoreError> {
        if let Some(failures) = self.subjects().get_mut(&subject.key()) {
            failures.in_flight -= 1;
        }
        Ok(())
    }

    async fn clear(&self, subject: &Subject) -> Result<(), StoreError> {
        self.subjects().remove(&subject.key());
        Ok(())
    }
}
