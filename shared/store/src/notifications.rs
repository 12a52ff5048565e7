//! Notification history (`id` key = event id + channel; `by_user` index on user id + creation time).
//! One item per notification, updated on every delivery attempt with its outcome.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Select};
use serde::{Deserialize, Serialize};

use crate::{MAX_QUERY_READS, NewestFirstCursor, Page, StoreError, is_condition_failure, newest_for_user};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Pending,
    Sent,
    Failed,
    /// Not sent by policy (the recipient's hourly cap was reached); never attempted, never retried.
    Suppressed,
}

/// A notification as the history shows it (docs/api.md "Events"). Provider error details stay internal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub user_id: String,
    pub event_id: String,
    pub event_type: String,
    pub channel: Channel,
    pub recipient: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub correlation_id: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

/// The history id of the notification of `event_id` to `user_id` on `channel`: one per triple,
/// whatever the retries (an alert to every admin is one notification each).
pub fn notification_id(event_id: &str, user_id: &str, channel: Channel) -> String {
    format!("{event_id}-{}-{user_id}", channel.as_str())
}

/// Where a listing of a user's notifications resumes (newest first).
pub type NotificationCursor = NewestFirstCursor;

/// The listing position of `notification`.
pub fn notification_position(notification: &Notification) -> NotificationCursor {
    NewestFirstCursor {
        created_at: notification.created_at.clone(),
        id: notification.id.clone(),
    }
}

#[async_trait]
pub trait NotificationRepository: Send + Sync {
    /// Records the start of a delivery attempt: creates the item the first time, counts the attempt.
    async fn record_attempt(&self, draft: &Notification) -> Result<Notification, StoreError>;
    /// Records how the attempt ended.
    async fn record_outcome(
        &self,
        id: &str,
        status: DeliveryStatus,
        error: Option<&str>,
        now: &str,
    ) -> Result<(), StoreError>;
    async fn list_for_user(
        &self,
        user_id: &str,
        after: Option<&NotificationCursor>,
        limit: usize,
    ) -> Result<Page<Notification, NotificationCursor>, StoreError>;
    /// Records `draft` as `SUPPRESSED` without counting an attempt (nothing was sent). A notification
    /// already `SENT` stays so.
    async fn record_suppressed(&self, draft: &Notification) -> Result<(), StoreError>;
    /// How many of `user_id`'s notifications were created at or after `since` and sent or attempted
    /// (suppressed ones and `excluding_id`, the one being decided, do not count), counting no further
    /// than `up_to`. Reads the `by_user` index, which is eventually consistent: approximate under
    /// concurrent deliveries. A window too large to read within a bounded number of pages counts as
    /// `up_to` (a flood is what the cap is for).
    async fn count_recent(&self, user_id: &str, since: &str, excluding_id: &str, up_to: u32)
    -> Result<u32, StoreError>;
}

pub struct DynamoNotificationRepository {
    client: Client,
    table: String,
}

/// What identifies a notification: written by its first record, never changed after.
const IDENTITY_FIELDS: [&str; 6] = [
    "user_id",
    "event_id",
    "event_type",
    "channel",
    "correlation_id",
    "created_at",
];

/// The parts of an `UpdateItem` that writes `once` fields only if absent and `latest` fields always,
/// taking their values from `item` (fields it lacks are left alone).
struct Upsert {
    sets: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Upsert {
    fn of(item: &HashMap<String, AttributeValue>, once: &[&str], latest: &[&str]) -> Self {
        let mut upsert = Self {
            sets: Vec::new(),
            names: HashMap::new(),
            values: HashMap::new(),
        };
        for field in once.iter().chain(latest) {
            let Some(value) = item.get(*field) else { continue };
            upsert.names.insert(format!("#{field}"), (*field).to_string());
            upsert.values.insert(format!(":{field}"), value.clone());
            if once.contains(field) {
                upsert
                    .sets
                    .push(format!("#{field} = if_not_exists(#{field}, :{field})"));
            } else {
                upsert.sets.push(format!("#{field} = :{field}"));
            }
        }
        upsert
    }
}

impl DynamoNotificationRepository {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }
}

#[async_trait]
impl NotificationRepository for DynamoNotificationRepository {
    async fn record_attempt(&self, draft: &Notification) -> Result<Notification, StoreError> {
        // Identity fields are written once; the rendered message and status follow the latest attempt.
        // `status` too: an attempt must not hide that an earlier one was SENT (only outcomes change it).
        let once = [IDENTITY_FIELDS.as_slice(), &["status"]].concat();
        let latest = ["recipient", "body"];
        let item = serde_dynamo::to_item::<_, HashMap<String, AttributeValue>>(draft)?;
        let Upsert {
            mut sets,
            mut names,
            mut values,
        } = Upsert::of(&item, &once, &latest);
        if let Some(subject) = item.get("subject") {
            names.insert("#subject".into(), "subject".into());
            values.insert(":subject".into(), subject.clone());
            sets.push("#subject = :subject".into());
        }
        names.insert("#attempts".into(), "attempts".into());
        values.insert(":one".into(), AttributeValue::N("1".into()));
        values.insert(":zero".into(), AttributeValue::N("0".into()));
        sets.push("#attempts = if_not_exists(#attempts, :zero) + :one".into());
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(draft.id.clone()))
            .update_expression(format!("SET {}", sets.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let attributes = output.attributes.unwrap_or_default();
        Ok(serde_dynamo::from_item(attributes)?)
    }

    async fn record_outcome(
        &self,
        id: &str,
        status: DeliveryStatus,
        error: Option<&str>,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut expression = "SET #status = :status".to_string();
        let mut values = HashMap::from([(":status".to_string(), serde_dynamo::to_attribute_value(status)?)]);
        if status == DeliveryStatus::Sent {
            expression.push_str(", sent_at = :now REMOVE last_error");
            values.insert(":now".into(), AttributeValue::S(now.to_owned()));
        } else if let Some(error) = error {
            expression.push_str(", last_error = :error");
            values.insert(":error".into(), AttributeValue::S(error.chars().take(500).collect()));
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .update_expression(expression)
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn list_for_user(
        &self,
        user_id: &str,
        after: Option<&NotificationCursor>,
        limit: usize,
    ) -> Result<Page<Notification, NotificationCursor>, StoreError> {
        newest_for_user(&self.client, &self.table, user_id, after, limit, notification_position).await
    }

    async fn record_suppressed(&self, draft: &Notification) -> Result<(), StoreError> {
        let suppressed = Notification {
            status: DeliveryStatus::Suppressed,
            attempts: 0,
            sent_at: None,
            ..draft.clone()
        };
        // A retry of a notification attempted before keeps its identity fields and attempt count.
        let once = [IDENTITY_FIELDS.as_slice(), &["attempts"]].concat();
        let latest = ["recipient", "body", "subject", "status"];
        let item = serde_dynamo::to_item::<_, HashMap<String, AttributeValue>>(&suppressed)?;
        let Upsert {
            sets,
            names,
            mut values,
        } = Upsert::of(&item, &once, &latest);
        values.insert(":sent".into(), serde_dynamo::to_attribute_value(DeliveryStatus::Sent)?);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(draft.id.clone()))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_not_exists(id) OR #status <> :sent")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Err(error) if is_condition_failure(&error) => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from_sdk),
        }
    }

    async fn count_recent(
        &self,
        user_id: &str,
        since: &str,
        excluding_id: &str,
        up_to: u32,
    ) -> Result<u32, StoreError> {
        let mut counted: u32 = 0;
        let mut start_key = None;
        // Each page reads up to 1 MB of the window; COUNT returns no items, only how many matched.
        for _ in 0..MAX_QUERY_READS {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("by_user")
                .key_condition_expression("user_id = :user_id AND created_at >= :since")
                .filter_expression("#status <> :suppressed AND id <> :excluded")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":user_id", AttributeValue::S(user_id.to_owned()))
                .expression_attribute_values(":since", AttributeValue::S(since.to_owned()))
                .expression_attribute_values(
                    ":suppressed",
                    serde_dynamo::to_attribute_value(DeliveryStatus::Suppressed)?,
                )
                .expression_attribute_values(":excluded", AttributeValue::S(excluding_id.to_owned()))
                .select(Select::Count)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            counted = counted.saturating_add(u32::try_from(output.count).unwrap_or(0));
            start_key = output.last_evaluated_key;
            if counted >= up_to || start_key.is_none() {
                return Ok(counted.min(up_to));
            }
        }
        Ok(up_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suppressed_notification_reads_as_suppressed() {
        assert_eq!(
            serde_json::to_value(DeliveryStatus::Suppressed).unwrap(),
            serde_json::json!("SUPPRESSED")
        );
    }

    #[test]
    fn one_history_item_per_event_recipient_and_channel() {
        assert_eq!(notification_id("e1", "u1", Channel::Email), "e1-email-u1");
        assert_ne!(
            notification_id("e1", "u1", Channel::Email),
            notification_id("e1", "u1", Channel::Sms)
        );
        assert_ne!(
            notification_id("e1", "u1", Channel::Email),
            notification_id("e1", "u2", Channel::Email)
        );
    }
}
