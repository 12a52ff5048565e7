//! `POST /api/auth/login`: exchanges email and password for a short-lived bearer token. An unknown
//! email and a wrong password get the same 401 after the same amount of hashing work. Repeated
//! failures for one email or from one IP are slowed down and then locked (`api::login_guard`),
//! with the same 429 whether the account exists or not.

use std::sync::Arc;

use api::InitError;
use api::auth::{PasswordHasher, TokenService};
use api::http::{json_response, respond};
use api::login_guard::LoginGuard;
use api::{ApiError, ApiState};
use domain::validation::FieldErrors;
use domain::{Email, Password, unix_now_millis};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use store::login_failures::Subject;
use store::users::UserRepository;

pub struct Deps {
    pub users: Arc<dyn UserRepository>,
    pub hasher: PasswordHasher,
    pub tokens: TokenService,
    pub guard: LoginGuard,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            users: state.users(),
            hasher: PasswordHasher::default(),
            tokens: state.tokens().await?,
            guard: state.login_guard()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

const INVALID_CREDENTIALS: &str = "The email or password is incorrect.";

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let body: Credentials = request.json()?;
        let mut errors = FieldErrors::default();
        let email = errors.check("email", Email::parse(&body.email));
        if body.password.is_empty() {
            errors.push("password", "is required");
        } else if body.password.chars().count() > Password::MAX_CHARS {
            errors.push(
                "password",
                format!("must be at most {} characters", Password::MAX_CHARS),
            );
        }
        let email = errors.finish(|| email)?;
        // Counted whether or not the account exists, so a lock reveals nothing about it.
        let by_email = Subject::email(&email);
        let by_ip = Subject::Ip(request.source_ip().unwrap_or_else(|| "unknown".into()));
        // Reserved before the (slow) hashing, so concurrent guesses see each other.
        let wait = deps
            .guard
            .begin(&by_email, &by_ip, unix_now_millis())
            .await
            .map_err(|error| ApiError::Unavailable(error.into()))?;
        if let Some(retry_after_secs) = wait {
            tracing::warn!("login refused: too many recent failures");
            return Err(ApiError::LoginThrottled { retry_after_secs });
        }
        // Reserved: every way out of here settles or gives back the reservation.
        let checked = async {
            let record = deps.users.find_login(&email).await?;
            let verified = deps
                .hasher
                .verify(&body.password, record.as_ref().map(|r| r.password_hash.clone()))
                .await
                .map_err(ApiError::internal)?;
            Ok::<_, ApiError>((record, verified))
        }
        .await;
        let (record, verified) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                deps.guard.abandoned(&by_email, &by_ip).await;
                return Err(error);
            }
        };
        match record {
            Some(record) if verified => {
                tracing::info!(user_id = %record.user_id, "login succeeded");
                deps.guard.succeeded(&by_email, &by_ip).await;
                json_response(StatusCode::OK, &deps.tokens.issue(&record.user_id, record.role)?)
            }
            _ => {
                tracing::info!("login failed");
                // Pauses count from when the failure was known, after the (slow) hashing.
                deps.guard.failed(&by_email, &by_ip, unix_now_millis()).await;
                Err(ApiError::Unauthorized(INVALID_CREDENTIALS))
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::login_guard::LoginPolicy;
    use api::testing::{json_of, request, tokens};
    use domain::{Role, User, UserId};
    use store::login_failures::InMemoryLoginFailures;
    use store::memory::InMemoryUsers;

    async fn deps_with_ada() -> (Deps, UserId) {
        let users = Arc::new(InMemoryUsers::default());
        let hasher = PasswordHasher::default();
        let id = UserId::generate();
        let user = User {
            id: id.clone(),
            email: Email::parse("ada@example.com").unwrap(),
            name: "Ada".into(),
            phone: None,
            role: Role::Customer,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let hash = hasher
            .hash(&Password::parse("correct horse battery").unwrap())
            .await
            .unwrap();
        users.create(&user, &hash, "test").await.unwrap();
        (
            Deps {
                users,
                hasher,
                tokens: tokens(),
                guard: LoginGuard {
                    failures: Arc::new(InMemoryLoginFailures::default()),
                    per_email: LoginPolicy::locking_after(4, 600),
                    per_account: LoginPolicy::locking_after(40, 600),
                    per_ip: LoginPolicy::locking_after(100, 600),
                },
            },
            id,
        )
    }

    #[tokio::test]
    async fn the_right_password_gets_a_token_for_the_account() {
        let (deps, id) = deps_with_ada().await;
        let response = handle(&deps, request(include_str!("../../../events/auth-login.json"))).await;
        assert_eq!(response.status(), 200);
        let body = json_of(&response);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        let identity = tokens().verify(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(identity.user_id, id);
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_email_look_the_same() {
        let (deps, _) = deps_with_ada().await;
        let wrong = handle(
            &deps,
            request(include_str!("../../../events/auth-login.wrong-password.json")),
        )
        .await;
        let unknown = handle(
            &deps,
            request(include_str!("../../../events/auth-login.unknown-email.json")),
        )
        .await;
        assert_eq!(wrong.status(), 401);
        assert_eq!(unknown.status(), 401);
        let (mut wrong, mut unknown) = (json_of(&wrong), json_of(&unknown));
        wrong["correlation_id"] = "x".into();
        unknown["correlation_id"] = "x".into();
        assert_eq!(wrong, unknown);
    }

    fn login_event(name: &str) -> &'static str {
        match name {
            "right" => include_str!("../../../events/auth-login.json"),
            "wrong" => include_str!("../../../events/auth-login.wrong-password.json"),
            _ => include_str!("../../../events/auth-login.unknown-email.json"),
        }
    }

    async fn statuses(deps: &Deps, event: &str, attempts: usize) -> Vec<u16> {
        let mut statuses = Vec::new();
        for _ in 0..attempts {
            statuses.push(handle(deps, request(login_event(event))).await.status().as_u16());
        }
        statuses
    }

    #[tokio::test]
    async fn repeated_failures_slow_down_then_lock_whether_or_not_the_account_exists() {
        // Given a policy that slows down after 2 failures and locks after 4,
        let (deps, _) = deps_with_ada().await;
        // when a wrong password and an unknown email are each tried in a quick burst,
        let wrong = statuses(&deps, "wrong", 4).await;
        let unknown = statuses(&deps, "unknown", 4).await;
        // then both get two 401s and then 429s, indistinguishably,
        assert_eq!(wrong, [401, 401, 429, 429]);
        assert_eq!(unknown, wrong);
        // and the 429 says how long to wait.
        let refused = handle(&deps, request(login_event("wrong"))).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(json_of(&refused)["type"], "/problems/too-many-failed-logins");
    }

    #[tokio::test]
    async fn a_locked_email_refuses_even_the_right_password() {
        let (mut deps, _) = deps_with_ada().await;
        deps.guard.per_email = LoginPolicy {
            slow_after: 4,
            lock_after: 2,
            lock_secs: 600,
        };
        assert_eq!(statuses(&deps, "wrong", 2).await, [401, 401]);
        let locked = handle(&deps, request(login_event("right"))).await;
        assert_eq!(locked.status(), 429);
        assert_eq!(locked.headers()["retry-after"], "600");
    }

    #[tokio::test]
    async fn a_success_forgets_the_emails_earlier_failures() {
        let (deps, _) = deps_with_ada().await;
        assert_eq!(statuses(&deps, "wrong", 1).await, [401]);
        assert_eq!(statuses(&deps, "right", 1).await, [200]);
        assert_eq!(statuses(&deps, "wrong", 2).await, [401, 401]);
    }

    struct Unreadable;

    #[async_trait::async_trait]
    impl store::login_failures::LoginFailures for Unreadable {
        async fn get(&self, _: &Subject) -> Result<Option<store::login_failures::Failures>, store::StoreError> {
            Err(store::StoreError::Unavailable("connection refused".into()))
        }
        async fn record(&self, _: &Subject, _: u64, _: u64, _: u64) -> Result<(), store::StoreError> {
            Err(store::StoreError::Unavailable("connection refused".into()))
        }
        async fn clear(&self, _: &Subject) -> Result<(), store::StoreError> {
            Err(store::StoreError::Unavailable("connection refused".into()))
        }
        async fn reserve(
            &self,
            _: &Subject,
            _: u64,
            _: u64,
        ) -> Result<store::login_failures::Failures, store::StoreError> {
            Err(store::StoreError::Unavailable("connection refused".into()))
        }
        async fn release(&self, _: &Subject) -> Result<(), store::StoreError> {
            Err(store::StoreError::Unavailable("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn unreadable_failure_counters_fail_closed_with_503() {
        // Given the failure counters cannot be read,
        let (mut deps, _) = deps_with_ada().await;
        deps.guard.failures = Arc::new(Unreadable);
        // when the right password comes, then no token is issued: credentials stay guarded.
        let response = handle(&deps, request(login_event("right"))).await;
        assert_eq!(response.status(), 503);
        assert!(json_of(&response).get("access_token").is_none());
    }
}
