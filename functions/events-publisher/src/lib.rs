//! The outbox relay: reads committed changes from the users and orders table streams, maps each state
//! transition to its domain event (see `domain::events`), and publishes it to the events topic with an
//! `event_type` attribute for subscription filters. A publish that fails fails the batch from that
//! record on, so the stream delivers it again: an event is never lost, at worst published twice with
//! the same id, which consumers drop. Those retries are bounded (`OutboxMaxRetryAttempts`); past them
//! the stream service sends the failed range to the failed-records queue.
//!
//! A record that can never be read (an image this code cannot map) is not retried at all: it is
//! parked, whole, on the failed-records queue, and the records behind it flow on. Nothing stalls the
//! outbox; everything parked is alarmed and can be redriven (`make redrive-outbox`) once fixed.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use domain::events::{Envelope, EventType, low_stock_event, order_event, user_event};
use store::StoreError;
use store::orders::order_from_image;
use store::products::product_from_image;
use store::users::user_from_image;
use wiring::config::Config;
pub use worker::publish::{EventSink, PublishError, SnsSink};

/// SNS accepts at most ten messages and 256 KiB per PublishBatch; attributes count too, hence the margin.
const PUBLISH_BATCH: usize = 10;
const PUBLISH_BATCH_BYTES: usize = 200 * 1024;

/// Splits the pending events into PublishBatch-sized runs, in order.
fn publish_batches(pending: &[Envelope]) -> Vec<&[Envelope]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, envelope) in pending.iter().enumerate() {
        let size = serde_json::to_vec(envelope).map_or(0, |json| json.len()) + 256;
        if index > start && (index - start == PUBLISH_BATCH || bytes + size > PUBLISH_BATCH_BYTES) {
            batches.push(&pending[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < pending.len() {
        batches.push(&pending[start..]);
    }
    batches
}

/// The tables whose streams feed the relay, to tell records apart by their source.
#[derive(Debug, Clone)]
pub struct SourceTables {
    pub users: String,
    pub orders: String,
    pub products: String,
}

impl SourceTables {
    pub fn from_config(config: &Config) -> Self {
        Self {
            users: config.tables.users.clone(),
            orders: config.tables.orders.clone(),
            products: config.tables.products.clone(),
        }
    }
}

pub struct Deps {
    pub sink: Arc<dyn EventSink>,
    pub tables: SourceTables,
    pub parking: Arc<dyn RecordParking>,
}

/// The `eventSource` of records fed back by `scripts/redrive_outbox.py`: one still unreadable is
/// reported failed (the redrive keeps its message) instead of being parked again.
pub const REDRIVE_SOURCE: &str = "shop:redrive";

/// Where unreadable stream records go, whole, to be looked at and redriven.
#[async_trait]
pub trait RecordParking: Send + Sync {
    async fn park(&self, record: &EventRecord, reason: &str) -> Result<(), PublishError>;
}

/// A parked record as it sits on the failed-records queue (`scripts/redrive_outbox.py` reads it).
#[derive(serde::Serialize)]
struct ParkedRecord<'a> {
    source: &'static str,
    reason: &'a str,
    record: &'a EventRecord,
}

/// The failed-records queue.
pub struct SqsParking {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// Under SQS's 256 KiB message limit, with room for the envelope.
const MAX_PARKED_BYTES: usize = 240 * 1024;

/// The queue message of a parked record: the whole record with its secrets redacted
/// (`store::secrets`: no event is made of them, so a redrive reads it the same), or (when its images
/// are too large for a message) the record without its images, so that parking can never fail on size
/// and stall the outbox; the images of such a record are read back from the table when redriving.
pub fn parked_body(record: &EventRecord, reason: &str) -> Result<String, PublishError> {
    let mut redacted = record.clone();
    redacted.change.old_image = store::secrets::redacted(&record.change.old_image);
    redacted.change.new_image = store::secrets::redacted(&record.change.new_image);
    let record = &redacted;
    let whole = serde_json::to_string(&ParkedRecord {
        source: "events-publisher",
        reason,
        record,
    })
    .map_err(|error| PublishError(error.to_string()))?;
    if whole.len() <= MAX_PARKED_BYTES {
        return Ok(whole);
    }
    let mut trimmed = record.clone();
    trimmed.change.old_image = Default::default();
    trimmed.change.new_image = Default::default();
    serde_json::to_string(&ParkedRecord {
        source: "events-publisher",
        reason: &format!("{reason} (images left out: too large for a message)"),
        record: &trimmed,
    })
    .map_err(|error| PublishError(error.to_string()))
}

#[async_trait]
impl RecordParking for SqsParking {
    async fn park(&self, record: &EventRecord, reason: &str) -> Result<(), PublishError> {
        let body = parked_body(record, reason)?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| PublishError(wiring::telemetry::error_chain(&error)))?;
        Ok(())
    }
}

/// A record's image, if it has one that is not a delivery probe.
fn image(item: &serde_dynamo::Item) -> Option<serde_dynamo::Item> {
    (!item.is_empty() && !store::probe::is_probe(item)).then(|| item.clone())
}

fn table_of(record: &EventRecord) -> Option<&str> {
    // arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
    record
        .event_source_arn
        .as_deref()?
        .split("table/")
        .nth(1)?
        .split('/')
        .next()
}

/// The event a stream record announces, if any.
pub fn envelope_of(tables: &SourceTables, record: &EventRecord) -> Result<Option<Envelope>, StoreError> {
    let (old, new) = (image(&record.change.old_image), image(&record.change.new_image));
    match table_of(record) {
        Some(table) if table == tables.orders => {
            let old = order_from_image(&record.change.old_image)?;
            let new = order_from_image(&record.change.new_image)?;
            Ok(order_event(old.as_ref(), new.as_ref()))
        }
        Some(table) if table == tables.products => {
            let old = old.map(product_from_image).transpose()?;
            let new = new.map(product_from_image).transpose()?;
            let correlation_id = new.as_ref().and_then(|(_, cid)| cid.as_deref());
            Ok(low_stock_event(
                old.as_ref().map(|(product, _)| product),
                new.as_ref().map(|(product, _)| product),
                &record.event_id,
                correlation_id,
            ))
        }
        Some(table) if table == tables.users => {
            let old = old.map(user_from_image).transpose()?.flatten();
            let new = new.map(user_from_image).transpose()?.flatten();
            let correlation_id = new.as_ref().and_then(|(_, cid)| cid.clone());
            Ok(user_event(
                old.as_ref().map(|(u, _)| u),
                new.as_ref().map(|(u, _)| u),
                correlation_id.as_deref(),
            ))
        }
        _ => Ok(None),
    }
}

/// Rounds of one publish before the batch is given back to the stream: SNS errors are usually brief,
/// and a retry here costs far less than redelivering the whole batch.
const PUBLISH_ROUNDS: u32 = 3;

/// Publishes the events of `event`'s records in stream order. An error fails the invocation, so the
/// stream delivers the batch again (every event source does that for a function error; emulators
/// ignore `batchItemFailures`): an event is never lost, at worst published again with the same id.
pub async fn handle(deps: &Deps, event: Event) -> Result<(), PublishError> {
    let mut pending: Vec<Envelope> = Vec::new();
    for record in &event.records {
        if store::probe::passes(&record.change.old_image, &record.change.new_image) {
            continue;
        }
        match envelope_of(&deps.tables, record) {
            Ok(Some(envelope)) => pending.push(envelope),
            Ok(None) => {}
            Err(error) => {
                // Retrying cannot help: park it and go on, in order (what came before is published first).
                tracing::error!(error = %error, event_id = %record.event_id, "unreadable stream image; parking it");
                publish_all(deps, &pending).await?;
                pending.clear();
                if record.event_source.as_deref() == Some(REDRIVE_SOURCE) {
                    // A redrive of a parked record that is still unreadable: the redrive keeps it.
                    return Err(PublishError(format!(
                        "record {} is still unreadable: {error}",
                        record.event_id
                    )));
                }
                deps.parking.park(record, &error.to_string()).await?;
            }
        }
    }
    let count = publish_all(deps, &pending).await?;
    tracing::info!(records = event.records.len(), published = count, "stream batch relayed");
    Ok(())
}

async fn publish_all(deps: &Deps, pending: &[Envelope]) -> Result<usize, PublishError> {
    for chunk in publish_batches(pending) {
        if let Some(first) = chunk.first() {
            wiring::telemetry::set_correlation_id(&first.correlation_id);
        }
        // Each event's span continues the trace of the change it announces, lasts until the event is
        // published, and is the parent its consumers continue from (the message's `traceparent`).
        let (spans, chunk): (Vec<tracing::Span>, Vec<Envelope>) = chunk
            .iter()
            .map(|envelope| {
                let span = tracing::info_span!(
                    "event",
                    "otel.name" = format!("{} publish {}", wiring::telemetry::service_name(), envelope.event_type.as_str()),
                    "otel.kind" = "producer",
                    correlation_id = %envelope.correlation_id,
                    event_id = %envelope.event_id,
                );
                wiring::telemetry::continue_trace(&span, envelope.trace_parent.as_deref());
                let trace_parent = span.in_scope(wiring::telemetry::trace_parent);
                (span, Envelope { trace_parent, ..envelope.clone() })
            })
            .unzip();
        let chunk = chunk.as_slice();
        let mut round = 1;
        while let Err(error) = deps.sink.publish(chunk).await {
            if round >= PUBLISH_ROUNDS {
                tracing::error!(error = %error, "publish failed; the stream will deliver the batch again");
                return Err(error);
            }
            tracing::warn!(error = %error, round, "publish failed; trying again");
            tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(round * round))).await;
            round += 1;
        }
        for (envelope, span) in chunk.iter().zip(spans) {
            if envelope.event_type == EventType::InventoryLowStock {
                metrics::counter!("LowStockAlerts").increment(1);
            }
            span.in_scope(|| {
                tracing::info!(
                    event_id = %envelope.event_id,
                    event_type = envelope.event_type.as_str(),
                    correlation_id = %envelope.correlation_id,
                    "event published"
                );
            });
        }
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::events::EventType;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        published: Mutex<Vec<Envelope>>,
        attempts: Mutex<u32>,
        fail: bool,
    }

    #[async_trait]
    impl EventSink for Recorder {
        async fn publish(&self, events: &[Envelope]) -> Result<(), PublishError> {
            *self.attempts.lock().unwrap() += 1;
            if self.fail {
                return Err(PublishError("topic unavailable".into()));
            }
            self.published.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
    }

    #[derive(Default)]
    struct ParkingLot(Mutex<Vec<String>>);

    #[async_trait]
    impl RecordParking for ParkingLot {
        async fn park(&self, record: &EventRecord, _reason: &str) -> Result<(), PublishError> {
            self.0.lock().unwrap().push(record.event_id.clone());
            Ok(())
        }
    }

    fn deps(sink: Arc<Recorder>) -> Deps {
        deps_parking(sink, Arc::default())
    }

    fn deps_parking(sink: Arc<Recorder>, parking: Arc<ParkingLot>) -> Deps {
        Deps {
            sink,
            parking,
            tables: SourceTables {
                users: "shop-UsersTable-1".into(),
                orders: "shop-OrdersTable-1".into(),
                products: "shop-ProductsTable-1".into(),
            },
        }
    }

    fn stream_event() -> Event {
        serde_json::from_str(include_str!("../../../events/events-publisher.json")).unwrap()
    }

    #[tokio::test]
    async fn each_transition_in_the_batch_is_published_in_order() {
        let recorder = Arc::new(Recorder::default());
        handle(&deps(recorder.clone()), stream_event()).await.unwrap();
        let types: Vec<EventType> = recorder
            .published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_type)
            .collect();
        // The sample: a registration, an email claim (no event), an order placed, then cancelled,
        // then touched without a status change (no event); a product's stock falling from 6 to 4
        // (threshold 5: an alert), then to 2 (already low: none).
        assert_eq!(
            types,
            [
                EventType::UserRegistered,
                EventType::OrderCreated,
                EventType::OrderCancelled,
                EventType::InventoryLowStock
            ]
        );
        let published = recorder.published.lock().unwrap();
        assert_eq!(published[1].correlation_id, "sample-orders-create");
        assert_eq!(published[0].correlation_id, "sample-users-create");
    }

    #[tokio::test]
    async fn a_publish_that_keeps_failing_fails_the_batch_so_the_stream_delivers_it_again() {
        let recorder = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        assert!(handle(&deps(recorder.clone()), stream_event()).await.is_err());
        assert_eq!(
            *recorder.attempts.lock().unwrap(),
            PUBLISH_ROUNDS,
            "tried again before giving up"
        );
    }

    #[tokio::test]
    async fn batches_respect_the_count_and_size_limits_of_sns() {
        let recorder = Arc::new(Recorder::default());
        handle(&deps(recorder.clone()), stream_event()).await.unwrap();
        let sample = recorder.published.lock().unwrap()[1].clone();
        let small: Vec<Envelope> = (0..12).map(|_| sample.clone()).collect();
        let sizes: Vec<usize> = publish_batches(&small).iter().map(|batch| batch.len()).collect();
        assert_eq!(sizes, [10, 2]);
        let mut big = sample.clone();
        if let domain::events::EventData::Order(data) = &mut big.data {
            data.items[0].product_name = "x".repeat(90 * 1024);
        }
        let large: Vec<Envelope> = (0..3).map(|_| big.clone()).collect();
        let sizes: Vec<usize> = publish_batches(&large).iter().map(|batch| batch.len()).collect();
        assert_eq!(sizes, [2, 1]);
    }

    #[tokio::test]
    async fn a_redelivered_batch_yields_the_same_event_ids() {
        let first = Arc::new(Recorder::default());
        let second = Arc::new(Recorder::default());
        handle(&deps(first.clone()), stream_event()).await.unwrap();
        handle(&deps(second.clone()), stream_event()).await.unwrap();
        let ids = |r: &Recorder| {
            r.published
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.event_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&first), ids(&second));
    }

    #[tokio::test]
    async fn delivery_probes_of_every_source_table_pass_unpublished_and_unparked() {
        let mut raw: serde_json::Value = serde_json::to_value(stream_event()).unwrap();
        let template = raw["Records"][0].clone();
        let probe = serde_json::json!({"id": {"S": "probe#local-stack"}, "pk": {"S": "probe#local-stack"}, "entity": {"S": "probe"}});
        let records: Vec<serde_json::Value> = ["shop-UsersTable-1", "shop-ProductsTable-1", "shop-OrdersTable-1"]
            .iter()
            .map(|table| {
                let mut record = template.clone();
                record["eventSourceARN"] =
                    format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-11-25T00:00:00.000")
                        .into();
                record["dynamodb"]["NewImage"] = probe.clone();
                record["dynamodb"]["Keys"] = serde_json::json!({"id": {"S": "probe#local-stack"}});
                record
            })
            .collect();
        raw["Records"] = records.into();
        let recorder = Arc::new(Recorder::default());
        let parking = Arc::new(ParkingLot::default());

        let relayed = handle(
            &deps_parking(recorder.clone(), parking.clone()),
            serde_json::from_value(raw).unwrap(),
        )
        .await;

        assert!(relayed.is_ok());
        assert!(recorder.published.lock().unwrap().is_empty());
        assert!(parking.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_record_is_parked_and_the_records_behind_it_still_flow() {
        // Given a batch whose third record (an order placed) holds an image this code cannot read
        let mut event = stream_event();
        let mut raw: serde_json::Value = serde_json::to_value(&event).unwrap();
        raw["Records"][2]["dynamodb"]["NewImage"]["status"] = serde_json::json!({"N": "42"});
        raw["Records"][2]["dynamodb"]["NewImage"]["id"] = serde_json::json!({"S": "not-an-order"});
        event = serde_json::from_value(raw).unwrap();
        let poisoned = event.records[2].event_id.clone();
        let recorder = Arc::new(Recorder::default());
        let parking = Arc::new(ParkingLot::default());

        let relayed = handle(&deps_parking(recorder.clone(), parking.clone()), event).await;

        // Then the batch succeeds, the bad record is parked, and every other event is published
        assert!(relayed.is_ok());
        assert_eq!(*parking.0.lock().unwrap(), [poisoned]);
        assert!(
            recorder.published.lock().unwrap().len() >= 3,
            "the events behind it flowed"
        );
    }

    #[tokio::test]
    async fn a_redriven_record_that_is_still_unreadable_is_reported_not_parked_again() {
        let mut raw: serde_json::Value = serde_json::to_value(stream_event()).unwrap();
        raw["Records"][2]["dynamodb"]["NewImage"]["status"] = serde_json::json!({"N": "42"});
        raw["Records"][2]["eventSource"] = REDRIVE_SOURCE.into();
        raw["Records"] = serde_json::json!([raw["Records"][2].clone()]);
        let parking = Arc::new(ParkingLot::default());
        let deps = deps_parking(Arc::new(Recorder::default()), parking.clone());
        assert!(handle(&deps, serde_json::from_value(raw).unwrap()).await.is_err());
        assert!(parking.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_record_too_large_for_a_message_is_parked_without_its_images() {
        let mut record = stream_event().records[2].clone();
        assert!(parked_body(&record, "unreadable").unwrap().contains("\"NewImage\""));
        let big: serde_json::Value = serde_json::json!({"blob": {"S": "x".repeat(300 * 1024)}});
        record.change.new_image = serde_json::from_value(big).unwrap();
        let body = parked_body(&record, "unreadable").unwrap();
        assert!(body.len() <= MAX_PARKED_BYTES, "{}", body.len());
        assert!(body.contains(&record.event_id) && body.contains("images left out"));
    }

    #[tokio::test]
    async fn a_parked_record_holds_no_secret_and_is_redriven_to_the_same_event() {
        let event = stream_event();
        let tables = deps(Arc::default()).tables;
        for record in &event.records {
            // Given a record of the sample (users with password hashes, orders with payment tokens)
            let body = parked_body(record, "unreadable").unwrap();
            // Then its parked copy holds none of them
            for secret in ["$argon2", "tok_"] {
                assert!(!body.contains(secret), "{secret} in {body}");
            }
            // And read back for a redrive, it announces the same event as the record itself
            let parked: serde_json::Value = serde_json::from_str(&body).unwrap();
            let redriven: EventRecord = serde_json::from_value(parked["record"].clone()).unwrap();
            let event_of = |record: &EventRecord| {
                envelope_of(&tables, record).ok().flatten().map(|envelope| {
                    // A low-stock event is dated when it is derived.
                    let mut event = serde_json::to_value(&envelope).unwrap();
                    event["occurred_at"] = serde_json::Value::Null;
                    event
                })
            };
            assert_eq!(event_of(&redriven), event_of(record));
        }
    }
}
