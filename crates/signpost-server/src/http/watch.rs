//! `GET /api/v1/services/{service}/watch`: a Server-Sent Events stream of a service's changes.
//!
//! The stream opens with a `reset` event carrying the full (filtered) list, then sends `add`,
//! `update` and `remove` events, each with the index of its change. A consumer that falls more
//! than [`crate::store::WATCH_BUFFER`] changes behind is sent a fresh `reset` instead of the
//! changes it missed, so a slow reader never holds up the agent or other watchers.
//!
//! Fan-out: what each watcher is sent depends on its filter, but an event's bytes depend only on
//! the change and the event's name. So each change's `add`, `update` and `remove` frames are
//! rendered once, by the first watcher that sends each, and shared as [`Bytes`] by all the others
//! ([`FrameCache`], which this layer owns: the store hands out changes, not renderings); a
//! watcher only decides which one it sends. The plain `reset` lists come from the same
//! per-index cache as listings ([`ListingCache`]).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use signpost_api::sse::{frame, KEEP_ALIVE as KEEP_ALIVE_FRAME};
use signpost_api::watch::{ADD, REMOVE, UPDATE};
use signpost_api::{InstanceChange, InstanceList};
use signpost_core::validate;
use signpost_core::{EventKind, Instance};
use tokio::sync::broadcast;

use super::cache::{FrameCache, ListingCache, FRAMES_PER_CHANGE};
use super::services::ListQuery;
use super::{ApiError, AppState};
use crate::service::{self, Change, Notice};

/// A comment is sent after this long without an event, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/services/{service}/watch`
pub async fn sse(
    State(agent): State<AppState>,
    Extension(caller): Extension<service::Caller>,
    Extension(cache): Extension<Arc<ListingCache>>,
    Extension(frames): Extension<Arc<FrameCache>>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let query = ListQuery::parse(raw.as_deref())?;
    // Subscribe before the first read of the state (the reset, on the stream's first poll).
    let changes = service::subscribe(&agent, &caller, &service)?;
    let feed = Feed {
        agent,
        cache,
        frames,
        service,
        changes,
        view: View {
            query,
            visible: HashSet::new(),
            baseline: 0,
        },
        opened: false,
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
    };
    // The stream is polled by the connection's own task: no task or queue per watcher between
    // the change and the socket. A client that leaves drops it.
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next().await?;
        Some((Ok::<_, Infallible>(frame), feed))
    });
    Ok((
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One stream's follower of one service, until the client leaves or the agent shuts down.
struct Feed {
    agent: AppState,
    /// Where the `reset` lists come from.
    cache: Arc<ListingCache>,
    /// Where the frames of changes come from.
    frames: Arc<FrameCache>,
    service: String,
    changes: broadcast::Receiver<Notice>,
    view: View,
    /// The opening reset has been sent.
    opened: bool,
    keep_alive: tokio::time::Interval,
}

impl Feed {
    /// The next bytes to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if !self.opened {
            self.opened = true;
            return Some(self.view.reset(&self.agent, &self.cache, &self.service));
        }
        loop {
            let notice = tokio::select! {
                _ = self.agent.closed() => return None,
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(KEEP_ALIVE_FRAME)),
                notice = self.changes.recv() => notice,
            };
            let frame = match notice {
                Ok(Notice::Change(change)) => match self.view.apply(&change, &self.frames) {
                    Some(frame) => frame,
                    None => continue,
                },
                Ok(Notice::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.view.reset(&self.agent, &self.cache, &self.service)
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            self.keep_alive.reset();
            return Some(frame);
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

/// The names of the events that carry one change, by their frame number in [`FrameCache`].
const NAMES: [&str; FRAMES_PER_CHANGE] = [ADD, UPDATE, REMOVE];

impl View {
    fn reset(&mut self, agent: &AppState, cache: &ListingCache, service: &str) -> Bytes {
        // The watch was authorized when it subscribed.
        let internal = service::Caller::internal();
        let (index, data) =
            service::with_instances(agent, &internal, service, |index, instances| {
                let instances: Vec<&Instance> =
                    instances.filter(|i| self.query.matches(i)).collect();
                self.visible = instances.iter().map(|i| i.id.clone()).collect();
                let index = index.max(1);
                // The same list a listing answers, so from the same cache.
                let data = cache.listing(service, &self.query, index, || {
                    let list = InstanceList { index, instances };
                    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
                });
                (index, data)
            });
        self.baseline = index;
        frame("reset", index, &data)
    }

    /// Turns a registry change into what this watcher should see, if anything: a frame from
    /// `frames`, rendered there once for every watcher that sends it.
    fn apply(&mut self, change: &Change, frames: &FrameCache) -> Option<Bytes> {
        let event = &change.event;
        if event.index <= self.baseline {
            return None;
        }
        let (instance, present) = match &event.kind {
            EventKind::Added(i) | EventKind::Replaced(i) | EventKind::StatusChanged(i) => {
                (i, self.query.matches(i))
            }
            EventKind::Removed(i) => (i, false),
            EventKind::DefinitionChanged => return None,
        };
        let was = self.visible.contains(&instance.id);
        let slot = match (was, present) {
            (false, true) => {
                self.visible.insert(instance.id.clone());
                0
            }
            (true, true) => 1,
            (true, false) => {
                self.visible.remove(&instance.id);
                2
            }
            (false, false) => return None,
        };
        Some(frames.frame(change.seq, slot, || {
            let data = serde_json::to_vec(&InstanceChange {
                index: event.index,
                instance,
            })
            .unwrap_or_default();
            frame(NAMES[slot], event.index, &data)
        }))
    }
}
