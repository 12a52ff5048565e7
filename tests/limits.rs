//! Per-client rate limits and login protection, end to end, on the tightly limited second stack that
//! `make test-e2e` deploys (`SHOP_LIMITS_API_URL`; settings in `SHOP_LIMITS_SETTINGS`): 5 requests per
//! 2 s per client, 8 per 3 s for login and registration, a client IP locked after 4 failed logins
//! for 3 s, and 2 notifications per recipient per hour. On the emulator every anonymous caller is
//! 127.0.0.1, so these tests take turns.
//!
//! Also here: the limiter's and the login guard's DynamoDB counters, driven directly on the suite
//! stack's guards table, and the limiter failing open when its table is unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use api::ratelimit::{RateLimiter, Scope, SlidingWindow};
use domain::UserId;
use e2e::{
    Api, Reply, Role, assert_problem, emulator_sdk_config, env_var, mint_token, unique_category, unique_email, unix_now,
};
use serde_json::json;
use store::login_failures::{DynamoLoginFailures, LoginFailures, Subject};
use store::rate_counter::{DynamoWindowCounter, WindowCounter, WindowCounts};
use tokio::sync::{Mutex, MutexGuard};

/// The limits stack's anonymous budgets are shared by every test here: one test at a time.
static TURN: Mutex<()> = Mutex::const_new(());

async fn my_turn() -> MutexGuard<'static, ()> {
    TURN.lock().await
}

const API_LIMIT: &str = "5";
/// More requests than any budget of the limits stack allows in one window.
const FLOOD: usize = 30;

/// A token of the limits stack for a fresh (never registered) user: enough for the limiter, which
/// counts signed-in callers by the user in a valid token.
fn fresh_user_token() -> String {
    let secret = env_var("SHOP_LIMITS_JWT_SECRET");
    mint_token(&secret, &UserId::generate().to_string(), Role::Customer, unix_now())
}

/// Sends `request` until it is refused with 429, at most `FLOOD` times; returns the refusal and how
/// many requests were served before it.
async fn flood<F, Fut>(mut request: F) -> (Reply, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    for served in 0..FLOOD {
        let reply = request().await;
        if reply.status == 429 {
            return (reply, served);
        }
    }
    panic!("no 429 after {FLOOD} requests");
}

fn header_number(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header: {}", reply.describe()))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a whole number: {}", reply.describe()))
}

fn assert_rate_limited(reply: &Reply) -> Duration {
    let body = assert_problem(reply, 429);
    assert_eq!(body["type"], "/problems/rate-limited", "{}", reply.describe());
    let retry_after = header_number(reply, "retry-after");
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    assert!(reply.header("ratelimit-limit").is_some(), "{}", reply.describe());
    assert_eq!(header_number(reply, "ratelimit-remaining"), 0);
    assert_eq!(header_number(reply, "ratelimit-reset"), retry_after);
    Duration::from_secs(retry_after)
}

#[tokio::test]
async fn a_user_over_the_limit_gets_429_with_retry_after_while_another_is_served_and_it_recovers() {
    let _turn = my_turn().await;
    let api = Api::limits_from_env().returning_throttled();
    let (alice, bob) = (fresh_user_token(), fresh_user_token());

    // Given Alice's first request is served with the rate limit headers
    let first = api.get("/api/orders", Some(&alice)).await;
    first.expect(200);
    assert_eq!(first.header("ratelimit-limit"), Some(API_LIMIT));
    assert_eq!(first.header("ratelimit-policy"), Some("5;w=2"));
    assert!(header_number(&first, "ratelimit-remaining") < 5);
    assert!((1..=2).contains(&header_number(&first, "ratelimit-reset")));

    // When she keeps going, she is refused with 429, Retry-After and the headers
    let (refused, served) = flood(|| api.get("/api/orders", Some(&alice))).await;
    assert!(served <= 8, "{served} requests were served past a limit of 5 per 2 s");
    let wait = assert_rate_limited(&refused);
    assert_eq!(refused.header("ratelimit-limit"), Some(API_LIMIT));

    // Then Bob, signed in from the same address, is unaffected
    api.get("/api/orders", Some(&bob)).await.expect(200);

    // And Alice is served again once she waited as told
    tokio::time::sleep(wait).await;
    let again = api.get("/api/orders", Some(&alice)).await;
    again.expect(200);
    assert_eq!(again.header("ratelimit-limit"), Some(API_LIMIT));
}

#[tokio::test]
async fn anonymous_clients_are_limited_by_address_and_health_never_is() {
    let _turn = my_turn().await;
    let api = Api::limits_from_env().returning_throttled();

    // Given an anonymous client browsing until it is refused
    let (refused, served) = flood(|| api.get("/api/products?limit=1", None)).await;
    assert!(
        served <= 8,
        "{served} anonymous requests were served past a limit of 5 per 2 s"
    );
    let wait = assert_rate_limited(&refused);

    // When it asks for /health, far more often than any limit, then it is always answered, unlimited
    for _ in 0..FLOOD {
        let health = api.get("/health", None).await;
        health.expect(200);
        assert_eq!(health.header("ratelimit-limit"), None, "{}", health.describe());
    }

    // And after waiting, it browses again
    tokio::time::sleep(wait).await;
    api.get("/api/products?limit=1", None).await.expect(200);
}

#[tokio::test]
async fn a_forged_token_is_counted_against_the_address_not_a_fresh_budget() {
    let _turn = my_turn().await;
    let api = Api::limits_from_env().returning_throttled();
    // Given the address spent its anonymous budget
    let (refused, _) = flood(|| api.get("/api/products?limit=1", None)).await;
    let wait = assert_rate_limited(&refused);
    // When a made-up token comes along, then it is refused just the same
    let forged = api.get("/api/products?limit=1", Some("made.up.token")).await;
    assert_rate_limited(&forged);
    tokio::time::sleep(wait).await;
}

#[tokio::test]
async fn login_and_registration_have_a_budget_of_their_own() {
    let _turn = my_turn().await;
    let api = Api::limits_from_env().returning_throttled();

    // Given registrations (even refused ones) until the credential budget is spent
    let empty = json!({});
    let (refused, served) = flood(|| api.post_json("/api/users", None, &empty)).await;
    assert!(
        served <= 12,
        "{served} registrations were served past a limit of 8 per 3 s"
    );
    let body = assert_problem(&refused, 429);
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(refused.header("ratelimit-limit"), Some("8"));
    let wait = Duration::from_secs(header_number(&refused, "retry-after"));

    // When the same address browses, then its API budget is untouched
    let browsing = api.get("/api/products?limit=1", None).await;
    browsing.expect(200);
    assert_eq!(browsing.header("ratelimit-limit"), Some(API_LIMIT));

    // And after the wait, registering works again
    tokio::time::sleep(wait).await;
    let email = unique_email("limits");
    api.register(&email, e2e::PASSWORD, "Limits").await.expect(201);
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn failed_logins_from_one_address_slow_down_then_lock_it_for_every_email_then_it_recovers() {
    let _turn = my_turn().await;
    let api = Api::limits_from_env().returning_throttled();
    let email = unique_email("ip-lock");
    api.register(&email, e2e::PASSWORD, "Locked out").await.expect(201);
    let nobody = unique_email("nobody");
    // Another email each time would be as good: the address is what is counted here.
    let wrong = || api.login(&nobody, "not-the-password");

    // Given two failures (each for another email) are answered 401 straight away,
    wrong().await.expect(401);
    wrong().await.expect(401);
    // when a third follows at once, it must wait a second,
    let slowed = wrong().await;
    let body = assert_problem(&slowed, 429);
    assert_eq!(body["type"], "/problems/too-many-failed-logins");
    assert_eq!(header_number(&slowed, "retry-after"), 1);
    // after which it is heard (and fails); the next pause is longer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wrong().await.expect(401);
    let slowed = wrong().await;
    let pause = header_number(&slowed, "retry-after");
    assert!((1..=2).contains(&pause), "a pause of {pause} s");
    tokio::time::sleep(Duration::from_secs(pause)).await;

    // When the fourth failure locks the address,
    wrong().await.expect(401);
    // then even the right password for a real account is refused for the lock's length,
    let locked = api.login(&email, e2e::PASSWORD).await;
    assert_problem(&locked, 429);
    assert_eq!(locked.json["type"], "/problems/too-many-failed-logins");
    let lock = header_number(&locked, "retry-after");
    assert!((1..=3).contains(&lock), "lock of {lock} s");

    // and once it is over, the account signs in.
    tokio::time::sleep(Duration::from_secs(lock)).await;
    let token = api.token(&email, e2e::PASSWORD).await;
    assert!(!token.is_empty());
}

#[tokio::test]
async fn notifications_past_the_hourly_cap_are_recorded_as_suppressed_and_not_sent() {
    let _turn = my_turn().await;
    // Waits out the limits: this test is about the cap of 2 notifications per recipient per hour.
    let api = Api::limits_from_env();
    let admin = api
        .token(&env_var("SHOP_ADMIN_EMAIL"), &env_var("SHOP_ADMIN_PASSWORD"))
        .await;
    let cup = api
        .create_product(&admin, "Capped cup", &unique_category(), 500, 10)
        .await;

    // Given a new customer, whose welcome email is the first notification of the hour,
    let customer = api.customer().await;
    api.await_notifications(&customer.token, None, "", "the welcome email", |items| {
        items
            .iter()
            .find(|item| item["event_type"] == "user.registered" && item["status"] == "SENT")
            .cloned()
    })
    .await;

    // when an order brings two more (received, then confirmed),
    let placed = api
        .place_order(
            Some(&customer.token),
            &json!({"items": [{"product_id": cup["id"], "quantity": 1}]}),
            None,
        )
        .await;
    let order_id = placed.expect(201)["id"].as_str().unwrap().to_owned();

    // then the second is sent and the third, over the cap, is recorded as suppressed, never attempted.
    let (created, confirmed) = api
        .await_notifications(&customer.token, None, "", "the order's two notifications", |items| {
            let created = e2e::mentioning(items, "order.created", &order_id)
                .first()
                .copied()
                .cloned();
            let confirmed = e2e::mentioning(items, "order.confirmed", &order_id)
                .first()
                .copied()
                .cloned();
            created.zip(confirmed)
        })
        .await;
    assert_eq!(created["status"], "SENT", "{created}");
    assert_eq!(confirmed["status"], "SUPPRESSED", "{confirmed}");
    assert_eq!(confirmed["attempts"], 0, "{confirmed}");
    assert!(
        confirmed.get("sent_at").is_none_or(serde_json::Value::is_null),
        "{confirmed}"
    );
}

// ---------------------------------------------------------------- the counters, on the suite's table

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&emulator_sdk_config().await)
}

fn counts(current: u64, previous: u64) -> WindowCounts {
    WindowCounts { current, previous }
}

#[tokio::test]
async fn the_window_counter_counts_atomically_and_rolls_windows_over() {
    let counter = DynamoWindowCounter::new(dynamodb().await, env_var("SHOP_GUARDS_TABLE"));
    let key = format!("rate#e2e#{}", uuid::Uuid::new_v4());
    // (The window numbers are made up; the TTL is real, so keep the item for the test's length.)
    let expires = unix_now() + 3600;

    // Given 20 concurrent requests in window 100, then each is counted exactly once
    let counter = Arc::new(counter);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (counter, key) = (Arc::clone(&counter), key.clone());
        tasks.push(tokio::spawn(
            async move { counter.count(&key, 100, expires).await.unwrap() },
        ));
    }
    let mut seen: Vec<u64> = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().current);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());

    // When the next window starts, this one becomes its previous
    assert_eq!(counter.count(&key, 101, expires).await.unwrap(), counts(1, 20));
    assert_eq!(counter.count(&key, 101, expires).await.unwrap(), counts(2, 20));
    // A caller whose clock lags counts in the current window
    assert_eq!(counter.count(&key, 100, expires).await.unwrap(), counts(3, 20));
    // After an idle window, nothing carries over
    assert_eq!(counter.count(&key, 103, expires).await.unwrap(), counts(1, 0));

    // A refused request is taken off again, but only in its own window
    counter.uncount(&key, 102).await.unwrap();
    assert_eq!(counter.count(&key, 103, expires).await.unwrap(), counts(2, 0));
    counter.uncount(&key, 103).await.unwrap();
    assert_eq!(counter.count(&key, 103, expires).await.unwrap(), counts(2, 0));
}

#[tokio::test]
async fn the_limiter_fails_open_when_its_table_is_unreachable() {
    // Given a limiter whose table does not exist
    let counter = Arc::new(DynamoWindowCounter::new(dynamodb().await, "no-such-guards-table"));
    let window = SlidingWindow {
        limit: 1,
        window_secs: 60,
    };
    let limiter = RateLimiter::new(counter, window, Scope::Api, api::testing::tokens());
    // When a request is decided, then there is no verdict: the request is served, unlimited
    let headers = lambda_http::http::HeaderMap::new();
    for _ in 0..3 {
        assert_eq!(limiter.check(&headers, Some("192.0.2.1"), 1_000).await, None);
    }
}

#[tokio::test]
async fn login_failures_are_counted_forgotten_after_the_lock_and_cleared() {
    let failures = DynamoLoginFailures::new(dynamodb().await, env_var("SHOP_GUARDS_TABLE"));
    let subject = Subject::Ip(format!("e2e-{}", uuid::Uuid::new_v4()));
    assert_eq!(failures.get(&subject).await.unwrap(), None);

    // Given three failures within the memory of the lock (times in epoch milliseconds)
    for now_ms in [1_000_000, 1_001_000, 1_002_000] {
        failures
            .record(&subject, now_ms, now_ms - 900_000, unix_now() + 3600)
            .await
            .unwrap();
    }
    let counted = failures.get(&subject).await.unwrap().unwrap();
    assert_eq!((counted.count, counted.last_at_ms), (3, 1_002_000));

    // When the next comes after they were forgotten, the count starts again
    failures
        .record(&subject, 5_000_000, 4_100_000, unix_now() + 3600)
        .await
        .unwrap();
    let counted = failures.get(&subject).await.unwrap().unwrap();
    assert_eq!((counted.count, counted.last_at_ms), (1, 5_000_000));

    // Both subjects of a login attempt are read in one request, each getting its own
    let never_failed = Subject::Ip(format!("e2e-{}", uuid::Uuid::new_v4()));
    let (one, other) = failures.get_both(&subject, &never_failed).await.unwrap();
    assert_eq!(one.map(|f| f.count), Some(1));
    assert_eq!(other, None);

    // And clearing removes them
    failures.clear(&subject).await.unwrap();
    assert_eq!(failures.get(&subject).await.unwrap(), None);
}
