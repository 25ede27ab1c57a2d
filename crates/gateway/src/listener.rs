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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::admin_api::AdminApi;
use crate::auth::IdentityHandle;
use crate::events::EventSink;
use crate::respond;
use crate::settings::{ErrorDetail, Settings};
use crate::slow_client::{Deadlines, OnSlowHead, TrackedBody, Watch};
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
    /// Resolves when a worker thread ends.
    worker_exited: mpsc::Receiver<()>,
    admin: JoinHandle<()>,
}

impl Running {
    /// Serves until a worker or the admin listener stops.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.worker_exited.recv() => {}
            _ = self.admin => {}
        }
    }
}

/// What the gateway works with besides its settings; the binary builds them.
pub struct Services {
    /// Where security events go.
    pub events: EventSink,
    /// The store, for readiness.
    pub store: Option<Store>,
    /// The metrics recorder, rendered on `/metrics`.
    pub metrics: PrometheusHandle,
    /// The identity service, when identity is on.
    pub identity: Option<IdentityHandle>,
    /// Rate-limit buckets (in process or on Redis).
    pub state: portcullis_state::SharedState,
    /// Allow and block decisions on client networks.
    pub ip_decisions: Option<Arc<portcullis_defence::ip::IpDecisions>>,
    /// The bot defence's challenges and passes.
    pub challenges: Arc<portcullis_defence::challenge::Challenges>,
}

/// Binds both listeners and starts serving.
///
/// The public listener runs thread-per-core, as nginx does: each worker thread has its own
/// single-threaded runtime and its own upstream connection pool, so a request, its upstream
/// exchange and their wake-ups stay on one thread. A work-stealing runtime spent much of its
/// time moving wake-ups between threads here (futex wake-ups were the top of the profile).
/// One acceptor hands connections to the workers in turn: workers accepting from a shared
/// socket took them in bursts, and the one that took most set the p99.
pub async fn start(settings: Settings, services: Services) -> Result<Running, StartError> {
    let Services {
        events,
        store,
        metrics,
        identity,
        state,
        ip_decisions,
        challenges,
    } = services;
    let limiter = Arc::new(crate::rate_limit::Limiter::new(
        state.clone(),
        settings.rate_limits.ipv6_prefix,
    ));
    let tls = settings.tls.clone().map(ReloadableTls::new).transpose()?;
    if let Some(tls) = &tls {
        tls.clone().reload_on_sighup();
    }
    let public = bind(settings.listen).await?;
    let public_addr = local_addr(&public, settings.listen)?;
    let admin_listener = bind(settings.admin_listen).await?;
    let admin_addr = local_addr(&admin_listener, settings.admin_listen)?;
    let shared = Arc::new(Shared {
        builder: connection_builder(&settings),
        tls: tls.clone(),
    });
    let (exit_sender, worker_exited) = mpsc::channel(1);
    let mut workers = Vec::with_capacity(settings.workers.max(1));
    for index in 0..settings.workers.max(1) {
        // Each worker builds its own gateway: its own upstream pool and route cursors.
        let gateway = Gateway::new(
            settings.clone(),
            events.clone(),
            identity.clone(),
            limiter.clone(),
            ip_decisions.clone(),
            challenges.clone(),
        )?;
        let (handoff, connections) = mpsc::unbounded_channel();
        let shared = shared.clone();
        let exit = exit_sender.clone();
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || run_worker(connections, gateway, shared, exit))
            .map_err(|source| StartError::Bind {
                addr: settings.listen,
                source,
            })?;
        workers.push(handoff);
    }
    let admin_events = events.clone();
    let acceptor = Acceptor {
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        overload: Arc::new(OverloadReporter::default()),
        events,
        error_detail: settings.error_detail,
        workers,
    };
    tokio::spawn(acceptor.run(public));
    let admin = Arc::new(Admin {
        metrics,
        store,
        state,
        api: identity.map(|identity| AdminApi {
            identity,
            events: admin_events,
        }),
    });
    let admin = tokio::spawn(serve_admin(admin_listener, admin));
    Ok(Running {
        public_addr,
        admin_addr,
        tls: tls.is_some(),
        worker_exited,
        admin,
    })
}

/// An accepted connection on its way to a worker, with its place under the connection cap.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
}

/// Accepts public connections, applies the connection cap, and deals them out to the workers.
struct Acceptor {
    slots: Arc<Semaphore>,
    overload: Arc<OverloadReporter>,
    events: EventSink,
    error_detail: ErrorDetail,
    workers: Vec<mpsc::UnboundedSender<Accepted>>,
}

impl Acceptor {
    async fn run(self, listener: TcpListener) {
        let mut turn = 0usize;
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
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                let (overload, events, detail) = (
                    self.overload.clone(),
                    self.events.clone(),
                    self.error_detail,
                );
                tokio::spawn(
                    async move { overload.turn_away(stream, peer, &events, detail).await },
                );
                continue;
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            turn = turn.wrapping_add(1);
            let Some(worker) = self.workers.get(turn % self.workers.len()) else {
                return;
            };
            if worker.send(Accepted { stream, peer, slot }).is_err() {
                tracing::error!("a worker has stopped; no longer accepting");
                return;
            }
        }
    }
}

/// What all workers share: the HTTP settings and TLS.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    tls: Option<Arc<ReloadableTls>>,
}

fn run_worker(
    mut connections: mpsc::UnboundedReceiver<Accepted>,
    gateway: Gateway,
    shared: Arc<Shared>,
    exit: mpsc::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start a worker runtime");
            let _ = exit.try_send(());
            return;
        }
    };
    let gateway = Arc::new(gateway);
    runtime.block_on(async move {
        while let Some(accepted) = connections.recv().await {
            let Ok(stream) = TcpStream::from_std(accepted.stream) else {
                continue;
            };
            tokio::spawn(serve_public(
                stream,
                accepted.peer,
                accepted.slot,
                gateway.clone(),
                shared.clone(),
            ));
        }
    });
    let _ = exit.try_send(());
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
        // Head and keep-alive deadlines are kept by `slow_client`, which can tell them apart.
        .header_read_timeout(None)
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

/// One public connection: the TLS handshake if any, then HTTP until it closes.
async fn serve_public(
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    gateway: Arc<Gateway>,
    shared: Arc<Shared>,
) {
    let tls = shared.tls.as_ref().map(|t| t.current());
    let conn = Connection {
        peer,
        tls: tls.is_some(),
    };
    match tls {
        None => serve_connection(&shared.builder, stream, gateway, conn, false).await,
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_connection(&shared.builder, stream, gateway, conn, http2).await
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        }
    }
    drop(slot);
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    gateway: Arc<Gateway>,
    conn: Connection,
    http2: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &gateway.settings.limits;
    let (head_timeout, idle_timeout) = (limits.header_read_timeout, limits.keepalive_timeout);
    let events = gateway.events.clone();
    let client = conn.peer.ip();
    let on_slow_head: OnSlowHead = Box::new(move || {
        Box::pin(async move {
            let id = RequestId::generate();
            let event = SecurityEvent::new(EventKind::RequestTimeout, events.now())
                .with_request(&id, client)
                .with_details(
                    serde_json::json!({ "reason": "request headers not received in time" }),
                );
            events.emit(event).await;
            respond::raw_error_response(Reject::RequestTimeout, &id)
        })
    });
    let watch = Arc::new(Watch::default());
    let stream = Deadlines::new(
        stream,
        watch.clone(),
        head_timeout,
        idle_timeout,
        http2,
        on_slow_head,
    );
    let service = service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        let in_flight = watch.begin();
        async move {
            let response = gateway.handle(request, conn).await;
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_flight)))
        }
    });
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
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
    async fn turn_away(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        events: &EventSink,
        detail: ErrorDetail,
    ) {
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
            let event = SecurityEvent::new(EventKind::ConnectionLimitReached, events.now())
                .with_request(&id, peer.ip())
                .with_details(serde_json::json!({ "connections_refused": since }));
            events.emit(event).await;
        }
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
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| admin.clone().handle(request, peer.ip()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
