//! Login protection: failed sign-ins are counted per email and per client IP. Past a first threshold
//! each further attempt must wait longer after the last failure (1 s, 2 s, 4 s, …); past a second,
//! the subject is locked for a while. Unknown emails are counted exactly like known ones, so the
//! answers never reveal whether an account exists. A success clears the email's count (not the IP's:
//! an attacker's own account must not reset the budget of the address it attacks from).
//!
//! The counters live in the guards table (keys `login#email#<sha256>` and `login#ip#<address>`; the
//! email is hashed so the table holds no addresses). If they cannot be read, sign-in fails closed
//! with 503: this guard protects credentials, and sign-in needs the same database anyway.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::Deserialize;

use crate::config::{ConfigError, required_number};
use crate::domain::Email;
use crate::idempotency::fingerprint;
use crate::store::{StoreError, batch_get, is_condition_failure};

/// The longest forced pause between attempts before the lock takes over.
const MAX_SLOWDOWN_EXPONENT: u32 = 10;

/// When failures slow a subject down and when they lock it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Failures after which each attempt must wait 2^(failures - slow_after) seconds after the last one.
    pub slow_after: u32,
    /// Failures after which the subject is locked for `lock_secs` after the last one.
    pub lock_after: u32,
    /// Also how long failures are remembered: a subject quiet for this long starts afresh.
    pub lock_secs: u64,
}

/// Failed attempts of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Failures {
    pub count: u32,
    /// Epoch milliseconds of the most recent failure (whole seconds would make a pause of 1 s end
    /// anywhere between 0 and 1 s after it).
    pub last_at_ms: u64,
}

impl LoginPolicy {
    /// Slow down from half the lock threshold on.
    pub fn locking_after(lock_after: u32, lock_secs: u64) -> Self {
        Self {
            slow_after: (lock_after / 2).max(1),
            lock_after: lock_after.max(1),
            lock_secs,
        }
    }

    /// Whole seconds (rounded up) the subject must still wait at `now_ms` before its next attempt is
    /// considered; `None` when it may try now.
    pub fn wait_secs(&self, failures: Option<Failures>, now_ms: u64) -> Option<u64> {
        let remembered_ms = self.lock_secs.saturating_mul(1000);
        let failures = failures.filter(|failures| now_ms < failures.last_at_ms.saturating_add(remembered_ms))?;
        let pause_secs = if failures.count >= self.lock_after {
            self.lock_secs
        } else if failures.count >= self.slow_after {
            let exponent = (failures.count - self.slow_after).min(MAX_SLOWDOWN_EXPONENT);
            (1u64 << exponent).min(self.lock_secs)
        } else {
            return None;
        };
        let free_at_ms = failures.last_at_ms.saturating_add(pause_secs.saturating_mul(1000));
        (now_ms < free_at_ms).then(|| (free_at_ms - now_ms).div_ceil(1000))
    }
}

/// Whose failures are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Email(String),
    Ip(String),
}

impl Subject {
    pub fn email(email: &Email) -> Self {
        Self::Email(fingerprint(email.as_str().as_bytes()))
    }

    fn key(&self) -> String {
        match self {
            Self::Email(hash) => format!("login#email#{hash}"),
            Self::Ip(ip) => format!("login#ip#{ip}"),
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
}

/// The policies for emails and IPs, and where their failures are counted.
pub struct LoginGuard {
    pub failures: std::sync::Arc<dyn LoginFailures>,
    pub per_email: LoginPolicy,
    pub per_ip: LoginPolicy,
}

impl LoginGuard {
    /// Thresholds from `LOGIN_EMAIL_LOCK_AFTER_FAILURES`, `LOGIN_IP_LOCK_AFTER_FAILURES` and
    /// `LOGIN_LOCK_SECONDS`.
    pub fn policies_from_env() -> Result<(LoginPolicy, LoginPolicy), ConfigError> {
        let lock_secs: u64 = required_number("LOGIN_LOCK_SECONDS")?;
        Ok((
            LoginPolicy::locking_after(required_number("LOGIN_EMAIL_LOCK_AFTER_FAILURES")?, lock_secs),
            LoginPolicy::locking_after(required_number("LOGIN_IP_LOCK_AFTER_FAILURES")?, lock_secs),
        ))
    }

    /// How long the caller must wait before trying to sign in as `email`; `None` when it may now.
    pub async fn wait_secs(&self, email: &Subject, ip: &Subject, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let (by_email, by_ip) = self.failures.get_both(email, ip).await?;
        Ok(self
            .per_email
            .wait_secs(by_email, now_ms)
            .max(self.per_ip.wait_secs(by_ip, now_ms)))
    }

    /// Counts a failed attempt against both subjects. Best effort: a counter that cannot be written
    /// is logged, and the caller still gets its 401.
    pub async fn failed(&self, email: &Subject, ip: &Subject, now_ms: u64) {
        let record = |subject, policy: LoginPolicy| {
            let forget_before_ms = now_ms.saturating_sub(policy.lock_secs.saturating_mul(1000));
            let expires_at = now_ms / 1000 + policy.lock_secs + 60;
            self.failures.record(subject, now_ms, forget_before_ms, expires_at)
        };
        let (by_email, by_ip) = tokio::join!(record(email, self.per_email), record(ip, self.per_ip));
        for error in [by_email.err(), by_ip.err()].into_iter().flatten() {
            tracing::error!(error = %crate::error::error_chain(&error), "could not count a failed login");
        }
    }

    /// Forgets the email's failures after a successful sign-in.
    pub async fn succeeded(&self, email: &Subject) {
        if let Err(error) = self.failures.clear(email).await {
            tracing::error!(error = %crate::error::error_chain(&error), "could not clear failed logins");
        }
    }
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
#[derive(Default)]
pub struct InMemoryLoginFailures {
    subjects: std::sync::Mutex<HashMap<String, Failures>>,
}

impl InMemoryLoginFailures {
    fn subjects(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.subjects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

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
        });
        if failures.last_at_ms < forget_before_ms {
            failures.count = 0;
        }
        failures.count += 1;
        failures.last_at_ms = now_ms;
        Ok(())
    }

    async fn clear(&self, subject: &Subject) -> Result<(), StoreError> {
        self.subjects().remove(&subject.key());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLICY: LoginPolicy = LoginPolicy {
        slow_after: 3,
        lock_after: 6,
        lock_secs: 600,
    };

    /// The pause after each failure, from the first to the locking one.
    fn pauses(policy: &LoginPolicy) -> Vec<Duration> {
        (1..=policy.lock_after)
            .map(|count| {
                let failures = Failures { count, last_at_ms: 0 };
                Duration::from_secs(policy.wait_secs(Some(failures), 0).unwrap_or(0))
            })
            .collect()
    }

    fn failed(count: u32, last_at_ms: u64) -> Option<Failures> {
        Some(Failures { count, last_at_ms })
    }

    #[test]
    fn a_few_failures_cost_nothing() {
        assert_eq!(POLICY.wait_secs(None, 1_000_000), None);
        assert_eq!(POLICY.wait_secs(failed(2, 1_000_000), 1_000_000), None);
    }

    #[test]
    fn further_failures_double_the_pause_then_lock() {
        let secs: Vec<u64> = pauses(&POLICY).iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 0, 1, 2, 4, 600]);
    }

    #[test]
    fn the_pause_counts_from_the_last_failure() {
        // Two seconds after the 4th failure; asked at once, or a moment later, it is still 2 s.
        assert_eq!(POLICY.wait_secs(failed(4, 1_000_000), 1_000_000), Some(2));
        assert_eq!(POLICY.wait_secs(failed(4, 1_000_000), 1_000_300), Some(2));
        assert_eq!(POLICY.wait_secs(failed(4, 1_000_000), 1_001_000), Some(1));
        assert_eq!(POLICY.wait_secs(failed(4, 1_000_000), 1_002_000), None);
        assert_eq!(POLICY.wait_secs(failed(6, 1_000_000), 1_500_000), Some(100));
    }

    #[test]
    fn failures_older_than_the_lock_are_forgotten() {
        assert_eq!(POLICY.wait_secs(failed(50, 1_000_000), 1_600_000), None);
    }

    #[test]
    fn the_slowdown_starts_at_half_the_lock_threshold() {
        let policy = LoginPolicy::locking_after(10, 900);
        assert_eq!((policy.slow_after, policy.lock_after), (5, 10));
        assert_eq!(LoginPolicy::locking_after(1, 900).slow_after, 1);
    }

    #[tokio::test]
    async fn failures_seconds_apart_add_up_and_the_pause_counts_from_the_last() {
        let guard = LoginGuard {
            failures: std::sync::Arc::new(InMemoryLoginFailures::default()),
            per_email: POLICY,
            per_ip: POLICY,
        };
        let email = Subject::email(&Email::parse("ada@example.com").unwrap());
        let ip = Subject::Ip("203.0.113.10".into());
        // Given three failures a second apart,
        for now_ms in [1_000_000, 1_001_000, 1_002_000] {
            guard.failed(&email, &ip, now_ms).await;
        }
        // then they count as three: a pause of 1 s from the last one.
        let failures = guard.failures.get(&email).await.unwrap().unwrap();
        assert_eq!((failures.count, failures.last_at_ms), (3, 1_002_000));
        assert_eq!(guard.wait_secs(&email, &ip, 1_002_200).await.unwrap(), Some(1));
        assert_eq!(guard.wait_secs(&email, &ip, 1_003_000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_guard_takes_the_longer_wait_of_email_and_ip_and_a_success_clears_the_email() {
        let guard = LoginGuard {
            failures: std::sync::Arc::new(InMemoryLoginFailures::default()),
            per_email: POLICY,
            per_ip: LoginPolicy {
                slow_after: 100,
                lock_after: 200,
                lock_secs: 600,
            },
        };
        let email = Subject::email(&Email::parse("ada@example.com").unwrap());
        let ip = Subject::Ip("203.0.113.10".into());
        for _ in 0..6 {
            guard.failed(&email, &ip, 1_000_000).await;
        }
        assert_eq!(guard.wait_secs(&email, &ip, 1_000_000).await.unwrap(), Some(600));
        let other_email = Subject::email(&Email::parse("bob@example.com").unwrap());
        assert_eq!(guard.wait_secs(&other_email, &ip, 1_000_000).await.unwrap(), None);
        guard.succeeded(&email).await;
        assert_eq!(guard.wait_secs(&email, &ip, 1_000_000).await.unwrap(), None);
    }
}
