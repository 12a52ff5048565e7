//! `GET /api/orders/{order_id}/details`: the order with its buyer and its products as they are now.
//! Two round trips: the order, then one `BatchGetItem` across the users and products tables. A product
//! deleted since still shows its line, without the catalogue fields.

use api::ApiError;
use api::auth::Identity;
use api::http::{json_response, respond};
use api::orders::{OrderView, order_for_caller};
use domain::{Order, Product, User};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

pub use api::orders::OrderDeps as Deps;

#[derive(Serialize)]
struct UserSummary<'a> {
    id: String,
    name: &'a str,
    email: &'a str,
}

#[derive(Serialize)]
struct DetailedLine<'a> {
    product_id: String,
    quantity: i64,
    price: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_description: Option<&'a str>,
}

#[derive(Serialize)]
struct OrderDetails<'a> {
    #[serde(flatten)]
    order: OrderView<'a>,
    user: Option<UserSummary<'a>>,
    items: Vec<DetailedLine<'a>>,
}

fn details<'a>(
    order: &'a Order,
    caller: &Identity,
    user: Option<&'a User>,
    products: &'a [Product],
) -> OrderDetails<'a> {
    let mut view = OrderView::for_caller(order, caller);
    let lines = std::mem::take(&mut view.items);
    OrderDetails {
        order: view,
        user: user.map(|user| UserSummary {
            id: user.id.to_string(),
            name: &user.name,
            email: user.email.as_str(),
        }),
        items: lines
            .into_iter()
            .map(|line| {
                let product = products.iter().find(|p| p.id.to_string() == line.product_id);
                DetailedLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    price: line.price,
                    product_name: product.map(|p| p.name.as_str()),
                    product_description: product.map(|p| p.description.as_str()),
                }
            })
            .collect(),
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Response<Body> {
    respond(request, |request| async move {
        let identity = request.identity(&deps.tokens)?;
        let order = order_for_caller(deps.orders.as_ref(), &identity, &request.path_param("order_id")?).await?;
        let (user, products) = deps.orders.details(&order).await.map_err(ApiError::from)?;
        json_response(StatusCode::OK, &details(&order, &identity, user.as_ref(), &products))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::testing::{as_user, json_of, order_deps, request};
    use domain::{Role, UserId};
    use store::testing::{KETTLE_ID, OrderWorld};

    fn event() -> Request {
        request(include_str!("../../../events/orders-details.json"))
    }

    #[tokio::test]
    async fn details_add_the_buyer_and_catalogue_fields() {
        let world = OrderWorld::with_sample_order().await;
        let deps = order_deps(&world);
        let response = handle(&deps, as_user(event(), &world.buyer, Role::Customer)).await;
        assert_eq!(response.status(), 200);
        let body = json_of(&response);
        assert_eq!(body["user"]["name"], "Bea Buyer");
        assert_eq!(body["user"]["email"], "buyer@example.com");
        assert_eq!(body["items"][0]["product_name"], "Mug");
        assert_eq!(body["items"][0]["product_description"], "sample");
        assert_eq!(body["status"], "PENDING");
        assert_eq!(body["total_amount"], 2 * 1299 + 4599);
    }

    #[tokio::test]
    async fn a_vanished_product_keeps_its_line_unenriched() {
        let world = OrderWorld::with_sample_order().await;
        world.products.remove_for_tests(KETTLE_ID);
        let deps = order_deps(&world);
        let body = json_of(&handle(&deps, as_user(event(), &world.buyer, Role::Customer)).await);
        let kettle = &body["items"][1];
        assert_eq!(kettle["product_id"], KETTLE_ID);
        assert_eq!(kettle["quantity"], 1);
        assert!(kettle.get("product_name").is_none());
    }

    #[tokio::test]
    async fn another_customer_gets_404() {
        let world = OrderWorld::with_sample_order().await;
        let deps = order_deps(&world);
        let response = handle(&deps, as_user(event(), &UserId::generate(), Role::Customer)).await;
        assert_eq!(response.status(), 404);
    }
}
