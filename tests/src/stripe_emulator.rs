//! The Stripe emulator (localstripe) as the shop's customer (Stripe.js) and the tests' bookkeeper see
//! it: PaymentMethods, 3-D Secure, and the PaymentIntents and refunds it holds for an order.

use reqwest::Method;
use serde_json::Value;

pub struct StripeEmulator {
    url: String,
    key: String,
    http: reqwest::Client,
}

impl StripeEmulator {
    /// The emulator at `url`, called with the stack's secret key `key`.
    pub fn new(url: &str, key: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, form: &[(&str, &str)]) -> Value {
        let body = form
            .iter()
            .map(|(name, value)| format!("{}={}", urlencode(name), urlencode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("Stripe emulator {path}: {error}"));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|error| panic!("Stripe emulator {path}: {error}"));
        assert!(status.is_success(), "Stripe emulator {path} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("Stripe emulator {path}: {error}: {text}"))
    }

    /// A PaymentMethod made from a card number, as Stripe.js makes one in the customer's browser.
    pub async fn payment_method(&self, number: &str) -> String {
        let created = self
            .call(
                Method::POST,
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        created["id"].as_str().expect("a PaymentMethod id").to_owned()
    }

    /// The customer completes (or fails) 3-D Secure with the client secret the shop gave them.
    pub async fn authenticate(&self, intent_id: &str, client_secret: &str, success: bool) {
        let path = format!("/v1/payment_intents/{intent_id}/_authenticate");
        let success = success.to_string();
        self.call(
            Method::POST,
            &path,
            &[("client_secret", client_secret), ("success", &success)],
        )
        .await;
    }

    /// Every PaymentIntent the emulator holds, by the order id in its metadata.
    pub async fn intents_by_order(&self) -> std::collections::HashMap<String, Vec<Value>> {
        let mut found: std::collections::HashMap<String, Vec<Value>> = std::collections::HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/v1/payment_intents?limit=100".to_owned();
            if let Some(after) = &after {
                path.push_str(&format!("&starting_after={after}"));
            }
            let page = self.call(Method::GET, &path, &[]).await;
            let items = page["data"].as_array().cloned().unwrap_or_default();
            after = items.last().and_then(|item| item["id"].as_str()).map(str::to_owned);
            for intent in items {
                if let Some(order_id) = intent["metadata"]["order_id"].as_str() {
                    found.entry(order_id.to_owned()).or_default().push(intent.clone());
                }
            }
            if page["has_more"] != true || after.is_none() {
                return found;
            }
        }
    }

    /// Every PaymentIntent the emulator holds for `order_id`.
    pub async fn intents_of(&self, order_id: &str) -> Vec<Value> {
        self.intents_by_order().await.remove(order_id).unwrap_or_default()
    }

    /// The one PaymentIntent of `order_id` (fails the test if there are none or several).
    pub async fn intent_of(&self, order_id: &str) -> Value {
        let intents = self.intents_of(order_id).await;
        assert_eq!(intents.len(), 1, "one PaymentIntent per order, got {intents:#?}");
        intents.into_iter().next().expect("one")
    }

    pub async fn refunds_of(&self, intent_id: &str) -> Vec<Value> {
        let page = self
            .call(Method::GET, &format!("/v1/refunds?payment_intent={intent_id}"), &[])
            .await;
        page["data"].as_array().cloned().unwrap_or_default()
    }

    /// What the emulator's books say each order was charged, net of refunds: the succeeded
    /// PaymentIntents' amounts less their refunds (for the money invariants).
    pub async fn net_charges(&self) -> std::collections::HashMap<String, i64> {
        let mut net = std::collections::HashMap::new();
        for (order_id, intents) in self.intents_by_order().await {
            let mut total = 0;
            for intent in intents.iter().filter(|intent| intent["status"] == "succeeded") {
                total += intent["amount"].as_i64().unwrap_or(0);
                total -= intent["latest_charge"]["amount_refunded"].as_i64().unwrap_or(0);
            }
            net.insert(order_id, total);
        }
        net
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
