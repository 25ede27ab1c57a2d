//! The listeners: the public one (TCP or TLS, HTTP/1.1 and HTTP/2, header limits and timeouts,
//! a cap on concurrent connections) and the admin one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_core::{EventKind, Reject, RequestId, SecurityEvent};
use portcullis_store::Store;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::events::EventSink;
use crate::respond;
use crate::settings::Settings;
use crate::stack::{Connection, Gateway};
use crate::tls::{ReloadableTls, TlsError};

/// Hard cap on the header buffer; the configurable limits sit below it so that they, not this,
/// answer (with the common error body).
const HEADER_BUFFER_CAP: usize = 256 * 1024;
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one event per this interval for connections turned away, so a flood cannot turn the
/// audit log into its amplifier; the event counts the connections since the last one.
const OVERLOAD_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A configured header value is not a valid header value.
    #[error("invalid header value in configuration: {0}")]
    Header(#[from] http::Error),
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the public listener is bound.
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// Whether the public listener speaks TLS.
    pub tls: bool,
    public: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Running {
    /// Serves until one listener stops.
    pub async fn wait(self) {
        tokio::select! {
            _ = self.public => {}
            _ = self.admin => {}
        }
    }
}

/// Binds both listeners and starts serving.
pub async fn start(
    settings: Settings,
    events: EventSink,
    store: Option<Store>,
    metrics: PrometheusHandle,
) -> Result<Running, StartError> {
    let tls = settings.tls.clone().map(ReloadableTls::new).transpose()?;
    if let Some(tls) = &tls {
        tls.clone().reload_on_sighup();
    }
    let public = bind(settings.listen).await?;
    let admin_listener = bind(settings.admin_listen).await?;
    let public_addr = local_addr(&public, settings.listen)?;
    let admin_addr = local_addr(&admin_listener, settings.admin_listen)?;
    let builder = connection_builder(&settings);
    let max_connections = settings.max_connections;
    let gateway = Arc::new(Gateway::new(settings, events)?);
    let has_tls = tls.is_some();
    let public = tokio::spawn(serve_public(public, gateway, tls, builder, max_connections));
    let admin = Arc::new(Admin { metrics, store });
    let admin = tokio::spawn(serve_admin(admin_listener, admin));
    Ok(Running {
        public_addr,
        admin_addr,
        tls: has_tls,
        public,
        admin,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

fn connection_builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.limits.header_read_timeout)
        .max_buf_size(HEADER_BUFFER_CAP)
        .max_headers(settings.limits.max_headers.saturating_mul(2).max(100))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(HEADER_BUFFER_CAP as u32)
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

async fn serve_public(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<ReloadableTls>>,
    builder: auto::Builder<TokioExecutor>,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let overload = Arc::new(OverloadReporter::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let overload = overload.clone();
            tokio::spawn(async move { overload.turn_away(stream, peer, &gateway).await });
            continue;
        };
        let tls = tls.as_ref().map(|t| t.current());
        let builder = builder.clone();
        tokio::spawn(async move {
            let conn = Connection {
                peer,
                tls: tls.is_some(),
            };
            match tls {
                None => serve_connection(&builder, stream, gateway, conn).await,
                Some(config) => {
                    let handshake = TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => serve_connection(&builder, stream, gateway, conn).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    gateway: Arc<Gateway>,
    conn: Connection,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.handle(request, conn).await) }
    });
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        let timeout = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timeout {
            metrics::counter!("portcullis_header_read_timeouts_total").increment(1);
        }
        tracing::debug!(%error, peer = %conn.peer, "connection ended with an error");
    }
}

/// Answers connections over the limit with 503 and the common error body, and reports them.
#[derive(Default)]
struct OverloadReporter {
    turned_away: AtomicU64,
    last_event: std::sync::Mutex<Option<Instant>>,
}

impl OverloadReporter {
    async fn turn_away(&self, stream: TcpStream, peer: SocketAddr, gateway: &Gateway) {
        self.turned_away.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("portcullis_connections_refused_total").increment(1);
        let id = RequestId::generate();
        let report = match self.last_event.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|at| at.elapsed() >= OVERLOAD_EVENT_INTERVAL);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if report {
            let since = self.turned_away.swap(0, Ordering::Relaxed);
            let event = SecurityEvent::new(EventKind::ConnectionLimitReached, gateway.events.now())
                .with_request(&id, peer.ip())
                .with_details(serde_json::json!({ "connections_refused": since }));
            gateway.events.emit(event).await;
        }
        let detail = gateway.settings.error_detail;
        let service = service_fn(move |request: Request<Incoming>| {
            let wants_html = respond::wants_html(request.headers());
            let response = respond::error_response(Reject::Overloaded, &id, wants_html, detail, "");
            async move { Ok::<_, Infallible>(response) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(2));
        let _ = builder
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }
}

async fn serve_admin(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| admin.clone().handle(request));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
