//! Login protection: failed sign-ins are counted per client and account pair (one IP's attempts at
//! one email), per account (every client's attempts at one email) and per client IP. Past a first
//! threshold each further attempt must wait longer after the last failure (1 s, 2 s, 4 s, …); past a
//! second, the subject is locked for a while. The pair's thresholds are tight, the account's loose:
//! a client guessing one password locks itself out of that account only, never its owner, while
//! guesses spread over many addresses still slow the account down and lock it far later. Unknown
//! emails are counted exactly like known ones, so the answers never reveal whether an account
//! exists. A success clears the pair's and the account's counts (not the IP's: an attacker's own
//! account must not reset the budget of the address it attacks from).
//!
//! The counters live in the guards table (keys `login#email#<sha256>`, `login#email#<sha256>#ip#<address>`
//! and `login#ip#<address>`; the email is hashed so the table holds no addresses). If they cannot be
//! read, sign-in fails closed with 503: this guard protects credentials, and sign-in needs the same
//! database anyway.

use futures_util::future::join_all;
use store::StoreError;
use store::login_failures::{Failures, LoginFailures, Subject};
use wiring::telemetry::error_chain;
use wiring::{ConfigError, Env};

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

/// The policies of the three subjects, and where their failures are counted.
pub struct LoginGuard {
    pub failures: std::sync::Arc<dyn LoginFailures>,
    /// One client's attempts at one account.
    pub per_email: LoginPolicy,
    /// Every client's attempts at one account: looser, or one client would lock the owner out.
    pub per_account: LoginPolicy,
    pub per_ip: LoginPolicy,
}

/// The policies of [`LoginGuard`], as the environment sets them.
pub struct LoginPolicies {
    pub per_email: LoginPolicy,
    pub per_account: LoginPolicy,
    pub per_ip: LoginPolicy,
}

impl LoginGuard {
    /// Thresholds from `LOGIN_EMAIL_LOCK_AFTER_FAILURES` (one client at one account),
    /// `LOGIN_ACCOUNT_LOCK_AFTER_FAILURES` (every client at one account; 10 times the former when
    /// unset or 0), `LOGIN_IP_LOCK_AFTER_FAILURES` and `LOGIN_LOCK_SECONDS`.
    pub fn policies_from_env(env: &Env) -> Result<LoginPolicies, ConfigError> {
        let lock_secs: u64 = env.number("LOGIN_LOCK_SECONDS", 1..=86_400, None)?;
        let per_email: u32 = env.number("LOGIN_EMAIL_LOCK_AFTER_FAILURES", 1..=1_000_000, None)?;
        let per_account = match env.number("LOGIN_ACCOUNT_LOCK_AFTER_FAILURES", 0..=10_000_000, Some(0))? {
            0 => per_email.saturating_mul(10),
            set => set,
        };
        let per_ip = env.number("LOGIN_IP_LOCK_AFTER_FAILURES", 1..=1_000_000, None)?;
        Ok(LoginPolicies {
            per_email: LoginPolicy::locking_after(per_email, lock_secs),
            per_account: LoginPolicy::locking_after(per_account, lock_secs),
            per_ip: LoginPolicy::locking_after(per_ip, lock_secs),
        })
    }

    /// The subjects an attempt at `email` from `ip` counts against, with their policies: the pair,
    /// the account, the client.
    fn subjects(&self, email: &Subject, ip: &Subject) -> Vec<(Subject, LoginPolicy)> {
        let mut subjects = Vec::with_capacity(3);
        if let Some(pair) = Subject::email_from(email, ip) {
            subjects.push((pair, self.per_email));
        }
        subjects.push((email.clone(), self.per_account));
        subjects.push((ip.clone(), self.per_ip));
        subjects
    }

    /// Reserves this attempt against its subjects *before* the password is checked, and says how
    /// long the caller must wait first (`Some`: refused, nothing reserved is kept). Attempts still in
    /// flight count as failures of now, so N concurrent wrong guesses cannot all pass the check and
    /// outrun the lock: each sees the others.
    pub async fn begin(&self, email: &Subject, ip: &Subject, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let subjects = self.subjects(email, ip);
        let reserved = join_all(subjects.iter().map(|(subject, policy)| {
            self.failures
                .reserve(subject, now_ms, now_ms / 1000 + policy.lock_secs + 60)
        }))
        .await;
        if reserved.iter().any(Result::is_err) {
            // Give back the ones that were made: no reservation outlives a refused attempt.
            for ((subject, _), made) in subjects.iter().zip(&reserved) {
                if made.is_ok() {
                    self.give_back(subject).await;
                }
            }
        }
        let mut wait = None;
        for ((_, policy), failures) in subjects.iter().zip(reserved) {
            let failures = failures?;
            wait = wait.max(policy.wait_secs(Some(with_others_failed(failures, now_ms, *policy)), now_ms));
        }
        if wait.is_some() {
            metrics::counter!("LoginsLocked").increment(1);
            self.abandoned(email, ip).await;
        }
        Ok(wait)
    }

    /// Counts a failed attempt against its subjects and settles its reservations. Best effort: a
    /// counter that cannot be written is logged, and the caller still gets its 401.
    pub async fn failed(&self, email: &Subject, ip: &Subject, now_ms: u64) {
        let subjects = self.subjects(email, ip);
        let recorded = join_all(subjects.iter().map(|(subject, policy)| {
            let forget_before_ms = now_ms.saturating_sub(policy.lock_secs.saturating_mul(1000));
            let expires_at = now_ms / 1000 + policy.lock_secs + 60;
            self.failures.record(subject, now_ms, forget_before_ms, expires_at)
        }))
        .await;
        for error in recorded.into_iter().filter_map(Result::err) {
            tracing::error!(error = %error_chain(&error), "could not count a failed login");
        }
        self.abandoned(email, ip).await;
    }

    /// Forgets the pair's and the account's failures after a successful sign-in (not the IP's) and
    /// settles the IP's reservation.
    pub async fn succeeded(&self, email: &Subject, ip: &Subject) {
        let settled = join_all(self.subjects(email, ip).into_iter().map(|(subject, _)| async move {
            match subject {
                Subject::Ip(_) => self.failures.release(&subject).await,
                _ => self.failures.clear(&subject).await,
            }
        }))
        .await;
        for error in settled.into_iter().filter_map(Result::err) {
            tracing::error!(error = %error_chain(&error), "could not settle a successful login");
        }
    }

    /// Gives back the reservations of an attempt that ended without an answer about the password
    /// (refused, or failed on the way). Best effort: an unreleased one stops counting on its own.
    pub async fn abandoned(&self, email: &Subject, ip: &Subject) {
        join_all(
            self.subjects(email, ip)
                .into_iter()
                .map(|(subject, _)| async move { self.give_back(&subject).await }),
        )
        .await;
    }

    async fn give_back(&self, subject: &Subject) {
        if let Err(error) = self.failures.release(subject).await {
            tracing::warn!(error = %error_chain(&error), "could not give back a login reservation");
        }
    }
}

/// The counter as this attempt must see it: every other attempt in flight counted as a failure of
/// now (this one, just reserved, is not), on top of the failures the policy still remembers.
fn with_others_failed(failures: Failures, now_ms: u64, policy: LoginPolicy) -> Failures {
    let others = failures.pending(now_ms).saturating_sub(1);
    if others == 0 {
        return failures;
    }
    let remembered = now_ms
        < failures
            .last_at_ms
            .saturating_add(policy.lock_secs.saturating_mul(1000));
    Failures {
        count: if remembered { failures.count } else { 0 }.saturating_add(others),
        last_at_ms: now_ms,
        ..failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Email;
    use std::time::Duration;
    use store::login_failures::InMemoryLoginFailures;

    const POLICY: LoginPolicy = LoginPolicy {
        slow_after: 3,
        lock_after: 6,
        lock_secs: 600,
    };

    /// The pause after each failure, from the first to the locking one.
    fn pauses(policy: &LoginPolicy) -> Vec<Duration> {
        (1..=policy.lock_after)
            .map(|count| {
                let failures = Failures {
                    count,
                    last_at_ms: 0,
                    in_flight: 0,
                    reserved_at_ms: 0,
                };
                Duration::from_secs(policy.wait_secs(Some(failures), 0).unwrap_or(0))
            })
            .collect()
    }

    fn failed(count: u32, last_at_ms: u64) -> Option<Failures> {
        Some(Failures {
            count,
            last_at_ms,
            in_flight: 0,
            reserved_at_ms: 0,
        })
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
            per_account: LoginPolicy::locking_after(1000, 600),
            per_ip: POLICY,
        };
        let email = Subject::email(&Email::parse("ada@example.com").unwrap());
        let ip = Subject::Ip("203.0.113.10".into());
        // Given three failures a second apart,
        for now_ms in [1_000_000, 1_001_000, 1_002_000] {
            guard.failed(&email, &ip, now_ms).await;
        }
        // then they count as three: a pause of 1 s from the last one.
        let pair = Subject::email_from(&email, &ip).unwrap();
        let failures = guard.failures.get(&pair).await.unwrap().unwrap();
        assert_eq!((failures.count, failures.last_at_ms), (3, 1_002_000));
        assert_eq!(guard.begin(&email, &ip, 1_002_200).await.unwrap(), Some(1));
        assert_eq!(guard.begin(&email, &ip, 1_003_000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_guard_takes_the_longer_wait_of_email_and_ip_and_a_success_clears_the_email() {
        let guard = LoginGuard {
            failures: std::sync::Arc::new(InMemoryLoginFailures::default()),
            per_email: POLICY,
            per_account: LoginPolicy::locking_after(1000, 600),
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
        assert_eq!(guard.begin(&email, &ip, 1_000_000).await.unwrap(), Some(600));
        let other_email = Subject::email(&Email::parse("bob@example.com").unwrap());
        assert_eq!(guard.begin(&other_email, &ip, 1_000_000).await.unwrap(), None);
        guard.succeeded(&other_email, &ip).await;
        guard.succeeded(&email, &ip).await;
        assert_eq!(guard.begin(&email, &ip, 1_000_000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn concurrent_wrong_guesses_cannot_outrun_the_lock() {
        // Given a policy that slows down after 3 failures and locks after 6,
        let guard = std::sync::Arc::new(LoginGuard {
            failures: std::sync::Arc::new(InMemoryLoginFailures::default()),
            per_email: POLICY,
            per_account: POLICY,
            per_ip: LoginPolicy::locking_after(1000, 600),
        });
        let email = Subject::email(&Email::parse("ada@example.com").unwrap());
        // when 20 guesses are all in flight at once (reserved, none settled yet),
        let mut admitted = 0;
        for n in 0..20 {
            let ip = Subject::Ip(format!("203.0.113.{n}"));
            if guard.begin(&email, &ip, 1_000_000).await.unwrap().is_none() {
                admitted += 1;
            }
        }
        // then no more of them get to the password check than the slow-down allows.
        assert_eq!(
            admitted, POLICY.slow_after,
            "the others are paused as if the ones in flight had failed"
        );
    }

    #[tokio::test]
    async fn a_client_that_locks_itself_out_of_an_account_does_not_lock_its_owner_out() {
        // Given the pair locks after 6 failures, the account (every client together) after 60
        let guard = LoginGuard {
            failures: std::sync::Arc::new(InMemoryLoginFailures::default()),
            per_email: POLICY,
            per_account: LoginPolicy::locking_after(60, 600),
            per_ip: LoginPolicy::locking_after(1000, 600),
        };
        let email = Subject::email(&Email::parse("ada@example.com").unwrap());
        let (attacker, owner) = (Subject::Ip("198.51.100.66".into()), Subject::Ip("203.0.113.10".into()));
        // When one client fails 6 times
        for _ in 0..6 {
            guard.failed(&email, &attacker, 1_000_000).await;
        }
        // Then that client is locked out of the account, and the owner's client is not
        assert_eq!(guard.begin(&email, &attacker, 1_000_000).await.unwrap(), Some(600));
        assert_eq!(guard.begin(&email, &owner, 1_000_000).await.unwrap(), None);
        guard.abandoned(&email, &owner).await;
        // And guesses spread over many clients still slow the account down, then lock it
        for n in 0..54 {
            guard
                .failed(&email, &Subject::Ip(format!("192.0.2.{n}")), 1_000_000)
                .await;
        }
        assert_eq!(guard.begin(&email, &owner, 1_000_000).await.unwrap(), Some(600));
    }
}
