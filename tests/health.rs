//! End-to-end: `GET /health` and the correlation id every response carries.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{Api, assert_problem, is_sane_correlation_id, unknown_id};

#[tokio::test]
async fn health_reports_healthy_services_and_a_timestamp() {
    // Given a deployed stack
    let api = Api::from_env();

    // When anyone asks for its health, without a token
    let reply = api.get("/health", None).await;

    // Then it is healthy, names its services and says when it checked
    let body = reply.expect(200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{}",
        reply.describe()
    );
    assert_eq!(body["status"], "healthy", "{}", reply.text);
    let services = body["services"].as_object().expect("services is an object");
    assert!(
        !services.is_empty(),
        "services names at least one dependency: {}",
        reply.text
    );
    let timestamp = body["timestamp"].as_str().expect("timestamp is a string");
    assert!(
        looks_like_rfc3339_utc(timestamp),
        "timestamp is RFC 3339 UTC: {timestamp}"
    );
    // And it carries a generated correlation id
    let correlation_id = reply.header("x-correlation-id").expect("x-correlation-id header");
    assert!(is_sane_correlation_id(correlation_id), "{correlation_id}");
}

#[tokio::test]
async fn a_sane_client_correlation_id_is_echoed_as_is() {
    let api = Api::from_env();
    let mine = format!("e2e-health.{}_x", uuid::Uuid::new_v4());

    // When a client sends its own, well-formed correlation id
    let reply = api.get_with("/health", None, &[("x-correlation-id", &mine)]).await;

    // Then the response carries that very id
    reply.expect(200);
    assert_eq!(
        reply.header("x-correlation-id"),
        Some(mine.as_str()),
        "{}",
        reply.describe()
    );
}

#[tokio::test]
async fn an_insane_client_correlation_id_is_replaced() {
    let api = Api::from_env();
    let too_long = "a".repeat(129);

    for insane in ["bad id!", "semi;colon", too_long.as_str()] {
        // When a client sends a correlation id with forbidden characters or too long
        let reply = api.get_with("/health", None, &[("x-correlation-id", insane)]).await;

        // Then the API answers with a fresh, sane id of its own instead
        reply.expect(200);
        let echoed = reply.header("x-correlation-id").expect("x-correlation-id header");
        assert_ne!(echoed, insane, "an insane correlation id must not be echoed");
        assert!(
            is_sane_correlation_id(echoed),
            "replacement {echoed:?} for {insane:?} is not sane"
        );
    }
}

#[tokio::test]
async fn problem_responses_carry_the_clients_correlation_id_too() {
    let api = Api::from_env();
    let mine = format!("e2e-{}", uuid::Uuid::new_v4());

    // When a request fails (an unknown product)
    let path = format!("/api/products/{}", unknown_id());
    let reply = api.get_with(&path, None, &[("x-correlation-id", &mine)]).await;

    // Then both the header and the problem body carry the client's correlation id
    let body = assert_problem(&reply, 404);
    assert_eq!(body["correlation_id"], mine.as_str());
    assert_eq!(reply.header("x-correlation-id"), Some(mine.as_str()));
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`.
fn looks_like_rfc3339_utc(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|part| part.iter().all(u8::is_ascii_digit));
    let utc = text.ends_with('Z') || text.ends_with("+00:00");
    bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && (bytes[10] == b'T' || bytes[10] == b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && utc
}
