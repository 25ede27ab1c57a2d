//! The gateway's pages in a real browser (headless Chromium through ChromeDriver, spoken to in
//! W3C WebDriver's JSON over HTTP): a person logs in through the login form, and a browser
//! solves the proof-of-work challenge with the page's own script, under its CSP.
//!
//! `scripts/test-tools.sh` installs Chromium and ChromeDriver; outside CI the tests skip
//! without them and say so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Gateway, Upstream, send_json, session_app};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session, ended (and the driver killed) on drop.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// A session, or `None` (with a note) outside CI when Chromium is not installed.
    fn start(tag: &str) -> Option<Self> {
        if !std::path::Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {CHROMEDRIVER} is missing (scripts/test-tools.sh installs it)"
            );
            eprintln!("SKIPPED {tag}: install chromium and chromium-driver to run it");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Its own process group, so that dropping the browser ends Chromium as well, whatever
        // state the WebDriver session was left in.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "chromedriver never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
        };
        let created = browser.call(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run"],
                },
            }}}),
        );
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Some(browser)
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let mut stream = TcpStream::connect(self.addr).expect("connect chromedriver");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        // ChromeDriver keeps the connection open: read the head, then Content-Length bytes.
        let mut reply = Vec::new();
        let mut buf = [0u8; 8192];
        let body_at = loop {
            if let Some(at) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let read = stream.read(&mut buf).expect("read chromedriver");
            assert!(read > 0, "chromedriver closed mid-reply");
            reply.extend_from_slice(&buf[..read]);
        };
        let head = String::from_utf8_lossy(&reply[..body_at]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a Content-Length");
        while reply.len() < body_at + length {
            let read = stream.read(&mut buf).expect("read chromedriver");
            assert!(read > 0, "chromedriver closed mid-body");
            reply.extend_from_slice(&buf[..read]);
        }
        let json = &reply[body_at..body_at + length];
        let value: Value = serde_json::from_slice(json).unwrap_or_else(|_| {
            panic!(
                "not JSON from chromedriver: {}",
                String::from_utf8_lossy(json)
            )
        });
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.session_call("POST", "/url", &json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.session_call("GET", "/url", &Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn source(&self) -> String {
        self.session_call("GET", "/source", &Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, css: &str) -> String {
        let found = self.session_call(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            &json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.session_call("POST", &format!("/element/{element}/click"), &json!({}));
    }

    /// Waits until the page's source contains `needle`.
    fn wait_for_text(&self, needle: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let source = self.source();
            if source.contains(needle) {
                return source;
            }
            assert!(
                started.elapsed() < limit,
                "{needle:?} never showed at {}: {source}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.call(
                "DELETE",
                &format!("/session/{}", self.session),
                &Value::Null,
            );
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `localhost` rather than `127.0.0.1`: a secure context for WebCrypto and `Secure` cookies.
fn local(gateway: &Gateway, path: &str) -> String {
    format!("http://localhost:{}{path}", gateway.addr.port())
}

#[test]
fn a_person_logs_in_through_the_login_page() {
    let Some(browser) = Browser::start("browser login") else {
        return;
    };
    let (_upstream, gateway) = session_app("", "");
    let password = "velvet tractor orbits quietly";
    let body = format!(r#"{{"email":"pat@example.com","password":"{password}"}}"#);
    let origin = "Origin: http://app.test";
    let registered = send_json(gateway.addr, "POST", "/auth/api/register", &body, &[origin]);
    assert_eq!(registered.status, 202, "{registered:?}");

    // The protected page sends the browser to log in, and back afterwards.
    browser.goto(&local(&gateway, "/app/orders"));
    browser.wait_for_text("Log in", Duration::from_secs(10));
    assert!(
        browser.url().contains("/auth/login?next="),
        "{}",
        browser.url()
    );
    browser.type_into("#email", "pat@example.com");
    browser.type_into("#password", password);
    browser.click("button[type=submit]");
    let page = browser.wait_for_text("app path=/app/orders", Duration::from_secs(10));
    assert!(page.contains("auth=session"), "{page}");
}

#[test]
fn a_browser_solves_the_challenge_with_the_pages_own_script() {
    let Some(browser) = Browser::start("browser challenge") else {
        return;
    };
    let upstream = Upstream::start("app");
    let config = format!(
        "[bot]\ndifficulty = 12\n\
         [[route]]\npath = \"/shop\"\nupstream = \"{}\"\nbot = \"challenge\"\n",
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let started = Instant::now();
    browser.goto(&local(&gateway, "/shop/item?id=7"));
    // The script finds the nonce, posts it, and the browser comes back with its pass.
    browser.wait_for_text("app path=/shop/item?id=7", Duration::from_secs(20));
    eprintln!("challenge solved and passed in {:?}", started.elapsed());
    // The pass holds: the next page comes straight from the upstream.
    browser.goto(&local(&gateway, "/shop/cart"));
    let source = browser.wait_for_text("app path=/shop/cart", Duration::from_secs(5));
    assert!(!source.contains("pc-challenge"));
}

/// A person adds a passkey from the security page in a real browser, with Chromium's virtual
/// authenticator (WebDriver's WebAuthn extension) standing in for the platform's.
#[test]
fn a_person_adds_a_passkey_from_the_security_page() {
    let Some(browser) = Browser::start("browser passkey") else {
        return;
    };
    let authenticator = browser.session_call(
        "POST",
        "/webauthn/authenticator",
        &json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        }),
    );
    let authenticator = authenticator
        .as_str()
        .unwrap_or_else(|| panic!("no virtual authenticator: {authenticator}"))
        .to_owned();
    let (_upstream, gateway) = session_app("", "public_url = \"http://localhost\"\n");
    let password = "velvet tractor orbits quietly";
    let body = format!(r#"{{"email":"kai@example.com","password":"{password}"}}"#);
    let origin = "Origin: http://app.test";
    let registered = send_json(gateway.addr, "POST", "/auth/api/register", &body, &[origin]);
    assert_eq!(registered.status, 202, "{registered:?}");

    browser.goto(&local(&gateway, "/auth/security"));
    browser.wait_for_text("Log in", Duration::from_secs(10));
    browser.type_into("#email", "kai@example.com");
    browser.type_into("#password", password);
    browser.click("button[type=submit]");
    browser.wait_for_text("Add a passkey", Duration::from_secs(10));
    browser.session_call(
        "POST",
        &format!("/element/{}/clear", browser.element("#passkey-name")),
        &json!({}),
    );
    browser.type_into("#passkey-name", "Work laptop");
    browser.click("#add-passkey");
    let page = browser.wait_for_text("Work laptop", Duration::from_secs(15));
    assert!(
        page.contains("<p id=\"passkey-status\" role=\"status\"></p>"),
        "no error shown: {page}"
    );
    let credentials = browser.session_call(
        "GET",
        &format!("/webauthn/authenticator/{authenticator}/credentials"),
        &json!({}),
    );
    assert_eq!(
        credentials.as_array().map(Vec::len),
        Some(1),
        "one credential in the authenticator: {credentials}"
    );
}
