//! Paged listings: the shared `limit` rules and, for per-user listings (orders, notifications), who may
//! list whose items and cursors bound to that listing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::Identity;
use crate::cursor::CursorCodec;
use crate::error::ApiError;
use crate::http::ApiRequest;
use domain::UserId;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// `?limit=`: 1 to 100, default 20; anything else is 400.
pub fn page_limit(request: &ApiRequest) -> Result<usize, ApiError> {
    let limit = request
        .query_int("limit", 1..=MAX_LIMIT, Some(DEFAULT_LIMIT))?
        .unwrap_or(DEFAULT_LIMIT);
    usize::try_from(limit).map_err(ApiError::internal)
}

/// A page request of one user's items: the caller's own, or (admins only) another user's via
/// `?user_id=`. Its cursor only works in the listing of the same kind, for the same user.
pub struct UserListing<C> {
    pub user_id: UserId,
    pub limit: usize,
    pub after: Option<C>,
    scope: String,
}

impl<C: Serialize + DeserializeOwned> UserListing<C> {
    /// Reads `limit`, `cursor` and `user_id`, refusing any other query parameter.
    pub fn from_request(
        request: &ApiRequest,
        identity: &Identity,
        cursors: &CursorCodec,
        kind: &str,
    ) -> Result<Self, ApiError> {
        request.only_query_params(&["limit", "cursor", "user_id"])?;
        let user_id = match request.query("user_id") {
            None => identity.user_id.clone(),
            Some(raw) => {
                let requested = UserId::parse(&raw).map_err(|invalid| ApiError::invalid_field("user_id", invalid.0))?;
                if requested != identity.user_id && !identity.is_admin() {
                    return Err(ApiError::Forbidden);
                }
                requested
            }
        };
        let limit = page_limit(request)?;
        let scope = format!("{kind}|{user_id}");
        let after = request
            .query("cursor")
            .map(|cursor| cursors.decode(&scope, &cursor))
            .transpose()?;
        Ok(Self {
            user_id,
            limit,
            after,
            scope,
        })
    }

    pub fn next_cursor(&self, cursors: &CursorCodec, next: Option<C>) -> Result<Option<String>, ApiError> {
        next.map(|position| cursors.encode(&self.scope, &position)).transpose()
    }
}

/// `{items, next_cursor}`, the shape of every listing.
#[derive(Serialize)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
