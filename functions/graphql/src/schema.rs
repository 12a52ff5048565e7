//! The GraphQL schema (docs/api.md "GraphQL"): types, queries and mutations. Every resolver calls the
//! rules the REST routes call (`api::catalogue`, `api::placement`, `api::orders`, `api::listing`,
//! `api::users`); this module only translates arguments and results.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, ID, InputObject, Object, SimpleObject};
use serde::Deserialize;

use api::ApiError;
use api::auth::Identity;
use api::catalogue::{ProductQuery, product_by_id, product_filter, product_page};
use api::listing::{PageRequest, UserListing, limit_of};
use api::orders::{OrderView, cancel_for_caller, order_for_caller};
use api::placement::{LineRequest, PlacementRequest, place_order};
use api::users::own_account;
use domain::validation::FieldErrors;
use domain::{Cause, Order, Product, ProductId, User, UserId};
use store::orders::OrderCursor;

use crate::Services;
use crate::errors::OrGraphqlError;
use crate::loader::{Related, RelatedLoader, RelatedValue};

/// Who is calling, decided once per request from the bearer token: the reason when there is none
/// (or it is invalid), asked for only by the fields that need an identity.
pub struct Caller(pub Result<Identity, &'static str>);

impl Caller {
    fn identity(&self) -> Result<&Identity, ApiError> {
        self.0.as_ref().map_err(|reason| ApiError::Unauthorized(reason))
    }
}

/// The request's cause (correlation id, trace), recorded on what a mutation changes.
pub struct RequestCause(pub Cause);

fn services<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Services> {
    ctx.data::<Arc<Services>>().map(AsRef::as_ref)
}

fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Identity> {
    ctx.data::<Caller>()?.identity().or_gql()
}

/// The fields' cost (storage reads and writes) is in `cost`, checked before any of them runs.
pub struct Query;

#[Object]
impl Query {
    /// The catalogue, cheapest first, filtered by category and price (minor units).
    async fn products(
        &self,
        ctx: &Context<'_>,
        category: Option<String>,
        min_price: Option<i64>,
        max_price: Option<i64>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> async_graphql::Result<ProductPage> {
        let services = services(ctx)?;
        let query = ProductQuery {
            category: category.as_deref(),
            min_price,
            max_price,
        };
        let filter = product_filter(query, FieldErrors::default()).or_gql()?;
        let limit = limit_of(limit).or_gql()?;
        let page = product_page(
            services.catalogue.as_ref(),
            &services.cursors,
            &filter,
            limit,
            cursor.as_deref(),
        )
        .await
        .or_gql()?;
        Ok(ProductPage {
            items: page.items.into_iter().map(ProductNode).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// One product.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<ProductNode>> {
        let services = services(ctx)?;
        let product = product_by_id(services.catalogue.as_ref(), &id).await.or_gql()?;
        Ok(Some(ProductNode(product)))
    }

    /// The caller's own account.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserNode>> {
        let identity = caller(ctx)?;
        let user = own_account(services(ctx)?.users.as_ref(), identity).await.or_gql()?;
        Ok(Some(UserNode(user)))
    }

    /// One order of the caller's (any order for an admin); another user's order is `not-found`.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<OrderNode>> {
        let identity = caller(ctx)?;
        let order = order_for_caller(services(ctx)?.orders.as_ref(), identity, &id)
            .await
            .or_gql()?;
        OrderNode::of(&order, identity).map(Some).or_gql()
    }

    /// The caller's orders, newest first.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> async_graphql::Result<OrderPage> {
        let identity = caller(ctx)?;
        let services = services(ctx)?;
        let page = PageRequest {
            user_id: None,
            limit: limit_of(limit).or_gql()?,
            cursor: cursor.as_deref(),
        };
        let listing = UserListing::<OrderCursor>::new(page, identity, &services.cursors, "orders").or_gql()?;
        let page = services
            .orders
            .list_for_user(&listing.user_id, listing.after.as_ref(), listing.limit)
            .await
            .map_err(ApiError::from)
            .or_gql()?;
        Ok(OrderPage {
            items: page
                .items
                .iter()
                .map(|order| OrderNode::of(order, identity))
                .collect::<Result<_, _>>()
                .or_gql()?,
            next_cursor: listing.next_cursor(&services.cursors, page.next).or_gql()?,
        })
    }
}

pub struct Mutation;

/// One line of a new order.
#[derive(InputObject)]
pub struct OrderLineInput {
    pub product_id: ID,
    pub quantity: i64,
}

#[Object]
impl Mutation {
    /// Places an order for the caller, as `POST /api/orders` does: prices from the catalogue, all
    /// stock reserved with the order in one transaction; `idempotencyKey` is REST's
    /// `Idempotency-Key` (the same key and lines answer the same order again).
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        items: Vec<OrderLineInput>,
        payment_token: Option<String>,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<OrderNode> {
        let identity = caller(ctx)?;
        let services = services(ctx)?;
        let key = api::placement::idempotency_key(idempotency_key.as_deref(), "idempotencyKey").or_gql()?;
        let request = PlacementRequest {
            items: items
                .into_iter()
                .map(|line| LineRequest {
                    product_id: line.product_id.0,
                    quantity: line.quantity,
                })
                .collect(),
            payment_token,
        };
        let cause = &ctx.data::<RequestCause>()?.0;
        let placement = place_order(&services.placement, &identity.user_id, &request, key.as_ref(), cause)
            .await
            .or_gql()?;
        OrderNode::from_view(&placement.response().body).or_gql()
    }

    /// Cancels one of the caller's orders (any order for an admin) and releases its stock, once.
    async fn cancel_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<OrderNode> {
        let identity = caller(ctx)?;
        let cause = &ctx.data::<RequestCause>()?.0;
        let order = cancel_for_caller(services(ctx)?.orders.as_ref(), identity, &id, cause)
            .await
            .or_gql()?;
        OrderNode::of(&order, identity).or_gql()
    }
}

/// A page of the catalogue.
#[derive(SimpleObject)]
pub struct ProductPage {
    items: Vec<ProductNode>,
    next_cursor: Option<String>,
}

/// A page of orders.
#[derive(SimpleObject)]
pub struct OrderPage {
    items: Vec<OrderNode>,
    next_cursor: Option<String>,
}

/// A product of the catalogue; money in minor units.
pub struct ProductNode(pub Product);

#[Object(name = "Product")]
impl ProductNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn category(&self) -> &str {
        self.0.category.as_str()
    }
    async fn price(&self) -> i64 {
        self.0.price.minor_units()
    }
    async fn currency(&self) -> &str {
        self.0.currency.code()
    }
    async fn stock_quantity(&self) -> i64 {
        self.0.stock_quantity.units()
    }
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
}

/// An account, as `GET /api/users/me` shows it.
pub struct UserNode(pub User);

#[Object(name = "User")]
impl UserNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn email(&self) -> &str {
        self.0.email.as_str()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_ref().map(|phone| phone.as_str())
    }
    async fn role(&self) -> &str {
        self.0.role.as_str()
    }
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
}

/// The buyer of an order, as the order details show them.
#[derive(SimpleObject)]
pub struct OrderUser {
    id: ID,
    name: String,
    email: String,
}

/// An order as clients see it (the REST order view); its `user` and its lines' `product` are loaded
/// in one batch per request.
#[derive(SimpleObject, Deserialize)]
#[graphql(name = "Order", complex)]
pub struct OrderNode {
    id: ID,
    user_id: ID,
    items: Vec<OrderLineNode>,
    total_amount: i64,
    currency: String,
    status: String,
    payment_status: String,
    #[serde(default)]
    cancel_reason: Option<String>,
    /// While the payment waits for the customer to authenticate (3-D Secure), and to the order's
    /// owner only: what their browser completes it with.
    #[serde(default)]
    payment_action: Option<PaymentActionNode>,
    created_at: String,
    updated_at: String,
}

/// What the customer's browser needs to complete a payment (Stripe.js `handleNextAction`).
#[derive(SimpleObject, Deserialize)]
#[graphql(name = "PaymentAction")]
pub struct PaymentActionNode {
    client_secret: String,
}

#[derive(SimpleObject, Deserialize)]
#[graphql(name = "OrderLine", complex)]
pub struct OrderLineNode {
    product_id: ID,
    quantity: i64,
    price: i64,
}

impl OrderNode {
    /// The order as REST shows it (`OrderView`), so both APIs show the same fields the same way.
    fn of(order: &Order, caller: &Identity) -> Result<Self, ApiError> {
        serde_json::to_value(OrderView::for_caller(order, caller))
            .and_then(serde_json::from_value)
            .map_err(ApiError::internal)
    }

    /// The order from its client view's JSON (what a placement stores for replays).
    fn from_view(json: &str) -> Result<Self, ApiError> {
        serde_json::from_str(json).map_err(ApiError::internal)
    }
}

fn loader<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a DataLoader<RelatedLoader>> {
    ctx.data::<DataLoader<RelatedLoader>>()
}

#[ComplexObject]
impl OrderNode {
    /// The buyer (null if their account is gone).
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<OrderUser>> {
        let Ok(id) = UserId::parse(&self.user_id) else {
            return Ok(None);
        };
        match loader(ctx)?.load_one(Related::User(id)).await {
            Ok(Some(RelatedValue::User(user))) => Ok(Some(OrderUser {
                id: ID(user.id.to_string()),
                name: user.name.clone(),
                email: user.email.as_str().to_owned(),
            })),
            Ok(_) => Ok(None),
            Err(error) => Err(crate::errors::graphql_error(&error)),
        }
    }
}

#[ComplexObject]
impl OrderLineNode {
    /// The product as it is now (null if it was removed from the catalogue since).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        let Ok(id) = ProductId::parse(&self.product_id) else {
            return Ok(None);
        };
        match loader(ctx)?.load_one(Related::Product(id)).await {
            Ok(Some(RelatedValue::Product(product))) => Ok(Some(ProductNode(product.as_ref().clone()))),
            Ok(_) => Ok(None),
            Err(error) => Err(crate::errors::graphql_error(&error)),
        }
    }
}
