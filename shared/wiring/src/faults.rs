//! Fault injection, a product feature for game days (docs/api.md "Fault injection"): the template parameter
//! `FaultInjection` (environment `FAULT_INJECTION`) lists rules `TARGET=KIND:RATE` separated by `;`.
//!
//! - AWS calls: [`FaultyHttpClient`] sits under every AWS SDK client built from the function's SDK
//!   configuration, so the SDK's own timeouts, retries and error handling meet the fault exactly as
//!   they would meet a real one (a lost response is retried by the SDK with the same request).
//! - Providers (payment, email, SMS): their adapters ask [`FaultPlan::decide`] before each call.
//!
//! An empty parameter injects nothing and costs one branch per call. A malformed one stops the
//! function at cold start with a message that names the rule (the template's `AllowedPattern` already
//! refuses most at deploy time). Every injected fault is logged.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

use crate::config::{ConfigError, Env};

/// What is done to an affected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A retryable service error (HTTP 500); the call has no effect.
    Error,
    /// The call hangs until the caller's timeout.
    Timeout,
    /// The call succeeds, this much later.
    Latency(Duration),
    /// The call takes effect, but the caller sees a timeout.
    LostResponse,
}

/// The targets a rule may name.
/// `execute-api` is API Gateway's management API (the WebSocket pusher's `PostToConnection`).
pub const AWS_TARGETS: [&str; 5] = ["dynamodb", "sns", "sqs", "secretsmanager", "execute-api"];
pub const PROVIDER_TARGETS: [&str; 3] = ["payment", "email", "sms"];

#[derive(Debug, Clone, PartialEq)]
struct FaultRule {
    target: String,
    operation: Option<String>,
    kind: FaultKind,
    rate: f64,
}

impl FaultRule {
    fn matches(&self, target: &str, operation: &str) -> bool {
        self.target == target && self.operation.as_deref().is_none_or(|wanted| wanted == operation)
    }
}

/// The parsed `FaultInjection` rules of a function.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    rules: Arc<Vec<FaultRule>>,
}

impl FaultPlan {
    /// `FAULT_INJECTION`, unset or empty meaning no faults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let spec = env.optional("FAULT_INJECTION").unwrap_or_default();
        Self::parse(&spec).map_err(|reason| ConfigError::Invalid {
            name: "FAULT_INJECTION",
            reason,
        })
    }

    /// Rules `TARGET[.Operation]=KIND:RATE` separated by `;`. Rates of one target and operation add up
    /// to at most 1: each rule takes its share of the calls.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for rule in spec.split(';').map(str::trim).filter(|rule| !rule.is_empty()) {
            rules.push(parse_rule(rule).map_err(|why| format!("rule {rule:?}: {why}"))?);
        }
        for rule in &rules {
            let share: f64 = rules
                .iter()
                .filter(|other| other.target == rule.target && other.operation == rule.operation)
                .map(|other| other.rate)
                .sum();
            if share > 1.0 + f64::EPSILON {
                return Err(format!("the rates of {} add up to more than 1", rule.target));
            }
        }
        Ok(Self { rules: Arc::new(rules) })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The fault to inject into this call of `target` (`operation` as AWS names it, or the provider
    /// call), if any: one draw, each matching rule owning its rate's share of it. Logged when one is.
    pub fn decide(&self, target: &str, operation: &str) -> Option<FaultKind> {
        if self.rules.is_empty() {
            return None;
        }
        let draw = fastrand::f64();
        let mut upto = 0.0;
        for rule in self.rules.iter().filter(|rule| rule.matches(target, operation)) {
            upto += rule.rate;
            if draw < upto {
                tracing::warn!(target, operation, fault = ?rule.kind, "fault injected");
                return Some(rule.kind);
            }
        }
        None
    }

    /// An HTTP client for the AWS SDK that injects this plan's AWS faults into `inner`'s calls.
    pub fn http_client(&self, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(FaultyHttpClient {
            plan: self.clone(),
            inner,
        })
    }
}

fn parse_rule(rule: &str) -> Result<FaultRule, String> {
    let (selector, effect) = rule.split_once('=').ok_or("expected TARGET=KIND:RATE")?;
    let (target, operation) = match selector.trim().split_once('.') {
        Some((target, operation)) if !operation.is_empty() => (target, Some(operation.to_owned())),
        Some(_) => return Err("an empty operation after '.'".into()),
        None => (selector.trim(), None),
    };
    if !AWS_TARGETS.contains(&target) && !PROVIDER_TARGETS.contains(&target) {
        return Err(format!(
            "unknown target {target:?} (known: {}, {})",
            AWS_TARGETS.join(", "),
            PROVIDER_TARGETS.join(", ")
        ));
    }
    let (kind, rate) = effect.split_once(':').ok_or("expected KIND:RATE after '='")?;
    let kind = match kind.trim() {
        "error" => FaultKind::Error,
        "timeout" => FaultKind::Timeout,
        "lost-response" => FaultKind::LostResponse,
        other => match other.strip_prefix("latency").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => FaultKind::Latency(Duration::from_millis(ms)),
            _ => {
                return Err(format!(
                    "unknown kind {other:?} (known: error, timeout, latency<ms>, lost-response)"
                ));
            }
        },
    };
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("rate {rate:?} is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("rate {rate} is not between 0 and 1"));
    }
    Ok(FaultRule {
        target: target.to_owned(),
        operation,
        kind,
        rate,
    })
}

/// Long enough to outlast any caller's timeout: the hang of an injected `timeout`.
const HANG: Duration = Duration::from_secs(3600);

/// The AWS SDK's HTTP client with the plan's faults injected below it.
#[derive(Debug)]
struct FaultyHttpClient {
    plan: FaultPlan,
    inner: SharedHttpClient,
}

impl HttpClient for FaultyHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            plan: self.plan.clone(),
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    plan: FaultPlan,
    inner: SharedHttpConnector,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let fault = aws_call(&request).and_then(|(service, operation)| self.plan.decide(&service, &operation));
        let Some(fault) = fault else {
            return self.inner.call(request);
        };
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            match fault {
                FaultKind::Error => Ok(service_error(&request)),
                FaultKind::Timeout => {
                    tokio::time::sleep(HANG).await;
                    Err(ConnectorError::timeout("injected fault: no answer".into()))
                }
                FaultKind::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    inner.call(request).await
                }
                FaultKind::LostResponse => {
                    // Sent and applied; only the answer is lost on the way back.
                    let _ = inner.call(request).await?;
                    Err(ConnectorError::timeout("injected fault: response lost".into()))
                }
            }
        })
    }
}

/// (service, operation) of a signed AWS request: the service from the SigV4 credential scope, the
/// operation from `X-Amz-Target` (JSON protocols) or the `Action` form field (query protocol).
fn aws_call(request: &HttpRequest) -> Option<(String, String)> {
    let authorization = request.headers().get("authorization")?;
    // Credential=<key>/<date>/<region>/<service>/aws4_request
    let scope = authorization.split("Credential=").nth(1)?.split(',').next()?;
    let service = scope.split('/').nth(3)?.to_owned();
    let operation = match request.headers().get("x-amz-target") {
        Some(target) => target.rsplit('.').next()?.to_owned(),
        // The management API is REST: `/@connections/{id}`, the method says which operation.
        None if service == "execute-api" => match request.method() {
            "POST" => "PostToConnection",
            "GET" => "GetConnection",
            "DELETE" => "DeleteConnection",
            _ => return None,
        }
        .to_owned(),
        None => {
            let body = std::str::from_utf8(request.body().bytes()?).ok()?;
            body.split('&')
                .find_map(|pair| pair.strip_prefix("Action="))?
                .to_owned()
        }
    };
    Some((service, operation))
}

/// A 500 in the request's protocol, which the SDK treats as a retryable service error.
fn service_error(request: &HttpRequest) -> HttpResponse {
    let json = request.headers().get("x-amz-target").is_some();
    let body = if json {
        r#"{"__type":"InternalServerError","message":"injected fault"}"#
    } else {
        "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>\
         <Message>injected fault</Message></Error><RequestId>injected</RequestId></ErrorResponse>"
    };
    let status = StatusCode::from(http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::new(status, SdkBody::from(body));
    let content_type = if json { "application/x-amz-json-1.0" } else { "text/xml" };
    response.headers_mut().insert("content-type", content_type);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_targets_operations_kinds_and_rates() {
        let plan =
            FaultPlan::parse("payment=lost-response:0.3; email=error:0.5;dynamodb.TransactWriteItems=latency300:1")
                .unwrap();
        assert_eq!(plan.rules.len(), 3);
        assert_eq!(plan.rules[2].operation.as_deref(), Some("TransactWriteItems"));
        assert_eq!(plan.rules[2].kind, FaultKind::Latency(Duration::from_millis(300)));
        assert!(FaultPlan::parse("").unwrap().is_empty());
        assert!(FaultPlan::parse(" ; ").unwrap().is_empty());
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for bad in [
            "payment",
            "payments=error:0.5",
            "payment=explode:0.5",
            "payment=error:1.5",
            "payment=error:lots",
            "payment=latency:0.5",
            "dynamodb.=error:0.1",
            "payment=error:0.6;payment=timeout:0.6",
        ] {
            let error = FaultPlan::parse(bad).unwrap_err();
            assert!(error.contains("rule") || error.contains("add up"), "{bad}: {error}");
        }
        let env = Env::from_lookup(|name| (name == "FAULT_INJECTION").then(|| "sns=boom:1".into()));
        assert!(
            FaultPlan::from_env(&env)
                .unwrap_err()
                .to_string()
                .contains("FAULT_INJECTION")
        );
    }

    #[test]
    fn a_rule_takes_its_share_of_the_calls_it_matches() {
        let plan = FaultPlan::parse("dynamodb.TransactWriteItems=error:1;sns=timeout:0").unwrap();
        assert_eq!(plan.decide("dynamodb", "TransactWriteItems"), Some(FaultKind::Error));
        assert_eq!(plan.decide("dynamodb", "GetItem"), None);
        assert_eq!(plan.decide("sns", "Publish"), None);
        let half = FaultPlan::parse("payment=error:0.5").unwrap();
        let hits = (0..2000).filter(|_| half.decide("payment", "charge").is_some()).count();
        assert!((800..1200).contains(&hits), "{hits} of 2000");
    }

    fn signed(method: &str, service: &str, target: Option<&str>, body: &str) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from(body.to_owned()));
        request.set_method(method).unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/{service}/aws4_request, SignedHeaders=host"),
        );
        if let Some(target) = target {
            request.headers_mut().insert("x-amz-target", target.to_owned());
        }
        request
    }

    #[test]
    fn each_aws_call_is_named_by_its_service_and_operation() {
        // JSON protocols name the operation in a header, query protocols in the body, and the
        // WebSocket management API (REST) by the method on /@connections/{id}
        let cases = [
            (
                signed("POST", "dynamodb", Some("DynamoDB_20120810.GetItem"), "{}"),
                ("dynamodb", "GetItem"),
            ),
            (
                signed("POST", "sns", None, "Action=Publish&Version=2010-03-31"),
                ("sns", "Publish"),
            ),
            (
                signed("POST", "execute-api", None, "{\"type\":\"order.updated\"}"),
                ("execute-api", "PostToConnection"),
            ),
            (
                signed("DELETE", "execute-api", None, ""),
                ("execute-api", "DeleteConnection"),
            ),
        ];
        for (request, (service, operation)) in cases {
            assert_eq!(aws_call(&request), Some((service.to_owned(), operation.to_owned())));
        }
        assert!(FaultPlan::parse("execute-api.PostToConnection=error:0.5").is_ok());
    }
}
