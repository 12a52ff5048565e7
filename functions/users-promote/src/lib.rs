//! Promotes an existing account to admin. Deliberately not behind any API route: only someone allowed
//! to invoke the function (`aws lambda invoke`, `cargo lambda invoke`) can make an admin.
//! Input `{"email": "..."}`; output the updated user.

use domain::{Email, Role, User};
use serde::Deserialize;
use store::StoreError;
use store::users::UserRepository;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub email: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("invalid email: {0}")]
    InvalidEmail(String),
    #[error("no account has the email {0}")]
    UnknownAccount(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn handle(users: &dyn UserRepository, request: PromoteRequest) -> Result<User, PromoteError> {
    let email = Email::parse(&request.email).map_err(|invalid| PromoteError::InvalidEmail(invalid.0))?;
    let user = users
        .set_role(&email, Role::Admin)
        .await?
        .ok_or_else(|| PromoteError::UnknownAccount(email.to_string()))?;
    tracing::info!(user_id = %user.id, "user promoted to admin");
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::UserId;
    use store::memory::InMemoryUsers;

    fn event() -> PromoteRequest {
        serde_json::from_str(include_str!("../../../events/users-promote.json")).unwrap()
    }

    #[tokio::test]
    async fn an_existing_customer_becomes_admin() {
        let users = InMemoryUsers::default();
        let user = User {
            id: UserId::generate(),
            email: Email::parse("ops@example.com").unwrap(),
            name: "Ops".into(),
            phone: None,
            role: Role::Customer,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        users.create(&user, "hash", "test").await.unwrap();
        let promoted = handle(&users, event()).await.unwrap();
        assert_eq!(promoted.role, Role::Admin);
        assert_eq!(users.get(&user.id).await.unwrap().unwrap().role, Role::Admin);
    }

    #[tokio::test]
    async fn an_unknown_email_is_an_error_and_creates_nothing() {
        let users = InMemoryUsers::default();
        assert!(matches!(
            handle(&users, event()).await,
            Err(PromoteError::UnknownAccount(_))
        ));
    }
}
