//! Bodies. Request bodies stream to the upstream through [`LimitedBody`], the one bounded reader:
//! it counts bytes, fails the stream once the route's limit is passed, and records whether the
//! client finished sending, so a timeout can be told apart as the client's (408) or the
//! upstream's (504).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Errors inside bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the gateway sends.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// The request body passed the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the route's limit")]
pub(crate) struct BodyTooLarge;

/// What became of a request body, shared between the body and the stage that sent it.
#[derive(Debug, Default)]
pub(crate) struct BodyProgress(AtomicU8);

// 0: still sending.
const FINISHED: u8 = 1;
const OVER_LIMIT: u8 = 2;

impl BodyProgress {
    pub(crate) fn finished(&self) -> bool {
        self.0.load(Ordering::Relaxed) == FINISHED
    }
    pub(crate) fn over_limit(&self) -> bool {
        self.0.load(Ordering::Relaxed) == OVER_LIMIT
    }
}

/// A request body capped at `limit` bytes.
pub(crate) struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    progress: Arc<BodyProgress>,
}

impl<B: HttpBody> LimitedBody<B> {
    pub(crate) fn new(inner: B, limit: u64) -> (Self, Arc<BodyProgress>) {
        let progress = Arc::new(BodyProgress::default());
        if inner.is_end_stream() {
            progress.0.store(FINISHED, Ordering::Relaxed);
        }
        let body = Self {
            inner,
            remaining: limit,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.progress.0.store(OVER_LIMIT, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.progress.0.store(FINISHED, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
