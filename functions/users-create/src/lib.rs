//! `POST /api/users`: registers a customer. The role is never taken from the body; the password is
//! stored only as an Argon2id hash and never returned.

use std::sync::Arc;

use api::InitError;
use api::auth::PasswordHasher;
use api::http::{json_response, respond};
use api::{ApiError, ApiState};
use domain::{NewUser, UserId, now_rfc3339};
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use store::StoreError;
use store::users::UserRepository;

pub struct Deps {
    pub users: Arc<dyn UserRepository>,
    pub hasher: PasswordHasher,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            users: state.users(),
            hasher: PasswordHasher::default(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    email: String,
    password: String,
    name: String,
    #[serde(default)]
    phone: Option<String>,
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let body: Registration = request.json()?;
        let new_user = NewUser::parse(&body.email, &body.password, &body.name, body.phone.as_deref())?;
        let password_hash = deps.hasher.hash(&new_user.password).await.map_err(ApiError::internal)?;
        let (user, _password) = new_user.into_user(UserId::generate(), now_rfc3339());
        match deps.users.create(&user, &password_hash, request.correlation_id()).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                return Err(ApiError::Conflict("An account with this email already exists.".into()));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(user_id = %user.id, "user registered");
        let mut response = json_response(StatusCode::CREATED, &user)?;
        if let Ok(location) = HeaderValue::from_str(&format!("/api/users/{}", user.id)) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{json_of, request};
    use store::memory::InMemoryUsers;

    fn deps() -> Deps {
        Deps {
            users: Arc::new(InMemoryUsers::default()),
            hasher: PasswordHasher::default(),
        }
    }

    #[tokio::test]
    async fn registering_creates_a_customer_without_exposing_the_password() {
        let deps = deps();
        let response = handle(&deps, request(include_str!("../../../events/users-create.json"))).await;
        assert_eq!(response.status(), 201);
        let user = json_of(&response);
        assert_eq!(user["role"], "customer");
        assert_eq!(user["email"], "ada@example.com");
        assert!(user.get("password").is_none() && user.get("password_hash").is_none());
        assert!(
            response.headers()["location"]
                .to_str()
                .unwrap()
                .ends_with(user["id"].as_str().unwrap())
        );
    }

    #[tokio::test]
    async fn the_same_email_cannot_register_twice() {
        let deps = deps();
        handle(&deps, request(include_str!("../../../events/users-create.json"))).await;
        let response = handle(&deps, request(include_str!("../../../events/users-create.json"))).await;
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    #[tokio::test]
    async fn a_role_in_the_body_is_refused() {
        let response = handle(
            &deps(),
            request(include_str!("../../../events/users-create.forbidden-role.json")),
        )
        .await;
        assert_eq!(response.status(), 400);
        assert_eq!(json_of(&response)["errors"][0]["field"], "role");
    }

    #[tokio::test]
    async fn invalid_fields_are_each_reported() {
        let response = handle(
            &deps(),
            request(include_str!("../../../events/users-create.invalid.json")),
        )
        .await;
        assert_eq!(response.status(), 400);
        let fields: Vec<String> = json_of(&response)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, ["email", "password"]);
    }

    #[tokio::test]
    async fn malformed_json_is_a_400() {
        let response = handle(
            &deps(),
            request(include_str!("../../../events/users-create.malformed.json")),
        )
        .await;
        assert_eq!(response.status(), 400);
    }
}
