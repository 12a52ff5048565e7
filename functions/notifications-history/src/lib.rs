//! `GET /api/notifications/history`: the caller's notifications, newest first, with each attempt's
//! outcome. An admin may pass `?user_id=`; a customer sees only their own.

use std::sync::Arc;

use api::ApiState;
use api::InitError;
use api::auth::TokenService;
use api::cursor::CursorCodec;
use api::http::{json_response, respond};
use api::listing::{PageBody, UserListing};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use store::notifications::{NotificationCursor, NotificationRepository};

pub struct Deps {
    pub history: Arc<dyn NotificationRepository>,
    pub tokens: TokenService,
    pub cursors: CursorCodec,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            history: state.notifications(),
            tokens: state.tokens().await?,
            cursors: state.cursors().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let listing =
            UserListing::<NotificationCursor>::from_request(&request, &identity, &deps.cursors, "notifications")?;
        let page = deps
            .history
            .list_for_user(&listing.user_id.to_string(), listing.after.as_ref(), listing.limit)
            .await?;
        json_response(
            StatusCode::OK,
            &PageBody {
                next_cursor: listing.next_cursor(&deps.cursors, page.next)?,
                items: page.items,
            },
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, secret, tokens};
    use domain::{Role, UserId};
    use store::memory::InMemoryNotifications;
    use store::notifications::{Channel, DeliveryStatus, Notification};
    use store::testing::SAMPLE_BUYER_ID;

    async fn deps() -> Deps {
        let history = Arc::new(InMemoryNotifications::default());
        history
            .record_attempt(&Notification {
                id: "e1-email".into(),
                user_id: SAMPLE_BUYER_ID.into(),
                event_id: "e1".into(),
                event_type: "user.registered".into(),
                channel: Channel::Email,
                recipient: "buyer@example.com".into(),
                subject: Some("Welcome".into()),
                body: "Hello".into(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                correlation_id: "cid".into(),
                created_at: "2026-11-25T12:00:00.000000Z".into(),
                sent_at: None,
            })
            .await
            .unwrap();
        Deps {
            history,
            tokens: tokens(),
            cursors: secret().cursors(),
        }
    }

    fn event() -> Request {
        request(include_str!("../../../events/notifications-history.json"))
    }

    #[tokio::test]
    async fn a_customer_reads_their_own_history() {
        let buyer = UserId::parse(SAMPLE_BUYER_ID).unwrap();
        let response = handle(&deps().await, as_user(event(), &buyer, Role::Customer)).await;
        assert_eq!(response.status(), 200);
        let body = json_of(&response);
        assert_eq!(body["items"][0]["channel"], "email");
        assert_eq!(body["items"][0]["attempts"], 1);
        assert!(body["items"][0].get("last_error").is_none());
    }

    #[tokio::test]
    async fn nobody_else_sees_it() {
        let response = handle(&deps().await, as_user(event(), &UserId::generate(), Role::Customer)).await;
        assert_eq!(json_of(&response)["items"].as_array().unwrap().len(), 0);
    }
}
