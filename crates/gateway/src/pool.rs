//! Keep-alive HTTP/1.1 connections to the upstreams, kept per worker thread.
//!
//! Built on `hyper::client::conn::http1` rather than hyper-util's legacy client, whose pool is
//! one map behind a mutex, keyed by scheme and authority hashed with SipHash, and which boxes
//! and spawns a future per request to learn when a connection is free again: together a tenth
//! of the gateway's instructions per proxied request. Here each worker keeps its own idle
//! connections (no lock, no hash: a worker talks to a handful of upstreams), and a connection
//! goes back to its worker's pool when the response body that used it ends.
//!
//! Each connection runs as a task of its own. Polling it from the request's task instead (so
//! that an exchange is one task, not two) was measured and is slower: hyper's client signals
//! that it wants the next message or body chunk by waking whoever polled it, which then was the
//! downstream connection's whole future (hyper's server side, the gateway's stages and the
//! exchange), polled four times a request instead of twice (50,840 instructions per proxied
//! request against 47,125, bench/proxy/instructions.sh).
//!
//! What the legacy client did and this keeps:
//! - a request that a reused connection could not take (the upstream had closed it while it
//!   sat idle; Python servers do so after a few seconds) is sent again on a new connection,
//!   since none of it was written;
//! - at most `max_idle_per_host` idle connections are kept, and one idle for `idle_timeout` is
//!   closed (by its worker's next use of the upstream, or by the worker's sweeper within half
//!   that time again);
//! - TCP connect timeout, `TCP_NODELAY`, TCP keep-alive; TLS for `https://` upstreams.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thread_local::ThreadLocal;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::Body;
use crate::settings::UpstreamSettings;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream URL has no host")]
    NoHost,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: timed out")]
    ConnectTimeout,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("{0}")]
    Exchange(hyper::Error),
}

impl UpstreamError {
    /// The upstream could not be reached at all (as opposed to failing mid-exchange).
    pub(crate) fn is_connect(&self) -> bool {
        !matches!(self, Self::Exchange(_))
    }
}

/// The pools of every worker.
pub(crate) struct UpstreamPool {
    tls: TlsConnector,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    workers: ThreadLocal<RefCell<Vec<Idle>>>,
}

/// The idle connections of one worker to one upstream.
struct Idle {
    /// `scheme://authority` of the upstream.
    origin: Uri,
    /// Oldest first, each with the time it went idle.
    connections: VecDeque<(SendRequest<Body>, Instant)>,
}

impl Idle {
    /// Drops the connections idle for `timeout` or more: the oldest, at the front.
    fn expire(&mut self, now: Instant, timeout: Duration) {
        while let Some((_, since)) = self.connections.front()
            && now.duration_since(*since) >= timeout
        {
            self.connections.pop_front();
        }
    }
}

impl UpstreamPool {
    pub(crate) fn new(settings: &UpstreamSettings, tls: rustls::ClientConfig) -> Arc<Self> {
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            max_idle: settings.max_idle_per_host,
            workers: ThreadLocal::new(),
        })
    }

    /// Sends `request` (its URI in origin form) to the upstream at `origin`, on an idle
    /// connection of this worker when there is one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        origin: &Uri,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.checkout(origin) {
                Some(sender) => (sender, true),
                // Boxed: a TCP connect and TLS handshake make a large future, which inlined
                // made every request's future larger to move, for the few that connect.
                None => (Box::pin(self.connect(origin)).await?, false),
            };
            if reused && !sender.is_ready() {
                // Its last response has ended; the connection has yet to notice. Rarely
                // waited for; one that stays busy is not used.
                let ready = tokio::time::timeout(self.connect_timeout, sender.ready()).await;
                if !matches!(ready, Ok(Ok(()))) {
                    continue;
                }
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = PooledBody::new(body, sender, origin.clone(), Arc::clone(self));
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut error) => match error.take_message() {
                    // Nothing was written: a stale connection; again on another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(UpstreamError::Exchange(error.into_error())),
                },
            }
        }
    }

    fn idle_of_this_worker(self: &Arc<Self>) -> &RefCell<Vec<Idle>> {
        self.workers.get_or(|| {
            // This worker's first use: its sweeper closes connections idle past the timeout
            // even when no request comes along to find them.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(sweep(Arc::downgrade(self)));
            }
            RefCell::new(Vec::new())
        })
    }

    /// The most recently used live idle connection to `origin`, if any: the one least likely
    /// to have been closed by the upstream meanwhile.
    fn checkout(self: &Arc<Self>, origin: &Uri) -> Option<SendRequest<Body>> {
        let mut idle = self.idle_of_this_worker().borrow_mut();
        let idle = idle.iter_mut().find(|i| same_origin(&i.origin, origin))?;
        idle.expire(Instant::now(), self.idle_timeout);
        while let Some((sender, _)) = idle.connections.pop_back() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Puts a connection whose response has ended back into this worker's pool.
    fn checkin(self: &Arc<Self>, origin: Uri, sender: SendRequest<Body>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle_of_this_worker().borrow_mut();
        let position = match idle.iter().position(|i| same_origin(&i.origin, &origin)) {
            Some(position) => position,
            None => {
                idle.push(Idle {
                    origin,
                    connections: VecDeque::new(),
                });
                idle.len() - 1
            }
        };
        let idle = &mut idle[position];
        let now = Instant::now();
        idle.expire(now, self.idle_timeout);
        if idle.connections.len() >= self.max_idle {
            idle.connections.pop_front();
        }
        idle.connections.push_back((sender, now));
    }

    /// A new connection to `origin`.
    async fn connect(&self, origin: &Uri) -> Result<SendRequest<Body>, UpstreamError> {
        let host = origin.host().ok_or(UpstreamError::NoHost)?;
        let https = origin.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = origin.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `[::1]` is written bracketed in a URI, bare in a lookup.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::time::timeout(self.connect_timeout, tcp(name, port))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)??;
        // Probes an idle connection whose upstream vanished without closing it.
        let keepalive = socket2::TcpKeepalive::new().with_time(self.idle_timeout);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&keepalive)
            .map_err(UpstreamError::Connect)?;
        if !https {
            return handshake(stream).await;
        }
        let server = ServerName::try_from(name.to_owned())
            .map_err(|e| UpstreamError::Tls(std::io::Error::other(e)))?;
        let stream = tokio::time::timeout(self.connect_timeout, self.tls.connect(server, stream))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Tls)?;
        handshake(stream).await
    }
}

/// Starts HTTP/1.1 on `stream`, its driver spawned on this worker.
async fn handshake<T>(stream: T) -> Result<SendRequest<Body>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(drive(connection));
    Ok(sender)
}

/// Every half idle timeout, drops this worker's connections idle for the whole of it (a
/// dropped `SendRequest` closes its idle connection); ends with the pool.
async fn sweep(pool: Weak<UpstreamPool>) {
    loop {
        let Some(period) = pool.upgrade().map(|p| p.idle_timeout / 2) else {
            return;
        };
        tokio::time::sleep(period.max(Duration::from_millis(100))).await;
        let Some(pool) = pool.upgrade() else { return };
        if let Some(idle) = pool.workers.get() {
            let now = Instant::now();
            for upstream in idle.borrow_mut().iter_mut() {
                upstream.expire(now, pool.idle_timeout);
            }
        }
    }
}

/// Runs a connection until either side closes it.
async fn drive<T>(connection: http1::Connection<T, Body>)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "upstream connection ended");
    }
}

/// Connects to the first of `host`'s addresses that answers.
async fn tcp(host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
    let mut last = None;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(UpstreamError::Connect)?
        .collect();
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(UpstreamError::Connect(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
    })))
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme() && a.authority() == b.authority()
}

/// An upstream response body that returns its connection to the pool once it has ended.
pub(crate) struct PooledBody {
    inner: Incoming,
    /// The connection, until the body ends (back to the pool) or is dropped unfinished (the
    /// connection closes: what is left of the body is never read).
    connection: Option<(SendRequest<Body>, Uri, Arc<UpstreamPool>)>,
}

impl PooledBody {
    fn new(
        inner: Incoming,
        sender: SendRequest<Body>,
        origin: Uri,
        pool: Arc<UpstreamPool>,
    ) -> Self {
        let mut body = Self {
            inner,
            connection: Some((sender, origin, pool)),
        };
        // An empty body (a 204, a HEAD) may never be polled.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((sender, origin, pool)) = self.connection.take() {
            pool.checkin(origin, sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // An error ends the connection: it is not returned.
            Poll::Ready(Some(Err(_))) => self.connection = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
