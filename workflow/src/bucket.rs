//! What the definitions and the declared operations do alike with their KV buckets: list the
//! keys, and follow the changes.

use std::future::Future;

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Error;

/// Every key of `kv`; `what` names the bucket's contents in the error.
pub(crate) async fn keys(kv: &kv::Store, what: &'static str) -> Result<Vec<String>, Error> {
    let mut keys = kv.keys().await.map_err(|e| Error::bus(what, e))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        out.push(k.map_err(|e| Error::bus(what, e))?);
    }
    Ok(out)
}

/// Hands every entry `watch` sees (puts, deletes and purges; see `entry.operation`) to
/// `on_entry`, until `shutdown` or the watch ends.
pub(crate) fn follow<F, Fut>(
    mut watch: kv::Watch,
    shutdown: CancellationToken,
    what: &'static str,
    on_entry: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(kv::Entry) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                n = watch.next() => n,
            };
            match next {
                Some(Ok(entry)) => on_entry(entry).await,
                Some(Err(e)) => warn!(error = %e, what, "watch error"),
                None => break,
            }
        }
    })
}
