//! `GET /api/users/me`: the account the token belongs to.

use std::sync::Arc;

use api::ApiState;
use api::InitError;
use api::auth::TokenService;
use api::http::{json_response, respond};
use api::users::own_account;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use store::users::UserRepository;

pub struct Deps {
    pub users: Arc<dyn UserRepository>,
    pub tokens: TokenService,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            users: state.users(),
            tokens: state.tokens().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let user = own_account(deps.users.as_ref(), &identity).await?;
        json_response(StatusCode::OK, &user)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{anonymous, as_user, json_of, request, tokens};
    use domain::{Email, Role, User, UserId};
    use store::memory::InMemoryUsers;

    async fn deps_with(user: &User) -> Deps {
        let users = Arc::new(InMemoryUsers::default());
        users.create(user, "hash", "test").await.unwrap();
        Deps {
            users,
            tokens: tokens(),
        }
    }

    fn ada() -> User {
        User {
            id: UserId::generate(),
            email: Email::parse("ada@example.com").unwrap(),
            name: "Ada".into(),
            phone: None,
            role: Role::Customer,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn event() -> Request {
        request(include_str!("../../../events/users-me.json"))
    }

    #[tokio::test]
    async fn the_caller_sees_their_own_account() {
        let ada = ada();
        let deps = deps_with(&ada).await;
        let response = handle(&deps, as_user(event(), &ada.id, Role::Customer)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_of(&response)["id"], ada.id.to_string());
    }

    #[tokio::test]
    async fn without_a_token_it_is_401() {
        let deps = deps_with(&ada()).await;
        let response = handle(&deps, anonymous(event())).await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }

    #[tokio::test]
    async fn the_sample_events_placeholder_token_is_refused() {
        let deps = deps_with(&ada()).await;
        assert_eq!(handle(&deps, event()).await.status(), 401);
    }
}
