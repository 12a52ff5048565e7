//! JSON logs through `tracing`; each request runs in a span that carries its correlation id
//! (see `api::http::respond`), so every line it logs can be found by that id.

use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the JSON log subscriber. Levels from `RUST_LOG` (`info`, or `warn,orders_create=debug`;
/// default and fallback `info`). Targets, not an env filter: no regex engine in every binary.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false);
    // A second call (e.g. in tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(json.with_filter(filter)).try_init();
}

/// An error and its causes on one line, for logs (never for callers).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
