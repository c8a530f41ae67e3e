//! The request-body deadline (`[limits] http_body_timeout`): a request body that has not
//! arrived in full within the deadline, counted from its request head, ends in an error, and
//! the request is answered 408 whatever its handler made of the error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use signpost_api::ErrorBody;
use tokio::time::{Instant, Sleep};

/// Why a body read ended early: it did not arrive within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes; `expired` records that it did.
pub struct TimedBody {
    /// The body as hyper reads it.
    inner: Incoming,
    /// When the body must be complete.
    deadline: Instant,
    /// The timer, armed at the first read (a body never read costs no timer).
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline, for the error.
    limit: Duration,
    /// Set when the deadline passed during a read: the response becomes a 408.
    expired: Arc<AtomicBool>,
}

impl TimedBody {
    /// `inner`, due within `limit` from now; `expired` turns true if it is not.
    pub fn new(inner: Incoming, limit: Duration, expired: Arc<AtomicBool>) -> Self {
        TimedBody {
            inner,
            deadline: Instant::now() + limit,
            timer: None,
            limit,
            expired,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout(this.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body did not arrive in time: 408 with a JSON body, and the
/// connection closed (what is left of the body is not worth reading).
pub fn timed_out(limit: Duration) -> Response {
    let body = ErrorBody {
        error: format!("the request body did not arrive within {limit:?}"),
        field: Some("body".to_string()),
    };
    let mut response = (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
