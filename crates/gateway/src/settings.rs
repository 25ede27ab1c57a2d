//! Typed, validated settings of the request path. The binary builds them once at start-up from
//! the file, the environment, the flags and the profile presets; the hot path only reads them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Everything the gateway needs to serve.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// TLS on the public listener.
    pub tls: Option<TlsSettings>,
    /// Peers whose `X-Forwarded-*` headers and request ids are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether plain-HTTP requests from non-loopback clients are redirected to HTTPS.
    pub https_required: bool,
    /// Whether `Strict-Transport-Security` is sent on secure responses.
    pub hsts: bool,
    /// What error bodies say.
    pub error_detail: ErrorDetail,
    /// Paths that answer 404 (API docs in production); empty to show them.
    pub hidden_paths: Vec<String>,
    /// Honeypot traps: a request for one answers 404 and records `honeypot_hit`.
    pub honeypot_paths: Vec<String>,
    /// Concurrent connections on the public listener, across all workers.
    pub max_connections: usize,
    /// Worker threads serving the public listener (one runtime and upstream pool each).
    pub workers: usize,
    /// Request limits.
    pub limits: LimitSettings,
    /// Upstream client.
    pub upstream: UpstreamSettings,
    /// Response security headers.
    pub headers: HeaderSettings,
    /// Request inspection.
    pub waf: WafSettings,
    /// Rate limits before routing.
    pub rate_limits: RateLimitSettings,
    /// Bot defence, for the routes that turn it on.
    pub bot: BotSettings,
    /// Routes, in file order.
    pub routes: Vec<RouteSettings>,
    /// The built-in identity API and session authentication; `None` when switched off.
    pub identity: Option<IdentitySettings>,
}

/// The identity endpoints and how sessions travel.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Path prefix of the identity pages and API (`/auth`), without a trailing slash.
    pub prefix: String,
    /// Session cookie name; `__Host-` so that it is Secure, host-only and Path=/.
    pub cookie_name: String,
    /// `Max-Age` of the session cookie (the absolute session timeout).
    pub cookie_max_age: Duration,
    /// Device cookie name: marks a browser that logged in to an account before.
    pub device_cookie_name: String,
    /// `Max-Age` of the device cookie.
    pub device_cookie_max_age: Duration,
    /// Which names the identity headers to the upstream carry.
    pub header_style: IdentityHeaderStyle,
    /// Largest accepted body of an identity API request.
    pub max_body_bytes: usize,
    /// Serve the OpenAPI document of the identity API (not in production).
    pub openapi: bool,
    /// Scopes a user may put on their own API keys (admins may grant any).
    pub api_key_user_scopes: Vec<String>,
    /// Who must have a second factor.
    pub second_factor: SecondFactorPolicy,
}

/// Who must have a second factor to reach the routes that need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactorPolicy {
    /// Offered to everyone, required only by routes with `mfa = true`.
    Optional,
    /// Also required of admins on routes that require the `admin` role: an admin without one
    /// is sent to enrol first.
    Admins,
    /// Required of every session, on every authenticated route.
    All,
}

/// Names of the identity headers sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityHeaderStyle {
    /// `X-Portcullis-User`, `-Email`, `-Name`, `-Roles`, `-Auth`.
    Portcullis,
    /// Authelia's `Remote-User`, `Remote-Email`, `Remote-Name`, `Remote-Groups`, so that
    /// Portcullis can replace Authelia in front of apps that read them.
    Authelia,
}

/// What a route requires of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteAuth {
    /// Nothing: anonymous requests pass (identity headers are still stripped).
    #[default]
    None,
    /// A live session (cookie).
    Session,
    /// A valid access token (`Authorization: Bearer`).
    Token,
    /// A valid API key (`X-API-Key`, or `Authorization: Bearer` with the key prefix).
    ApiKey,
    /// Any method available: an API key or a bearer token when the request carries one, else
    /// a session.
    Any,
}

/// What the WAF does with a request it scores as an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafMode {
    /// No inspection.
    Off,
    /// Inspect and record an event; never block.
    Detect,
    /// Inspect, record, and answer attacks with 403.
    Block,
}

/// What to do with the part of a body beyond the inspection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Refuse the request (413): nothing reaches the upstream uninspected.
    Reject,
    /// Inspect the first `body_limit` bytes and pass the rest unread.
    InspectPrefix,
}

/// The WAF stage, gateway-wide; routes override the mode, the body handling and exclusions.
#[derive(Debug, Clone)]
pub struct WafSettings {
    /// Off, detect or block.
    pub mode: WafMode,
    /// Paranoia levels, threshold and gateway-wide exclusions.
    pub engine: portcullis_waf::EngineConfig,
    /// Most body bytes inspected.
    pub body_limit: usize,
    /// What happens to a body larger than `body_limit`.
    pub over_limit: OverLimit,
    /// Add `X-Portcullis-Waf-Rules` to responses (development and test profiles only).
    pub rule_header: bool,
}

/// A route's WAF overrides.
#[derive(Debug, Clone, Default)]
pub struct RouteWafSettings {
    /// The route's mode (`waf = "detect"`), over the gateway's.
    pub mode: Option<WafMode>,
    /// The route's inspection limit.
    pub body_limit: Option<usize>,
    /// The route's action beyond the limit.
    pub over_limit: Option<OverLimit>,
    /// Added to the gateway-wide exclusions.
    pub exclusions: Vec<portcullis_waf::Exclusion>,
}

/// The limits every request passes before routing.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// The per-client limit (the profile's default); `None` when off.
    pub client: Option<RateLimit>,
    /// IPv6 clients are counted by their network of this prefix length.
    pub ipv6_prefix: u8,
}

/// The bot defence, gateway-wide.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// Zero bits the challenge asks for at weight 0 (each point of weight adds one).
    pub difficulty: u8,
    /// Zero bits a login to an account under distributed attack asks for instead of the
    /// mailed link.
    pub login_difficulty: u8,
    /// The pass cookie's name.
    pub pass_cookie: String,
    /// Verified crawlers' networks (published by their operators): never challenged.
    pub verified_networks: Vec<IpNet>,
    /// An external CAPTCHA in place of the proof-of-work.
    pub captcha: Option<crate::captcha::CaptchaSettings>,
}

/// What a route does about bots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BotMode {
    /// Nothing.
    #[default]
    Off,
    /// Weigh each request; challenge those that do not look like a browser.
    Heuristics,
    /// Challenge every browser without a pass.
    Challenge,
    /// Refuse known bots and tools outright.
    Block,
}

/// One rate limit.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// The GCRA rule.
    pub rule: portcullis_state::RateRule,
    /// Requests per window, for `RateLimit-Policy` (`q`).
    pub quota: u64,
    /// The window, for `RateLimit-Policy` (`w`).
    pub window: Duration,
    /// What the limit is counted by; empty or [`RateKey::Route`] alone: one bucket for all.
    pub by: Vec<RateKey>,
    /// Excess requests passed at once; later ones of a burst are delayed (nginx's `delay`).
    /// `burst` or more: none delayed (`nodelay`).
    pub undelayed: u32,
    /// Record what would be refused, refuse nothing.
    pub dry_run: bool,
}

/// A part of a rate-limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey {
    /// The client address (IPv6 by network).
    Ip,
    /// The authenticated user; the address when anonymous.
    User,
    /// The API key; the address when the request has none.
    ApiKey,
    /// The route as a whole.
    Route,
}

/// What error bodies say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDetail {
    /// Include the internal reason (development only).
    Detailed,
    /// Only the code, the public message and the request id.
    Generic,
}

/// Certificate and key files, PEM.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Request limits; each one answered with the common error body and a security event.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Sum of header names and values.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Length of the request target.
    pub max_uri_bytes: usize,
    /// Body size, unless a route sets its own.
    pub max_body_bytes: u64,
    /// Longest time from a request's first byte to the end of its headers (slowloris).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub keepalive_timeout: Duration,
    /// Longest time from the request's start to the upstream's response headers.
    pub request_timeout: Duration,
}

/// The pooled upstream client.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per upstream.
    pub max_idle_per_host: usize,
    /// Extra trusted roots (PEM) for `https://` upstreams, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// Security headers.
#[derive(Debug, Clone)]
pub struct HeaderSettings {
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `Permissions-Policy`.
    pub permissions_policy: String,
    /// `Cross-Origin-Opener-Policy`.
    pub cross_origin_opener_policy: String,
    /// `Content-Security-Policy` of the gateway's own responses.
    pub gateway_csp: String,
    /// `Strict-Transport-Security` value when HSTS is on.
    pub hsts_value: String,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Name in metrics and events.
    pub name: String,
    /// Host it applies to (`example.com` or `*.example.com`); any host when absent.
    pub host: Option<String>,
    /// Path prefix, matched on whole segments after normalization.
    pub path: String,
    /// Upstream base URLs (`http://host:port` or `https://host:port`), used in turn.
    pub upstreams: Vec<http::Uri>,
    /// Body limit of this route.
    pub max_body_bytes: Option<u64>,
    /// `Content-Security-Policy` set on this route's upstream responses.
    pub csp: Option<String>,
    /// Replace upstream 5xx bodies with the common error body.
    pub replace_upstream_errors: bool,
    /// Responses of this route carry secrets: never compress them (BREACH).
    pub secret: bool,
    /// CORS, when the route serves other origins.
    pub cors: Option<CorsSettings>,
    /// WAF overrides.
    pub waf: RouteWafSettings,
    /// Authentication the route requires.
    pub auth: RouteAuth,
    /// Roles of which the caller must hold at least one (empty: any authenticated caller).
    pub roles: Vec<String>,
    /// Scopes the caller's token must all carry (sessions carry none).
    pub scopes: Vec<String>,
    /// The caller must have proved a second factor (sensitive upstream routes).
    pub mfa: bool,
    /// The route's own rate limit, checked once the caller is known.
    pub rate_limit: Option<RateLimit>,
    /// Bot defence on this route (browser routes only).
    pub bot: BotMode,
    /// The challenge's difficulty on this route, over `[bot] difficulty`.
    pub bot_difficulty: Option<u8>,
}

/// CORS of one route, with explicit origins only.
#[derive(Debug, Clone)]
pub struct CorsSettings {
    /// Allowed origins, exactly as browsers send them (`https://app.example.com`).
    pub origins: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// Allowed methods in preflight.
    pub methods: Vec<String>,
    /// Allowed request headers in preflight.
    pub headers: Vec<String>,
    /// Preflight cache lifetime.
    pub max_age: Duration,
}
