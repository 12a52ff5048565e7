//! Fixtures for handler unit tests: requests from `events/*.json`, tokens signed with a test secret,
//! and response decoding. Test-only code: failing loudly is its job.
#![allow(clippy::panic)]

use lambda_http::http::HeaderValue;
use lambda_http::{Body, Request, Response};

use crate::auth::TokenService;
use crate::state::SigningSecret;
use domain::{Role, UserId};

pub const TEST_SECRET: &[u8] = b"unit-test-signing-secret-0123456789abcdef";

pub fn secret() -> SigningSecret {
    SigningSecret::new(TEST_SECRET)
}

pub fn tokens() -> TokenService {
    secret().tokens(3600)
}

/// The request an API Gateway event file describes.
pub fn request(event_json: &str) -> Request {
    match crate::http::request_from_event(event_json) {
        Ok(request) => request,
        Err(error) => panic!("event fixture does not parse: {error}"),
    }
}

/// The same request, carrying a valid token for `user_id` with `role`.
pub fn as_user(mut request: Request, user_id: &UserId, role: Role) -> Request {
    let token = match tokens().issue(user_id, role) {
        Ok(token) => token.access_token,
        Err(error) => panic!("cannot issue test token: {error}"),
    };
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        request.headers_mut().insert("authorization", value);
    }
    request
}

/// The request without any Authorization header.
pub fn anonymous(mut request: Request) -> Request {
    request.headers_mut().remove("authorization");
    request
}

pub fn json_of(response: &Response<Body>) -> serde_json::Value {
    match serde_json::from_slice(response.body().as_ref()) {
        Ok(value) => value,
        Err(error) => panic!("response body is not JSON: {error}"),
    }
}

/// What the routes acting on one order need, on `world`'s orders and the test signing key.
pub fn order_deps(world: &store::testing::OrderWorld) -> crate::orders::OrderDeps {
    crate::orders::OrderDeps {
        orders: world.orders.clone(),
        tokens: tokens(),
    }
}
