//! The requests the payment step makes, built as plain values (method, path, idempotency key, form
//! fields) and turned into HTTP requests by one pure function, [`ApiRequest::to_http`]: what goes on
//! the wire is testable without a network.
//!
//! Every POST carries an `Idempotency-Key`; those of the payment step are derived from the order id
//! (`order-<order id>-intent`, `-confirm`, `-cancel`, `-refund`), so a redelivered step repeats the
//! same request rather than making a new one, for as long as Stripe keeps keys (24 hours).

use http::{HeaderValue, Method, header};

use crate::error::StripeError;
use crate::keys::SecretKey;

/// The API version every request pins (`Stripe-Version`): the shapes in [`crate::resources`] are
/// this version's, whatever the account's default is.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// Stripe's API, unless the deployment points elsewhere (a local emulator).
pub const DEFAULT_API_URL: &str = "https://api.stripe.com";

const USER_AGENT: &str = concat!("shop-stripe-client/", env!("CARGO_PKG_VERSION"));

/// Where the API is: `scheme://host[:port]`, no path. `http` only makes sense for a local emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    url: String,
    https: bool,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, StripeError> {
        let invalid = |why: &str| StripeError::Config(format!("the API URL {url:?} {why}"));
        let uri: http::Uri = url.trim().parse().map_err(|_| invalid("is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("is not http(s)")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("must not carry credentials"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("must have no path (Stripe's paths start with /v1)"));
        }
        let scheme = if https { "https" } else { "http" };
        Ok(Self {
            url: format!("{scheme}://{authority}"),
            https,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// A Stripe object id of the kind `prefix` names (`pi_`...): the prefix and at least one letter,
/// digit or underscore, nothing else, so it is safe in a URL path.
pub(crate) fn checked_id<'a>(id: &'a str, prefix: &'static str, kind: &'static str) -> Result<&'a str, StripeError> {
    let rest = id.strip_prefix(prefix).unwrap_or_default();
    if !rest.is_empty() && rest.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        Ok(id)
    } else {
        Err(StripeError::InvalidId {
            kind,
            id: id.chars().take(64).collect(),
        })
    }
}

/// A PaymentIntent to create for an order: unconfirmed, card only, with the order id in its
/// metadata (Stripe's dashboard and the webhook find the order from it).
#[derive(Clone, Copy)]
pub struct NewPaymentIntent<'a> {
    pub order_id: &'a str,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217, lower case.
    pub currency: &'a str,
    /// The customer's PaymentMethod (`pm_...`).
    pub payment_method: &'a str,
}

/// A refund of an order's PaymentIntent.
#[derive(Debug, Clone, Copy)]
pub struct NewRefund<'a> {
    pub order_id: &'a str,
    pub payment_intent: &'a str,
    /// Minor units.
    pub amount: i64,
}

/// One API request, before it meets a base URL and a key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    /// Path and query from the API's root (`/v1/...`).
    pub path: String,
    /// Every POST has one.
    pub idempotency_key: Option<String>,
    /// The form fields of a POST, in order; nested ones named as Stripe does (`metadata[order_id]`).
    pub form: Vec<(String, String)>,
}

/// Shows the form's field names only: values may name a payment method.
impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("idempotency_key", &self.idempotency_key)
            .field("form", &self.form.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .finish()
    }
}

fn field(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// `?name=value&...`, form-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    // The pairs start after the "?".
    let mut serializer = form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    serializer.extend_pairs(pairs);
    serializer.finish()
}

impl ApiRequest {
    /// A GET of `path` (and query).
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            idempotency_key: None,
            form: Vec::new(),
        }
    }

    /// A POST of `form` to `path`, with its idempotency key.
    pub fn post(path: impl Into<String>, form: Vec<(String, String)>, idempotency_key: impl Into<String>) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            idempotency_key: Some(idempotency_key.into()),
            form,
        }
    }

    /// `POST /v1/payment_intents`, unconfirmed (`confirm=false`): see the crate's docs for why the
    /// payment step creates and confirms in two steps.
    pub fn create_payment_intent(intent: &NewPaymentIntent<'_>) -> Self {
        Self::post(
            "/v1/payment_intents",
            vec![
                field("amount", intent.amount),
                field("currency", intent.currency),
                field("payment_method", intent.payment_method),
                field("payment_method_types[]", "card"),
                field("confirm", "false"),
                field("metadata[order_id]", intent.order_id),
            ],
            format!("order-{}-intent", intent.order_id),
        )
    }

    /// `GET /v1/payment_intents/{id}`, with its latest charge inlined when `expand_latest_charge`
    /// (its refunds are on it).
    pub fn retrieve_payment_intent(id: &str, expand_latest_charge: bool) -> Result<Self, StripeError> {
        let id = checked_id(id, "pi_", "PaymentIntent")?;
        let expand = if expand_latest_charge {
            query(&[("expand[]", "latest_charge")])
        } else {
            String::new()
        };
        Ok(Self::get(format!("/v1/payment_intents/{id}{expand}")))
    }

    /// `POST /v1/payment_intents/{id}/confirm` with the payment method given at creation.
    pub fn confirm_payment_intent(id: &str, order_id: &str) -> Result<Self, StripeError> {
        let id = checked_id(id, "pi_", "PaymentIntent")?;
        Ok(Self::post(
            format!("/v1/payment_intents/{id}/confirm"),
            Vec::new(),
            format!("order-{order_id}-confirm"),
        ))
    }

    /// `POST /v1/payment_intents/{id}/cancel`.
    pub fn cancel_payment_intent(id: &str, order_id: &str) -> Result<Self, StripeError> {
        let id = checked_id(id, "pi_", "PaymentIntent")?;
        Ok(Self::post(
            format!("/v1/payment_intents/{id}/cancel"),
            Vec::new(),
            format!("order-{order_id}-cancel"),
        ))
    }

    /// `POST /v1/refunds` of `amount` of the intent's charge.
    pub fn create_refund(refund: &NewRefund<'_>) -> Result<Self, StripeError> {
        let intent = checked_id(refund.payment_intent, "pi_", "PaymentIntent")?;
        Ok(Self::post(
            "/v1/refunds",
            vec![
                field("payment_intent", intent),
                field("amount", refund.amount),
                field("metadata[order_id]", refund.order_id),
            ],
            format!("order-{}-refund", refund.order_id),
        ))
    }

    /// `GET /v1/refunds?payment_intent={id}`: the intent's refunds, newest first.
    pub fn list_refunds(payment_intent: &str) -> Result<Self, StripeError> {
        let intent = checked_id(payment_intent, "pi_", "PaymentIntent")?;
        Ok(Self::get(format!(
            "/v1/refunds{}",
            query(&[("payment_intent", intent), ("limit", "100")])
        )))
    }

    /// The form body, `application/x-www-form-urlencoded`.
    pub fn body(&self) -> String {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        serializer.extend_pairs(&self.form);
        serializer.finish()
    }

    /// The HTTP request: `base` + path, `Authorization: Bearer <key>`, the pinned `Stripe-Version`,
    /// the idempotency key, and the form body of a POST.
    pub fn to_http(&self, base: &BaseUrl, key: &SecretKey) -> Result<http::Request<String>, StripeError> {
        let invalid = |what: &str| StripeError::Config(format!("{what} is not a valid header value"));
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| invalid("the API key"))?;
        authorization.set_sensitive(true);
        let mut builder = http::Request::builder()
            .method(self.method.clone())
            .uri(format!("{}{}", base.as_str(), self.path))
            .header(header::AUTHORIZATION, authorization)
            .header("stripe-version", STRIPE_VERSION)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(key) = &self.idempotency_key {
            let value = HeaderValue::try_from(key.as_str()).map_err(|_| invalid("the idempotency key"))?;
            builder = builder.header("idempotency-key", value);
        }
        let body = if self.method == Method::POST {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            self.body()
        } else {
            String::new()
        };
        builder
            .body(body)
            .map_err(|error| StripeError::Config(format!("the request to {} cannot be built: {error}", self.path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "0190f5a4-7b3e-7c1a-9d2e-0000000000a1";
    const INTENT: &str = "pi_3Mtw1aLkdIwHu7ix0a1b2c3d";

    fn key() -> SecretKey {
        SecretKey::parse("sk_test_local_abc123").unwrap()
    }

    fn base() -> BaseUrl {
        BaseUrl::parse("https://api.stripe.com").unwrap()
    }

    fn header<'a>(request: &'a http::Request<String>, name: &str) -> Option<&'a str> {
        request.headers().get(name).map(|value| value.to_str().unwrap())
    }

    fn fields(request: &http::Request<String>) -> Vec<(String, String)> {
        form_urlencoded::parse(request.body().as_bytes()).into_owned().collect()
    }

    fn field_of<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every mutating call of the payment step, as sent: (request, the idempotency key expected).
    fn mutating_calls() -> Vec<(http::Request<String>, String)> {
        let intent = NewPaymentIntent {
            order_id: ORDER,
            amount: 2598,
            currency: "eur",
            payment_method: "pm_card_visa",
        };
        let refund = NewRefund {
            order_id: ORDER,
            payment_intent: INTENT,
            amount: 2598,
        };
        [
            (ApiRequest::create_payment_intent(&intent), "intent"),
            (ApiRequest::confirm_payment_intent(INTENT, ORDER).unwrap(), "confirm"),
            (ApiRequest::cancel_payment_intent(INTENT, ORDER).unwrap(), "cancel"),
            (ApiRequest::create_refund(&refund).unwrap(), "refund"),
        ]
        .into_iter()
        .map(|(request, step)| {
            (
                request.to_http(&base(), &key()).unwrap(),
                format!("order-{ORDER}-{step}"),
            )
        })
        .collect()
    }

    #[test]
    fn every_post_carries_an_idempotency_key_of_its_order_the_version_and_the_key() {
        let calls = mutating_calls();
        assert_eq!(calls.len(), 4);
        let mut keys = std::collections::BTreeSet::new();
        for (request, expected_key) in &calls {
            assert_eq!(request.method(), Method::POST);
            assert_eq!(header(request, "idempotency-key"), Some(expected_key.as_str()));
            assert_eq!(header(request, "stripe-version"), Some("2024-06-20"));
            assert_eq!(header(request, "authorization"), Some("Bearer sk_test_local_abc123"));
            assert!(request.headers()["authorization"].is_sensitive());
            assert_eq!(
                header(request, "content-type"),
                Some("application/x-www-form-urlencoded")
            );
            keys.insert(expected_key.clone());
        }
        // One key per step: a confirm never replays the creation's answer.
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn the_intent_is_created_unconfirmed_with_its_order_and_card() {
        let (create, _) = &mutating_calls()[0];
        assert_eq!(create.uri(), "https://api.stripe.com/v1/payment_intents");
        let fields = fields(create);
        assert_eq!(field_of(&fields, "amount"), Some("2598"));
        assert_eq!(field_of(&fields, "currency"), Some("eur"));
        assert_eq!(field_of(&fields, "payment_method"), Some("pm_card_visa"));
        assert_eq!(field_of(&fields, "payment_method_types[]"), Some("card"));
        assert_eq!(field_of(&fields, "confirm"), Some("false"));
        assert_eq!(field_of(&fields, "metadata[order_id]"), Some(ORDER));
        // Brackets are percent-encoded on the wire, as form encoding wants.
        assert!(create.body().contains("metadata%5Border_id%5D="), "{}", create.body());
    }

    #[test]
    fn confirm_cancel_and_refund_go_to_their_paths_with_their_fields() {
        let calls = mutating_calls();
        assert_eq!(calls[1].0.uri().path(), format!("/v1/payment_intents/{INTENT}/confirm"));
        assert!(calls[1].0.body().is_empty());
        assert_eq!(calls[2].0.uri().path(), format!("/v1/payment_intents/{INTENT}/cancel"));
        let refund = &calls[3].0;
        assert_eq!(refund.uri().path(), "/v1/refunds");
        let fields = fields(refund);
        assert_eq!(field_of(&fields, "payment_intent"), Some(INTENT));
        assert_eq!(field_of(&fields, "amount"), Some("2598"));
        assert_eq!(field_of(&fields, "metadata[order_id]"), Some(ORDER));
    }

    #[test]
    fn reads_are_gets_without_a_body_or_an_idempotency_key() {
        let expanded = ApiRequest::retrieve_payment_intent(INTENT, true)
            .unwrap()
            .to_http(&BaseUrl::parse("http://127.0.0.1:18420/").unwrap(), &key())
            .unwrap();
        assert_eq!(expanded.method(), Method::GET);
        assert_eq!(
            expanded.uri().to_string(),
            format!("http://127.0.0.1:18420/v1/payment_intents/{INTENT}?expand%5B%5D=latest_charge")
        );
        assert_eq!(header(&expanded, "idempotency-key"), None);
        assert_eq!(header(&expanded, "content-type"), None);
        assert_eq!(header(&expanded, "stripe-version"), Some(STRIPE_VERSION));
        assert!(expanded.body().is_empty());
        let plain = ApiRequest::retrieve_payment_intent(INTENT, false).unwrap();
        assert_eq!(plain.path, format!("/v1/payment_intents/{INTENT}"));
        let refunds = ApiRequest::list_refunds(INTENT).unwrap();
        assert_eq!(refunds.path, format!("/v1/refunds?payment_intent={INTENT}&limit=100"));
    }

    #[test]
    fn ids_that_could_escape_their_path_are_refused() {
        for id in [
            "",
            "pi_",
            "ch_123",
            "pi_1/../../v1/refunds",
            "pi_1?expand[]=x",
            "pi_1 2",
            "pi_1%2F",
        ] {
            assert!(ApiRequest::retrieve_payment_intent(id, false).is_err(), "{id}");
            assert!(ApiRequest::confirm_payment_intent(id, ORDER).is_err(), "{id}");
        }
    }

    #[test]
    fn base_urls_are_a_scheme_and_a_host_only() {
        assert_eq!(
            BaseUrl::parse("https://api.stripe.com/").unwrap().as_str(),
            "https://api.stripe.com"
        );
        assert!(BaseUrl::parse("https://api.stripe.com").unwrap().is_https());
        assert!(!BaseUrl::parse("http://127.0.0.1:18420").unwrap().is_https());
        for bad in [
            "",
            "api.stripe.com",
            "ftp://x",
            "https://api.stripe.com/v1",
            "https://u:p@api.stripe.com",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_field_names_not_values() {
        let request = ApiRequest::create_payment_intent(&NewPaymentIntent {
            order_id: ORDER,
            amount: 1,
            currency: "eur",
            payment_method: "pm_secretcard",
        });
        let printed = format!("{request:?}");
        assert!(printed.contains("payment_method"), "{printed}");
        assert!(!printed.contains("pm_secretcard"), "{printed}");
    }
}
