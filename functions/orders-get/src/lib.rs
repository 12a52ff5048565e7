//! `GET /api/orders/{order_id}`: one order, for its owner or an admin; 404 for anyone else.

use api::http::{json_response, respond};
use api::orders::{OrderView, order_for_caller};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

pub use api::orders::OrderDeps as Deps;

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let order = order_for_caller(deps.orders.as_ref(), &identity, &request.path_param("order_id")?).await?;
        json_response(StatusCode::OK, &OrderView::for_caller(&order, &identity))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, order_deps, request};
    use domain::{Role, UserId};
    use store::testing::OrderWorld;

    fn event() -> Request {
        request(include_str!("../../../events/orders-get.json"))
    }

    #[tokio::test]
    async fn the_owner_and_admins_read_the_order() {
        let world = OrderWorld::with_sample_order().await;
        let deps = order_deps(&world);
        let response = handle(&deps, as_user(event(), &world.buyer, Role::Customer)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_of(&response)["id"], store::testing::SAMPLE_ORDER_ID);
        let response = handle(&deps, as_user(event(), &UserId::generate(), Role::Admin)).await;
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn another_customer_gets_404() {
        let world = OrderWorld::with_sample_order().await;
        let response = handle(
            &order_deps(&world),
            as_user(event(), &UserId::generate(), Role::Customer),
        )
        .await;
        assert_eq!(response.status(), 404);
    }
}
