//! Per-client rate limiting: a sliding window approximated by two weighted fixed windows, counted with
//! one atomic DynamoDB update per request in the guards table.
//!
//! Each limited function belongs to a scope: `api`, where the client is the user of a valid bearer
//! token, otherwise the source IP that API Gateway saw; or `auth` (login and registration, a tighter
//! budget of their own), where the client is always the IP, since every registered account would
//! otherwise bring its token a fresh budget of sign-ups and logins. Logging in does not eat into a
//! client's API budget and vice versa. A refused request is taken off the count again, so a client
//! that keeps sending too fast is still served at the limit's rate.
//!
//! When the guards table cannot be reached, the limiter fails open: the request is served (without
//! `RateLimit-*` headers) and the failure is logged. A shop that stops selling whenever a counter is
//! unavailable is the bigger risk; API Gateway's stage and route throttling still bounds the traffic.

use std::sync::Arc;
use std::time::Duration;

use lambda_http::http::{HeaderMap, HeaderValue};

use crate::auth::TokenService;
use store::rate_counter::{WindowCounter, WindowCounts};
use wiring::telemetry::error_chain;
use wiring::{ConfigError, Env};

/// How long a limiter decision may take before the request is served without one.
const DECISION_TIMEOUT: Duration = Duration::from_millis(1500);

/// A limit of `limit` requests per sliding `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    pub limit: u32,
    pub window_secs: u64,
}

/// What the limiter says about one request, and the numbers the `RateLimit-*` headers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the current fixed window rolls over (or, when refused, until a retry is served).
    pub reset_secs: u64,
    /// Seconds a refused client should wait, assuming it sends nothing meanwhile.
    pub retry_after_secs: Option<u64>,
}

impl SlidingWindow {
    fn window_ms(&self) -> u64 {
        self.window_secs.max(1) * 1000
    }

    /// The fixed window `now_ms` (milliseconds since the epoch) falls in.
    pub fn window_index(&self, now_ms: u64) -> u64 {
        now_ms / self.window_ms()
    }

    /// Decides a request already counted in `counts`: the previous window's count is weighted by the
    /// share of it that still overlaps the sliding window ending now. Integer arithmetic, scaled by the
    /// window length in milliseconds, so the boundaries are exact.
    pub fn verdict(&self, counts: WindowCounts, now_ms: u64) -> Verdict {
        let window_ms = u128::from(self.window_ms());
        let elapsed_ms = u128::from(now_ms) % window_ms;
        let budget = u128::from(self.limit) * window_ms;
        let used = u128::from(counts.current) * window_ms + u128::from(counts.previous) * (window_ms - elapsed_ms);
        if used <= budget {
            return Verdict {
                allowed: true,
                limit: self.limit,
                remaining: u32::try_from((budget - used) / window_ms).unwrap_or(u32::MAX),
                reset_secs: seconds_from_ms(window_ms - elapsed_ms),
                retry_after_secs: None,
            };
        }
        let retry_after_secs = seconds_from_ms(self.wait_until_served_ms(counts, elapsed_ms));
        Verdict {
            allowed: false,
            limit: self.limit,
            remaining: 0,
            reset_secs: retry_after_secs,
            retry_after_secs: Some(retry_after_secs),
        }
    }

    /// Milliseconds until one more request fits, if the client sends nothing until then.
    fn wait_until_served_ms(&self, counts: WindowCounts, elapsed_ms: u128) -> u128 {
        let window_ms = u128::from(self.window_ms());
        let current = u128::from(counts.current);
        let previous = u128::from(counts.previous);
        // Room left for everything but the retried request itself, in window-milliseconds.
        let room = u128::from(self.limit.saturating_sub(1)) * window_ms;
        if current * window_ms <= room && previous > 0 {
            // Still this window: wait until enough of the previous window has slid out, i.e. until
            // previous * (W - t) <= room - current * W.
            let fits_at = window_ms.saturating_sub((room - current * window_ms) / previous);
            fits_at.saturating_sub(elapsed_ms)
        } else {
            // This window alone is over: wait for the next one, then until this window's count (the
            // next one's "previous") weighs little enough: current * (W - t) <= room.
            let into_next = window_ms.saturating_sub(room / current.max(1));
            (window_ms - elapsed_ms) + into_next
        }
    }
}

/// Whole seconds, rounded up, at least one (a header of 0 would invite an immediate retry).
fn seconds_from_ms(ms: u128) -> u64 {
    u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}

/// Whom a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    User(String),
    Ip(String),
}

impl Client {
    /// The user of a valid bearer token, else the source IP (an invalid token is counted by IP, so
    /// forging tokens does not buy a fresh budget). In the `auth` scope, always the IP.
    pub fn of(scope: Scope, tokens: Option<&TokenService>, headers: &HeaderMap, source_ip: Option<&str>) -> Self {
        let user = match (scope, tokens) {
            (Scope::Api, Some(tokens)) => crate::auth::bearer_token(headers)
                .ok()
                .and_then(|token| tokens.verify(token).ok()),
            _ => None,
        };
        match user {
            Some(identity) => Self::User(identity.user_id.to_string()),
            None => Self::Ip(source_ip.unwrap_or("unknown").to_owned()),
        }
    }

    fn key(&self, scope: Scope) -> String {
        let scope = scope.as_str();
        match self {
            Self::User(id) => format!("rate#{scope}#user#{id}"),
            Self::Ip(ip) => format!("rate#{scope}#ip#{ip}"),
        }
    }
}

/// Which budget a function's requests draw on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The API's budget, per signed-in user or else per IP.
    Api,
    /// Login and registration: a budget of their own, per IP only.
    Auth,
}

impl Scope {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "api" => Some(Self::Api),
            "auth" => Some(Self::Auth),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Auth => "auth",
        }
    }
}

/// The limiter a function's entry point consults before its handler runs.
#[derive(Clone)]
pub struct RateLimiter {
    counter: Arc<dyn WindowCounter>,
    window: SlidingWindow,
    scope: Scope,
    /// Verifies bearer tokens to tell users apart; without it (a WebSocket frame names its user by
    /// its connection) only [`RateLimiter::check_user`] tells them apart.
    tokens: Option<TokenService>,
    /// `RateLimit-Policy`, the same on every response: built once.
    policy: HeaderValue,
}

/// A limited function's limit, its scope, and the table that keeps the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub window: SlidingWindow,
    pub scope: Scope,
    pub table: String,
}

impl RateLimitSettings {
    /// `RATE_LIMIT_REQUESTS` (1..=1000000), `RATE_LIMIT_WINDOW_SECONDS` (1..=86400),
    /// `RATE_LIMIT_SCOPE` (`api`, the default, or `auth`) and `GUARDS_TABLE`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let window = SlidingWindow {
            limit: env.number("RATE_LIMIT_REQUESTS", 1..=1_000_000, None)?,
            window_secs: env.number("RATE_LIMIT_WINDOW_SECONDS", 1..=86_400, None)?,
        };
        let scope = match env.optional("RATE_LIMIT_SCOPE") {
            None => Scope::Api,
            Some(_) => env.choice("RATE_LIMIT_SCOPE", &[("api", Scope::Api), ("auth", Scope::Auth)])?,
        };
        Ok(Self {
            window,
            scope,
            table: env.required("GUARDS_TABLE")?,
        })
    }
}

impl RateLimiter {
    pub fn new(counter: Arc<dyn WindowCounter>, window: SlidingWindow, scope: Scope, tokens: TokenService) -> Self {
        Self::built(counter, window, scope, Some(tokens))
    }

    /// A limiter of the API's budget for callers already known by their user id.
    pub fn of_users(counter: Arc<dyn WindowCounter>, window: SlidingWindow) -> Self {
        Self::built(counter, window, Scope::Api, None)
    }

    fn built(
        counter: Arc<dyn WindowCounter>,
        window: SlidingWindow,
        scope: Scope,
        tokens: Option<TokenService>,
    ) -> Self {
        let policy = HeaderValue::from_str(&format!("{};w={}", window.limit, window.window_secs))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            counter,
            window,
            scope,
            tokens,
            policy,
        }
    }

    /// Counts the request and decides it; `None` when the counters are unreachable (fail open). A
    /// refused request is taken off the count again (best effort).
    pub async fn check(&self, headers: &HeaderMap, source_ip: Option<&str>, now_ms: u64) -> Option<Verdict> {
        let client = Client::of(self.scope, self.tokens.as_ref(), headers, source_ip);
        self.check_client(&client, now_ms).await
    }

    /// [`RateLimiter::check`] for a user known otherwise (a WebSocket frame, by its connection): it
    /// draws on the same budget as that user's requests.
    pub async fn check_user(&self, user_id: &str, now_ms: u64) -> Option<Verdict> {
        self.check_client(&Client::User(user_id.to_owned()), now_ms).await
    }

    async fn check_client(&self, client: &Client, now_ms: u64) -> Option<Verdict> {
        let key = client.key(self.scope);
        let window = self.window.window_index(now_ms);
        let expires_at = (window + 2) * self.window.window_secs + 60;
        let counts = match tokio::time::timeout(DECISION_TIMEOUT, self.counter.count(&key, window, expires_at)).await {
            Ok(Ok(counts)) => counts,
            Ok(Err(error)) => {
                tracing::error!(error = %error_chain(&error), "rate limiter unavailable; serving unlimited");
                return None;
            }
            Err(_) => {
                tracing::error!("rate limiter timed out; serving unlimited");
                return None;
            }
        };
        let verdict = self.window.verdict(counts, now_ms);
        if !verdict.allowed {
            tracing::warn!(client = ?client, scope = self.scope.as_str(), "rate limit exceeded");
            let uncounted = tokio::time::timeout(DECISION_TIMEOUT, self.counter.uncount(&key, window)).await;
            if !matches!(uncounted, Ok(Ok(()))) {
                tracing::warn!("could not take a refused request off the rate count");
            }
        }
        Some(verdict)
    }

    /// The `RateLimit-*` headers of a decision.
    pub fn headers(&self, verdict: &Verdict) -> [(&'static str, HeaderValue); 4] {
        [
            ("ratelimit-limit", verdict.limit.into()),
            ("ratelimit-remaining", verdict.remaining.into()),
            ("ratelimit-reset", verdict.reset_secs.into()),
            ("ratelimit-policy", self.policy.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use store::StoreError;
    use store::rate_counter::InMemoryWindowCounter;

    const WINDOW: SlidingWindow = SlidingWindow {
        limit: 10,
        window_secs: 60,
    };

    fn at(window: u64, seconds_into: u64) -> u64 {
        (window * 60 + seconds_into) * 1000
    }

    fn counts(current: u64, previous: u64) -> WindowCounts {
        WindowCounts { current, previous }
    }

    #[test]
    fn requests_within_the_limit_are_allowed_and_count_down() {
        let first = WINDOW.verdict(counts(1, 0), at(5, 0));
        assert!(first.allowed);
        assert_eq!(first.remaining, 9);
        assert_eq!(first.reset_secs, 60);
        let tenth = WINDOW.verdict(counts(10, 0), at(5, 45));
        assert!(tenth.allowed);
        assert_eq!(tenth.remaining, 0);
        assert_eq!(tenth.reset_secs, 15);
        assert_eq!(tenth.retry_after_secs, None);
    }

    #[test]
    fn the_request_over_the_limit_is_refused_until_the_next_window_frees_room() {
        // Given 10 requests already in this window and nothing before, when the 11th arrives 20 s in,
        let verdict = WINDOW.verdict(counts(11, 0), at(5, 20));
        // then it is refused until enough of this window has slid out of the next one.
        assert!(!verdict.allowed);
        assert_eq!(verdict.remaining, 0);
        // 40 s to the roll-over, then 1 - 9/11 of a window (≈ 10.9 s) for the weight to fall to 9.
        assert_eq!(verdict.retry_after_secs, Some(51));
        assert_eq!(verdict.reset_secs, 51);
        // and waiting that long really is enough:
        let later = WINDOW.verdict(counts(1, 11), at(6, 11));
        assert!(later.allowed, "{later:?}");
        assert!(!WINDOW.verdict(counts(1, 11), at(6, 10)).allowed);
    }

    #[test]
    fn the_previous_window_weighs_by_how_much_of_it_still_overlaps() {
        // 10 in the previous window: a quarter of the way in, they still count as 7.5.
        let verdict = WINDOW.verdict(counts(2, 10), at(6, 15));
        assert!(verdict.allowed);
        assert_eq!(verdict.remaining, 0); // 10 - 9.5
        let refused = WINDOW.verdict(counts(3, 10), at(6, 15));
        assert!(!refused.allowed);
        // A 4th request fits once 3 + 1 + 10 * (1 - t) <= 10, i.e. at t = 0.4 of the window (24 s): 9 s on.
        assert_eq!(refused.retry_after_secs, Some(9));
        assert!(WINDOW.verdict(counts(4, 10), at(6, 24)).allowed);
    }

    #[test]
    fn a_previous_window_long_gone_weighs_nothing() {
        let verdict = WINDOW.verdict(counts(10, 0), at(9, 59));
        assert!(verdict.allowed);
        assert_eq!(verdict.reset_secs, 1);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let verdict = WINDOW.verdict(counts(11, 0), at(5, 59) + 999);
        assert!(verdict.retry_after_secs.is_some_and(|secs| secs >= 1));
    }

    #[test]
    fn a_limit_of_one_waits_a_full_window_after_the_next_roll_over() {
        let one = SlidingWindow {
            limit: 1,
            window_secs: 10,
        };
        let refused = one.verdict(counts(2, 0), 3_000);
        // 7 s to the roll-over, then the whole next window for the 2 to slide out.
        assert_eq!(refused.retry_after_secs, Some(17));
    }

    struct Unreachable;

    #[async_trait]
    impl WindowCounter for Unreachable {
        async fn count(&self, _: &str, _: u64, _: u64) -> Result<WindowCounts, StoreError> {
            Err(StoreError::Unavailable("connection refused".into()))
        }
        async fn uncount(&self, _: &str, _: u64) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".into()))
        }
    }

    fn limiter(counter: Arc<dyn WindowCounter>, limit: u32) -> RateLimiter {
        scoped_limiter(counter, limit, Scope::Api)
    }

    fn scoped_limiter(counter: Arc<dyn WindowCounter>, limit: u32, scope: Scope) -> RateLimiter {
        let window = SlidingWindow { limit, window_secs: 60 };
        RateLimiter::new(counter, window, scope, crate::testing::tokens())
    }

    fn bearer(user: &domain::UserId) -> HeaderMap {
        let token = crate::testing::tokens()
            .issue(user, domain::Role::Customer)
            .unwrap()
            .access_token;
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[tokio::test]
    async fn refused_requests_are_taken_off_the_count_so_a_persistent_client_is_served_at_the_limit() {
        let limiter = limiter(Arc::new(InMemoryWindowCounter::default()), 2);
        let ip = Some("198.51.100.7");
        let headers = HeaderMap::new();
        // Given two requests served and ten refused in window 5,
        for at_ms in [at(5, 0), at(5, 1)] {
            assert!(limiter.check(&headers, ip, at_ms).await.unwrap().allowed);
        }
        for second in 2..12 {
            assert!(!limiter.check(&headers, ip, at(5, second)).await.unwrap().allowed);
        }
        // when the sliding window has moved past half of those two, then the next one is served:
        // the ten refusals weigh nothing.
        assert!(limiter.check(&headers, ip, at(6, 31)).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn the_auth_scope_counts_by_address_even_with_a_valid_token() {
        let limiter = scoped_limiter(Arc::new(InMemoryWindowCounter::default()), 1, Scope::Auth);
        let ip = Some("198.51.100.7");
        // Given the address spent its one credential request,
        assert!(limiter.check(&HeaderMap::new(), ip, at(5, 0)).await.unwrap().allowed);
        // then a signed-in account from it gets no budget of its own.
        let user = domain::UserId::generate();
        assert!(!limiter.check(&bearer(&user), ip, at(5, 1)).await.unwrap().allowed);
        assert_eq!(Scope::parse("auth"), Some(Scope::Auth));
        assert_eq!(Scope::parse("other"), None);
    }

    #[tokio::test]
    async fn an_unreachable_counter_fails_open() {
        let verdict = limiter(Arc::new(Unreachable), 1)
            .check(&HeaderMap::new(), Some("198.51.100.7"), at(5, 0))
            .await;
        assert_eq!(verdict, None);
    }

    #[tokio::test]
    async fn clients_are_counted_by_verified_user_else_by_ip() {
        let limiter = limiter(Arc::new(InMemoryWindowCounter::default()), 1);
        let now = at(5, 0);
        let user = domain::UserId::generate();
        let with_token = bearer(&user);
        let mut forged = HeaderMap::new();
        forged.insert("authorization", HeaderValue::from_static("Bearer not.a.token"));

        // Given the IP spent its one request,
        assert!(
            limiter
                .check(&HeaderMap::new(), Some("198.51.100.7"), now)
                .await
                .unwrap()
                .allowed
        );
        // then a forged token from it is still counted against the IP and refused,
        assert!(!limiter.check(&forged, Some("198.51.100.7"), now).await.unwrap().allowed);
        // while a signed-in user behind the same IP has their own budget, as has another IP.
        assert!(
            limiter
                .check(&with_token, Some("198.51.100.7"), now)
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !limiter
                .check(&with_token, Some("198.51.100.7"), now)
                .await
                .unwrap()
                .allowed
        );
        assert!(
            limiter
                .check(&HeaderMap::new(), Some("203.0.113.9"), now)
                .await
                .unwrap()
                .allowed
        );
    }
}
