//! Users table: one item per user (`pk = USER#<id>`) and one per email address
//! (`pk = EMAIL#<email>`) that claims the address, so two accounts can never share an email.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use serde::{Deserialize, Serialize};

use crate::{StoreError, condition_failed, is_condition_failure, request_token, transact};
use domain::{Email, Role, User, UserId};

/// What login needs to check a password and issue a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub user_id: UserId,
    pub role: Role,
    pub password_hash: String,
}

#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Stores a new user; `AlreadyExists` when the email is taken.
    /// `correlation_id` is kept on the item so the registration event carries it.
    async fn create(&self, user: &User, password_hash: &str, correlation_id: &str) -> Result<(), StoreError>;
    async fn get(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    async fn find_login(&self, email: &Email) -> Result<Option<LoginRecord>, StoreError>;
    /// Changes the role of the account with this email; `None` when there is none.
    async fn set_role(&self, email: &Email, role: Role) -> Result<Option<User>, StoreError>;
    /// Every admin account (operational alerts go to them).
    async fn admins(&self) -> Result<Vec<User>, StoreError>;
}

pub const BY_ROLE_INDEX: &str = "by_role";
/// Bounds the admin lookup; a shop has a handful of admins.
const MAX_ADMINS: i32 = 100;

const USER_ENTITY: &str = "user";
const EMAIL_ENTITY: &str = "email";

pub fn user_key(id: &UserId) -> String {
    format!("USER#{id}")
}

fn email_key(email: &Email) -> String {
    format!("EMAIL#{email}")
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UserItem {
    pk: String,
    entity: String,
    #[serde(flatten)]
    pub(crate) user: User,
    password_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
}

/// The user a users-table stream image holds, with the correlation id of the request that wrote it;
/// `None` for the table's other items (email claims).
pub fn user_from_image(item: serde_dynamo::Item) -> Result<Option<(User, Option<String>)>, StoreError> {
    #[derive(Deserialize)]
    struct Entity {
        entity: Option<String>,
    }
    let kind: Entity = serde_dynamo::from_item(item.clone())?;
    if kind.entity.as_deref() != Some(USER_ENTITY) {
        return Ok(None);
    }
    let item: UserItem = serde_dynamo::from_item(item)?;
    Ok(Some((item.user, item.correlation_id)))
}

#[derive(Debug, Serialize, Deserialize)]
struct EmailClaimItem {
    pk: String,
    entity: String,
    user_id: UserId,
}

pub struct DynamoUserRepository {
    client: Client,
    table: String,
}

impl DynamoUserRepository {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    async fn get_item<T: for<'de> Deserialize<'de>>(&self, pk: String) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        output
            .item
            .map(serde_dynamo::from_item)
            .transpose()
            .map_err(StoreError::from)
    }

    async fn user_item(&self, id: &UserId) -> Result<Option<UserItem>, StoreError> {
        self.get_item(user_key(id)).await
    }

    async fn claim(&self, email: &Email) -> Result<Option<EmailClaimItem>, StoreError> {
        self.get_item(email_key(email)).await
    }
}

fn put_if_absent(table: &str, item: impl Serialize) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(serde_dynamo::to_item(item)?))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|error| StoreError::Failed(Box::new(error)))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

#[async_trait]
impl UserRepository for DynamoUserRepository {
    async fn create(&self, user: &User, password_hash: &str, correlation_id: &str) -> Result<(), StoreError> {
        let user_item = UserItem {
            pk: user_key(&user.id),
            entity: USER_ENTITY.into(),
            user: user.clone(),
            password_hash: password_hash.to_owned(),
            correlation_id: Some(correlation_id.to_owned()),
        };
        let claim = EmailClaimItem {
            pk: email_key(&user.email),
            entity: EMAIL_ENTITY.into(),
            user_id: user.id.clone(),
        };
        let items = vec![
            put_if_absent(&self.table, user_item)?,
            put_if_absent(&self.table, claim)?,
        ];
        match transact(&self.client, items, &request_token(&["register", &user.id.to_string()])).await? {
            Ok(()) => Ok(()),
            // The user id is new, so only the email claim's condition can refuse.
            Err(reasons) if reasons.iter().any(condition_failed) => Err(StoreError::AlreadyExists),
            Err(reasons) => Err(StoreError::Failed(
                format!("registration cancelled: {reasons:?}").into(),
            )),
        }
    }

    async fn get(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.user_item(id).await?.map(|item| item.user))
    }

    async fn find_login(&self, email: &Email) -> Result<Option<LoginRecord>, StoreError> {
        let Some(claim) = self.claim(email).await? else {
            return Ok(None);
        };
        Ok(self.user_item(&claim.user_id).await?.map(|item| LoginRecord {
            user_id: item.user.id,
            role: item.user.role,
            password_hash: item.password_hash,
        }))
    }

    async fn set_role(&self, email: &Email, role: Role) -> Result<Option<User>, StoreError> {
        let Some(claim) = self.claim(email).await? else {
            return Ok(None);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(user_key(&claim.user_id)))
            .update_expression("SET #role = :role")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":role", serde_dynamo::to_attribute_value(role)?)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let item: Option<UserItem> = output.attributes.map(serde_dynamo::from_item).transpose()?;
                Ok(item.map(|item| item.user))
            }
            Err(error) if is_condition_failure(&error) => Ok(None),
            Err(error) => Err(StoreError::from_sdk(error)),
        }
    }

    async fn admins(&self) -> Result<Vec<User>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_ROLE_INDEX)
            .key_condition_expression("#role = :admin")
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":admin", serde_dynamo::to_attribute_value(Role::Admin)?)
            .limit(MAX_ADMINS)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let items: Vec<UserItem> = serde_dynamo::from_items(output.items.unwrap_or_default())?;
        Ok(items.into_iter().map(|item| item.user).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Phone;

    #[test]
    fn a_user_item_round_trips_through_dynamodb_attributes() {
        let item = UserItem {
            pk: "USER#x".into(),
            entity: USER_ENTITY.into(),
            user: User {
                id: UserId::generate(),
                email: Email::parse("ada@example.com").unwrap(),
                name: "Ada".into(),
                phone: Some(Phone::parse("+14155550123").unwrap()),
                role: Role::Admin,
                created_at: "2026-01-01T00:00:00Z".into(),
            },
            password_hash: "$argon2id$...".into(),
            correlation_id: Some("cid".into()),
        };
        let attributes: std::collections::HashMap<String, AttributeValue> = serde_dynamo::to_item(&item).unwrap();
        assert_eq!(attributes["role"], AttributeValue::S("admin".into()));
        let back: UserItem = serde_dynamo::from_item(attributes).unwrap();
        assert_eq!(back.user, item.user);
    }
}
