//! Paged listings: one page of a query, read on past DynamoDB's 1 MB page limit, and where the next
//! page starts.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page from what a query read: up to `limit + 1` items, and whether the query stopped before the
    /// end (then the page resumes after its last item even if it is short).
    pub fn from_reads(items: Vec<T>, limit: usize, stopped_early: bool, cursor_of: impl Fn(&T) -> C) -> Self {
        let mut page = Self::from_overfetch(items, limit, &cursor_of);
        if page.next.is_none() && stopped_early {
            page.next = page.items.last().map(cursor_of);
        }
        page
    }

    /// Builds a page from up to `limit + 1` fetched items: the extra item only proves there is more.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> C) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor_of)
        } else {
            None
        };
        Self { items, next }
    }

    /// The same page with its items converted.
    pub fn map<U>(self, convert: impl FnMut(T) -> U) -> Page<U, C> {
        Page {
            items: self.items.into_iter().map(convert).collect(),
            next: self.next,
        }
    }
}

/// Where a newest-first listing of one user's items resumes: after the item created at this time with
/// this id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewestFirstCursor {
    pub created_at: String,
    pub id: String,
}

/// One page of a user's items from a table keyed by `id` with a `by_user` index on
/// (`user_id`, `created_at`), newest first, resuming after `after`.
pub async fn newest_for_user<T: DeserializeOwned>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    user_id: &str,
    after: Option<&NewestFirstCursor>,
    limit: usize,
    position: impl Fn(&T) -> NewestFirstCursor,
) -> Result<Page<T, NewestFirstCursor>, StoreError> {
    let start_key = after.map(|cursor| {
        HashMap::from([
            ("id".to_string(), AttributeValue::S(cursor.id.clone())),
            ("user_id".to_string(), AttributeValue::S(user_id.to_owned())),
            ("created_at".to_string(), AttributeValue::S(cursor.created_at.clone())),
        ])
    });
    let query = client
        .query()
        .table_name(table)
        .index_name("by_user")
        .key_condition_expression("user_id = :user_id")
        .expression_attribute_values(":user_id", AttributeValue::S(user_id.to_owned()))
        .scan_index_forward(false);
    query_page(query, start_key, limit, position).await
}

/// Reads of one query page at most (each up to 1 MB); past it the page ends early, with a cursor.
pub const MAX_QUERY_READS: usize = 4;

/// One page of `query`'s items (rows of type `T`), resuming at `start_key`. DynamoDB ends a read at
/// 1 MB as well as at the limit, so reads go on (up to [`MAX_QUERY_READS`]) until the page is full;
/// one item more than asked for tells whether another page exists.
pub async fn query_page<T: DeserializeOwned, C>(
    query: QueryFluentBuilder,
    start_key: Option<HashMap<String, AttributeValue>>,
    limit: usize,
    position: impl Fn(&T) -> C,
) -> Result<Page<T, C>, StoreError> {
    let mut items: Vec<T> = Vec::with_capacity(limit + 1);
    let mut start_key = start_key;
    for _ in 0..MAX_QUERY_READS {
        let wanted = limit + 1 - items.len();
        let output = query
            .clone()
            .set_exclusive_start_key(start_key)
            .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        items.extend(serde_dynamo::from_items::<_, T>(output.items.unwrap_or_default())?);
        start_key = output.last_evaluated_key;
        if items.len() > limit || start_key.is_none() {
            break;
        }
    }
    Ok(Page::from_reads(items, limit, start_key.is_some(), position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overfetched_page_points_at_its_last_item() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(
            page,
            Page {
                items: vec![1, 2],
                next: Some(2)
            }
        );
    }

    #[test]
    fn a_short_page_cut_by_the_read_size_still_points_onwards() {
        let page = Page::from_reads(vec![1, 2], 5, true, |n| *n);
        assert_eq!(page.next, Some(2));
        assert_eq!(Page::from_reads(vec![1, 2], 5, false, |n| *n).next, None);
    }

    #[test]
    fn a_short_page_is_the_last() {
        let page = Page::from_overfetch(vec![1, 2], 2, |n| *n);
        assert_eq!(page.next, None);
    }
}
