//! `GET /api/orders`: the caller's orders, newest first, through the `by_user` index, with cursor
//! paging. An admin may list another user's orders with `?user_id=`.

use std::sync::Arc;

use api::ApiState;
use api::InitError;
use api::auth::TokenService;
use api::cursor::CursorCodec;
use api::http::{json_response, respond};
use api::listing::{PageBody, UserListing};
use api::orders::OrderView;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use store::orders::{OrderCursor, OrderRepository};

pub struct Deps {
    pub orders: Arc<dyn OrderRepository>,
    pub tokens: TokenService,
    pub cursors: CursorCodec,
}

impl Deps {
    pub async fn from_state(state: &ApiState) -> Result<Self, InitError> {
        Ok(Self {
            orders: state.orders(),
            tokens: state.tokens().await?,
            cursors: state.cursors().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let listing = UserListing::<OrderCursor>::from_request(&request, &identity, &deps.cursors, "orders")?;
        let page = deps
            .orders
            .list_for_user(&listing.user_id, listing.after.as_ref(), listing.limit)
            .await?;
        json_response(
            StatusCode::OK,
            &PageBody {
                items: page
                    .items
                    .iter()
                    .map(|order| OrderView::for_caller(order, &identity))
                    .collect(),
                next_cursor: listing.next_cursor(&deps.cursors, page.next)?,
            },
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, request, secret, tokens};
    use domain::Role;
    use store::testing::{OrderWorld, SAMPLE_ORDER_ID};

    fn deps(world: &OrderWorld) -> Deps {
        Deps {
            orders: world.orders.clone(),
            tokens: tokens(),
            cursors: secret().cursors(),
        }
    }

    fn with_query(query: &str) -> Request {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/orders-list.json")).unwrap();
        let params: serde_json::Map<String, serde_json::Value> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        event["rawQueryString"] = query.into();
        event["queryStringParameters"] = params.into();
        request(&event.to_string())
    }

    #[tokio::test]
    async fn a_customer_lists_their_own_orders() {
        let world = OrderWorld::with_sample_order().await;
        let response = handle(
            &deps(&world),
            as_user(with_query("limit=10"), &world.buyer, Role::Customer),
        )
        .await;
        assert_eq!(response.status(), 200);
        let body = json_of(&response);
        assert_eq!(body["items"][0]["id"], SAMPLE_ORDER_ID);
        assert!(body["next_cursor"].is_null());
    }

    #[tokio::test]
    async fn another_customer_sees_none_of_them_and_may_not_ask_for_them() {
        let world = OrderWorld::with_sample_order().await;
        let stranger = domain::UserId::generate();
        let body = json_of(
            &handle(
                &deps(&world),
                as_user(with_query("limit=10"), &stranger, Role::Customer),
            )
            .await,
        );
        assert_eq!(body["items"].as_array().unwrap().len(), 0);
        let query = format!("user_id={}", world.buyer);
        let response = handle(&deps(&world), as_user(with_query(&query), &stranger, Role::Customer)).await;
        assert_eq!(response.status(), 403);
    }

    #[tokio::test]
    async fn an_admin_lists_anyones_orders() {
        let world = OrderWorld::with_sample_order().await;
        let query = format!("user_id={}", world.buyer);
        let admin = domain::UserId::generate();
        let body = json_of(&handle(&deps(&world), as_user(with_query(&query), &admin, Role::Admin)).await);
        assert_eq!(body["items"][0]["id"], SAMPLE_ORDER_ID);
    }

    #[tokio::test]
    async fn bad_limits_and_cursors_are_400() {
        let world = OrderWorld::with_sample_order().await;
        for query in [
            "limit=0",
            "limit=101",
            "cursor=forged",
            "user_id=nope",
            "status=PENDING",
        ] {
            let response = handle(&deps(&world), as_user(with_query(query), &world.buyer, Role::Customer)).await;
            assert_eq!(response.status(), 400, "{query}");
        }
    }
}
