//! The Stripe payment provider (`PAYMENT_PROVIDER=stripe`): one PaymentIntent per order, its id kept on
//! the order (`PaymentLedger::remember_intent`, the first stored id wins), created unconfirmed and then
//! confirmed (why two steps: see the `stripe_client` crate's docs). A redelivery never confirms
//! blindly: it reads the stored intent and acts on its status. Every lookup (`find_charge`,
//! `action_outcome`, `void`, the refund's check) reads the stored intent, never a search.
//!
//! Outcomes: a decline (HTTP 402) or a payment method that does not exist or cannot be used declines
//! the order; a bad key (our configuration), a conflict, a rate limit, Stripe's errors, timeouts and
//! network failures are transient (`TransientPaymentError`, "the charge may or may not have
//! happened"), so the saga looks the charge up rather than declining. Logs name the order, the intent
//! and its status, never a key, a client secret or a response body.

use std::sync::Arc;

use async_trait::async_trait;
use domain::OrderId;
use store::StoreError;
use store::payments::PaymentLedger;
use stripe_client::request::DEFAULT_API_URL;
use stripe_client::{
    IntentStatus, KeysError, NewPaymentIntent, NewRefund, PaymentIntent, StripeClient, StripeError, StripeKeys,
};
use wiring::telemetry::error_chain;
use wiring::{AppState, ConfigError, Env};

use crate::provider::{
    ActionOutcome, ChargeOutcome, ChargeRecord, ChargeRequest, PaymentProvider, TransientPaymentError,
};

/// How long one provider call may take (the worker's guard): a charge reads, creates, stores and
/// confirms, each request within the client's own 5 s timeout; inside the function's 10 s.
pub const STRIPE_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7);

/// The Stripe adapter of [`PaymentProvider`].
pub struct StripeProvider {
    client: StripeClient,
    ledger: Arc<dyn PaymentLedger>,
}

/// Why the Stripe provider could not be built at cold start.
#[derive(Debug, thiserror::Error)]
pub enum StripeInitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not read the Stripe keys")]
    Secret(#[from] wiring::secrets::SecretError),
    #[error("the secret {secret_id} does not hold the Stripe keys")]
    Keys {
        secret_id: String,
        #[source]
        source: KeysError,
    },
    #[error("could not build the Stripe client")]
    Client(#[from] StripeError),
}

impl StripeProvider {
    pub fn new(client: StripeClient, ledger: Arc<dyn PaymentLedger>) -> Self {
        Self { client, ledger }
    }

    /// The provider of the deployment: Stripe's API at `STRIPE_API_URL` (default Stripe's own), with
    /// the secret key of the Secrets Manager secret named `STRIPE_SECRET_NAME`, read once now.
    pub async fn from_env(state: &AppState, env: &Env) -> Result<Self, StripeInitError> {
        let api_url = env
            .optional("STRIPE_API_URL")
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let secret_id = env.required("STRIPE_SECRET_NAME")?;
        let secret = wiring::secrets::read_secret_string(&state.sdk, &secret_id).await?;
        let keys = StripeKeys::parse(secret.expose()).map_err(|source| StripeInitError::Keys {
            secret_id: secret_id.clone(),
            source,
        })?;
        let client = StripeClient::new(&api_url, keys.secret_key().clone())?;
        tracing::info!(api_url = client.base_url(), "stripe payment provider");
        Ok(Self::new(client, state.payment_ledger()))
    }
}

fn store_failure(what: &str, error: &StoreError) -> TransientPaymentError {
    TransientPaymentError(format!("stripe: {what}: {}", error_chain(error)))
}

fn stripe_failure(what: &str, error: &StripeError) -> TransientPaymentError {
    TransientPaymentError(format!("stripe: {what}: {}", error_chain(error)))
}

/// Logs a failed call at the level it deserves: a refused key is ours to fix at once.
fn log_failure(order_id: &OrderId, intent_id: Option<&str>, what: &str, error: &StripeError) {
    let chain = error_chain(error);
    match error {
        StripeError::Unauthorized { .. } | StripeError::Config(_) | StripeError::InvalidId { .. } => {
            tracing::error!(order_id = %order_id, intent_id, error = %chain, "stripe: {what} failed")
        }
        _ => tracing::warn!(order_id = %order_id, intent_id, error = %chain, "stripe: {what} failed"),
    }
}

/// The charge of a succeeded intent, as the saga books it.
fn record_of(intent: &PaymentIntent) -> Option<ChargeRecord> {
    intent.charged().map(|charge| ChargeRecord {
        amount: charge.amount,
        refunded: charge.refunded,
    })
}

/// What a PaymentIntent's status means for a charge: an outcome, or the confirm still to make.
#[derive(Debug)]
pub enum ChargeStep {
    Outcome(ChargeOutcome),
    Confirm,
}

/// The charge outcome of an intent in `status`. `may_confirm`: whether an unconfirmed intent is
/// confirmed now (not after a confirm already answered).
pub fn charge_step(intent: &PaymentIntent, may_confirm: bool) -> Result<ChargeStep, TransientPaymentError> {
    let not_settled = |why: &str| {
        TransientPaymentError(format!(
            "stripe: PaymentIntent {} is {}: {why}",
            intent.id, intent.status
        ))
    };
    Ok(match intent.status {
        IntentStatus::Succeeded => ChargeStep::Outcome(ChargeOutcome::Approved),
        IntentStatus::RequiresConfirmation if may_confirm => ChargeStep::Confirm,
        IntentStatus::RequiresConfirmation => return Err(not_settled("still unconfirmed after its confirm")),
        IntentStatus::RequiresAction => {
            let Some(secret) = &intent.client_secret else {
                return Err(not_settled("no client secret in Stripe's answer"));
            };
            ChargeStep::Outcome(ChargeOutcome::ActionRequired {
                client_secret: secret.expose().to_owned(),
            })
        }
        // A confirm failed (a decline, a failed 3-D Secure), or the payment was cancelled.
        IntentStatus::RequiresPaymentMethod | IntentStatus::Canceled => ChargeStep::Outcome(ChargeOutcome::Declined),
        IntentStatus::Processing => return Err(not_settled("not settled yet")),
        // Authorized but not captured: never an approval here (we capture automatically).
        IntentStatus::RequiresCapture => {
            tracing::error!(intent_id = %intent.id, "stripe: PaymentIntent awaits a manual capture; not taken as paid");
            return Err(not_settled("awaits a capture, which this shop never asks for"));
        }
        IntentStatus::Unknown => return Err(not_settled("a status this shop does not know")),
    })
}

/// The charge outcome of a failed create or confirm: a decline when the payment method cannot pay,
/// else transient (the charge may or may not have happened).
pub fn charge_failure(error: &StripeError) -> Result<ChargeOutcome, TransientPaymentError> {
    if error.rejects_payment_method() {
        Ok(ChargeOutcome::Declined)
    } else {
        Err(stripe_failure("charge", error))
    }
}

impl StripeProvider {
    async fn stored_intent(&self, order_id: &OrderId) -> Result<Option<String>, TransientPaymentError> {
        self.ledger
            .intent_of(order_id)
            .await
            .map_err(|error| store_failure("reading the order's PaymentIntent", &error))
    }

    /// The stored intent `intent_id` (Stripe must know it: a 404 is an error, never "no charge").
    async fn retrieve(
        &self,
        order_id: &OrderId,
        intent_id: &str,
        expand_latest_charge: bool,
    ) -> Result<PaymentIntent, TransientPaymentError> {
        self.client
            .retrieve_payment_intent(intent_id, expand_latest_charge)
            .await
            .map_err(|error| {
                log_failure(order_id, Some(intent_id), "reading the stored PaymentIntent", &error);
                stripe_failure(&format!("reading the stored PaymentIntent {intent_id}"), &error)
            })
    }

    /// Acts on an intent of the order: confirms it if it still needs that, else answers its status.
    async fn settle(&self, order_id: &OrderId, intent: PaymentIntent) -> Result<ChargeOutcome, TransientPaymentError> {
        let outcome = match charge_step(&intent, true)? {
            ChargeStep::Outcome(outcome) => outcome,
            ChargeStep::Confirm => {
                let confirmed = match self
                    .client
                    .confirm_payment_intent(&intent.id, &order_id.to_string())
                    .await
                {
                    Ok(confirmed) => confirmed,
                    Err(error) => {
                        let outcome = charge_failure(&error);
                        if outcome.is_err() {
                            log_failure(order_id, Some(&intent.id), "confirming the PaymentIntent", &error);
                        } else {
                            tracing::info!(
                                order_id = %order_id,
                                intent_id = %intent.id,
                                code = error.code(),
                                "stripe: the payment method was declined"
                            );
                        }
                        return outcome;
                    }
                };
                match charge_step(&confirmed, false)? {
                    ChargeStep::Outcome(outcome) => outcome,
                    ChargeStep::Confirm => {
                        return Err(TransientPaymentError(format!(
                            "stripe: PaymentIntent {} still unconfirmed after its confirm",
                            confirmed.id
                        )));
                    }
                }
            }
        };
        tracing::info!(order_id = %order_id, intent_id = %intent.id, outcome = ?outcome, "stripe: charge");
        Ok(outcome)
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<ChargeOutcome, TransientPaymentError> {
        let order_id = request.order_id;
        if let Some(intent_id) = self.stored_intent(order_id).await? {
            // A redelivery (or a retry after a lost answer): where the stored intent stands decides.
            let intent = self.retrieve(order_id, &intent_id, false).await?;
            tracing::info!(order_id = %order_id, intent_id = %intent.id, status = %intent.status, "stripe: stored PaymentIntent");
            return self.settle(order_id, intent).await;
        }
        let Some(payment_method) = request.token else {
            tracing::warn!(order_id = %order_id, "stripe: the order has no payment method; declined");
            return Ok(ChargeOutcome::Declined);
        };
        let order = order_id.to_string();
        let new_intent = NewPaymentIntent {
            order_id: &order,
            amount: request.amount,
            currency: request.currency,
            payment_method,
        };
        let created = match self.client.create_payment_intent(&new_intent).await {
            Ok(created) => created,
            Err(error) => {
                let outcome = charge_failure(&error);
                if outcome.is_err() {
                    log_failure(order_id, None, "creating the PaymentIntent", &error);
                } else {
                    tracing::info!(order_id = %order_id, code = error.code(), "stripe: the payment method cannot pay");
                }
                return outcome;
            }
        };
        let stored = self
            .ledger
            .remember_intent(order_id, &created.id)
            .await
            .map_err(|error| store_failure("storing the order's PaymentIntent", &error))?;
        match stored {
            None => {
                tracing::warn!(order_id = %order_id, intent_id = %created.id, "stripe: the order is gone; its PaymentIntent stays unconfirmed");
                Err(TransientPaymentError(format!(
                    "stripe: the order is gone; PaymentIntent {} was not stored and stays unconfirmed",
                    created.id
                )))
            }
            Some(stored) if stored != created.id => {
                // Another delivery stored its intent first: that one is the order's. Ours was never
                // confirmed, so it charges nothing.
                tracing::warn!(
                    order_id = %order_id,
                    intent_id = %stored,
                    unused_intent_id = %created.id,
                    "stripe: another delivery's PaymentIntent is the order's; ours stays unconfirmed"
                );
                let intent = self.retrieve(order_id, &stored, false).await?;
                self.settle(order_id, intent).await
            }
            Some(_) => {
                tracing::info!(order_id = %order_id, intent_id = %created.id, status = %created.status, "stripe: PaymentIntent created");
                self.settle(order_id, created).await
            }
        }
    }

    async fn refund(&self, order_id: &OrderId, amount: i64) -> Result<(), TransientPaymentError> {
        let Some(intent_id) = self.stored_intent(order_id).await? else {
            tracing::error!(order_id = %order_id, "stripe: a refund is owed but no PaymentIntent is stored");
            return Err(TransientPaymentError(format!(
                "stripe: no PaymentIntent stored for order {order_id}: nothing to refund it from"
            )));
        };
        // localstripe ignores idempotency keys: what the charge shows refunded already is not
        // refunded again, so a redelivered refund never refunds twice there either.
        let intent = self.retrieve(order_id, &intent_id, true).await?;
        let Some(charge) = intent.charged() else {
            tracing::error!(order_id = %order_id, intent_id = %intent_id, status = %intent.status, "stripe: a refund is owed but the PaymentIntent has not succeeded");
            return Err(TransientPaymentError(format!(
                "stripe: PaymentIntent {intent_id} is {}: no charge to refund",
                intent.status
            )));
        };
        let already = if charge.refunds_known {
            charge.amount_refunded
        } else {
            0
        };
        if already >= amount {
            tracing::info!(order_id = %order_id, intent_id = %intent_id, amount, already, "stripe: already refunded");
            return Ok(());
        }
        let refund = NewRefund {
            order_id: &order_id.to_string(),
            payment_intent: &intent_id,
            amount: amount - already,
        };
        match self.client.create_refund(&refund).await {
            Ok(made) if made.failed() => {
                tracing::error!(order_id = %order_id, intent_id = %intent_id, refund_id = %made.id, status = made.status.as_deref(), "stripe: refund failed");
                Err(TransientPaymentError(format!(
                    "stripe: refund {} of PaymentIntent {intent_id} failed",
                    made.id
                )))
            }
            Ok(made) => {
                tracing::info!(order_id = %order_id, intent_id = %intent_id, refund_id = %made.id, amount = made.amount, status = made.status.as_deref(), "stripe: refunded");
                Ok(())
            }
            Err(error) if error.code() == Some("charge_already_refunded") => {
                tracing::info!(order_id = %order_id, intent_id = %intent_id, "stripe: already refunded");
                Ok(())
            }
            Err(error) => {
                log_failure(order_id, Some(&intent_id), "refunding", &error);
                Err(stripe_failure(&format!("refunding PaymentIntent {intent_id}"), &error))
            }
        }
    }

    async fn find_charge(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        let Some(intent_id) = self.stored_intent(order_id).await? else {
            return Ok(None);
        };
        let intent = self.retrieve(order_id, &intent_id, true).await?;
        tracing::info!(order_id = %order_id, intent_id = %intent_id, status = %intent.status, "stripe: charge looked up");
        match intent.status {
            IntentStatus::Succeeded => Ok(record_of(&intent)),
            // A payment on its way, or an authorization never captured: not "no charge" either.
            IntentStatus::Processing | IntentStatus::RequiresCapture | IntentStatus::Unknown => {
                Err(TransientPaymentError(format!(
                    "stripe: PaymentIntent {intent_id} is {}: not settled yet",
                    intent.status
                )))
            }
            _ => Ok(None),
        }
    }

    async fn action_outcome(&self, order_id: &OrderId) -> Result<ActionOutcome, TransientPaymentError> {
        let Some(intent_id) = self.stored_intent(order_id).await? else {
            tracing::warn!(order_id = %order_id, "stripe: no PaymentIntent stored for an order awaiting its customer");
            return Ok(ActionOutcome::Failed);
        };
        let intent = self.retrieve(order_id, &intent_id, true).await?;
        tracing::info!(order_id = %order_id, intent_id = %intent_id, status = %intent.status, "stripe: action outcome");
        match intent.status {
            IntentStatus::Succeeded => record_of(&intent).map(ActionOutcome::Charged).ok_or_else(|| {
                TransientPaymentError(format!("stripe: PaymentIntent {intent_id} succeeded without a charge"))
            }),
            IntentStatus::RequiresAction | IntentStatus::Processing | IntentStatus::RequiresConfirmation => {
                Ok(ActionOutcome::Waiting)
            }
            // localstripe clears the payment method after a failed 3-D Secure, as Stripe does.
            IntentStatus::RequiresPaymentMethod => Ok(ActionOutcome::Failed),
            IntentStatus::Canceled => Ok(ActionOutcome::Cancelled),
            IntentStatus::RequiresCapture | IntentStatus::Unknown => Err(TransientPaymentError(format!(
                "stripe: PaymentIntent {intent_id} is {}",
                intent.status
            ))),
        }
    }

    async fn void(&self, order_id: &OrderId) -> Result<Option<ChargeRecord>, TransientPaymentError> {
        let Some(intent_id) = self.stored_intent(order_id).await? else {
            return Ok(None);
        };
        let intent = self.retrieve(order_id, &intent_id, true).await?;
        match intent.status {
            IntentStatus::Succeeded => return Ok(record_of(&intent)),
            IntentStatus::Canceled => return Ok(None),
            status if status.is_cancellable() => {}
            status => {
                return Err(TransientPaymentError(format!(
                    "stripe: PaymentIntent {intent_id} is {status}: it cannot be cancelled now"
                )));
            }
        }
        match self
            .client
            .cancel_payment_intent(&intent_id, &order_id.to_string())
            .await
        {
            Ok(cancelled) if cancelled.status == IntentStatus::Canceled => {
                tracing::info!(order_id = %order_id, intent_id = %intent_id, "stripe: PaymentIntent cancelled");
                Ok(None)
            }
            Ok(other) => Err(TransientPaymentError(format!(
                "stripe: PaymentIntent {intent_id} is {} after its cancel",
                other.status
            ))),
            // Refused: it may have moved on meanwhile (succeeded, say): where it stands now decides.
            Err(error @ StripeError::Rejected { status: 400, .. }) => {
                let now = self.retrieve(order_id, &intent_id, true).await?;
                tracing::info!(order_id = %order_id, intent_id = %intent_id, status = %now.status, "stripe: cancel refused");
                match now.status {
                    IntentStatus::Succeeded => Ok(record_of(&now)),
                    IntentStatus::Canceled => Ok(None),
                    _ => Err(stripe_failure(&format!("cancelling PaymentIntent {intent_id}"), &error)),
                }
            }
            Err(error) => {
                log_failure(order_id, Some(&intent_id), "cancelling the PaymentIntent", &error);
                Err(stripe_failure(&format!("cancelling PaymentIntent {intent_id}"), &error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(status: &str) -> PaymentIntent {
        serde_json::from_value(serde_json::json!({
            "id": "pi_123", "amount": 2598, "currency": "eur", "status": status,
            "client_secret": "pi_123_secret_abc",
        }))
        .unwrap()
    }

    fn answer(status: u16, body: &str) -> StripeError {
        StripeError::from_answer(status, body.as_bytes())
    }

    #[test]
    fn a_declined_card_declines_the_order() {
        let localstripe = answer(
            402,
            r#"{"error": {"code": "card_declined", "type": "invalid_request_error", "charge": "ch_1"}}"#,
        );
        assert_eq!(charge_failure(&localstripe).unwrap(), ChargeOutcome::Declined);
        let stripe = answer(402, r#"{"error": {"code": "card_declined", "type": "card_error"}}"#);
        assert_eq!(charge_failure(&stripe).unwrap(), ChargeOutcome::Declined);
    }

    #[test]
    fn a_payment_method_that_does_not_exist_declines_the_order() {
        let localstripe = answer(
            404,
            r#"{"error": {"message": "Not Found", "type": "invalid_request_error"}}"#,
        );
        assert_eq!(charge_failure(&localstripe).unwrap(), ChargeOutcome::Declined);
        let stripe = answer(
            400,
            r#"{"error": {"code": "resource_missing", "param": "payment_method", "type": "invalid_request_error"}}"#,
        );
        assert_eq!(charge_failure(&stripe).unwrap(), ChargeOutcome::Declined);
    }

    #[test]
    fn our_misconfiguration_and_stripes_trouble_are_transient() {
        for (status, body) in [
            (
                401,
                r#"{"error": {"message": "Unauthorized", "type": "invalid_request_error"}}"#,
            ),
            (403, ""),
            (409, r#"{"error": {"type": "idempotency_error"}}"#),
            (429, ""),
            (500, ""),
            (503, ""),
            (
                400,
                r#"{"error": {"message": "Bad request", "type": "invalid_request_error"}}"#,
            ),
            (
                404,
                r#"{"error": {"code": "resource_missing", "param": "intent", "type": "invalid_request_error"}}"#,
            ),
        ] {
            let outcome = charge_failure(&answer(status, body));
            assert!(outcome.is_err(), "{status} {body}: {outcome:?}");
        }
        let timeout = charge_failure(&StripeError::Timeout(std::time::Duration::from_secs(5))).unwrap_err();
        assert!(timeout.0.contains("no answer from Stripe"), "{}", timeout.0);
        // The message is the error chain, without the key.
        let unauthorized = charge_failure(&answer(
            401,
            r#"{"error": {"message": "Invalid API Key provided: sk_test_abc", "type": "invalid_request_error"}}"#,
        ))
        .unwrap_err();
        assert!(unauthorized.0.contains("refused the API key"), "{}", unauthorized.0);
        assert!(!unauthorized.0.contains("sk_test"), "{}", unauthorized.0);
    }

    #[test]
    fn requires_action_asks_the_customer_with_the_client_secret() {
        let ChargeStep::Outcome(outcome) = charge_step(&intent("requires_action"), false).unwrap() else {
            panic!("an outcome")
        };
        assert_eq!(
            outcome,
            ChargeOutcome::ActionRequired {
                client_secret: "pi_123_secret_abc".into()
            }
        );
        // Without the secret there is nothing to hand the customer: not an outcome yet.
        let mut no_secret = intent("requires_action");
        no_secret.client_secret = None;
        assert!(charge_step(&no_secret, false).is_err());
    }

    #[test]
    fn each_status_maps_to_its_charge_step() {
        let outcome = |status: &str, may_confirm: bool| match charge_step(&intent(status), may_confirm) {
            Ok(ChargeStep::Outcome(outcome)) => Ok(Some(outcome)),
            Ok(ChargeStep::Confirm) => Ok(None),
            Err(error) => Err(error.0),
        };
        assert_eq!(outcome("succeeded", true), Ok(Some(ChargeOutcome::Approved)));
        assert_eq!(outcome("requires_confirmation", true), Ok(None), "confirm it");
        assert!(outcome("requires_confirmation", false).is_err(), "never confirm twice");
        assert_eq!(
            outcome("requires_payment_method", true),
            Ok(Some(ChargeOutcome::Declined))
        );
        assert_eq!(outcome("canceled", true), Ok(Some(ChargeOutcome::Declined)));
        for unsettled in ["processing", "requires_capture", "something_new"] {
            let error = outcome(unsettled, true).unwrap_err();
            assert!(error.contains("pi_123"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
