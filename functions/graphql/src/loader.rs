//! Batched loading of what orders refer to: every order's buyer and every line's product that one
//! GraphQL request asks for are read together, in one `BatchGetItem` across the users and products
//! tables (`OrderRepository::users_and_products`), so an order with its user and products costs two
//! round trips (the order, then the batch).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;

use api::ApiError;
use domain::{Product, ProductId, User, UserId};
use store::orders::OrderRepository;

/// BatchGetItem reads at most 100 keys.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Related {
    User(UserId),
    Product(ProductId),
}

#[derive(Debug, Clone)]
pub enum RelatedValue {
    User(Arc<User>),
    Product(Arc<Product>),
}

pub struct RelatedLoader {
    pub orders: Arc<dyn OrderRepository>,
}

impl Loader<Related> for RelatedLoader {
    type Value = RelatedValue;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Related]) -> Result<HashMap<Related, RelatedValue>, Self::Error> {
        let mut users = Vec::new();
        let mut products = Vec::new();
        for key in keys {
            match key {
                Related::User(id) => users.push(id.clone()),
                Related::Product(id) => products.push(id.clone()),
            }
        }
        let (users, products) = self
            .orders
            .users_and_products(&users, &products)
            .await
            .map_err(|error| Arc::new(ApiError::from(error)))?;
        let users = users
            .into_iter()
            .map(|user| (Related::User(user.id.clone()), RelatedValue::User(Arc::new(user))));
        let products = products.into_iter().map(|product| {
            (
                Related::Product(product.id.clone()),
                RelatedValue::Product(Arc::new(product)),
            )
        });
        Ok(users.chain(products).collect())
    }
}
