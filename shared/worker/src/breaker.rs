//! Circuit breaker for outbound providers (email, SMS, payment).
//!
//! After `failure_threshold` consecutive failures that mean "the provider is unhealthy" (timeouts,
//! 5xx, throttling), the circuit *opens*: calls are refused at once for `open_for`, and the consumer
//! hands the message back to its queue to be retried after that (deferred, neither lost nor dropped).
//! Then the circuit *half-opens*: exactly one probe call goes through; its success closes the circuit,
//! its failure opens it again. Business outcomes (a declined card, an invalid recipient) are answers
//! from a healthy provider and never count as failures: the caller classifies.
//!
//! The breaker is in-process: one per provider per warm Lambda instance, no storage round trip. The
//! queue's event source maximum concurrency bounds how many instances probe a failing provider at once.
//!
//! [`Breaker`] is the pure state machine (time is passed in, so it is deterministic to test);
//! [`CircuitBreaker`] shares one between tasks, reads a clock and logs the transitions.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wiring::{ConfigError, Env};

/// When a circuit opens and how long it stays open before probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive provider failures that open the circuit (at least 1).
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before it lets a probe through; also the lease of a probe
    /// that never reports.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
            open_for: Duration::from_secs(Self::DEFAULT_OPEN_SECS),
        }
    }
}

impl BreakerPolicy {
    pub const FAILURE_THRESHOLD_VAR: &'static str = "BREAKER_FAILURE_THRESHOLD";
    pub const OPEN_SECONDS_VAR: &'static str = "BREAKER_OPEN_SECONDS";
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
    pub const DEFAULT_OPEN_SECS: u64 = 30;

    /// `BREAKER_FAILURE_THRESHOLD` (1..=1000, default 5) and `BREAKER_OPEN_SECONDS` (1..=3600, default
    /// 30), read at init; a malformed value stops the function with a message naming it.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            failure_threshold: env.number(
                Self::FAILURE_THRESHOLD_VAR,
                1..=1000,
                Some(Self::DEFAULT_FAILURE_THRESHOLD),
            )?,
            open_for: Duration::from_secs(env.number(
                Self::OPEN_SECONDS_VAR,
                1..=3600,
                Some(Self::DEFAULT_OPEN_SECS),
            )?),
        })
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures in a row are counted, any success resets the count.
    Closed { consecutive_failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One probe may go through; `probe_since` is when the running probe started (`None`: no probe
    /// running, the next call is one).
    HalfOpen { probe_since: Option<Instant> },
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

/// What the breaker says about a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The circuit is closed: call.
    Call,
    /// The circuit is half-open and this call is its one probe (started at `started`): call, and
    /// report how it went.
    Probe { started: Instant },
    /// Do not call; try again no sooner than `retry_after`.
    Rejected { retry_after: Duration },
}

/// The breaker's state machine, without a clock or a lock.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            // A threshold of 0 would open on nothing; treat it as 1.
            policy: BreakerPolicy {
                failure_threshold: policy.failure_threshold.max(1),
                ..policy
            },
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    /// Whether a call may be made at `now`. Moves an open circuit whose time is up to half-open and
    /// hands out its probe; a probe running longer than `open_for` is presumed lost and replaced, so a
    /// probe that never reports cannot wedge the circuit.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed { .. } => Permit::Call,
            BreakerState::Open { until } if now < until => Permit::Rejected {
                retry_after: until.saturating_duration_since(now),
            },
            BreakerState::Open { .. } | BreakerState::HalfOpen { probe_since: None } => self.start_probe(now),
            BreakerState::HalfOpen {
                probe_since: Some(since),
            } => {
                let lease_ends = self.later(since);
                if now >= lease_ends {
                    self.start_probe(now)
                } else {
                    // By then the probe has reported or its lease has run out.
                    Permit::Rejected {
                        retry_after: lease_ends.saturating_duration_since(now),
                    }
                }
            }
        }
    }

    fn start_probe(&mut self, now: Instant) -> Permit {
        self.state = BreakerState::HalfOpen { probe_since: Some(now) };
        Permit::Probe { started: now }
    }

    /// `open_for` after `at` (or `at` itself if that is beyond what the clock can represent).
    fn later(&self, at: Instant) -> Instant {
        at.checked_add(self.policy.open_for).unwrap_or(at)
    }

    /// A permitted call reached the provider and it answered (even with a business refusal). Any
    /// answer is evidence of health, so one from a call let through before the circuit half-opened
    /// closes it as well as the probe's would.
    pub fn on_success(&mut self) {
        match self.state {
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Closed {
                    consecutive_failures: 0,
                }
            }
            // A call let through before the circuit opened: the cool-down stands, the probe decides.
            BreakerState::Open { .. } => {}
        }
    }

    /// A permitted call failed in a way that says the provider is unhealthy.
    pub fn on_failure(&mut self, now: Instant) {
        let was_open = matches!(self.state, BreakerState::Open { .. });
        self.record_failure(now);
        if !was_open && matches!(self.state, BreakerState::Open { .. }) {
            metrics::counter!("BreakerOpened").increment(1);
        }
    }

    fn record_failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::Closed { consecutive_failures } => {
                let failures = consecutive_failures.saturating_add(1);
                self.state = if failures >= self.policy.failure_threshold {
                    BreakerState::Open { until: self.later(now) }
                } else {
                    BreakerState::Closed {
                        consecutive_failures: failures,
                    }
                };
            }
            BreakerState::HalfOpen { .. } => self.state = BreakerState::Open { until: self.later(now) },
            // Already open (a straggler): the cool-down is not extended.
            BreakerState::Open { .. } => {}
        }
    }

    /// A permitted call ended without telling anything about the provider (it was not made after
    /// all): a probe's slot is freed for the next call, unless a newer probe (which replaced this one
    /// when its lease ran out) holds it.
    pub fn on_abandoned(&mut self, permit: Permit) {
        if let Permit::Probe { started } = permit
            && self.state
                == (BreakerState::HalfOpen {
                    probe_since: Some(started),
                })
        {
            self.state = BreakerState::HalfOpen { probe_since: None };
        }
    }
}

/// Where a [`CircuitBreaker`] reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told, for tests of time-dependent behaviour.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct ManualClock(Mutex<Instant>);

#[cfg(any(test, feature = "test-util"))]
impl Default for ManualClock {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(by).unwrap_or(*now);
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The circuit is open: the call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct CircuitOpen {
    pub retry_after: Duration,
}

/// How a call through [`CircuitBreaker::call`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// Not called: the circuit is open.
    #[error("circuit open; retry after {retry_after:?}")]
    Open { retry_after: Duration },
    /// Called, and it failed (whether or not that counted against the provider).
    #[error(transparent)]
    Failed(E),
}

/// A breaker shared by the tasks of one process (one per provider per warm Lambda instance). The lock
/// is only held to read or change the state, never across an `.await`.
pub struct CircuitBreaker {
    name: String,
    clock: Arc<dyn Clock>,
    machine: Mutex<Breaker>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the provider, for logs), on the system clock.
    pub fn new(name: impl Into<String>, policy: BreakerPolicy) -> Self {
        Self::with_clock(name, policy, Arc::new(SystemClock))
    }

    pub fn with_clock(name: impl Into<String>, policy: BreakerPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            name: name.into(),
            clock,
            machine: Mutex::new(Breaker::new(policy)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    // The state machine never panics while locked; if something else did, its state is still valid.
    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` under the lock and logs the transition it caused, if any.
    fn apply<R>(&self, change: impl FnOnce(&mut Breaker, Instant) -> R) -> R {
        let now = self.clock.now();
        let (before, after, result, policy) = {
            let mut machine = self.lock();
            let before = machine.state();
            let result = change(&mut machine, now);
            (before, machine.state(), result, machine.policy())
        };
        if before.name() != after.name() {
            self.log_transition(before, after, policy);
        }
        result
    }

    fn log_transition(&self, before: BreakerState, after: BreakerState, policy: BreakerPolicy) {
        let breaker = self.name.as_str();
        match (before, after) {
            (BreakerState::HalfOpen { .. }, BreakerState::Open { .. }) => tracing::warn!(
                breaker,
                open_for_secs = policy.open_for.as_secs(),
                "circuit re-opened: the probe failed; calls deferred"
            ),
            (_, BreakerState::Open { .. }) => tracing::warn!(
                breaker,
                failures = policy.failure_threshold,
                open_for_secs = policy.open_for.as_secs(),
                "circuit opened: the provider keeps failing; calls deferred"
            ),
            (_, BreakerState::HalfOpen { .. }) => {
                tracing::info!(breaker, "circuit half-open: probing the provider")
            }
            (_, BreakerState::Closed { .. }) => {
                tracing::info!(breaker, "circuit closed: the provider recovered")
            }
        }
    }

    /// Asks to make one call now. The returned [`Attempt`] must be told how the call went; dropped
    /// unreported (the call was not made after all) it frees a probe's slot.
    pub fn try_acquire(&self) -> Result<Attempt<'_>, CircuitOpen> {
        match self.apply(|machine, now| machine.permit(now)) {
            Permit::Rejected { retry_after } => Err(CircuitOpen { retry_after }),
            permit => Ok(Attempt {
                breaker: self,
                permit,
                reported: false,
            }),
        }
    }

    /// Calls `f` unless the circuit is open. An error of `f` counts against the provider only when
    /// `counts_as_failure` says so; any other outcome means the provider answered.
    pub async fn call<T, E, F, Fut>(
        &self,
        counts_as_failure: impl FnOnce(&E) -> bool,
        f: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let attempt = self.try_acquire().map_err(|open| BreakerError::Open {
            retry_after: open.retry_after,
        })?;
        let result = f().await;
        attempt.report(&result, counts_as_failure);
        result.map_err(BreakerError::Failed)
    }
}

/// Leave to make one call; report its outcome with [`Attempt::succeeded`], [`Attempt::failed`] or
/// [`Attempt::report`].
#[must_use = "an attempt must be reported, or the breaker learns nothing from the call"]
pub struct Attempt<'a> {
    breaker: &'a CircuitBreaker,
    permit: Permit,
    reported: bool,
}

impl Attempt<'_> {
    /// Whether this call is the probe of a half-open circuit.
    pub fn is_probe(&self) -> bool {
        matches!(self.permit, Permit::Probe { .. })
    }

    /// The provider answered (success, or a business refusal).
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.apply(|machine, _| machine.on_success());
    }

    /// The provider failed in a way that says it is unhealthy.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.apply(|machine, now| machine.on_failure(now));
    }

    /// Reports `result`: an error counts as a failure when `counts_as_failure` says so.
    pub fn report<T, E>(self, result: &Result<T, E>, counts_as_failure: impl FnOnce(&E) -> bool) {
        match result {
            Err(error) if counts_as_failure(error) => self.failed(),
            _ => self.succeeded(),
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.reported {
            let permit = self.permit;
            self.breaker.apply(|machine, _| machine.on_abandoned(permit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: 3,
            open_for: OPEN_FOR,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A breaker opened at `t0` by `threshold` failures.
    fn opened(t0: Instant) -> Breaker {
        let mut breaker = Breaker::new(policy());
        for _ in 0..3 {
            assert_eq!(breaker.permit(t0), Permit::Call);
            breaker.on_failure(t0);
        }
        breaker
    }

    #[test]
    fn given_a_closed_circuit_when_failures_reach_the_threshold_then_it_opens() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy());
        breaker.on_failure(t0);
        breaker.on_failure(t0);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed {
                consecutive_failures: 2
            }
        );
        assert_eq!(breaker.permit(t0), Permit::Call);
        breaker.on_failure(t0);
        assert_eq!(breaker.state(), BreakerState::Open { until: t0 + OPEN_FOR });
    }

    #[test]
    fn given_failures_below_the_threshold_when_a_call_succeeds_then_the_count_starts_again() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy());
        breaker.on_failure(t0);
        breaker.on_failure(t0);
        breaker.on_success();
        breaker.on_failure(t0);
        breaker.on_failure(t0);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed {
                consecutive_failures: 2
            },
            "failures must be consecutive to open"
        );
    }

    #[test]
    fn given_an_open_circuit_when_a_call_is_asked_then_it_is_rejected_until_the_time_is_up() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(breaker.permit(t0), Permit::Rejected { retry_after: OPEN_FOR });
        assert_eq!(
            breaker.permit(t0 + secs(10)),
            Permit::Rejected { retry_after: secs(20) }
        );
        assert_eq!(breaker.state().name(), "open", "a rejection changes nothing");
    }

    #[test]
    fn given_an_open_circuit_whose_time_is_up_then_exactly_one_probe_is_let_through() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN_FOR;
        assert!(matches!(breaker.permit(t1), Permit::Probe { .. }));
        assert_eq!(breaker.state(), BreakerState::HalfOpen { probe_since: Some(t1) });
        assert_eq!(
            breaker.permit(t1 + secs(1)),
            Permit::Rejected {
                retry_after: OPEN_FOR - secs(1)
            },
            "a second caller waits for the probe"
        );
    }

    #[test]
    fn given_a_probe_when_it_succeeds_then_the_circuit_closes() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert!(matches!(breaker.permit(t0 + OPEN_FOR), Permit::Probe { .. }));
        breaker.on_success();
        assert_eq!(
            breaker.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(breaker.permit(t0 + OPEN_FOR), Permit::Call);
    }

    #[test]
    fn given_a_probe_when_it_fails_then_the_circuit_opens_again_for_the_full_time() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN_FOR + secs(2);
        assert!(matches!(breaker.permit(t1), Permit::Probe { .. }));
        breaker.on_failure(t1 + secs(1));
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: t1 + secs(1) + OPEN_FOR
            }
        );
        assert_eq!(breaker.permit(t1 + secs(1)), Permit::Rejected { retry_after: OPEN_FOR });
    }

    #[test]
    fn given_a_probe_that_never_reports_when_its_lease_runs_out_then_another_probe_is_let_through() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN_FOR;
        assert!(matches!(breaker.permit(t1), Permit::Probe { .. }));
        assert!(matches!(
            breaker.permit(t1 + OPEN_FOR - secs(1)),
            Permit::Rejected { .. }
        ));
        assert!(matches!(breaker.permit(t1 + OPEN_FOR), Permit::Probe { .. }));
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen {
                probe_since: Some(t1 + OPEN_FOR)
            }
        );
    }

    #[test]
    fn given_an_abandoned_probe_then_the_next_call_is_the_probe() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN_FOR;
        let probe = breaker.permit(t1);
        assert!(matches!(probe, Permit::Probe { .. }));
        breaker.on_abandoned(probe);
        assert_eq!(breaker.state(), BreakerState::HalfOpen { probe_since: None });
        assert!(matches!(breaker.permit(t1 + secs(1)), Permit::Probe { .. }));
    }

    #[test]
    fn given_a_stale_probe_replaced_when_it_is_abandoned_then_the_new_probe_keeps_the_slot() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN_FOR;
        let stale = breaker.permit(t1);
        // Its lease runs out: a new probe replaces it.
        let fresh_start = t1 + OPEN_FOR;
        assert_eq!(breaker.permit(fresh_start), Permit::Probe { started: fresh_start });
        // When the stale one finally gives up, the new one still holds the slot: no third probe.
        breaker.on_abandoned(stale);
        assert!(matches!(breaker.permit(fresh_start + secs(1)), Permit::Rejected { .. }));
    }

    #[test]
    fn given_an_open_circuit_when_a_straggler_reports_then_the_cool_down_stands() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        breaker.on_success();
        breaker.on_failure(t0 + secs(5));
        breaker.on_abandoned(Permit::Call);
        assert_eq!(breaker.state(), BreakerState::Open { until: t0 + OPEN_FOR });
    }

    #[test]
    fn given_a_threshold_of_zero_then_it_behaves_as_one() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(BreakerPolicy {
            failure_threshold: 0,
            open_for: OPEN_FOR,
        });
        assert_eq!(breaker.permit(t0), Permit::Call);
        breaker.on_failure(t0);
        assert_eq!(breaker.state().name(), "open");
    }

    #[test]
    fn the_policy_comes_from_the_environment_with_defaults() {
        let none = BreakerPolicy::from_env(&Env::from_lookup(|_| None)).unwrap();
        assert_eq!(none, BreakerPolicy::default());
        assert_eq!((none.failure_threshold, none.open_for), (5, secs(30)));
        let set = BreakerPolicy::from_env(&Env::from_lookup(|name| match name {
            "BREAKER_FAILURE_THRESHOLD" => Some("2".into()),
            "BREAKER_OPEN_SECONDS" => Some("90".into()),
            _ => None,
        }))
        .unwrap();
        assert_eq!((set.failure_threshold, set.open_for), (2, secs(90)));
        for bad in ["0", "-1", "soon", "3601"] {
            let env = Env::from_lookup(move |name| (name == "BREAKER_OPEN_SECONDS").then(|| bad.into()));
            let error = BreakerPolicy::from_env(&env).unwrap_err();
            assert!(error.to_string().contains("BREAKER_OPEN_SECONDS"), "{bad}: {error}");
        }
    }

    // The shared wrapper.

    #[derive(Debug, PartialEq, Eq)]
    enum ProviderError {
        Down,
        Declined,
    }

    fn shared(clock: &Arc<ManualClock>) -> CircuitBreaker {
        CircuitBreaker::with_clock("test-provider", policy(), clock.clone())
    }

    async fn call(
        breaker: &CircuitBreaker,
        outcome: Result<u32, ProviderError>,
    ) -> Result<u32, BreakerError<ProviderError>> {
        breaker
            .call(|error| *error == ProviderError::Down, || async { outcome })
            .await
    }

    #[tokio::test]
    async fn given_a_failing_provider_when_called_through_the_breaker_then_it_opens_and_stops_calling() {
        let clock = Arc::new(ManualClock::default());
        let breaker = shared(&clock);
        for _ in 0..3 {
            assert!(matches!(
                call(&breaker, Err(ProviderError::Down)).await,
                Err(BreakerError::Failed(ProviderError::Down))
            ));
        }
        let mut called = false;
        let result = breaker
            .call(
                |_: &ProviderError| true,
                || {
                    called = true;
                    async { Ok::<_, ProviderError>(1) }
                },
            )
            .await;
        assert!(!called, "an open circuit does not call the provider");
        assert!(matches!(result, Err(BreakerError::Open { retry_after }) if retry_after == OPEN_FOR));
    }

    #[tokio::test]
    async fn given_business_refusals_when_called_through_the_breaker_then_they_never_open_it() {
        let clock = Arc::new(ManualClock::default());
        let breaker = shared(&clock);
        for _ in 0..10 {
            assert!(matches!(
                call(&breaker, Err(ProviderError::Declined)).await,
                Err(BreakerError::Failed(ProviderError::Declined))
            ));
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[tokio::test]
    async fn given_an_open_breaker_when_the_time_is_up_then_a_successful_probe_closes_it() {
        let clock = Arc::new(ManualClock::default());
        let breaker = shared(&clock);
        for _ in 0..3 {
            let _ = call(&breaker, Err(ProviderError::Down)).await;
        }
        clock.advance(secs(10));
        assert!(matches!(
            call(&breaker, Ok(1)).await,
            Err(BreakerError::Open { retry_after }) if retry_after == secs(20)
        ));
        clock.advance(secs(20));
        assert_eq!(call(&breaker, Ok(7)).await.ok(), Some(7));
        assert_eq!(breaker.state().name(), "closed");
    }

    #[tokio::test]
    async fn given_a_probe_attempt_when_it_is_dropped_unreported_then_the_next_caller_probes() {
        let clock = Arc::new(ManualClock::default());
        let breaker = shared(&clock);
        for _ in 0..3 {
            let _ = call(&breaker, Err(ProviderError::Down)).await;
        }
        clock.advance(OPEN_FOR);
        let probe = breaker.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert!(breaker.try_acquire().is_err(), "one probe at a time");
        drop(probe);
        let next = breaker.try_acquire().unwrap();
        assert!(next.is_probe());
        next.failed();
        assert_eq!(breaker.state().name(), "open");
    }

    #[test]
    fn given_a_poisoned_lock_then_the_breaker_keeps_working() {
        let clock = Arc::new(ManualClock::default());
        let breaker = Arc::new(shared(&clock));
        let poisoner = breaker.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.machine.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(breaker.machine.is_poisoned());
        breaker.try_acquire().unwrap().failed();
        assert_eq!(
            breaker.state(),
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
    }
}
