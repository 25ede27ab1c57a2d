//! Test harness: the built binary as a child process, a small upstream, a raw HTTP/1.1 client
//! (so paths reach the gateway byte for byte, unnormalized), and a PostgreSQL database per test.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("portcullis-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Top-level keys for the production profile on the embedded store.
pub const PRODUCTION: &str =
    "profile = \"production\"\n[storage]\nallow_sqlite_in_production = true\n";

/// A config file: `head` (top-level keys and sections), then one route for `/` to `upstream`
/// with `route_keys` added to it.
pub fn catch_all(head: &str, upstream: &str, route_keys: &str) -> String {
    format!("{head}\n[[route]]\npath = \"/\"\nupstream = \"{upstream}\"\n{route_keys}\n")
}

/// An upstream named `app` and a gateway in front of it with one `/app` route behind a session:
/// `head` (sections before `[identity]`), then `[identity]` with test-only cheap hashing and
/// `identity_keys` added to it.
pub fn session_app(head: &str, identity_keys: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start("app");
    let config = format!(
        "{head}[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n{identity_keys}\
         [[route]]\npath = \"/app\"\nupstream = \"{}\"\nauth = \"session\"\n",
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    (upstream, gateway)
}

/// A running `portcullis serve`, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: TempDir,
    /// The one-time bootstrap token `serve` printed, when no admin existed.
    pub bootstrap: Option<String>,
}

impl Gateway {
    /// Starts `serve` with `config` as its file, on ephemeral ports, with its own data dir.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("gw");
        let file = dir.write("portcullis.toml", config);
        let mut command = Command::new(BIN);
        command
            .args(["serve", "-c"])
            .arg(&file)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.0.join("data"))
            .env("PORTCULLIS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn portcullis");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut admin, mut bootstrap) = (None, None, None);
        while addr.is_none() || admin.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().expect("wait");
                panic!("portcullis exited before listening: {status}");
            };
            let listening = line
                .strip_prefix("listening on http://")
                .or_else(|| line.strip_prefix("listening on https://"));
            if let Some(rest) = listening {
                addr = rest.parse().ok();
            } else if let Some(rest) = line.strip_prefix("admin on http://") {
                admin = rest.parse().ok();
            } else if let Some((_, rest)) = line.split_once("\"token\": \"") {
                bootstrap = rest.split('"').next().map(str::to_owned);
            }
        }
        Self {
            child,
            addr: addr.expect("addr"),
            admin: admin.expect("admin"),
            dir,
            bootstrap,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process and waits for it, so its store is closed.
    pub fn stop(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = TempDir(std::mem::take(&mut self.dir.0));
        std::mem::forget(self);
        dir
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut command = Command::new(BIN);
    command.args(args).env("PORTCULLIS_LOG", "error");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run portcullis");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status, text)
}

/// `Cookie: <session>` for the first cookie a reply sets (the session cookie of a login).
pub fn session_cookie(reply: &Reply) -> String {
    let cookie = reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {reply:?}"));
    format!("Cookie: {cookie}")
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the final blank line) and `body` as-is.
pub fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send head");
    let _ = stream.write_all(body);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse_reply(&bytes)
}

/// `method` `target` with a JSON body and extra header lines.
pub fn send_json(
    addr: SocketAddr,
    method: &str,
    target: &str,
    json: &str,
    headers: &[&str],
) -> Reply {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Length: {}",
        json.len()
    );
    for line in headers {
        head.push_str("\r\n");
        head.push_str(line);
    }
    raw(addr, &head, json.as_bytes())
}

/// GET `target` with extra header lines.
pub fn get(addr: SocketAddr, target: &str, headers: &[&str]) -> Reply {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: app.test");
    for line in headers {
        head.push_str("\r\n");
        head.push_str(line);
    }
    raw(addr, &head, b"")
}

fn parse_reply(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The payload of a chunked body, as bytes.
pub fn dechunk_bytes(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|&s| s > 0) else {
            break;
        };
        let start = end + 2;
        if body.len() < start + size {
            break;
        }
        out.extend_from_slice(&body[start..start + size]);
        body = body[start + size..]
            .strip_prefix(b"\r\n")
            .unwrap_or(&body[start + size..]);
    }
    out
}

fn dechunk(body: &str) -> String {
    String::from_utf8_lossy(&dechunk_bytes(body.as_bytes())).into_owned()
}

/// A small upstream on its own thread: answers `tag path=... xff=... rid=... original=...`, a JSON
/// list of 200 items on `/json...` (with a cookie when the path says so), a Python
/// traceback with 500 on `/boom`, a payment-manipulation report on `.../checkout`, and counts POST
/// bodies. On `/slow/MS` it waits MS milliseconds (at most a minute) before answering.
pub struct Upstream {
    pub addr: SocketAddr,
}

impl Upstream {
    pub fn start(tag: &'static str) -> Self {
        Self::serve(tag, None)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same upstream over TLS, with a fresh self-signed certificate for `localhost`;
    /// returns it and the certificate's PEM.
    pub fn start_tls(tag: &'static str) -> (Self, String) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let cert_pem = certified.cert.pem();
        let cert = certified.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        (Self::serve(tag, Some(acceptor)), cert_pem)
    }

    fn serve(tag: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |r| answer(tag, r));
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = match tls {
                            None => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Some(tls) => {
                                let Ok(stream) = tls.accept(stream).await else {
                                    return;
                                };
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                        };
                    });
                }
            });
        });
        Self { addr }
    }

    /// The TLS upstream's URL, by the name its certificate carries.
    pub fn tls_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

async fn answer(
    tag: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let summary = format!(
        "{tag} path={} xff={} proto={} rid={} original={} expect={} user={} email={} roles={} auth={} remote_user={} cookie={} scopes={} identity={} key_id={} api_key={} authorization={}",
        request.uri().path_and_query().map_or("", |pq| pq.as_str()),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
        header("x-request-id"),
        header("x-original-url"),
        header("expect"),
        header("x-portcullis-user"),
        header("x-portcullis-email"),
        header("x-portcullis-roles"),
        header("x-portcullis-auth"),
        header("remote-user"),
        header("cookie"),
        header("x-portcullis-scopes"),
        header("x-portcullis-identity"),
        header("x-portcullis-key-id"),
        header("x-api-key"),
        header("authorization"),
    );
    if request.uri().path().contains("/json") {
        let items: Vec<String> = (0..200)
            .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}}"))
            .collect();
        let mut response = Response::new(Full::new(Bytes::from(format!("[{}]", items.join(",")))));
        let headers = response.headers_mut();
        headers.insert("content-type", "application/json".parse().expect("value"));
        if request.uri().path().contains("cookie") {
            headers.insert(
                "set-cookie",
                "session=secret; HttpOnly".parse().expect("value"),
            );
        }
        return Ok(response);
    }
    if request.uri().path().ends_with("/checkout") {
        // The app caught a tampered price server-side, answers 400 and tells the gateway.
        let mut response = Response::new(Full::new(Bytes::from("price mismatch")));
        *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
        response.headers_mut().insert(
            "x-portcullis-report",
            "payment_manipulation_attempt".parse().expect("value"),
        );
        return Ok(response);
    }
    if let Some(wait) = request.uri().path().strip_prefix("/slow/") {
        let wait = Duration::from_millis(wait.parse().unwrap_or(0));
        tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
    }
    if request.uri().path() == "/boom" {
        let traceback = "Traceback (most recent call last):\n  File \"/srv/app/main.py\", line 42, in pay\n\
                         sqlalchemy.exc.ProgrammingError: SELECT * FROM users WHERE id = 1\n";
        let mut response = Response::new(Full::new(Bytes::from(traceback)));
        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        response
            .headers_mut()
            .insert("server", "uvicorn".parse().expect("value"));
        return Ok(response);
    }
    let mut received: u64 = 0;
    let mut body = request.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "{summary} received={received}"
    ))));
    let headers = response.headers_mut();
    headers.insert("server", "uvicorn/0.30.1".parse().expect("value"));
    headers.insert("x-powered-by", "FastAPI".parse().expect("value"));
    Ok(response)
}

/// A fresh PostgreSQL database for one test, or `None` (with a note) outside CI when
/// `PORTCULLIS_TEST_POSTGRES_URL` is not set. In CI a missing database fails the test.
pub async fn postgres_database(tag: &str) -> Option<String> {
    let Ok(base) = std::env::var("PORTCULLIS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PORTCULLIS_TEST_POSTGRES_URL is not set"
        );
        eprintln!("SKIPPED {tag}: set PORTCULLIS_TEST_POSTGRES_URL to run it against PostgreSQL");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("portcullis_{tag}_{}_{}", std::process::id(), rand_suffix());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    let create = format!("CREATE DATABASE {name}");
    sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(create))
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("url has a database");
    Some(format!("{prefix}/{name}"))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// The SQLite URL of a data dir's store.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("portcullis.db").display())
}

/// A real SMTP server on loopback (Python's aiosmtpd, installed by `scripts/test-tools.sh`)
/// that stores every message in a maildir; killed on drop.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    maildir: TempDir,
}

impl SmtpSink {
    /// Starts the sink, or `None` (with a note) outside CI when aiosmtpd is not installed.
    pub fn start() -> Option<Self> {
        let installed = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but aiosmtpd is missing (scripts/test-tools.sh installs it)"
            );
            eprintln!("SKIPPED: mail tests need aiosmtpd (scripts/test-tools.sh)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let maildir = TempDir::new("mail");
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.0.join("box"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    child,
                    port,
                    maildir,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not start");
    }

    /// `[mail]` keys that send to this sink.
    pub fn config(&self) -> String {
        format!(
            "[mail]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"Portcullis <no-reply@app.test>\"\n",
            self.port
        )
    }

    /// Every message received so far, as text, quoted-printable soft breaks and `=3D` undone.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.0.join("box").join("new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .map(|text| {
                text.replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=")
            })
            .collect()
    }

    /// Waits up to 10 s for a message to `to` whose text holds `needle`, and returns it.
    pub fn wait_for(&self, to: &str, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(message) = self
                .messages()
                .into_iter()
                .find(|m| m.contains(&format!("To: {to}")) && m.contains(needle))
            {
                return message;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no mail to {to} holding {needle:?}; got {:?}",
            self.messages()
        );
    }

    /// The token of the first `{base}/{purpose}?token=...` link in `message`.
    pub fn token(message: &str, purpose: &str) -> String {
        let text = message;
        let marker = format!("/{purpose}?token=");
        let start = text
            .find(&marker)
            .unwrap_or_else(|| panic!("no {purpose} link in {text}"))
            + marker.len();
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the page at `target` as a browser would, then submits its form to `action` with its
/// synchronizer token (from the page's CSRF cookie) and `fields`, form-encoded.
pub fn submit_page_form(
    addr: SocketAddr,
    target: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> Reply {
    let page = get(addr, target, &["Accept: text/html"]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("<script"), "{}", page.body);
    let csrf = page
        .headers
        .iter()
        .find_map(|(n, v)| {
            let value = v.strip_prefix("__Host-portcullis_csrf=")?;
            n.eq_ignore_ascii_case("set-cookie")
                .then(|| value.split(';').next().unwrap_or("").to_owned())
        })
        .expect("the page sets its CSRF cookie");
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let mut form = format!("csrf={csrf}");
    for (name, value) in fields {
        form.push_str(&format!("&{name}={}", encode(value)));
    }
    let head = format!(
        "POST {action} HTTP/1.1\r\nHost: app.test\r\nOrigin: http://app.test\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nCookie: __Host-portcullis_csrf={csrf}",
        form.len()
    );
    raw(addr, &head, form.as_bytes())
}

/// Stops `gateway` and returns the last 50 audit events of its store, one JSON line each.
pub fn audit_tail(gateway: Gateway) -> String {
    let dir = gateway.stop();
    let data = dir.0.join("data");
    let (status, tail) = run(
        &[
            "audit",
            "tail",
            "-n",
            "50",
            "--data-dir",
            data.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(status.success(), "{tail}");
    tail
}

/// `[state]` on the test Redis with keys of this test's own, or `None` outside CI without it.
pub fn redis_state(tag: &str) -> Option<String> {
    let Ok(url) = std::env::var("PORTCULLIS_TEST_REDIS_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PORTCULLIS_TEST_REDIS_URL is unset"
        );
        eprintln!("SKIPPED {tag}: set PORTCULLIS_TEST_REDIS_URL to run it against Redis");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Some(format!(
        "[state]\nurl = \"{url}\"\nkey_prefix = \"it:{tag}:{}:{nanos}:\"\n",
        std::process::id()
    ))
}

/// A stand-in for a third-party HTTP service that cannot be reached here (a webhook receiver,
/// a CAPTCHA provider): on its own thread, it keeps each request's body and answers with
/// `answer(n, body)` → (status line, JSON body) for the n-th request.
pub struct StandIn {
    pub url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StandIn {
    pub fn start(answer: impl Fn(usize, &str) -> (&'static str, String) + Send + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let body = read_request_body(&mut stream);
                kept.lock().expect("lock").push(body.clone());
                let (status, reply) = answer(n, &body);
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                        reply.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { url, bodies }
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

/// Reads one request's head, then its `Content-Length` bytes of body.
fn read_request_body(stream: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buf) {
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buf[..read]);
        let text = String::from_utf8_lossy(&request).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return body.to_owned();
            }
        }
    }
    String::new()
}

/// Does the work the challenge page's script does: a nonce whose SHA-256 with the challenge
/// (`challenge:nonce`) starts with `bits` zero bits.
pub fn solve_proof_of_work(challenge: &str, bits: u32) -> String {
    use sha2::{Digest as _, Sha256};
    (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| {
            let digest = Sha256::digest(format!("{challenge}:{nonce}").as_bytes());
            let mut zeros = 0;
            for byte in digest {
                zeros += byte.leading_zeros();
                if byte != 0 {
                    break;
                }
            }
            zeros >= bits
        })
        .expect("a nonce")
}
