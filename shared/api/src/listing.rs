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
    limit_of(request.query_int("limit", 1..=MAX_LIMIT, Some(DEFAULT_LIMIT))?)
}

/// A listing's `limit` as the client gave it: 1 to 100, default 20; anything else is 400.
pub fn limit_of(limit: Option<i64>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be an integer between 1 and {MAX_LIMIT}"),
        ));
    }
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
        let (user_id, cursor) = (request.query("user_id"), request.query("cursor"));
        let page = PageRequest {
            user_id: user_id.as_deref(),
            limit: page_limit(request)?,
            cursor: cursor.as_deref(),
        };
        Self::new(page, identity, cursors, kind)
    }

    /// The listing `page` asks for (its `limit` already checked, see [`limit_of`]).
    pub fn new(
        page: PageRequest<'_>,
        identity: &Identity,
        cursors: &CursorCodec,
        kind: &str,
    ) -> Result<Self, ApiError> {
        let user_id = match page.user_id {
            None => identity.user_id.clone(),
            Some(raw) => {
                let requested = UserId::parse(raw).map_err(|invalid| ApiError::invalid_field("user_id", invalid.0))?;
                if requested != identity.user_id && !identity.is_admin() {
                    return Err(ApiError::Forbidden);
                }
                requested
            }
        };
        let scope = format!("{kind}|{user_id}");
        let after = page.cursor.map(|cursor| cursors.decode(&scope, cursor)).transpose()?;
        Ok(Self {
            user_id,
            limit: page.limit,
            after,
            scope,
        })
    }

    pub fn next_cursor(&self, cursors: &CursorCodec, next: Option<C>) -> Result<Option<String>, ApiError> {
        next.map(|position| cursors.encode(&self.scope, &position)).transpose()
    }
}

/// A page of one user's items as the client asked for it: whose (`None`: the caller's own), how many
/// and from where.
pub struct PageRequest<'a> {
    pub user_id: Option<&'a str>,
    pub limit: usize,
    pub cursor: Option<&'a str>,
}

/// `{items, next_cursor}`, the shape of every listing.
#[derive(Serialize)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
