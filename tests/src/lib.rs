//! Helpers for the end-to-end suite: a small HTTP client for the deployed shop API, fresh test data
//! (users with unique emails, products in a unique category) and assertions on the public contract
//! (RFC 9457 problem bodies, field errors).
//!
//! Inputs come from the environment:
//! - `SHOP_API_URL`: base URL of the deployed API, no trailing slash (required; `make test-e2e` sets it);
//! - `SHOP_ADMIN_EMAIL`, `SHOP_ADMIN_PASSWORD`: an existing admin account;
//! - `SHOP_JWT_SECRET` (optional): the token signing secret, to mint expired or foreign-user tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod stripe_emulator;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::auth::TokenService;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::UserId;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

pub use domain::Role;

/// The password every user registered by [`Api::customer`] gets.
pub const PASSWORD: &str = "e2e-correct-horse-battery";

/// Words that betray internals (SDK errors, table names, panics) and must never reach a client.
const INTERNAL_SUBSTRINGS: &[&str] = &[
    "dynamodb",
    "panicked",
    "backtrace",
    "aws-sdk",
    "aws_sdk",
    "serde",
    "secretsmanager",
    "src/",
    ".rs:",
];
/// Checked case-sensitively: `ResourceNotFoundException`, `UsersTable`, ...
const INTERNAL_CASED_SUBSTRINGS: &[&str] = &["Exception", "Table"];
/// Checked as whole words, case-insensitively ("acceptable" is fine, "table" is not).
const INTERNAL_WORDS: &[&str] = &["table", "stack", "sdk"];

/// One response: status, headers and the body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the status, showing the whole response when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status; response: {}", self.describe());
        &self.json
    }

    pub fn describe(&self) -> String {
        format!("{} {:?} {}", self.status, self.headers, self.text)
    }
}

/// A registered customer and a token for it.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// The deployed API as a client sees it.
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// Whether a 429 is waited out and retried (the suite's default) or returned (tests of the limits).
    retries_throttled: bool,
}

static ADMIN_TOKEN: OnceCell<String> = OnceCell::const_new();

impl Api {
    /// The API named by `SHOP_API_URL`. Fails the calling test when it is not set: an end-to-end test
    /// that silently passes without a stack would prove nothing.
    #[track_caller]
    pub fn from_env() -> Self {
        match std::env::var("SHOP_API_URL") {
            Ok(url) if !url.trim().is_empty() => Self::at(&url),
            _ => panic!(
                "SHOP_API_URL is not set: the end-to-end suite needs a deployed API. Run `make test-e2e` \
                 (deploys a private local stack and runs this suite), or set SHOP_API_URL (plus \
                 SHOP_ADMIN_EMAIL, SHOP_ADMIN_PASSWORD and optionally SHOP_JWT_SECRET) to test a running stack."
            ),
        }
    }

    /// The tightly limited second stack `make test-e2e` deploys for the tests of the limits
    /// (`SHOP_LIMITS_API_URL`).
    #[track_caller]
    pub fn limits_from_env() -> Self {
        Self::at(&env_var("SHOP_LIMITS_API_URL"))
    }

    /// This client, returning 429s instead of waiting them out.
    pub fn returning_throttled(mut self) -> Self {
        self.retries_throttled = false;
        self
    }

    /// The API at `url` (another stack than the suite's: the chaos scenarios' stacks).
    pub fn at_url(url: &str) -> Self {
        Self::at(url)
    }

    /// One attempt of a JSON `POST`, `None` when no answer came (the API unreachable, as during an
    /// emulator restart) instead of failing the test.
    pub async fn try_post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Option<Reply> {
        let request = self
            .http
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let request = match token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        };
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.ok()?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Some(Reply {
            status,
            headers,
            json,
            text,
        })
    }

    fn at(url: &str) -> Self {
        let base = url.trim().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Self {
            base,
            http,
            retries_throttled: true,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one request. `body` is sent as is with `content_type` when given. A 429 (API Gateway
    /// throttling or the API's rate limiter, which refuse before doing anything) is retried after a pause.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = Url::parse(&self.url(path)).unwrap_or_else(|error| panic!("bad URL for {path}: {error}"));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(content_type) = content_type {
                request = request.header(CONTENT_TYPE, content_type);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|error| panic!("{method} {url} failed: {error}"));
            let status = response.status().as_u16();
            if status == 429 && self.retries_throttled && attempt < 6 {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok())
                    .map_or(Duration::from_millis(250 * attempt), Duration::from_secs);
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                continue;
            }
            let headers = response.headers().clone();
            let text = response
                .text()
                .await
                .unwrap_or_else(|error| panic!("{method} {url}: reading the body failed: {error}"));
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Reply {
                status,
                headers,
                json,
                text,
            };
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None, None, &[]).await
    }

    /// GET with extra request headers.
    pub async fn get_with(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, token, None, None, headers).await
    }

    /// GET with a raw `Authorization` header value (for malformed schemes).
    pub async fn get_authorized(&self, path: &str, authorization: &str) -> Reply {
        self.send(Method::GET, path, None, None, None, &[("authorization", authorization)])
            .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_raw(Method::POST, path, token, "application/json", body.to_string())
            .await
    }

    pub async fn patch_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_raw(Method::PATCH, path, token, "application/json", body.to_string())
            .await
    }

    /// A request whose body is sent byte for byte with the given content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Reply {
        self.send(method, path, token, Some(content_type), Some(body.into()), &[])
            .await
    }

    // ------------------------------------------------------------------ users and tokens

    /// `POST /api/users` with the given fields.
    pub async fn register(&self, email: &str, password: &str, name: &str) -> Reply {
        self.post_json(
            "/api/users",
            None,
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    /// `POST /api/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post_json("/api/auth/login", None, &json!({"email": email, "password": password}))
            .await
    }

    /// Logs in and returns the access token, failing the test when login does not answer 200.
    pub async fn token(&self, email: &str, password: &str) -> String {
        let reply = self.login(email, password).await;
        let body = reply.expect(200);
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login gave no access_token: {}", reply.text))
            .to_owned()
    }

    /// Asserts that `email`/`password` cannot log in (the account was never created, or not with this
    /// password).
    pub async fn assert_cannot_log_in(&self, email: &str, password: &str) {
        let reply = self.login(email, password).await;
        assert_eq!(
            reply.status,
            401,
            "expected login of {email} to fail with 401 (no such account); got {}",
            reply.describe()
        );
    }

    /// A freshly registered customer, logged in.
    pub async fn customer(&self) -> Customer {
        self.customer_with_phone(None).await
    }

    /// A freshly registered customer named "E2E Customer", with `phone` when given, logged in.
    pub async fn customer_with_phone(&self, phone: Option<&str>) -> Customer {
        let email = unique_email("customer");
        let mut body = json!({"email": email, "password": PASSWORD, "name": "E2E Customer"});
        if let Some(phone) = phone {
            body["phone"] = json!(phone);
        }
        let reply = self.post_json("/api/users", None, &body).await;
        let user = reply.expect(201);
        let id = user["id"].as_str().expect("user id").to_owned();
        let token = self.token(&email, PASSWORD).await;
        Customer {
            id,
            email,
            password: PASSWORD.to_owned(),
            token,
        }
    }

    /// A token of the admin named by `SHOP_ADMIN_EMAIL`/`SHOP_ADMIN_PASSWORD`, logged in once per test
    /// binary.
    pub async fn admin_token(&self) -> String {
        ADMIN_TOKEN
            .get_or_init(|| async {
                let email = env_required("SHOP_ADMIN_EMAIL");
                let password = env_required("SHOP_ADMIN_PASSWORD");
                let reply = self.login(&email, &password).await;
                assert_eq!(
                    reply.status,
                    200,
                    "the admin account {email} (SHOP_ADMIN_EMAIL/SHOP_ADMIN_PASSWORD) cannot log in: {}",
                    reply.describe()
                );
                reply.json["access_token"]
                    .as_str()
                    .expect("admin access_token")
                    .to_owned()
            })
            .await
            .clone()
    }

    // ------------------------------------------------------------------ products

    /// Creates a product as admin and returns it, failing the test unless the API answers 201.
    pub async fn create_product(&self, admin: &str, name: &str, category: &str, price: i64, stock: i64) -> Value {
        let body = json!({
            "name": name,
            "description": format!("{name} made by the e2e suite"),
            "category": category,
            "price": price,
            "stock_quantity": stock,
        });
        let reply = self.post_json("/api/products", Some(admin), &body).await;
        reply.expect(201).clone()
    }

    /// `GET /api/products` with the given query parameters (values are URL-encoded here).
    pub async fn list_products(&self, query: &[(&str, &str)]) -> Reply {
        self.get(&products_path(query), None).await
    }

    /// The items of one category, first page of up to 100. Retries for a few seconds until `expected`
    /// items are visible (the listing is served by an eventually consistent index on AWS).
    pub async fn category_items(&self, category: &str, expected: usize) -> Vec<Value> {
        let mut last = Vec::new();
        for _ in 0..20 {
            let reply = self.list_products(&[("category", category), ("limit", "100")]).await;
            last = reply.expect(200)["items"].as_array().expect("items").clone();
            if last.len() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        last
    }

    pub async fn get_product(&self, id: &str) -> Reply {
        self.get(&format!("/api/products/{id}"), None).await
    }
}

/// `/api/products?...` with properly encoded query parameters.
pub fn products_path(query: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://x/api/products").expect("static URL");
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

#[track_caller]
fn env_required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `make test-e2e`, or set it to an existing admin account of the stack at SHOP_API_URL")
    })
}

/// `e2e-<tag>-<uuid>@example.com`: never used before, so tests can run in parallel and repeatedly.
pub fn unique_email(tag: &str) -> String {
    format!("e2e-{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// `e2e-<8 hex chars>`: a category only the calling test puts products in.
pub fn unique_category() -> String {
    format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A random, well-formed id nobody has.
pub fn unknown_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------- tokens

/// The signing secret, when the environment provides it.
pub fn jwt_secret() -> Option<String> {
    std::env::var("SHOP_JWT_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// An HS256 token for `user_id` signed with `secret`, as if issued at `issued_at` (valid for an hour).
pub fn mint_token(secret: &str, user_id: &str, role: Role, issued_at: u64) -> String {
    let user_id = UserId::parse(user_id).expect("a user id");
    TokenService::new(secret.as_bytes(), 3600)
        .issue_at(&user_id, role, issued_at)
        .expect("minting a token")
        .access_token
}

/// `token` with one character of its signature changed (in the middle, so the decoded bytes change).
pub fn tamper_signature(token: &str) -> String {
    let (head, signature) = token.rsplit_once('.').expect("a JWT has three parts");
    let mut chars: Vec<char> = signature.chars().collect();
    assert!(!chars.is_empty(), "the token has no signature: {token}");
    let at = chars.len() / 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}", chars.into_iter().collect::<String>())
}

/// `token` with its claims rewritten by `change` and the original signature kept.
pub fn tamper_claims(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64 claims")).expect("JSON claims");
    change(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// An unsigned (`alg: none`) token claiming to be `user_id` with `role`.
pub fn unsigned_token(user_id: &str, role: &str) -> String {
    let now = unix_now();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"sub": user_id, "role": role, "iat": now, "exp": now + 600, "iss": "shop-api", "aud": "shop-api"})
            .to_string(),
    );
    format!("{header}.{claims}.")
}

// ---------------------------------------------------------------------- problem bodies

/// Asserts an RFC 9457 problem response with `status`: `application/problem+json`, the fields `type`,
/// `title`, `status`, `detail` and `correlation_id` (the one echoed in `X-Correlation-ID`), and nothing
/// internal in the body. Returns the body.
#[track_caller]
pub fn assert_problem(reply: &Reply, status: u16) -> &Value {
    let shown = reply.describe();
    assert_eq!(reply.status, status, "unexpected status; response: {shown}");
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/problem+json"),
        "a problem must be application/problem+json, got {content_type:?}: {shown}"
    );
    let body = &reply.json;
    assert!(body.is_object(), "the problem body is not a JSON object: {shown}");
    for field in ["type", "title", "detail", "correlation_id"] {
        assert!(
            body[field].as_str().is_some_and(|value| !value.is_empty()),
            "the problem lacks a non-empty string {field:?}: {shown}"
        );
    }
    assert_eq!(
        body["status"],
        json!(status),
        "problem.status must equal the HTTP status: {shown}"
    );
    assert_eq!(
        reply.header("x-correlation-id"),
        body["correlation_id"].as_str(),
        "the problem's correlation_id must be the X-Correlation-ID echoed: {shown}"
    );
    if let Some(errors) = body.get("errors") {
        let errors = errors
            .as_array()
            .unwrap_or_else(|| panic!("errors must be an array: {shown}"));
        for error in errors {
            assert!(
                error["field"].is_string() && error["message"].is_string(),
                "each error must be {{field, message}}: {shown}"
            );
        }
    }
    assert_nothing_internal(&reply.text);
    body
}

/// Asserts a 400 problem whose `errors` name `field`.
#[track_caller]
pub fn assert_field_error(reply: &Reply, field: &str) {
    let body = assert_problem(reply, 400);
    let fields = error_fields(body);
    assert!(
        fields.iter().any(|named| named == field),
        "expected errors to name {field:?}, they name {fields:?}: {}",
        reply.text
    );
}

/// The `field`s of a problem's `errors`.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|error| error["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A problem body without its correlation id, to compare two problems.
pub fn without_correlation_id(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("correlation_id");
    }
    body
}

#[track_caller]
pub fn assert_nothing_internal(text: &str) {
    let lower = text.to_ascii_lowercase();
    for word in INTERNAL_SUBSTRINGS {
        assert!(
            !lower.contains(word),
            "the response reveals internals ({word:?}): {text}"
        );
    }
    for word in INTERNAL_CASED_SUBSTRINGS {
        assert!(
            !text.contains(word),
            "the response reveals internals ({word:?}): {text}"
        );
    }
    for word in lower.split(|c: char| !c.is_ascii_alphanumeric()) {
        assert!(
            !INTERNAL_WORDS.contains(&word),
            "the response reveals internals ({word:?}): {text}"
        );
    }
}

/// True for a correlation id the API keeps as is: 1 to 128 of `[A-Za-z0-9._-]`.
pub fn is_sane_correlation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(products_path(&[]), "/api/products");
        assert_eq!(
            products_path(&[("category", "a b"), ("cursor", "x+y")]),
            "/api/products?category=a+b&cursor=x%2By"
        );
    }

    #[test]
    fn tampering_changes_the_signature_only() {
        let token = "aaa.bbb.cccccccc";
        let tampered = tamper_signature(token);
        assert!(tampered.starts_with("aaa.bbb."));
        assert_ne!(tampered, token);
    }

    #[test]
    fn ordinary_words_are_not_internal() {
        assert_nothing_internal(r#"{"detail":"is not an accepted field; acceptable values"}"#);
    }

    #[test]
    #[should_panic(expected = "reveals internals")]
    fn table_names_are_internal() {
        assert_nothing_internal("ResourceNotFoundException: shop-UsersTable");
    }
}

// ---------------------------------------------------------------------- orders

impl Api {
    /// `POST /api/orders` with `body` as JSON, plus an `Idempotency-Key` when given.
    pub async fn place_order(&self, token: Option<&str>, body: &Value, idempotency_key: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|key| ("idempotency-key", key))
            .into_iter()
            .collect();
        self.send(
            Method::POST,
            "/api/orders",
            token,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
            &headers,
        )
        .await
    }

    /// A `POST` without a body (cancel, ship).
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::POST, path, token, None, None, &[]).await
    }

    /// The product's current stock, from the admin inventory route: product pages may be served from
    /// a function instance's catalogue cache (up to `CatalogueCacheSeconds` old), stock views never are.
    pub async fn stock(&self, product_id: &str) -> i64 {
        let admin = self.admin_token().await;
        let reply = self.get(&format!("/api/inventory/{product_id}"), Some(&admin)).await;
        reply.expect(200)["stock_quantity"]
            .as_i64()
            .unwrap_or_else(|| panic!("product {product_id} has no integer stock_quantity: {}", reply.text))
    }

    /// Every order `token` can list (its own, or `user_id`'s for an admin), walking all pages of 100,
    /// newest first.
    pub async fn all_orders(&self, token: &str, user_id: Option<&str>) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut query = vec![("limit", "100".to_owned())];
            if let Some(user_id) = user_id {
                query.push(("user_id", user_id.to_owned()));
            }
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let pairs: Vec<(&str, &str)> = query.iter().map(|(name, value)| (*name, value.as_str())).collect();
            let reply = self.get(&orders_path(&pairs), Some(token)).await;
            let body = reply.expect(200);
            orders.extend(body["items"].as_array().expect("items is an array").iter().cloned());
            match &body["next_cursor"] {
                Value::String(next) => cursor = Some(next.clone()),
                Value::Null => return orders,
                other => panic!("next_cursor must be a string or null, got {other}"),
            }
        }
        panic!("listing orders does not end after 100 pages");
    }
}

/// `/api/orders?...` with properly encoded query parameters.
pub fn orders_path(query: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://x/api/orders").expect("static URL");
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

// ---------------------------------------------------------------------- direct table access

/// The value of environment variable `name`; fails the calling test with a message when it is missing,
/// since a test that needs it would otherwise prove nothing.
#[track_caller]
pub fn env_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
        _ => panic!(
            "{name} is not set: this test reaches the stack's tables directly. Run `make test-e2e`, or set \
             SHOP_AWS_ENDPOINT_URL, SHOP_USERS_TABLE, SHOP_PRODUCTS_TABLE, SHOP_ORDERS_TABLE and \
             SHOP_IDEMPOTENCY_TABLE to those of the stack at SHOP_API_URL."
        ),
    }
}

/// SDK configuration for the emulator at `SHOP_AWS_ENDPOINT_URL` (region us-east-1; credentials from
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or "test"/"test" when those are absent).
pub async fn emulator_sdk_config() -> aws_config::SdkConfig {
    let endpoint = env_var("SHOP_AWS_ENDPOINT_URL");
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region("us-east-1");
    let has_env_credentials = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .iter()
        .all(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    if !has_env_credentials {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "e2e",
        ));
    }
    loader.load().await
}

/// The stack's table names, from `SHOP_*_TABLE`.
#[derive(Debug, Clone)]
pub struct ShopTables {
    pub users: String,
    pub products: String,
    pub orders: String,
    pub idempotency: String,
    pub inventory_adjustments: String,
}

impl ShopTables {
    #[track_caller]
    pub fn from_env() -> Self {
        Self {
            users: env_var("SHOP_USERS_TABLE"),
            products: env_var("SHOP_PRODUCTS_TABLE"),
            orders: env_var("SHOP_ORDERS_TABLE"),
            idempotency: env_var("SHOP_IDEMPOTENCY_TABLE"),
            inventory_adjustments: env_var("SHOP_INVENTORY_ADJUSTMENTS_TABLE"),
        }
    }

    /// The order repository the functions use, on `client`.
    pub fn order_repository(&self, client: aws_sdk_dynamodb::Client) -> store::orders::DynamoOrderRepository {
        let tables = store::orders::OrderTables {
            orders: self.orders.clone(),
            products: self.products.clone(),
            users: self.users.clone(),
        };
        let idempotency = store::idempotency::DynamoIdempotencyStore::new(client.clone(), &self.idempotency);
        store::orders::DynamoOrderRepository::new(client, tables, idempotency)
    }
}

// ---------------------------------------------------------------------- the order saga and notifications

/// How long the payment step may take to settle an order (approved or declined; a transient failure is
/// retried for a few seconds first) as seen through `GET /api/orders/{id}`.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an event-driven notification may take to show up in a history.
pub const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

impl Api {
    /// `GET /api/orders/{order_id}` as `token`, failing the test unless it answers 200.
    pub async fn order(&self, token: &str, order_id: &str) -> Value {
        let reply = self.get(&format!("/api/orders/{order_id}"), Some(token)).await;
        reply.expect(200).clone()
    }

    /// Polls `GET /api/orders/{order_id}` until its status is one of `statuses` and returns the order;
    /// fails the test with the last status seen after `timeout`.
    pub async fn await_order_status(&self, token: &str, order_id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let order = self.order(token, order_id).await;
            if order["status"]
                .as_str()
                .is_some_and(|status| statuses.contains(&status))
            {
                return order;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order {order_id} did not reach {statuses:?} within {timeout:?}; it is {order}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits for the payment step to confirm order `order_id` (read as `token`) and returns it.
    pub async fn await_confirmed(&self, token: &str, order_id: &str) -> Value {
        let order = self
            .await_order_status(token, order_id, &["CONFIRMED", "CANCELLED", "SHIPPED"], SETTLE_TIMEOUT)
            .await;
        assert_eq!(
            order["status"], "CONFIRMED",
            "the payment step was expected to confirm order {order_id}: {order}"
        );
        order
    }

    /// The notification history `token` sees (`user_id`'s for an admin who names one), newest first,
    /// walking pages of 100 until an item older than `since` (an RFC 3339 UTC timestamp of the server's,
    /// such as a product's `created_at`; "" walks everything). Only items created at or after `since`
    /// are returned.
    pub async fn notifications_since(&self, token: &str, user_id: Option<&str>, since: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..200 {
            let mut url = Url::parse("http://x/api/notifications/history").expect("static URL");
            url.query_pairs_mut().append_pair("limit", "100");
            if let Some(user_id) = user_id {
                url.query_pairs_mut().append_pair("user_id", user_id);
            }
            if let Some(cursor) = &cursor {
                url.query_pairs_mut().append_pair("cursor", cursor);
            }
            let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
            let reply = self.get(&path, Some(token)).await;
            let body = reply.expect(200);
            let page = body["items"]
                .as_array()
                .unwrap_or_else(|| panic!("history items is not an array: {}", reply.text));
            let mut older_seen = false;
            for item in page {
                if item["created_at"].as_str().unwrap_or_default() >= since {
                    items.push(item.clone());
                } else {
                    older_seen = true;
                }
            }
            match &body["next_cursor"] {
                Value::String(next) if !older_seen => cursor = Some(next.clone()),
                Value::String(_) | Value::Null => return items,
                other => panic!("next_cursor must be a string or null, got {other}"),
            }
        }
        panic!("the notification history does not end after 200 pages");
    }

    /// Polls [`Api::notifications_since`] until `found` picks something from the items, failing the
    /// test with the items seen after [`NOTIFICATION_TIMEOUT`]. `what` names the awaited thing.
    pub async fn await_notifications<T>(
        &self,
        token: &str,
        user_id: Option<&str>,
        since: &str,
        what: &str,
        mut found: impl FnMut(&[Value]) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + NOTIFICATION_TIMEOUT;
        loop {
            let items = self.notifications_since(token, user_id, since).await;
            if let Some(result) = found(&items) {
                return result;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not show up in the notification history within {NOTIFICATION_TIMEOUT:?}; it holds: {}",
                Value::Array(items)
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// True when `item` is a delivered (`SENT`) notification of `event_type` on `channel` whose body
/// mentions `needle` (an order or product id).
pub fn is_sent(item: &Value, event_type: &str, channel: &str, needle: &str) -> bool {
    item["event_type"] == event_type
        && item["channel"] == channel
        && item["status"] == "SENT"
        && item["body"].as_str().is_some_and(|body| body.contains(needle))
}

/// The notifications of `items` of `event_type` (any channel, any status) whose body mentions `needle`.
pub fn mentioning<'a>(items: &'a [Value], event_type: &str, needle: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|item| {
            item["event_type"] == event_type && item["body"].as_str().is_some_and(|body| body.contains(needle))
        })
        .collect()
}

/// Asserts the documented shape of a delivered notification sent once to `recipient`.
#[track_caller]
pub fn assert_delivered_once(item: &serde_json::Value, recipient: &str) {
    for field in [
        "id",
        "event_id",
        "event_type",
        "channel",
        "recipient",
        "body",
        "status",
        "attempts",
        "correlation_id",
        "created_at",
        "sent_at",
    ] {
        assert!(
            item.get(field).is_some_and(|value| !value.is_null()),
            "notification lacks {field}: {item}"
        );
    }
    assert_eq!(item["status"], "SENT", "{item}");
    assert_eq!(item["attempts"], 1, "delivered at the first attempt: {item}");
    assert_eq!(item["recipient"], recipient, "{item}");
    assert!(item.get("last_error").is_none(), "no internal delivery details: {item}");
}
