//! Stopping running jobs of a cancelled (or failed) instance. The orchestrator announces the
//! end with a `wf.events.<tenant>.<instance>.cancelled` (or `.failed`) event; every replica listens on a plain
//! subscription and cancels the jobs of that instance it is running. The map only covers jobs
//! running in this process, so no other replica needs it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt as _;
use switchyard_proto::subject;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::Error;

type Key = (String, String);

#[derive(Debug, Clone, Default)]
pub(crate) struct Cancels(Arc<Mutex<HashMap<Key, (CancellationToken, usize)>>>);

/// A running job's view of its instance's cancellation; unregisters on drop.
pub(crate) struct Watch {
    cancels: Cancels,
    key: Option<Key>,
    token: CancellationToken,
}

impl Watch {
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut map = self.cancels.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, count)) = map.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&key);
            }
        }
    }
}

impl Cancels {
    pub(crate) fn watch(&self, tenant: &str, instance: &str) -> Watch {
        if instance.is_empty() {
            return Watch {
                cancels: self.clone(),
                key: None,
                token: CancellationToken::new(),
            };
        }
        let key = (tenant.to_owned(), instance.to_owned());
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Watch {
            cancels: self.clone(),
            key: Some(key),
            token: entry.0.clone(),
        }
    }

    fn cancel(&self, tenant: &str, instance: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(tenant.to_owned(), instance.to_owned())) {
            Some((token, _)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Subscribes to cancellation events until `shutdown`.
pub(crate) async fn watch(
    client: &async_nats::Client,
    cancels: Cancels,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let cancelled = client
        .subscribe(subject::ALL_CANCELLED_EVENTS)
        .await
        .map_err(Error::jetstream)?;
    let failed = client
        .subscribe(subject::ALL_FAILED_EVENTS)
        .await
        .map_err(Error::jetstream)?;
    let mut events = futures::stream::select(cancelled, failed);
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.next() => match event {
                    Some(msg) => {
                        if let Some((tenant, instance, _)) = subject::parse_event(&msg.subject)
                            && cancels.cancel(tenant, instance)
                        {
                            tracing::info!(tenant, instance_id = instance, "cancelling running jobs of the instance");
                        }
                    }
                    None => break,
                },
            }
        }
        let (mut cancelled, mut failed) = events.into_inner();
        let _ = cancelled.unsubscribe().await;
        let _ = failed.unsubscribe().await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancellation_reaches_every_job_of_the_instance_and_only_those() {
        let cancels = Cancels::default();
        let a1 = cancels.watch("t", "a");
        let a2 = cancels.watch("t", "a");
        let b = cancels.watch("t", "b");
        let other_tenant = cancels.watch("u", "a");
        assert!(cancels.cancel("t", "a"));
        assert!(a1.token.is_cancelled() && a2.token.is_cancelled());
        assert!(!b.token.is_cancelled() && !other_tenant.token.is_cancelled());
        drop((a1, a2));
        assert!(!cancels.cancel("t", "a"), "entries go away with their jobs");
    }
}
