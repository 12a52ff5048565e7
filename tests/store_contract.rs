//! The storage contract (`store::contract`) on the DynamoDB adapters and the stack's real tables:
//! the same checks the in-memory fakes pass in `make test-unit`. Plus what only the real tables
//! have: TTL switched on for the records that expire, and the TTL attribute on those records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use e2e::{ShopTables, emulator_sdk_config, env_var};
use store::connections::DynamoConnectionRegistry;
use store::contract::Stores;
use store::idempotency::{Claim, DynamoIdempotencyStore, IdempotencyStore, RETENTION_SECS};
use store::login_failures::{DynamoLoginFailures, LoginFailures, Subject};
use store::notifications::DynamoNotificationRepository;
use store::payments::DynamoPaymentLedger;
use store::rate_counter::{DynamoWindowCounter, WindowCounter};
use store::users::DynamoUserRepository;

/// The adapters the functions use, on the stack's tables.
async fn dynamo_stores() -> Stores {
    let client = aws_sdk_dynamodb::Client::new(&emulator_sdk_config().await);
    let tables = ShopTables::from_env();
    let products = Arc::new(store::products::DynamoProductRepository::new(
        client.clone(),
        &tables.products,
        &tables.inventory_adjustments,
    ));
    let guards = env_var("SHOP_GUARDS_TABLE");
    Stores {
        users: Arc::new(DynamoUserRepository::new(client.clone(), &tables.users)),
        catalogue: products.clone(),
        editor: products.clone(),
        inventory: products,
        orders: Arc::new(tables.order_repository(client.clone())),
        idempotency: Arc::new(DynamoIdempotencyStore::new(client.clone(), &tables.idempotency)),
        notifications: Arc::new(DynamoNotificationRepository::new(
            client.clone(),
            &env_var("SHOP_NOTIFICATIONS_TABLE"),
        )),
        counters: Arc::new(DynamoWindowCounter::new(client.clone(), guards.clone())),
        login_failures: Arc::new(DynamoLoginFailures::new(client.clone(), guards)),
        ledger: Arc::new(DynamoPaymentLedger::new(client.clone(), &tables.orders)),
        connections: Arc::new(DynamoConnectionRegistry::new(
            client.clone(),
            &env_var("SHOP_CONNECTIONS_TABLE"),
        )),
        unsettled: Arc::new(store::unsettled::DynamoUnsettledOrders::new(client, &tables.orders)),
    }
}

store::storage_contract!(dynamo_stores().await);

/// The raw item under `key` in `table`.
async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no item {key} in {table}"))
}

fn expires_at(item: &std::collections::HashMap<String, AttributeValue>) -> u64 {
    item.get("expires_at")
        .and_then(|value| value.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no numeric expires_at in {item:?}"))
}

#[tokio::test]
async fn expiring_records_carry_the_ttl_attribute_their_tables_expire_on() {
    let client = aws_sdk_dynamodb::Client::new(&emulator_sdk_config().await);
    let tables = ShopTables::from_env();
    let guards = env_var("SHOP_GUARDS_TABLE");
    let connections = env_var("SHOP_CONNECTIONS_TABLE");
    // Given the three tables whose records expire, TTL is on, on `expires_at`
    for table in [&tables.idempotency, &guards, &connections] {
        let ttl = client.describe_time_to_live().table_name(table).send().await.unwrap();
        let description = ttl.time_to_live_description.expect("a TTL description");
        assert_eq!(
            description.time_to_live_status,
            Some(TimeToLiveStatus::Enabled),
            "{table}"
        );
        assert_eq!(description.attribute_name.as_deref(), Some("expires_at"), "{table}");
    }
    let now = domain::unix_now();
    // An idempotency claim expires after the retention
    let key = format!("contract#ttl#{}", uuid::Uuid::new_v4());
    let idempotency = DynamoIdempotencyStore::new(client.clone(), &tables.idempotency);
    assert!(matches!(
        idempotency.claim(&key, "h").await.unwrap(),
        Claim::Acquired(_)
    ));
    let claimed = expires_at(&raw_item(&client, &tables.idempotency, &key).await);
    assert!(
        (now..=now + RETENTION_SECS + 60).contains(&claimed),
        "{claimed} vs now {now}"
    );
    // A rate counter and a login failure counter expire when asked
    let rate_key = format!("rate#contract#{}", uuid::Uuid::new_v4());
    DynamoWindowCounter::new(client.clone(), guards.clone())
        .count(&rate_key, 1, now + 120)
        .await
        .unwrap();
    assert_eq!(expires_at(&raw_item(&client, &guards, &rate_key).await), now + 120);
    let ip = Subject::Ip(format!("contract-{}", uuid::Uuid::new_v4().simple()));
    DynamoLoginFailures::new(client.clone(), guards.clone())
        .record(&ip, now * 1000, 0, now + 300)
        .await
        .unwrap();
    assert_eq!(expires_at(&raw_item(&client, &guards, &ip.key()).await), now + 300);
}
