//! `GET /api/v1/services/{service}/watch`: a Server-Sent Events stream of a service's changes.
//!
//! The stream opens with a `reset` event carrying the full (filtered) list, then sends `add`,
//! `update` and `remove` events, each with the index of its change. A consumer that falls more
//! than [`crate::store::WATCH_BUFFER`] changes behind is sent a fresh `reset` instead of the
//! changes it missed, so a slow reader never holds up the agent or other watchers.

use std::collections::HashSet;
use std::convert::Infallible;

use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use signpost_core::validate;
use signpost_core::{EventKind, Instance, ServiceEvent};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::services::ListQuery;
use super::{ApiError, AppState};
use crate::store::Notice;

/// Events queued per stream between the feeder task and the socket.
const STREAM_QUEUE: usize = 64;

/// `GET /api/v1/services/{service}/watch`
pub async fn sse(
    State(agent): State<AppState>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let service = validate::service_name(&service)?;
    let query = ListQuery::parse(raw.as_deref())?;
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(feed(agent, service, query, tx));
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

/// Follows one service for one stream until the client leaves or the agent shuts down.
async fn feed(agent: AppState, service: String, query: ListQuery, tx: mpsc::Sender<SseEvent>) {
    let mut changes = agent.store.subscribe(&service);
    let mut view = View {
        query,
        visible: HashSet::new(),
        baseline: 0,
    };
    let reset = view.reset(&agent, &service);
    if tx.send(reset).await.is_err() {
        return;
    }
    loop {
        let notice = tokio::select! {
            _ = tx.closed() => return,
            _ = agent.closed() => return,
            notice = changes.recv() => notice,
        };
        let event = match notice {
            Ok(Notice::Change(change)) => match view.apply(&change) {
                Some(event) => event,
                None => continue,
            },
            Ok(Notice::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                view.reset(&agent, &service)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// What one watcher has been shown so far.
struct View {
    query: ListQuery,
    /// Ids of the instances the watcher currently sees.
    visible: HashSet<String>,
    /// Index of the last full list shown: changes at or below it are already in it. (Changes
    /// after it can share an index: a batch of writes commits as one entry.)
    baseline: u64,
}

impl View {
    fn reset(&mut self, agent: &AppState, service: &str) -> SseEvent {
        let state = agent.store.read();
        self.baseline = state.registry.service_index(service).max(1);
        let instances: Vec<&Instance> = state
            .registry
            .instances(service)
            .filter(|i| self.query.matches(i))
            .collect();
        self.visible = instances.iter().map(|i| i.id.clone()).collect();
        event(
            "reset",
            self.baseline,
            json!({ "index": self.baseline, "instances": instances }),
        )
    }

    /// Turns a registry change into what this watcher should see, if anything.
    fn apply(&mut self, change: &ServiceEvent) -> Option<SseEvent> {
        if change.index <= self.baseline {
            return None;
        }
        let (instance, present) = match &change.kind {
            EventKind::Added(i) | EventKind::Replaced(i) | EventKind::StatusChanged(i) => {
                (i, self.query.matches(i))
            }
            EventKind::Removed(i) => (i, false),
            EventKind::DefinitionChanged => return None,
        };
        let was = self.visible.contains(&instance.id);
        let name = match (was, present) {
            (false, true) => {
                self.visible.insert(instance.id.clone());
                "add"
            }
            (true, true) => "update",
            (true, false) => {
                self.visible.remove(&instance.id);
                "remove"
            }
            (false, false) => return None,
        };
        Some(event(
            name,
            change.index,
            json!({ "index": change.index, "instance": instance }),
        ))
    }
}

fn event(name: &str, index: u64, data: serde_json::Value) -> SseEvent {
    SseEvent::default()
        .event(name)
        .id(index.to_string())
        .data(data.to_string())
}
