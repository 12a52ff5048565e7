//! The at-most-once guard of event consumers: a piece of work keyed by an idempotency record runs
//! once per record, however often its message is delivered.

use store::StoreError;
use store::idempotency::{Claim, IdempotencyStore, StoredResponse};

/// What a guarded piece of work came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once<T> {
    /// It ran now (and is recorded as done).
    Ran(T),
    /// It had been done before: a duplicate, dropped.
    AlreadyDone,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("another run of this work is in progress")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The idempotency guard of event consumers: runs `work` unless the record `record_key` says it was
/// done, holding the record's lease while it runs. Success completes the record; failure releases it,
/// so a redelivery tries again; a crash leaves a lease that expires.
pub async fn at_most_once<T, E, F, Fut>(
    store: &dyn IdempotencyStore,
    record_key: &str,
    fingerprint: &str,
    work: F,
) -> Result<Once<T>, E>
where
    T: std::fmt::Debug,
    E: From<GuardError>,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let lease = match store
        .claim(record_key, fingerprint)
        .await
        .map_err(|e| E::from(GuardError::Store(e)))?
    {
        Claim::Acquired(lease) => lease,
        Claim::Completed(_) | Claim::Mismatch => return Ok(Once::AlreadyDone),
        Claim::InProgress => return Err(E::from(GuardError::Busy)),
    };
    match work().await {
        Ok(value) => {
            let done = StoredResponse {
                status: 200,
                body: format!("{value:?}"),
            };
            if let Err(error) = store.complete(&lease, &done).await {
                // The work's own state must make a repeat harmless; the lease expires meanwhile.
                tracing::warn!(record_key, error = %error, "could not mark the work done");
            }
            Ok(Once::Ran(value))
        }
        Err(error) => {
            if let Err(release_error) = store.release(&lease).await {
                tracing::warn!(record_key, error = %release_error, "could not release the claim; it expires with its lease");
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::idempotency::InMemoryIdempotency;

    #[derive(Debug, PartialEq)]
    enum WorkError {
        Guard,
        Failed,
    }

    impl From<GuardError> for WorkError {
        fn from(_: GuardError) -> Self {
            Self::Guard
        }
    }

    #[tokio::test]
    async fn guarded_work_runs_once_and_again_only_after_a_failure() {
        let store = InMemoryIdempotency::default();
        let failed: Result<Once<u8>, WorkError> =
            at_most_once(&store, "k", "e1", || async { Err(WorkError::Failed) }).await;
        assert_eq!(failed, Err(WorkError::Failed));
        let ran = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(7) }).await;
        assert_eq!(ran, Ok(Once::Ran(7)));
        let again = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(8) }).await;
        assert_eq!(again, Ok(Once::AlreadyDone));
    }

    #[tokio::test]
    async fn guarded_work_is_not_run_while_another_holds_it() {
        let store = InMemoryIdempotency::default();
        store.claim("k", "e1").await.unwrap();
        let busy = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(1) }).await;
        assert_eq!(busy, Err(WorkError::Guard));
    }
}
