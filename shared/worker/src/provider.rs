//! Calls to outside providers (payment, email, SMS): each one bounded by a timeout well inside the
//! function's, so a hanging provider fails the call (and the breaker and attempt accounting see it)
//! instead of getting the invocation killed; and each one open to the deployment's fault injection
//! (`FaultInjection`, targets `payment`, `email`, `sms`).

use std::future::Future;
use std::time::Duration;

use wiring::{FaultKind, FaultPlan};

/// How long one provider call may take: well inside the functions' 10 s.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a provider call gave no answer of its own.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallFailure<E> {
    /// The provider answered with an error.
    #[error(transparent)]
    Failed(E),
    /// No answer within the timeout: it may or may not have acted.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// An injected fault (the call was not made, or its answer was dropped).
    #[error("injected fault: {0}")]
    Injected(&'static str),
}

/// One guarded call of `target`'s `operation`: the plan's fault if it draws one, then `call` within
/// `timeout`.
pub async fn guarded<T, E, Fut>(
    faults: &FaultPlan,
    target: &str,
    operation: &str,
    timeout: Duration,
    call: impl FnOnce() -> Fut,
) -> Result<T, CallFailure<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let fault = faults.decide(target, operation);
    let attempt = async {
        match fault {
            None => call().await.map_err(CallFailure::Failed),
            Some(FaultKind::Error) => Err(CallFailure::Injected("provider error")),
            Some(FaultKind::Timeout) => {
                std::future::pending::<()>().await;
                Err(CallFailure::Injected("no answer"))
            }
            Some(FaultKind::Latency(delay)) => {
                tokio::time::sleep(delay).await;
                call().await.map_err(CallFailure::Failed)
            }
            Some(FaultKind::LostResponse) => {
                // The provider acts; only its answer is lost.
                let _ = call().await;
                Err(CallFailure::Injected("response lost"))
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(CallFailure::TimedOut(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn call_with(faults: &str, calls: &AtomicU32) -> Result<u32, CallFailure<&'static str>> {
        let plan = FaultPlan::parse(faults).unwrap();
        guarded(&plan, "payment", "charge", Duration::from_millis(50), || async {
            Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .await
    }

    #[tokio::test]
    async fn without_faults_the_call_is_made_and_answered() {
        let calls = AtomicU32::new(0);
        assert_eq!(call_with("", &calls).await, Ok(1));
    }

    #[tokio::test]
    async fn an_injected_error_is_not_a_call_and_a_lost_response_is_one() {
        let calls = AtomicU32::new(0);
        assert_eq!(
            call_with("payment=error:1", &calls).await,
            Err(CallFailure::Injected("provider error"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            call_with("payment=lost-response:1", &calls).await,
            Err(CallFailure::Injected("response lost"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the provider acted");
    }

    #[tokio::test]
    async fn a_hanging_provider_times_out() {
        let calls = AtomicU32::new(0);
        let answer = call_with("payment=timeout:1", &calls).await;
        assert_eq!(answer, Err(CallFailure::TimedOut(Duration::from_millis(50))));
        let slow = call_with("payment=latency500:1", &calls).await;
        assert!(matches!(slow, Err(CallFailure::TimedOut(_))), "{slow:?}");
    }
}
