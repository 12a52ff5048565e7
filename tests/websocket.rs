//! End-to-end: real-time order updates over the WebSocket API (docs/api.md "Real-time updates"), through
//! the deployed stack like a browser: connect to `SHOP_WS_URL` with `?token=`, place orders through
//! the HTTP API, read what the socket pushes. Each test has its own customers and products.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use domain::UserId;
use e2e::{Api, Customer, emulator_sdk_config, env_var, tamper_signature, unique_category};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use store::connections::{Connection, ConnectionRegistry, DynamoConnectionRegistry};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a pushed update may take to arrive (docs/api.md "Real-time updates": a few seconds).
const PUSH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to keep listening for something that must not arrive.
const QUIET: Duration = Duration::from_secs(4);

fn ws_url(token: Option<&str>) -> String {
    let base = env_var("SHOP_WS_URL");
    match token {
        Some(token) => format!("{base}?token={token}"),
        None => base,
    }
}

async fn connect(customer: &Customer) -> Socket {
    let (socket, _) = connect_async(ws_url(Some(&customer.token)))
        .await
        .unwrap_or_else(|error| panic!("the socket refused a valid token: {error}"));
    socket
}

/// The next `order.updated` of `order_id` (others, e.g. of earlier orders, are skipped).
async fn next_update(socket: &mut Socket, order_id: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next()).await.ok()??;
        match frame.expect("a readable frame") {
            Message::Text(text) => {
                let update: Value = serde_json::from_str(text.as_str()).expect("a JSON update");
                assert_eq!(update["type"], "order.updated", "{update}");
                for field in ["order_id", "status", "payment_status", "updated_at"] {
                    assert!(update[field].is_string(), "{field} missing in {update}");
                }
                if update["order_id"] == order_id {
                    return Some(update);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Reads `order_id`'s updates until one has `status`; returns the statuses seen, in order.
async fn statuses_until(socket: &mut Socket, order_id: &str, status: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while let Some(update) = next_update(socket, order_id, PUSH_TIMEOUT).await {
        let pair = (
            update["status"].as_str().unwrap().to_owned(),
            update["payment_status"].as_str().unwrap().to_owned(),
        );
        let done = pair.0 == status;
        seen.push(pair);
        if done {
            return seen;
        }
    }
    panic!("no {status} update of {order_id} within {PUSH_TIMEOUT:?}; saw {seen:?}");
}

/// A product of a category of its own; returns its id.
async fn product(api: &Api, stock: i64) -> String {
    let admin = api.admin_token().await;
    let product = api
        .create_product(&admin, "Socket mug", &unique_category(), 1250, stock)
        .await;
    product["id"].as_str().unwrap().to_owned()
}

async fn place(api: &Api, customer: &Customer, product_id: &str, payment_token: &str) -> String {
    let body = json!({"items": [{"product_id": product_id, "quantity": 1}], "payment_token": payment_token});
    let order = api.post_json("/api/orders", Some(&customer.token), &body).await;
    order.expect(201)["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_customer_sees_their_order_go_from_pending_to_confirmed() {
    // Given a customer connected with their token
    let api = Api::from_env();
    let customer = api.customer().await;
    let mut socket = connect(&customer).await;
    let product_id = product(&api, 5).await;
    // When they place an order that the provider approves
    let order_id = place(&api, &customer, &product_id, "tok_visa").await;
    // Then the socket pushes PENDING, then CONFIRMED and paid
    let seen = statuses_until(&mut socket, &order_id, "CONFIRMED").await;
    assert_eq!(
        seen.first(),
        Some(&("PENDING".to_owned(), "pending".to_owned())),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&("CONFIRMED".to_owned(), "paid".to_owned())),
        "{seen:?}"
    );
    // And the last push says what the API says
    let order = api.get(&format!("/api/orders/{order_id}"), Some(&customer.token)).await;
    assert_eq!(order.expect(200)["status"], "CONFIRMED");
}

#[tokio::test]
async fn a_declined_payment_is_pushed_as_cancelled() {
    // Given a connected customer
    let api = Api::from_env();
    let customer = api.customer().await;
    let mut socket = connect(&customer).await;
    let product_id = product(&api, 5).await;
    // When the provider declines their order
    let order_id = place(&api, &customer, &product_id, "tok_decline").await;
    // Then the socket pushes CANCELLED, declined
    let seen = statuses_until(&mut socket, &order_id, "CANCELLED").await;
    assert_eq!(
        seen.last(),
        Some(&("CANCELLED".to_owned(), "declined".to_owned())),
        "{seen:?}"
    );
}

#[tokio::test]
async fn every_connection_of_the_owner_is_told_and_no_one_else_is() {
    // Given the owner on two connections, and another customer connected too
    let api = Api::from_env();
    let (owner, stranger) = (api.customer().await, api.customer().await);
    let mut first = connect(&owner).await;
    let mut second = connect(&owner).await;
    let mut strangers = connect(&stranger).await;
    let product_id = product(&api, 5).await;
    // When the owner's order is placed and confirmed
    let order_id = place(&api, &owner, &product_id, "tok_visa").await;
    // Then both of the owner's connections are told
    statuses_until(&mut first, &order_id, "CONFIRMED").await;
    statuses_until(&mut second, &order_id, "CONFIRMED").await;
    // And the other customer hears nothing of it
    assert_eq!(next_update(&mut strangers, &order_id, QUIET).await, None);
}

#[tokio::test]
async fn a_connection_without_a_valid_token_is_refused() {
    let api = Api::from_env();
    let customer = api.customer().await;
    let tampered = tamper_signature(&customer.token);
    for url in [ws_url(None), ws_url(Some("not-a-token")), ws_url(Some(&tampered))] {
        // Given a handshake without a token, with garbage or with a tampered signature
        // When it is attempted, then it is refused before any update could flow
        match connect_async(&url).await {
            Err(_) => {}
            // The emulator answers the upgrade, then closes at once (policy violation).
            Ok((mut socket, _)) => match tokio::time::timeout(QUIET, socket.next()).await {
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) => {}
                other => panic!("{url}: the handshake was not refused: {other:?}"),
            },
        }
    }
}

#[tokio::test]
async fn a_client_frame_is_accepted_as_a_keep_alive_and_the_socket_stays_open() {
    // Given a connected customer who sends a frame of their own
    let api = Api::from_env();
    let customer = api.customer().await;
    let mut socket = connect(&customer).await;
    socket.send(Message::Text(r#"{"action":"ping"}"#.into())).await.unwrap();
    // When their order is then placed, then its updates still arrive on that socket
    let product_id = product(&api, 5).await;
    let order_id = place(&api, &customer, &product_id, "tok_visa").await;
    statuses_until(&mut socket, &order_id, "CONFIRMED").await;
}

/// The connection ids recorded for `user_id` (what the pusher would post to).
async fn recorded_connections(registry: &DynamoConnectionRegistry, user_id: &str) -> Vec<String> {
    registry.of_user(user_id, e2e::unix_now()).await.unwrap()
}

#[tokio::test]
async fn closed_and_gone_connections_are_forgotten() {
    let api = Api::from_env();
    let registry = DynamoConnectionRegistry::new(
        aws_sdk_dynamodb::Client::new(&emulator_sdk_config().await),
        &env_var("SHOP_CONNECTIONS_TABLE"),
    );
    // Given a customer who connected, so one connection is recorded under them
    let customer = api.customer().await;
    let socket = connect(&customer).await;
    assert_eq!(recorded_connections(&registry, &customer.id).await.len(), 1);
    // When they close it, then it is forgotten ($disconnect)
    drop(socket);
    let deadline = tokio::time::Instant::now() + PUSH_TIMEOUT;
    while !recorded_connections(&registry, &customer.id).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection is still recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Given a record of a connection that ended without a $disconnect (the management API calls it gone)
    let user = UserId::parse(&customer.id).unwrap();
    let gone = Connection::opened("gone-connection-id", &user, domain::now_rfc3339(), e2e::unix_now());
    registry.register(&gone).await.unwrap();
    // When an update of theirs is pushed
    let product_id = product(&api, 5).await;
    let order_id = place(&api, &customer, &product_id, "tok_visa").await;
    api.await_order_status(&customer.token, &order_id, &["CONFIRMED"], e2e::SETTLE_TIMEOUT)
        .await;
    // Then the gone connection is forgotten
    let deadline = tokio::time::Instant::now() + PUSH_TIMEOUT;
    while !recorded_connections(&registry, &customer.id).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a gone connection is still recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a handshake was refused: an error, or (the emulator answers the upgrade first) a socket
/// closed at once.
async fn refused(attempt: Result<(Socket, impl Sized), impl std::fmt::Debug>) -> Option<Socket> {
    match attempt {
        Err(_) => None,
        Ok((mut socket, _)) => match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) => None,
            _ => Some(socket),
        },
    }
}

#[tokio::test]
async fn a_connection_flood_is_capped_per_user() {
    let api = Api::from_env();
    let registry = DynamoConnectionRegistry::new(
        aws_sdk_dynamodb::Client::new(&emulator_sdk_config().await),
        &env_var("SHOP_CONNECTIONS_TABLE"),
    );
    // Given a customer who opens connections one after the other (the stack allows 5 per user)
    let customer = api.customer().await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(connect(&customer).await);
    }
    // When they open a sixth, then it is refused and not recorded
    let sixth = refused(connect_async(ws_url(Some(&customer.token))).await).await;
    assert!(sixth.is_none(), "a sixth connection was let in");
    assert_eq!(recorded_connections(&registry, &customer.id).await.len(), 5);

    // Given another customer who floods 20 handshakes at once
    let flooder = api.customer().await;
    let url = ws_url(Some(&flooder.token));
    let attempts = futures_util::future::join_all((0..20).map(|_| connect_async(url.clone()))).await;
    let mut kept = Vec::new();
    for attempt in attempts {
        kept.extend(refused(attempt).await);
    }
    // Then at most 5 are open and recorded
    let recorded = recorded_connections(&registry, &flooder.id).await;
    assert!(kept.len() <= 5, "{} of 20 handshakes were let in", kept.len());
    assert!(recorded.len() <= 5, "{} connections recorded", recorded.len());
}
