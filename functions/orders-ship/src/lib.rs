//! `POST /api/orders/{order_id}/ship` (admin): ships a `CONFIRMED` order; any other status is 409.
//! The change is conditional on the status read, so a racing cancel and ship cannot both win.

use api::http::{json_response, respond};
use api::orders::{OrderView, order_for_caller};
use domain::Transition;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use store::orders::step;

pub use api::orders::OrderDeps as Deps;

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        identity.require_admin()?;
        let order = order_for_caller(deps.orders.as_ref(), &identity, &request.path_param("order_id")?).await?;
        let order = step(deps.orders.as_ref(), order, Transition::Ship, None, &request.cause())
            .await?
            .into_order();
        json_response(StatusCode::OK, &OrderView::from(&order))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, order_deps, request};
    use domain::{OrderStatus, Role, UserId};
    use store::testing::OrderWorld;

    fn event() -> Request {
        request(include_str!("../../../events/orders-ship.json"))
    }

    #[tokio::test]
    async fn an_admin_ships_a_confirmed_order() {
        let world = OrderWorld::with_sample_order().await;
        world.set_sample_status(OrderStatus::Confirmed).await;
        let response = handle(&order_deps(&world), as_user(event(), &UserId::generate(), Role::Admin)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_of(&response)["status"], "SHIPPED");
    }

    #[tokio::test]
    async fn a_pending_order_cannot_be_shipped() {
        let world = OrderWorld::with_sample_order().await;
        let response = handle(&order_deps(&world), as_user(event(), &UserId::generate(), Role::Admin)).await;
        assert_eq!(response.status(), 409);
        assert_eq!(world.sample_order().await.status, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn the_owner_is_forbidden() {
        let world = OrderWorld::with_sample_order().await;
        world.set_sample_status(OrderStatus::Confirmed).await;
        let response = handle(&order_deps(&world), as_user(event(), &world.buyer, Role::Customer)).await;
        assert_eq!(response.status(), 403);
    }
}
