//! End-to-end: an outbox that never stalls. An unreadable record on a table stream is parked on the
//! failed-records queue (whole) and the events behind it keep flowing; `scripts/redrive_outbox.py`
//! feeds parked records back to the publisher, keeps the ones that still fail, and a record relayed
//! again reaches its consumers once (the event keeps its id).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use e2e::{Api, SETTLE_TIMEOUT, emulator_sdk_config, env_var, is_sent, unique_category};
use serde_json::json;

/// How long a parked record may take to show up on the failed-records queue.
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// The bodies of the failed-records queue's messages, left visible for others.
async fn parked_bodies(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        bodies.extend(output.messages().iter().filter_map(|m| m.body().map(str::to_owned)));
    }
    bodies
}

async fn await_parked(sqs: &aws_sdk_sqs::Client, queue_url: &str, needle: &str) {
    let deadline = Instant::now() + PARK_TIMEOUT;
    while !parked_bodies(sqs, queue_url)
        .await
        .iter()
        .any(|body| body.contains(needle))
    {
        assert!(
            Instant::now() < deadline,
            "{needle} was not parked within {PARK_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn redrive() -> std::process::ExitStatus {
    let command = env_var("SHOP_REDRIVE_COMMAND");
    std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .status()
        .unwrap()
}

#[tokio::test]
async fn the_outbox_parks_unreadable_records_keeps_flowing_and_redrives_once() {
    let api = Api::from_env();
    let sdk = emulator_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = env_var("SHOP_FAILED_RECORDS_QUEUE_URL");
    let orders_table = env_var("SHOP_ORDERS_TABLE");

    // Given an order item no code of ours could have written lands in the orders table
    let poison = format!("poison-{}", uuid::Uuid::new_v4().simple());
    dynamodb
        .put_item()
        .table_name(&orders_table)
        .item("id", AttributeValue::S(poison.clone()))
        .item("status", AttributeValue::N("42".into()))
        .send()
        .await
        .unwrap();
    // When orders keep being placed behind it
    let admin = api.admin_token().await;
    let product = api
        .create_product(&admin, "Outbox mug", &unique_category(), 900, 5)
        .await;
    let customer = api.customer().await;
    let placed = api
        .place_order(
            Some(&customer.token),
            &json!({"items": [{"product_id": product["id"], "quantity": 1}]}),
            None,
        )
        .await;
    let order_id = placed.expect(201)["id"].as_str().unwrap().to_owned();
    // Then their events flow (the payment step confirms the order), and the bad record is parked whole
    api.await_order_status(&customer.token, &order_id, &["CONFIRMED"], SETTLE_TIMEOUT)
        .await;
    await_parked(&sqs, &queue_url, &poison).await;

    // Given a parked record that reads fine now (as after a fix): the registration of a customer
    let registered = api.customer().await;
    let welcome = |items: &[serde_json::Value]| {
        items
            .iter()
            .filter(|item| is_sent(item, "user.registered", "email", ""))
            .count()
    };
    api.await_notifications(&registered.token, None, "", "the welcome email", |items| {
        (welcome(items) == 1).then_some(())
    })
    .await;
    let users_table = env_var("SHOP_USERS_TABLE");
    let key = format!("USER#{}", registered.id);
    let item = dynamodb
        .get_item()
        .table_name(&users_table)
        .key("pk", AttributeValue::S(key.clone()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let image = serde_json::to_value(serde_dynamo::Item::from(item)).unwrap();
    let record = json!({
        "eventID": format!("redrive-{}", uuid::Uuid::new_v4().simple()),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": format!("arn:aws:dynamodb:us-east-1:000000000000:table/{users_table}/stream/e2e"),
        "dynamodb": {
            "Keys": {"pk": {"S": key}},
            "NewImage": image,
            "SequenceNumber": "1",
            "SizeBytes": 1,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    });
    let parked = json!({"source": "events-publisher", "reason": "e2e", "record": record});
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(parked.to_string())
        .send()
        .await
        .unwrap();

    // When an operator redrives the failed records
    redrive();

    // Then the readable one is relayed and gone from the queue, the unreadable one is kept,
    let bodies = parked_bodies(&sqs, &queue_url).await;
    assert!(
        !bodies.iter().any(|body| body.contains(&registered.id)),
        "the redriven record left the queue"
    );
    assert!(
        bodies.iter().any(|body| body.contains(&poison)),
        "the still unreadable record was kept"
    );
    // and the republished event (same id) reaches its consumer once: still one welcome email.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let items = api.notifications_since(&registered.token, None, "").await;
    assert_eq!(welcome(&items), 1, "nothing doubled: {items:?}");
}
