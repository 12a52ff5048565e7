//! The caller's own account, for `GET /api/users/me` and GraphQL's `me` alike.

use domain::User;
use store::users::UserRepository;

use crate::auth::Identity;
use crate::error::ApiError;

/// The account the caller's token belongs to; 404 when it no longer exists.
pub async fn own_account(users: &dyn UserRepository, identity: &Identity) -> Result<User, ApiError> {
    users.get(&identity.user_id).await?.ok_or(ApiError::NotFound("user"))
}
