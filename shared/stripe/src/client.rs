//! The HTTP client: hyper 1 through hyper-util's pooled client and hyper-rustls (rustls with aws-lc-rs,
//! the platform's root certificates): the very stack the AWS SDK already links, so no second TLS
//! stack comes into a function. Each request has a connect timeout and an overall timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use crate::error::StripeError;
use crate::keys::SecretKey;
use crate::request::{ApiRequest, BaseUrl, NewPaymentIntent, NewRefund};
use crate::resources::{List, PaymentIntent, Refund};

/// How long opening a TCP connection to Stripe may take: Stripe's edge answers in milliseconds, so
/// a second means the network is in trouble.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request may take, from sending it to its whole answer read (Stripe's own timeouts
/// for a card payment are a few seconds). Callers with a budget of their own (the payments worker's
/// guard) may cut it short: the request's outcome is then unknown either way.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read: Stripe's objects are a few kilobytes.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Pooled connections idle longer than this are not reused: a Lambda instance may sleep for minutes
/// between invocations, and Stripe will have closed them meanwhile.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

type Https = HttpsConnector<HttpConnector>;

/// A Stripe API client for one account (its secret key) at one base URL. Cheap to clone (the pool
/// is shared).
#[derive(Clone)]
pub struct StripeClient {
    base: BaseUrl,
    key: SecretKey,
    http: Client<Https, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The connector: TLS with rustls (aws-lc-rs) for `https`, plain TCP for `http` (a local emulator).
fn connector(base: &BaseUrl) -> Result<Https, StripeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = if base.is_https() {
        builder
            .with_provider_and_native_roots(provider)
            .map_err(StripeError::Tls)?
    } else {
        // Plain http: no TLS handshake is ever made, so no roots are needed (nor looked for).
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| StripeError::Config(format!("TLS: {error}")))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder.with_tls_config(config)
    };
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.set_nodelay(true);
    Ok(tls.https_or_http().enable_http1().wrap_connector(tcp))
}

impl StripeClient {
    /// A client of the API at `base_url` (`https://api.stripe.com`, or a local emulator's
    /// `http://127.0.0.1:PORT`) with `key`.
    pub fn new(base_url: &str, key: SecretKey) -> Result<Self, StripeError> {
        let base = BaseUrl::parse(base_url)?;
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector(&base)?);
        Ok(Self {
            base,
            key,
            http,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client with another overall timeout per request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Sends `request` and reads its answer: the object `T` of a success, else the typed error.
    pub async fn execute<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<T, StripeError> {
        let http_request = request
            .to_http(&self.base, &self.key)?
            .map(|body| Full::new(Bytes::from(body)));
        let started = Instant::now();
        let exchange = async {
            let response = self
                .http
                .request(http_request)
                .await
                .map_err(|error| StripeError::Transport(Box::new(error)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(StripeError::Transport)?
                .to_bytes();
            Ok::<_, StripeError>((status, body))
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(StripeError::Timeout(self.timeout)));
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(method = %request.method, path = %request.path, elapsed_ms, "stripe request failed");
                return Err(error);
            }
        };
        tracing::debug!(
            method = %request.method,
            path = %request.path,
            status = status.as_u16(),
            elapsed_ms,
            "stripe request"
        );
        if status.is_success() {
            serde_json::from_slice(&body).map_err(StripeError::Decode)
        } else {
            Err(StripeError::from_answer(status.as_u16(), &body))
        }
    }

    /// Creates an order's PaymentIntent, unconfirmed.
    pub async fn create_payment_intent(&self, intent: &NewPaymentIntent<'_>) -> Result<PaymentIntent, StripeError> {
        self.execute(&ApiRequest::create_payment_intent(intent)).await
    }

    /// The PaymentIntent `id`, with its latest charge inlined when `expand_latest_charge`.
    pub async fn retrieve_payment_intent(
        &self,
        id: &str,
        expand_latest_charge: bool,
    ) -> Result<PaymentIntent, StripeError> {
        self.execute(&ApiRequest::retrieve_payment_intent(id, expand_latest_charge)?)
            .await
    }

    /// Confirms the PaymentIntent `id` of `order_id` with the payment method it was created with.
    pub async fn confirm_payment_intent(&self, id: &str, order_id: &str) -> Result<PaymentIntent, StripeError> {
        self.execute(&ApiRequest::confirm_payment_intent(id, order_id)?).await
    }

    /// Cancels the PaymentIntent `id` of `order_id`.
    pub async fn cancel_payment_intent(&self, id: &str, order_id: &str) -> Result<PaymentIntent, StripeError> {
        self.execute(&ApiRequest::cancel_payment_intent(id, order_id)?).await
    }

    /// Refunds part or all of a PaymentIntent's charge.
    pub async fn create_refund(&self, refund: &NewRefund<'_>) -> Result<Refund, StripeError> {
        self.execute(&ApiRequest::create_refund(refund)?).await
    }

    /// The refunds of a PaymentIntent (the first hundred).
    pub async fn list_refunds(&self, payment_intent: &str) -> Result<List<Refund>, StripeError> {
        self.execute(&ApiRequest::list_refunds(payment_intent)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn key() -> SecretKey {
        SecretKey::parse("sk_test_local_abc123").unwrap()
    }

    /// A one-connection HTTP server on the loopback: answers the first request with `status` and
    /// `body` (after `delay`), and hands back the request's head and body as received.
    async fn serve_once(status: u16, body: &'static str, delay: Duration) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buffer = [0_u8; 4096];
            loop {
                let read = socket.read(&mut buffer).await.unwrap();
                received.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&received).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|line| {
                            line.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .map(|value| value.trim().parse::<usize>().unwrap())
                        .unwrap_or(0);
                    if received.len() >= end + 4 + length || read == 0 {
                        break;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
            String::from_utf8_lossy(&received).to_string()
        });
        (url, server)
    }

    #[tokio::test]
    async fn a_confirm_goes_out_with_its_headers_and_its_answer_is_read() {
        let (url, server) = serve_once(
            200,
            r#"{"id": "pi_1", "amount": 100, "status": "requires_action", "client_secret": "pi_1_secret_x"}"#,
            Duration::ZERO,
        )
        .await;
        let client = StripeClient::new(&url, key()).unwrap();
        let intent = client.confirm_payment_intent("pi_1", "order-a").await.unwrap();
        assert_eq!(intent.status, crate::resources::IntentStatus::RequiresAction);
        assert_eq!(intent.client_secret.unwrap().expose(), "pi_1_secret_x");
        let received = server.await.unwrap().to_ascii_lowercase();
        assert!(
            received.starts_with("post /v1/payment_intents/pi_1/confirm http/1.1"),
            "{received}"
        );
        assert!(
            received.contains("idempotency-key: order-order-a-confirm"),
            "{received}"
        );
        assert!(received.contains("stripe-version: 2024-06-20"), "{received}");
        assert!(
            received.contains("authorization: bearer sk_test_local_abc123"),
            "{received}"
        );
    }

    #[tokio::test]
    async fn a_decline_answer_is_a_typed_decline() {
        let (url, server) = serve_once(
            402,
            r#"{"error": {"code": "card_declined", "type": "invalid_request_error", "charge": "ch_1"}}"#,
            Duration::ZERO,
        )
        .await;
        let client = StripeClient::new(&url, key()).unwrap();
        let error = client.confirm_payment_intent("pi_1", "o").await.unwrap_err();
        assert!(matches!(error, StripeError::Declined { status: 402, .. }), "{error:?}");
        assert!(error.rejects_payment_method());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let (url, _server) = serve_once(200, "{}", Duration::from_secs(5)).await;
        let client = StripeClient::new(&url, key())
            .unwrap()
            .with_request_timeout(Duration::from_millis(200));
        let error = client.retrieve_payment_intent("pi_1", true).await.unwrap_err();
        assert!(matches!(error, StripeError::Timeout(_)), "{error:?}");
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn nobody_listening_is_a_transport_error() {
        // Bound, then closed: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = StripeClient::new(&format!("http://127.0.0.1:{port}"), key()).unwrap();
        let error = client.retrieve_payment_intent("pi_1", false).await.unwrap_err();
        assert!(matches!(error, StripeError::Transport(_)), "{error:?}");
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn a_success_that_is_not_the_object_is_a_decode_error() {
        let (url, _server) = serve_once(200, r#"{"unexpected": true}"#, Duration::ZERO).await;
        let client = StripeClient::new(&url, key()).unwrap();
        let error = client.retrieve_payment_intent("pi_1", false).await.unwrap_err();
        assert!(matches!(error, StripeError::Decode(_)), "{error:?}");
    }

    #[test]
    fn an_https_client_builds_with_the_platform_roots() {
        let client = StripeClient::new("https://api.stripe.com", key()).unwrap();
        assert_eq!(client.base_url(), "https://api.stripe.com");
        assert!(!format!("{client:?}").contains("sk_test"));
    }
}
