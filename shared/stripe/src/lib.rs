//! Stripe's REST API, as much of it as the payment step needs: PaymentIntents (create, retrieve,
//! confirm, cancel), refunds, the deployment's keys and webhook signatures.
//!
//! - [`request`]: every request as a plain value and one pure function to HTTP (form-encoded bodies,
//!   `Authorization: Bearer`, the pinned [`request::STRIPE_VERSION`], an `Idempotency-Key` on every
//!   POST);
//! - [`client`]: sends them over the AWS SDK's own HTTPS stack, with timeouts;
//! - [`resources`]: the objects read back; [`error`]: what went wrong, typed by what to do about it;
//! - [`keys`]: the secret's keys, never printed; [`webhook`]: events and their signatures.
//!
//! # One PaymentIntent per order, created unconfirmed
//!
//! The payment step creates an order's PaymentIntent with `confirm=false`, stores its id on the order
//! (the first stored id wins), and only then confirms it. Confirming in the same call as creating
//! would be one request fewer, but a lost answer to it would leave a charge whose id was never
//! learnt: Stripe's idempotency key would hand it back on a retry for 24 hours, but the local
//! emulator (localstripe 1.15.10) ignores `Idempotency-Key` and has no search API, so the step never
//! depends on the key alone. An unconfirmed intent whose id was lost charges nothing.

pub mod client;
pub mod error;
pub mod keys;
pub mod request;
pub mod resources;
pub mod webhook;

pub use client::StripeClient;
pub use error::{ApiErrorDetail, StripeError};
pub use keys::{KeysError, SecretKey, StripeKeys, WebhookSecret};
pub use request::{ApiRequest, NewPaymentIntent, NewRefund, STRIPE_VERSION};
pub use resources::{ChargeSummary, ClientSecret, IntentStatus, PaymentIntent, Refund};
