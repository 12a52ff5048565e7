//! The bench's yardstick (`make bench`, scripts/bench.py): about the least a lambda_http function that
//! reads DynamoDB can be. Built in the same run, with the functions' dependency pins and release
//! profile, so their cold start, latency and memory are read against it. It is not deployed.
//!
//! `GET .../{product_id}` (or `?id=`): one `GetItem` on `PRODUCTS_TABLE`, the item as JSON.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let table = std::env::var("PRODUCTS_TABLE")?;
    // The functions' SDK timeouts (wiring::state), so both clients are configured alike.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    let client = Client::new(&sdk);
    let (client, table) = (&client, table.as_str());
    lambda_http::run(service_fn(move |request: Request| get_item(client, table, request))).await
}

async fn get_item(client: &Client, table: &str, request: Request) -> Result<Response<Body>, Error> {
    let id = request
        .path_parameters_ref()
        .and_then(|parameters| parameters.first("product_id"))
        .or_else(|| {
            request
                .query_string_parameters_ref()
                .and_then(|parameters| parameters.first("id"))
        })
        .map(str::to_owned);
    let Some(id) = id else {
        return respond(400, json!({"error": "no product id"}));
    };
    let output = client
        .get_item()
        .table_name(table)
        .key("id", AttributeValue::S(id.clone()))
        .send()
        .await?;
    match output.item {
        Some(item) => respond(200, serde_dynamo::from_item(item)?),
        None => respond(404, json!({"error": "not found", "id": id})),
    }
}

fn respond(status: u16, body: Value) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?)
}
