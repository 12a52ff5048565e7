//! `POST /api/auth/login`: exchanges email and password for a short-lived bearer token. An unknown
//! email and a wrong password get the same 401 after the same amount of hashing work.

use std::sync::Arc;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use shared::auth::{PasswordHasher, TokenService};
use shared::domain::{Email, Password};
use shared::http::{json_response, respond};
use shared::repo::users::UserRepository;
use shared::state::InitError;
use shared::validation::FieldErrors;
use shared::{ApiError, AppState};

pub struct Deps {
    pub users: Arc<dyn UserRepository>,
    pub hasher: PasswordHasher,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &AppState) -> Result<Self, InitError> {
        let secret = state.signing_secret().await?;
        Ok(Self {
            users: state.users(),
            hasher: PasswordHasher::default(),
            tokens: secret.tokens(state.config.token_ttl_secs),
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
        let record = deps.users.find_login(&email).await?;
        let verified = deps
            .hasher
            .verify(&body.password, record.as_ref().map(|r| r.password_hash.clone()))
            .await
            .map_err(ApiError::internal)?;
        match record {
            Some(record) if verified => {
                tracing::info!(user_id = %record.user_id, "login succeeded");
                json_response(StatusCode::OK, &deps.tokens.issue(&record.user_id, record.role)?)
            }
            _ => {
                tracing::info!("login failed");
                Err(ApiError::Unauthorized(INVALID_CREDENTIALS))
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{Role, User, UserId};
    use shared::repo::memory::InMemoryUsers;
    use shared::testing::{json_of, request, tokens};

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
}
