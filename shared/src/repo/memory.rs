//! In-memory repositories for handler unit tests. They keep the same invariants as the DynamoDB
//! adapters (unique emails, conditional updates); the end-to-end suite covers the real ones.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::products::{ProductCursor, ProductFilter, ProductRepository};
use super::users::{LoginRecord, UserRepository};
use crate::domain::{Email, Product, ProductId, ProductPatch, Role, User, UserId};
use crate::store::{Page, StoreError};

fn poisoned() -> StoreError {
    StoreError::Failed("in-memory store lock poisoned".into())
}

#[derive(Default)]
pub struct InMemoryUsers {
    users: Mutex<HashMap<UserId, (User, String)>>,
}

#[async_trait]
impl UserRepository for InMemoryUsers {
    async fn create(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let mut users = self.users.lock().map_err(|_| poisoned())?;
        if users.values().any(|(existing, _)| existing.email == user.email) {
            return Err(StoreError::AlreadyExists);
        }
        users.insert(user.id.clone(), (user.clone(), password_hash.to_owned()));
        Ok(())
    }

    async fn get(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users.get(id).map(|(user, _)| user.clone()))
    }

    async fn find_login(&self, email: &Email) -> Result<Option<LoginRecord>, StoreError> {
        let users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users
            .values()
            .find(|(user, _)| &user.email == email)
            .map(|(user, hash)| LoginRecord {
                user_id: user.id.clone(),
                role: user.role,
                password_hash: hash.clone(),
            }))
    }

    async fn set_role(&self, email: &Email, role: Role) -> Result<Option<User>, StoreError> {
        let mut users = self.users.lock().map_err(|_| poisoned())?;
        Ok(users
            .values_mut()
            .find(|(user, _)| &user.email == email)
            .map(|(user, _)| {
                user.role = role;
                user.clone()
            }))
    }
}

#[derive(Default)]
pub struct InMemoryProducts {
    products: Mutex<HashMap<ProductId, Product>>,
}

#[async_trait]
impl ProductRepository for InMemoryProducts {
    async fn create(&self, product: &Product) -> Result<(), StoreError> {
        let mut products = self.products.lock().map_err(|_| poisoned())?;
        if products.contains_key(&product.id) {
            return Err(StoreError::AlreadyExists);
        }
        products.insert(product.id.clone(), product.clone());
        Ok(())
    }

    async fn get(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        Ok(self.products.lock().map_err(|_| poisoned())?.get(id).cloned())
    }

    async fn update(&self, id: &ProductId, patch: &ProductPatch, now: &str) -> Result<Option<Product>, StoreError> {
        let mut products = self.products.lock().map_err(|_| poisoned())?;
        Ok(products.get_mut(id).map(|product| {
            patch.clone().apply(product, now.to_owned());
            product.clone()
        }))
    }

    async fn list(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductCursor>,
        limit: usize,
    ) -> Result<Page<Product, ProductCursor>, StoreError> {
        let products = self.products.lock().map_err(|_| poisoned())?;
        let mut matching: Vec<Product> = products.values().filter(|p| filter.matches(p)).cloned().collect();
        let position = |p: &Product| (p.price.minor_units(), p.id.to_string());
        matching.sort_by_key(position);
        let remaining = matching
            .into_iter()
            .filter(|p| after.is_none_or(|cursor| position(p) > (cursor.price, cursor.id.clone())))
            .take(limit + 1)
            .collect();
        Ok(Page::from_overfetch(remaining, limit, ProductCursor::after))
    }
}
