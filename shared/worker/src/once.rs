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

/// What a run of guarded work came to, when the matter may outlive the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// Settled: the record is completed and later deliveries are dropped.
    Finished(T),
    /// Done for now but not settled (an order waiting for its customer): the record is released, so
    /// a later delivery of the same work runs it again.
    Unfinished(T),
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
    at_most_once_until(store, record_key, fingerprint, || async {
        work().await.map(Progress::Finished)
    })
    .await
}

/// [`at_most_once`] for work that may leave its matter unsettled: an [`Progress::Unfinished`] run
/// releases the record instead of completing it.
pub async fn at_most_once_until<T, E, F, Fut>(
    store: &dyn IdempotencyStore,
    record_key: &str,
    fingerprint: &str,
    work: F,
) -> Result<Once<T>, E>
where
    T: std::fmt::Debug,
    E: From<GuardError>,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Progress<T>, E>>,
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
        Ok(Progress::Unfinished(value)) => {
            if let Err(error) = store.release(&lease).await {
                tracing::warn!(record_key, error = %error, "could not release the claim; it expires with its lease");
            }
            Ok(Once::Ran(value))
        }
        Ok(Progress::Finished(value)) => {
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
    async fn unfinished_work_runs_again_on_the_next_delivery_and_finished_work_does_not() {
        let store = InMemoryIdempotency::default();
        let waiting = at_most_once_until(&store, "k", "e1", || async {
            Ok::<_, WorkError>(Progress::Unfinished(1))
        });
        assert_eq!(waiting.await, Ok(Once::Ran(1)));
        let settled = at_most_once_until(&store, "k", "e1", || async {
            Ok::<_, WorkError>(Progress::Finished(2))
        });
        assert_eq!(settled.await, Ok(Once::Ran(2)));
        let again = at_most_once_until(&store, "k", "e1", || async {
            Ok::<_, WorkError>(Progress::Finished(3))
        });
        assert_eq!(again.await, Ok(Once::AlreadyDone));
    }

    #[tokio::test]
    async fn guarded_work_is_not_run_while_another_holds_it() {
        let store = InMemoryIdempotency::default();
        store.claim("k", "e1").await.unwrap();
        let busy = at_most_once(&store, "k", "e1", || async { Ok::<_, WorkError>(1) }).await;
        assert_eq!(busy, Err(WorkError::Guard));
    }
}
