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

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use signpost_api::sse::{frame, KEEP_ALIVE as KEEP_ALIVE_FRAME};
use signpost_api::watch::{ADD, REMOVE, UPDATE};
use signpost_api::{InstanceChange, InstanceList};
use signpost_core::validate;
use signpost_core::{EventKind, Instance};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

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
    let closing = agent.clone();
    let feed = Feed {
        closed: Box::pin(async move { closing.closed().await }),
        agent,
        cache,
        frames,
        service: service.into_boxed_str(),
        changes: BroadcastStream::new(changes),
        view: View {
            query,
            visible: Visible::default(),
            baseline: 0,
        },
        opened: false,
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
    };
    // The stream is polled by the connection's own task: no task or queue per watcher between
    // the change and the socket. A client that leaves drops it.
    Ok((
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(feed),
    )
        .into_response())
}

/// One stream's follower of one service, until the client leaves or the agent shuts down.
///
/// Held for as long as the watch is open, by every open watch: so it is a plain struct polled
/// by hand (a few hundred bytes and two small boxes) rather than an `async` state machine,
/// which would hold every await point's locals at once (several KiB per watcher).
struct Feed {
    agent: AppState,
    /// Where the `reset` lists come from.
    cache: Arc<ListingCache>,
    /// Where the frames of changes come from.
    frames: Arc<FrameCache>,
    /// The service followed.
    service: Box<str>,
    /// The service's changes, as the store publishes them.
    changes: BroadcastStream<Notice>,
    /// Ready once the agent shuts down: the stream ends then.
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    view: View,
    /// The opening reset has been sent.
    opened: bool,
    /// Fires after [`KEEP_ALIVE`] without a frame sent.
    keep_alive: tokio::time::Interval,
}

impl Stream for Feed {
    type Item = Result<Bytes, Infallible>;

    /// The next bytes to send; `None` ends the stream.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let feed = self.get_mut();
        if !feed.opened {
            feed.opened = true;
            let reset = feed.view.reset(&feed.agent, &feed.cache, &feed.service);
            return Poll::Ready(Some(Ok(reset)));
        }
        if feed.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        loop {
            let frame = match feed.changes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Notice::Change(change)))) => {
                    match feed.view.apply(&change, &feed.frames) {
                        Some(frame) => frame,
                        None => continue,
                    }
                }
                // Behind by more than the channel holds, or the whole state replaced: the
                // current state, from which the changes that follow apply.
                Poll::Ready(Some(Ok(Notice::Reset) | Err(BroadcastStreamRecvError::Lagged(_)))) => {
                    feed.view.reset(&feed.agent, &feed.cache, &feed.service)
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            };
            feed.keep_alive.reset();
            return Poll::Ready(Some(Ok(frame)));
        }
        match feed.keep_alive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE_FRAME)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The instances one watcher sees, by [`id_key`]: 8 bytes an instance rather than a copy of
/// every id, for each open watch of a large service.
type Visible = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// Keys instance ids for [`Visible`]: SipHash with this process's random keys, so ids cannot be
/// chosen to collide (two ids of one service colliding by chance, about one in 2^64 per pair,
/// would only turn an `add` into an `update` or the reverse).
fn id_key(id: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(id)
}

/// [`Visible`]'s hasher: its keys are hashes already.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so it still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What one watcher has been shown so far.
struct View {
    query: ListQuery,
    /// Ids of the instances the watcher currently sees.
    visible: Visible,
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
                self.visible = instances.iter().map(|i| id_key(&i.id)).collect();
                let index = index.max(1);
                // The same list a listing answers, so from the same cache.
                let data = cache.listing(service, &self.query, index, || {
                    let listed = instances.len();
                    let list = InstanceList { index, instances };
                    (
                        Bytes::from(serde_json::to_vec(&list).unwrap_or_default()),
                        listed,
                    )
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
        let key = id_key(&instance.id);
        let was = self.visible.contains(&key);
        let slot = match (was, present) {
            (false, true) => {
                self.visible.insert(key);
                0
            }
            (true, true) => 1,
            (true, false) => {
                self.visible.remove(&key);
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
