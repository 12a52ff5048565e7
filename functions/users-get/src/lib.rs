//! `GET /api/users/{user_id}`: an account, for its owner or an admin. Anyone else is told it does not
//! exist, so ids cannot be probed.

use std::sync::Arc;

use api::InitError;
use api::auth::TokenService;
use api::http::{json_response, respond};
use api::{ApiError, ApiState};
use domain::UserId;
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
        let not_found = || ApiError::NotFound("user");
        let id = UserId::parse(&request.path_param("user_id")?).map_err(|_| not_found())?;
        if !identity.may_access(&id) {
            return Err(not_found());
        }
        let user = deps.users.get(&id).await?.ok_or_else(not_found)?;
        json_response(StatusCode::OK, &user)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, tokens};
    use domain::{Email, Role, User};
    use store::memory::InMemoryUsers;

    const ADA_ID: &str = "0190f5a4-7b3e-7c1a-9d2e-3f4a5b6c7d8e";

    async fn deps() -> Deps {
        let users = Arc::new(InMemoryUsers::default());
        let ada = User {
            id: UserId::parse(ADA_ID).unwrap(),
            email: Email::parse("ada@example.com").unwrap(),
            name: "Ada".into(),
            phone: None,
            role: Role::Customer,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        users.create(&ada, "hash", "test").await.unwrap();
        Deps {
            users,
            tokens: tokens(),
        }
    }

    fn event() -> Request {
        request(include_str!("../../../events/users-get.json"))
    }

    #[tokio::test]
    async fn the_owner_reads_their_account() {
        let response = handle(
            &deps().await,
            as_user(event(), &UserId::parse(ADA_ID).unwrap(), Role::Customer),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_of(&response)["email"], "ada@example.com");
    }

    #[tokio::test]
    async fn an_admin_reads_any_account() {
        let response = handle(&deps().await, as_user(event(), &UserId::generate(), Role::Admin)).await;
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn another_customer_is_told_it_does_not_exist() {
        let response = handle(&deps().await, as_user(event(), &UserId::generate(), Role::Customer)).await;
        assert_eq!(response.status(), 404);
    }

    #[tokio::test]
    async fn a_malformed_id_is_404() {
        let response = handle(
            &deps().await,
            as_user(
                request(include_str!("../../../events/users-get.bad-id.json")),
                &UserId::generate(),
                Role::Admin,
            ),
        )
        .await;
        assert_eq!(response.status(), 404);
    }
}
