//! Slow clients: a request head must arrive within `header_read_timeout` of its first byte
//! (slowloris), and a keep-alive connection idle for `keepalive_timeout` is closed.
//!
//! Hyper's own header timer cannot do this: it also runs while a keep-alive connection is
//! idle, so a slow attacker and a quiet browser look the same, and it closes the connection
//! without a word. This wrapper sits between hyper and the socket, knows which of the two it
//! is watching, and answers a slow head with the common error body (408), after the security
//! event that explains it is recorded. HTTP/2 connections (prior knowledge or ALPN) are left
//! to hyper's HTTP/2 keep-alive.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};

/// What the service tells the connection about its requests.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Requests handed to the service so far: a change means the head being timed was parsed.
    dispatched: AtomicUsize,
    /// Requests whose response body has not finished: no head deadline meanwhile.
    in_flight: AtomicUsize,
}

impl Watch {
    /// Marks a request as dispatched and in flight until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight; dropped when its response body ends (or is dropped).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it is done.
pub(crate) struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(crate) fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What to do when a head is too slow: record the event, then give the bytes to write.
pub(crate) type OnSlowHead =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    None,
    Idle,
    Head,
}

/// The socket as hyper sees it, with the two deadlines above.
pub(crate) struct Deadlines<S> {
    inner: S,
    watch: Arc<Watch>,
    head_timeout: Duration,
    idle_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    deadline: Deadline,
    seen_dispatched: usize,
    first_read: bool,
    http2: bool,
    on_slow_head: Option<OnSlowHead>,
    answering: Option<Pin<Box<dyn Future<Output = Vec<u8>> + Send>>>,
}

impl<S> Deadlines<S> {
    pub(crate) fn new(
        inner: S,
        watch: Arc<Watch>,
        head_timeout: Duration,
        idle_timeout: Duration,
        http2: bool,
        on_slow_head: OnSlowHead,
    ) -> Self {
        Self {
            inner,
            watch,
            head_timeout,
            idle_timeout,
            sleep: Box::pin(tokio::time::sleep(idle_timeout)),
            deadline: Deadline::None,
            seen_dispatched: 0,
            first_read: true,
            http2,
            on_slow_head: Some(on_slow_head),
            answering: None,
        }
    }

    fn arm(&mut self, deadline: Deadline) {
        let after = match deadline {
            Deadline::Head => self.head_timeout,
            Deadline::Idle | Deadline::None => self.idle_timeout,
        };
        self.sleep.as_mut().reset(Instant::now() + after);
        self.deadline = deadline;
    }
}

/// The HTTP/2 connection preface, in part: enough to tell it from any HTTP/1 request line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Deadlines<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.http2 {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if let Some(answering) = &mut this.answering {
            // The event is durable; now the answer, best effort, then the connection ends.
            let response = ready!(answering.as_mut().poll(cx));
            this.answering = None;
            let _ = Pin::new(&mut this.inner).poll_write(cx, &response);
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head too slow",
            )));
        }
        let dispatched = this.watch.dispatched.load(Ordering::Relaxed);
        if dispatched != this.seen_dispatched {
            this.seen_dispatched = dispatched;
            this.deadline = Deadline::None;
        }
        let in_flight = this.watch.in_flight.load(Ordering::Relaxed) > 0;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if this.first_read && !read.is_empty() {
                    this.first_read = false;
                    let prefix = read.len().min(H2_PREFACE.len());
                    this.http2 = read[..prefix] == H2_PREFACE[..prefix];
                }
                if !read.is_empty() && !in_flight && this.deadline != Deadline::Head {
                    this.arm(Deadline::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if in_flight {
                    this.deadline = Deadline::None;
                    return Poll::Pending;
                }
                if this.deadline == Deadline::None {
                    this.arm(Deadline::Idle);
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.deadline {
                    Deadline::Head => {
                        metrics::counter!("portcullis_header_read_timeouts_total").increment(1);
                        if let Some(on_slow_head) = this.on_slow_head.take() {
                            this.answering = Some(on_slow_head());
                            cx.waker().wake_by_ref();
                        }
                        Poll::Pending
                    }
                    // Idle too long: end of stream, which closes the connection quietly.
                    Deadline::Idle | Deadline::None => Poll::Ready(Ok(())),
                }
            }
            error => error,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
