//! `GET /health`: 200 when every dependency answers, 503 `degraded` when one does not.
//! Never rate limited, never authenticated; it reveals no names, only which service is down.

use api::http::{json_response, respond};
use async_trait::async_trait;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

/// Probes the dependencies the API cannot serve without.
#[async_trait]
pub trait DependencyCheck: Send + Sync {
    /// `true` when DynamoDB answers for every table the API uses.
    async fn dynamodb_ok(&self) -> bool;
}

pub struct DynamoTablesCheck {
    client: aws_sdk_dynamodb::Client,
    tables: Vec<String>,
}

impl DynamoTablesCheck {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: Vec<String>) -> Self {
        Self { client, tables }
    }
}

#[async_trait]
impl DependencyCheck for DynamoTablesCheck {
    async fn dynamodb_ok(&self) -> bool {
        // Probe every table at once: the check costs one round trip, not one per table.
        let mut probes = tokio::task::JoinSet::new();
        for table in &self.tables {
            let request = self.client.describe_table().table_name(table).send();
            let table = table.clone();
            probes.spawn(async move {
                request
                    .await
                    .inspect_err(|error| tracing::warn!(table, error = %error, "health probe failed"))
                    .is_ok()
            });
        }
        let mut all_ok = true;
        while let Some(result) = probes.join_next().await {
            all_ok &= result.unwrap_or(false);
        }
        all_ok
    }
}

#[derive(Serialize)]
struct HealthReport {
    status: &'static str,
    services: Services,
    timestamp: String,
}

#[derive(Serialize)]
struct Services {
    dynamodb: &'static str,
}

pub async fn handle(check: &dyn DependencyCheck, request: Request) -> Response<Body> {
    respond(request, |_request| async move {
        let dynamodb_ok = check.dynamodb_ok().await;
        let (status, code) = if dynamodb_ok {
            ("healthy", StatusCode::OK)
        } else {
            ("degraded", StatusCode::SERVICE_UNAVAILABLE)
        };
        let report = HealthReport {
            status,
            services: Services {
                dynamodb: if dynamodb_ok { "ok" } else { "unavailable" },
            },
            timestamp: domain::now_rfc3339(),
        };
        json_response(code, &report)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);

    #[async_trait]
    impl DependencyCheck for Fixed {
        async fn dynamodb_ok(&self) -> bool {
            self.0
        }
    }

    fn event() -> Request {
        api::http::request_from_event(include_str!("../../../events/health.json")).unwrap()
    }

    #[tokio::test]
    async fn healthy_when_dynamodb_answers() {
        let response = handle(&Fixed(true), event()).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["services"]["dynamodb"], "ok");
        assert!(response.headers().contains_key("x-correlation-id"));
    }

    #[tokio::test]
    async fn degraded_with_503_when_dynamodb_does_not_answer() {
        let response = handle(&Fixed(false), event()).await;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(body["status"], "degraded");
    }
}
