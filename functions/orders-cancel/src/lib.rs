//! `POST /api/orders/{order_id}/cancel`: the owner or an admin cancels a `PENDING` or `CONFIRMED`
//! order. The status change and the release of every line's stock are one transaction, conditional on
//! the status read, so the stock comes back exactly once; cancelling again answers 200 and changes
//! nothing; a shipped order is 409.

use api::http::{json_response, respond};
use api::orders::{OrderView, cancel_for_caller};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

pub use api::orders::OrderDeps as Deps;

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let order_id = request.path_param("order_id")?;
        let order = cancel_for_caller(deps.orders.as_ref(), &identity, &order_id, &request.cause()).await?;
        json_response(StatusCode::OK, &OrderView::from(&order))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, order_deps, request};
    use domain::{OrderStatus, Role, UserId};
    use store::testing::{KETTLE_ID, MUG_ID, OrderWorld};

    fn event() -> Request {
        request(include_str!("../../../events/orders-cancel.json"))
    }

    #[tokio::test]
    async fn cancelling_releases_the_stock_once_and_repeating_changes_nothing() {
        let world = OrderWorld::with_sample_order().await;
        assert_eq!(world.stock(MUG_ID).await, 3);
        let first = handle(&order_deps(&world), as_user(event(), &world.buyer, Role::Customer)).await;
        assert_eq!(first.status(), 200);
        let body = json_of(&first);
        assert_eq!(body["status"], "CANCELLED");
        assert_eq!(body["cancel_reason"], "customer_cancelled");
        assert_eq!(world.stock(MUG_ID).await, 5);
        assert_eq!(world.stock(KETTLE_ID).await, 10);
        let again = handle(&order_deps(&world), as_user(event(), &world.buyer, Role::Customer)).await;
        assert_eq!(again.status(), 200);
        assert_eq!(world.stock(MUG_ID).await, 5);
    }

    #[tokio::test]
    async fn a_confirmed_order_can_be_cancelled_by_an_admin() {
        let world = OrderWorld::with_sample_order().await;
        world.set_sample_status(OrderStatus::Confirmed).await;
        let response = handle(&order_deps(&world), as_user(event(), &UserId::generate(), Role::Admin)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_of(&response)["cancel_reason"], "admin_cancelled");
        assert_eq!(world.stock(MUG_ID).await, 5);
    }

    #[tokio::test]
    async fn a_shipped_order_cannot_be_cancelled() {
        let world = OrderWorld::with_sample_order().await;
        world.set_sample_status(OrderStatus::Confirmed).await;
        world.set_sample_status(OrderStatus::Shipped).await;
        let response = handle(&order_deps(&world), as_user(event(), &world.buyer, Role::Customer)).await;
        assert_eq!(response.status(), 409);
        assert_eq!(world.stock(MUG_ID).await, 3);
    }

    #[tokio::test]
    async fn another_customer_gets_404_and_nothing_changes() {
        let world = OrderWorld::with_sample_order().await;
        let response = handle(
            &order_deps(&world),
            as_user(event(), &UserId::generate(), Role::Customer),
        )
        .await;
        assert_eq!(response.status(), 404);
        assert_eq!(world.sample_order().await.status, OrderStatus::Pending);
    }
}
