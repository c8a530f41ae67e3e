//! [`Discovery::catalog`]: the set of services the registry knows, kept current by a background
//! task over [`Registry::watch_services`] that reconnects with discovery's backoff.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Discovery, DiscoveryOptions};
use crate::registry::{Registry, ServiceSet};

/// A receiver of the registry's set of services: `None` until the first set is known, then
/// the last set received (kept while the registry is unreachable).
pub type Catalog = watch::Receiver<Option<ServiceSet>>;

impl Discovery {
    /// The set of services the registry knows, followed in the background (starting the task
    /// on first use; later calls share it). The task reconnects with the same backoff as the
    /// instance watches and keeps the last set while the registry is unreachable; it stops once
    /// the `Discovery` and every receiver are dropped. A receiver's `changed` fires when the set
    /// of names changes, not when only the index moves. Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn run(discovery: signpost_client::discovery::Discovery) {
    /// let mut catalog = discovery.catalog();
    /// while catalog.changed().await.is_ok() {
    ///     if let Some(set) = &*catalog.borrow_and_update() {
    ///         println!("{} services at index {}", set.services.len(), set.index);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn catalog(&self) -> Catalog {
        let mut catalog = self.inner.catalog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = catalog.as_ref() {
            let mut rx = rx.clone();
            rx.mark_unchanged();
            return rx;
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow_catalog(
            self.inner.registry.clone(),
            self.inner.options.clone(),
            tx,
        ));
        *catalog = Some(rx.clone());
        rx
    }
}

/// Follows the registry's set of services into `tx` until every receiver is gone.
async fn follow_catalog(
    registry: Arc<dyn Registry>,
    options: DiscoveryOptions,
    tx: watch::Sender<Option<ServiceSet>>,
) {
    let mut attempt: u32 = 0;
    loop {
        let mut stream = registry.watch_services();
        let error = loop {
            tokio::select! {
                _ = tx.closed() => return,
                item = stream.next() => match item {
                    Some(Ok(set)) => {
                        if attempt > 0 {
                            tracing::info!("service catalog watch reconnected");
                        }
                        attempt = 0;
                        tx.send_if_modified(|current| {
                            let changed = current
                                .as_ref()
                                .is_none_or(|c| c.services != set.services);
                            *current = Some(set);
                            changed
                        });
                    }
                    Some(Err(e)) => break Some(e),
                    None => break None,
                }
            }
        };
        drop(stream);
        let delay = options.reconnect_backoff().delay(attempt.saturating_add(1));
        attempt = attempt.saturating_add(1);
        match &error {
            Some(e) => tracing::warn!(
                "service catalog watch failed ({e}); keeping the last set, reconnecting in {delay:?} (attempt {attempt})"
            ),
            None => tracing::warn!(
                "service catalog watch ended; keeping the last set, reconnecting in {delay:?} (attempt {attempt})"
            ),
        }
        let wake = Instant::now() + delay;
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
