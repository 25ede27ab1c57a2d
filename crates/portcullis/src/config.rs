//! Configuration: one TOML file, `PORTCULLIS_SECTION__KEY` environment overrides, command-line
//! flags, and the profile presets, in two stages (as ripgrep does): the raw layers are merged
//! and checked against the schema (unknown keys name the key and the line), then resolved once
//! into typed settings that the gateway reads and never re-parses.
//!
//! Precedence, highest first: flags, environment, file, profile preset, built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ipnet::IpNet;
use portcullis_gateway::{
    CorsSettings, ErrorDetail, HeaderSettings, IdentityHeaderStyle, IdentitySettings,
    LimitSettings, RouteAuth, RouteSettings, RouteWafSettings, Settings, TlsSettings,
    UpstreamSettings, WafSettings,
};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Environment variables that override keys start with this and use `__` between levels.
const ENV_PREFIX: &str = "PORTCULLIS_";

/// The security profile: a set of presets for the keys below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Profile {
    /// Local work: detailed errors, docs shown, WAF detecting only.
    #[default]
    Development,
    /// Pre-production: HTTPS required, generic errors, WAF blocking.
    Staging,
    /// Production: HTTPS with HSTS, docs hidden, generic errors, WAF blocking.
    Production,
}

/// WAF mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WafMode {
    Off,
    Detect,
    Block,
}

/// The file's schema. Every key is optional; a missing key takes its preset or default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// `development`, `staging` or `production`.
    pub(crate) profile: Option<Profile>,
    pub(crate) server: RawServer,
    pub(crate) limits: RawLimits,
    pub(crate) upstream: RawUpstream,
    pub(crate) headers: RawHeaders,
    pub(crate) storage: RawStorage,
    pub(crate) waf: RawWaf,
    pub(crate) identity: RawIdentity,
    pub(crate) state: RawState,
    pub(crate) mail: RawMail,
    pub(crate) rate_limit: crate::rate_limit_config::RawRateLimit,
    pub(crate) ids: crate::defence_config::RawIds,
    pub(crate) honeypot: crate::defence_config::RawHoneypot,
    pub(crate) bot: crate::defence_config::RawBot,
    pub(crate) alert: crate::defence_config::RawAlert,
    #[serde(rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub(crate) routes: Vec<RawRoute>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Public listener address.
    pub(crate) listen: Option<SocketAddr>,
    /// Admin listener address (`/metrics`, `/healthz`, `/readyz`).
    pub(crate) admin_listen: Option<SocketAddr>,
    /// Peers (CIDRs) whose `X-Forwarded-*` headers are believed.
    pub(crate) trusted_proxies: Option<Vec<IpNet>>,
    /// TLS certificate and key files.
    pub(crate) tls: Option<RawTls>,
    /// The server key, from the environment (`PORTCULLIS_SERVER__SECRET_KEY`); inline only in development.
    pub(crate) secret_key: Option<String>,
    /// A file holding the server key.
    pub(crate) secret_key_file: Option<PathBuf>,
    /// Where the embedded store and other state live.
    pub(crate) data_dir: Option<PathBuf>,
    /// Redirect plain HTTP to HTTPS (preset).
    pub(crate) https_required: Option<bool>,
    /// Send `Strict-Transport-Security` (preset).
    pub(crate) hsts: Option<bool>,
    /// `detailed` or `generic` error bodies (preset).
    pub(crate) error_detail: Option<String>,
    /// Answer 404 on API documentation paths (preset).
    pub(crate) hide_docs: Option<bool>,
    /// Documentation paths hidden when `hide_docs` is on.
    pub(crate) docs_paths: Option<Vec<String>>,
    /// Concurrent connections on the public listener.
    pub(crate) max_connections: Option<usize>,
    /// Worker threads for the public listener; default: one per CPU.
    pub(crate) workers: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) max_header_bytes: Option<usize>,
    pub(crate) max_headers: Option<usize>,
    pub(crate) max_uri_bytes: Option<usize>,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) header_read_timeout: Option<String>,
    pub(crate) keepalive_timeout: Option<String>,
    pub(crate) request_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) connect_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) max_idle_per_host: Option<usize>,
    /// Extra trusted roots (PEM) for `https://` upstreams.
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawHeaders {
    pub(crate) referrer_policy: Option<String>,
    pub(crate) permissions_policy: Option<String>,
    pub(crate) cross_origin_opener_policy: Option<String>,
    pub(crate) gateway_csp: Option<String>,
    pub(crate) hsts_value: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawStorage {
    /// `postgres://...`; the default is SQLite in the data dir.
    pub(crate) url: Option<String>,
    /// Permit SQLite in production (one instance only).
    pub(crate) allow_sqlite_in_production: Option<bool>,
    pub(crate) statement_timeout: Option<String>,
    pub(crate) acquire_timeout: Option<String>,
    pub(crate) max_connections: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawWaf {
    pub(crate) mode: Option<WafMode>,
    /// Rules up to this level count towards blocking (1–4).
    pub(crate) paranoia: Option<u8>,
    /// Rules up to this level run and are reported (shadow mode); at least `paranoia`.
    pub(crate) detection_paranoia: Option<u8>,
    /// Inbound anomaly score that blocks (5: one critical rule).
    pub(crate) threshold: Option<u32>,
    /// Most body bytes inspected.
    pub(crate) body_limit: Option<usize>,
    /// `reject` or `inspect_prefix`: what happens to a body beyond `body_limit`.
    pub(crate) over_limit: Option<OverLimitAction>,
    /// List matched rule ids in `X-Portcullis-Waf-Rules` (never in production).
    pub(crate) rule_header: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) exclusions: Vec<RawExclusion>,
}

/// `[mail]`: how verification, reset and unlock links are sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawMail {
    /// `smtp://host:25`, `smtp://host:587?tls=required` (STARTTLS) or `smtps://host:465`;
    /// without it, mail goes to the log. Put credentials in `PORTCULLIS_MAIL__URL`.
    pub(crate) url: Option<String>,
    /// Sender, e.g. `Portcullis <no-reply@example.com>`.
    pub(crate) from: Option<String>,
}

/// `[state]`: where counters that decide security questions live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawState {
    /// `redis://host:6379`; the default keeps state in this process.
    pub(crate) url: Option<String>,
    /// Prefix of every Redis key.
    pub(crate) key_prefix: Option<String>,
    /// Most keys held in process.
    pub(crate) max_local_keys: Option<usize>,
}

/// `[identity]`: accounts, passwords and sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawIdentity {
    /// Serve the identity API and authenticate routes (default true).
    pub(crate) enabled: Option<bool>,
    /// Path prefix of the identity API and pages.
    pub(crate) prefix: Option<String>,
    /// Public base URL of the gateway, for links in mail (`https://app.example.com`).
    pub(crate) public_url: Option<String>,
    /// `open`, `invite` or `off`.
    pub(crate) registration: Option<RegistrationMode>,
    pub(crate) require_verified_email: Option<bool>,
    pub(crate) password_min_length: Option<usize>,
    pub(crate) password_max_length: Option<usize>,
    /// Lowest zxcvbn score (0–4).
    pub(crate) password_min_strength: Option<u8>,
    /// Require lower, upper, digit and symbol (opt-in; NIST advises against it).
    pub(crate) password_composition: Option<bool>,
    /// Recent passwords that may not be reused.
    pub(crate) password_history: Option<usize>,
    pub(crate) session_idle_timeout: Option<String>,
    pub(crate) session_absolute_timeout: Option<String>,
    pub(crate) max_sessions: Option<u32>,
    /// `portcullis` (X-Portcullis-*) or `authelia` (Remote-*).
    pub(crate) header_style: Option<HeaderStyle>,
    /// Argon2id memory in KiB (OWASP: 19456).
    pub(crate) hash_memory_kib: Option<u32>,
    /// Argon2id iterations (OWASP: 2).
    pub(crate) hash_iterations: Option<u32>,
    /// Argon2id lanes (OWASP: 1).
    pub(crate) hash_parallelism: Option<u32>,
    /// Hashes computed at once.
    pub(crate) hash_threads: Option<usize>,
    /// Hashes waiting beyond those before logins get 503.
    pub(crate) hash_queue: Option<usize>,
    /// Login attempts per (account, address) before doubling waits.
    pub(crate) login_free_attempts: Option<u64>,
    /// Login attempts per address, across accounts, before doubling waits.
    pub(crate) login_ip_free_attempts: Option<u64>,
    /// Failed logins per account, across addresses, before logins need an extra proof.
    pub(crate) login_account_free_attempts: Option<u64>,
    /// Longest wait a throttled pair or address is given.
    pub(crate) login_max_wait: Option<String>,
    /// Counters are forgotten this long after the last attempt.
    pub(crate) login_window: Option<String>,
    /// `iss` of access tokens (default: `public_url`).
    pub(crate) token_issuer: Option<String>,
    /// `aud` of access tokens (default: `public_url`).
    pub(crate) token_audience: Option<String>,
    pub(crate) access_token_lifetime: Option<String>,
    pub(crate) refresh_token_lifetime: Option<String>,
    /// Prefix of API keys (`pc_`; the seed's clients use `lgas_`).
    pub(crate) api_key_prefix: Option<String>,
    /// How long a rotated API key keeps working.
    pub(crate) api_key_rotation_grace: Option<String>,
    /// Scopes users may put on their own keys through the API (admins may grant any).
    pub(crate) api_key_user_scopes: Option<Vec<String>>,
    /// Who must have a second factor: `optional`, `admins` or `all`.
    pub(crate) second_factor: Option<SecondFactorMode>,
    /// The service's name in authenticator apps.
    pub(crate) totp_issuer: Option<String>,
    /// How recent a second factor must be for a sensitive action.
    pub(crate) step_up_window: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RegistrationMode {
    Open,
    Invite,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HeaderStyle {
    Portcullis,
    Authelia,
}

/// Who must have a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SecondFactorMode {
    Optional,
    Admins,
    All,
}

/// A route's authentication requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    None,
    Session,
    Token,
    ApiKey,
    Any,
}

/// What happens to a body beyond the inspection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverLimitAction {
    Reject,
    InspectPrefix,
}

/// `{ rules = [941100], location = "body", field = "content*" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawExclusion {
    pub(crate) rules: Vec<u32>,
    pub(crate) location: Option<String>,
    pub(crate) field: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) path: String,
    pub(crate) upstream: Option<Upstreams>,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) csp: Option<String>,
    pub(crate) replace_upstream_errors: Option<bool>,
    pub(crate) secret: Option<bool>,
    pub(crate) cors: Option<RawCors>,
    /// The route's WAF mode, over `[waf] mode`.
    pub(crate) waf: Option<WafMode>,
    pub(crate) waf_body_limit: Option<usize>,
    pub(crate) waf_over_limit: Option<OverLimitAction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) waf_exclusions: Vec<RawExclusion>,
    /// `none`, `session`, `token`, `api_key` or `any`.
    pub(crate) auth: Option<AuthMode>,
    /// The caller must hold one of these roles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) roles: Vec<String>,
    /// The caller's token must carry all of these scopes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) scopes: Vec<String>,
    /// Sessions must have proved a second factor.
    pub(crate) mfa: Option<bool>,
    /// The route's rate limit, e.g. `10/min`.
    pub(crate) rate_limit: Option<String>,
    pub(crate) rate_limit_burst: Option<u32>,
    /// `ip`, `user`, `api_key` or `route`, or a list of them.
    pub(crate) rate_limit_by: Option<crate::rate_limit_config::RawRateBy>,
    /// Excess requests passed at once before later ones are delayed (nginx's `delay`).
    pub(crate) rate_limit_delay: Option<u32>,
    pub(crate) rate_limit_dry_run: Option<bool>,
    /// `off`, `heuristics`, `challenge` or `block`.
    pub(crate) bot: Option<BotModeRaw>,
    pub(crate) bot_difficulty: Option<u8>,
}

/// A route's bot defence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BotModeRaw {
    Off,
    Heuristics,
    Challenge,
    Block,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Upstreams {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawCors {
    pub(crate) origins: Vec<String>,
    pub(crate) credentials: bool,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) headers: Option<Vec<String>>,
    pub(crate) max_age: Option<String>,
}

/// Values the command line sets, above every other layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    pub(crate) profile: Option<Profile>,
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) upstream: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
}

/// The effective configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) profile: Profile,
    /// Every key with its effective value (for `config show` and `config check`).
    pub(crate) effective: RawConfig,
    /// Keys present in the file itself (to tell inline secrets from injected ones).
    pub(crate) file_table: Table,
    pub(crate) settings: Settings,
    pub(crate) data_dir: PathBuf,
    pub(crate) storage_url: Option<String>,
    pub(crate) secret_key: Option<Vec<u8>>,
    /// The identity service's settings, when identity is on.
    pub(crate) identity: Option<IdentityBuild>,
    /// The intrusion detection and the IP decisions.
    pub(crate) defence: crate::defence_config::DefenceBuild,
    /// Lifetimes of challenges and passes, in seconds.
    pub(crate) bot_lifetimes: (i64, i64),
    /// The alert webhook, when one is set.
    pub(crate) alert: Option<portcullis_gateway::AlertSettings>,
}

/// What `serve` and the `user` commands need to build the identity service.
#[derive(Debug, Clone)]
pub(crate) struct IdentityBuild {
    pub(crate) service: portcullis_identity::IdentityConfig,
    pub(crate) hash: portcullis_identity::password::HashParams,
    pub(crate) hash_threads: usize,
    pub(crate) hash_queue: usize,
    pub(crate) throttle: portcullis_identity::throttle::ThrottleConfig,
    /// `{public_url}{prefix}`, the base of links in mail.
    pub(crate) link_base: String,
    pub(crate) tokens: portcullis_identity::tokens::TokenConfig,
    pub(crate) api_keys: portcullis_identity::api_keys::ApiKeyConfig,
    pub(crate) totp_issuer: String,
    /// Where browsers reach the gateway: the WebAuthn origin, its host the relying party id.
    pub(crate) public_url: String,
}

/// Reads `file` (if any), the environment and the flags, and resolves them.
pub(crate) fn load(file: Option<&Path>, flags: &Flags) -> anyhow::Result<Config> {
    let (text, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (String::new(), "(no file)".to_owned()),
    };
    // Stage 1: the file alone, so errors carry its line and column.
    toml::from_str::<RawConfig>(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    let file_table: Table = toml::from_str(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    // Stage 2: environment overrides, each checked on its own so errors name the variable.
    let mut table = file_table.clone();
    for (name, value) in std::env::vars() {
        let Some(path) = env_key(&name) else { continue };
        let mut one = Table::new();
        set_path(&mut one, &path, parse_env_value(&value));
        Value::Table(one)
            .try_into::<RawConfig>()
            .map_err(|e| anyhow!("environment {name}: {e}"))?;
        set_path(&mut table, &path, parse_env_value(&value));
    }
    let mut raw = Value::Table(table)
        .try_into::<RawConfig>()
        .map_err(|e| anyhow!("{origin} with environment: {e}"))?;
    apply_flags(&mut raw, flags);
    resolve(raw, file_table)
}

/// `PORTCULLIS_SERVER__LISTEN` → `["server", "listen"]`; `PORTCULLIS_PROFILE` → `["profile"]`.
fn env_key(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if rest == "PROFILE" {
        return Some(vec!["profile".to_owned()]);
    }
    if !rest.contains("__") {
        return None;
    }
    Some(rest.split("__").map(str::to_ascii_lowercase).collect())
}

/// A value that parses as TOML (`true`, `5`, `["a"]`) is taken as such; anything else is a string.
fn parse_env_value(value: &str) -> Value {
    let probe = format!("v = {value}");
    toml::from_str::<Table>(&probe)
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_owned()))
}

fn set_path(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = table;
    for key in parents {
        let entry = cursor
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(next) = entry else { return };
        cursor = next;
    }
    cursor.insert(last.clone(), value);
}

fn apply_flags(raw: &mut RawConfig, flags: &Flags) {
    if let Some(profile) = flags.profile {
        raw.profile = Some(profile);
    }
    if let Some(listen) = flags.listen {
        raw.server.listen = Some(listen);
    }
    if let Some(admin) = flags.admin_listen {
        raw.server.admin_listen = Some(admin);
    }
    if let Some(dir) = &flags.data_dir {
        raw.server.data_dir = Some(dir.clone());
    }
    if let Some(upstream) = &flags.upstream {
        raw.routes = vec![RawRoute {
            name: Some("default".into()),
            path: "/".into(),
            upstream: Some(Upstreams::One(upstream.clone())),
            ..RawRoute::default()
        }];
    }
}

/// The presets of each profile (DESIGN.md).
struct Presets {
    https_required: bool,
    hsts: bool,
    error_detail: &'static str,
    hide_docs: bool,
    waf_mode: WafMode,
    password_min_length: usize,
    password_min_strength: u8,
    session_idle: &'static str,
    session_absolute: &'static str,
    require_verified_email: bool,
    registration: RegistrationMode,
    second_factor: SecondFactorMode,
    client_rate: &'static str,
}

fn presets(profile: Profile) -> Presets {
    match profile {
        Profile::Development => Presets {
            https_required: false,
            hsts: false,
            error_detail: "detailed",
            hide_docs: false,
            waf_mode: WafMode::Detect,
            password_min_length: 8,
            password_min_strength: 1,
            session_idle: "24h",
            session_absolute: "720h",
            require_verified_email: false,
            registration: RegistrationMode::Open,
            second_factor: SecondFactorMode::Optional,
            client_rate: "1000/min",
        },
        Profile::Staging => Presets {
            https_required: true,
            hsts: false,
            error_detail: "generic",
            hide_docs: false,
            waf_mode: WafMode::Block,
            password_min_length: 10,
            password_min_strength: 2,
            session_idle: "8h",
            session_absolute: "168h",
            require_verified_email: true,
            registration: RegistrationMode::Off,
            second_factor: SecondFactorMode::Optional,
            client_rate: "200/min",
        },
        Profile::Production => Presets {
            https_required: true,
            hsts: true,
            error_detail: "generic",
            hide_docs: true,
            waf_mode: WafMode::Block,
            password_min_length: 12,
            password_min_strength: 3,
            session_idle: "30m",
            session_absolute: "12h",
            require_verified_email: true,
            registration: RegistrationMode::Off,
            second_factor: SecondFactorMode::Admins,
            client_rate: "100/min",
        },
    }
}

/// Fills every key with its effective value, then builds the typed settings.
fn resolve(mut raw: RawConfig, file_table: Table) -> anyhow::Result<Config> {
    let profile = *raw.profile.get_or_insert(Profile::default());
    let preset = presets(profile);
    let s = &mut raw.server;
    let listen = *s
        .listen
        .get_or_insert(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let admin_listen = *s
        .admin_listen
        .get_or_insert(SocketAddr::from(([127, 0, 0, 1], 9090)));
    let trusted_proxies = s.trusted_proxies.get_or_insert_with(Vec::new).clone();
    let data_dir = s
        .data_dir
        .get_or_insert_with(|| PathBuf::from("portcullis-data"))
        .clone();
    let https_required = *s.https_required.get_or_insert(preset.https_required);
    let hsts = *s.hsts.get_or_insert(preset.hsts);
    let error_detail = match s
        .error_detail
        .get_or_insert_with(|| preset.error_detail.into())
        .as_str()
    {
        "detailed" => ErrorDetail::Detailed,
        "generic" => ErrorDetail::Generic,
        other => {
            bail!("server.error_detail: expected \"detailed\" or \"generic\", found {other:?}")
        }
    };
    let hide_docs = *s.hide_docs.get_or_insert(preset.hide_docs);
    let docs_paths = s
        .docs_paths
        .get_or_insert_with(|| vec!["/docs".into(), "/redoc".into(), "/openapi.json".into()])
        .clone();
    let max_connections = *s.max_connections.get_or_insert(10_000);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    // One core is left to the main runtime (acceptor, audit writer, admin listener): on two
    // cores shared with the load, one worker measured more requests per second and a p99 a
    // fifth of two workers' (bench/proxy, 2026-11-23).
    let workers = *s.workers.get_or_insert(cpus.saturating_sub(1).max(1));
    if workers == 0 {
        bail!("server.workers must be at least 1");
    }
    let tls = s.tls.as_ref().map(|t| TlsSettings {
        cert: t.cert.clone(),
        key: t.key.clone(),
    });
    let secret_key = match (&s.secret_key, &s.secret_key_file) {
        (Some(_), Some(_)) => {
            bail!("server.secret_key and server.secret_key_file are both set; keep one")
        }
        (Some(key), None) => Some(key.as_bytes().to_vec()),
        (None, Some(path)) => Some(
            std::fs::read(path)
                .with_context(|| format!("server.secret_key_file: reading {}", path.display()))?
                .trim_ascii()
                .to_vec(),
        ),
        (None, None) => None,
    };

    let l = &mut raw.limits;
    let limits = LimitSettings {
        max_header_bytes: *l.max_header_bytes.get_or_insert(32 * 1024),
        max_headers: *l.max_headers.get_or_insert(100),
        max_uri_bytes: *l.max_uri_bytes.get_or_insert(8 * 1024),
        max_body_bytes: *l.max_body_bytes.get_or_insert(10 * 1024 * 1024),
        header_read_timeout: duration(
            "limits.header_read_timeout",
            l.header_read_timeout.get_or_insert("10s".into()),
        )?,
        keepalive_timeout: duration(
            "limits.keepalive_timeout",
            l.keepalive_timeout.get_or_insert("75s".into()),
        )?,
        request_timeout: duration(
            "limits.request_timeout",
            l.request_timeout.get_or_insert("60s".into()),
        )?,
    };
    let u = &mut raw.upstream;
    let upstream = UpstreamSettings {
        connect_timeout: duration(
            "upstream.connect_timeout",
            u.connect_timeout.get_or_insert("5s".into()),
        )?,
        idle_timeout: duration(
            "upstream.idle_timeout",
            u.idle_timeout.get_or_insert("90s".into()),
        )?,
        max_idle_per_host: *u.max_idle_per_host.get_or_insert(256),
        ca_file: u.ca_file.clone(),
    };
    let h = &mut raw.headers;
    let headers = HeaderSettings {
        referrer_policy: h.referrer_policy.get_or_insert("strict-origin-when-cross-origin".into()).clone(),
        permissions_policy: h
            .permissions_policy
            .get_or_insert("camera=(), microphone=(), geolocation=(), payment=(), usb=()".into())
            .clone(),
        cross_origin_opener_policy: h.cross_origin_opener_policy.get_or_insert("same-origin".into()).clone(),
        gateway_csp: h
            .gateway_csp
            .get_or_insert(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
                    .into(),
            )
            .clone(),
        hsts_value: h.hsts_value.get_or_insert("max-age=63072000; includeSubDomains".into()).clone(),
    };
    let st = &mut raw.storage;
    st.allow_sqlite_in_production.get_or_insert(false);
    st.statement_timeout.get_or_insert("5s".into());
    st.acquire_timeout.get_or_insert("5s".into());
    st.max_connections.get_or_insert(16);
    let storage_url = st.url.clone();
    raw.mail
        .from
        .get_or_insert_with(|| "Portcullis <no-reply@localhost>".into());
    let state = &mut raw.state;
    state.key_prefix.get_or_insert_with(|| "portcullis:".into());
    state.max_local_keys.get_or_insert(1_000_000);
    let waf = resolve_waf(&mut raw.waf, &preset, profile)?;
    let rate_limits = crate::rate_limit_config::resolve(&mut raw.rate_limit, preset.client_rate)?;
    let defence = crate::defence_config::resolve_ids(&mut raw.ids)?;
    let honeypot_paths = crate::defence_config::resolve_honeypot(&mut raw.honeypot)?;
    let bot = crate::defence_config::resolve_bot(&mut raw.bot)?;
    let alert = crate::defence_config::resolve_alert(&mut raw.alert)?;
    let default_public_url = format!("http://{listen}");
    let (identity_settings, identity) =
        resolve_identity(&mut raw.identity, &preset, &default_public_url, !hide_docs)?;

    let mut routes = Vec::with_capacity(raw.routes.len());
    for (index, route) in raw.routes.iter_mut().enumerate() {
        let route = resolve_route(index, route, error_detail)?;
        if route.auth != RouteAuth::None && identity.is_none() {
            bail!("route {:?}: auth needs [identity] enabled", route.name);
        }
        routes.push(route);
    }
    let settings = Settings {
        listen,
        admin_listen,
        tls,
        trusted_proxies,
        https_required,
        hsts,
        error_detail,
        hidden_paths: if hide_docs { docs_paths } else { Vec::new() },
        honeypot_paths,
        max_connections,
        workers,
        limits,
        upstream,
        headers,
        waf,
        rate_limits,
        bot: bot.settings,
        routes,
        identity: identity_settings,
    };
    Ok(Config {
        profile,
        effective: raw,
        file_table,
        settings,
        data_dir,
        storage_url,
        secret_key,
        identity,
        defence,
        bot_lifetimes: (bot.challenge_secs, bot.pass_secs),
        alert,
    })
}

fn resolve_identity(
    i: &mut RawIdentity,
    preset: &Presets,
    default_public_url: &str,
    show_docs: bool,
) -> anyhow::Result<(Option<IdentitySettings>, Option<IdentityBuild>)> {
    use portcullis_identity::password::{HashParams, PasswordPolicy};
    if !*i.enabled.get_or_insert(true) {
        return Ok((None, None));
    }
    let prefix = i
        .prefix
        .get_or_insert_with(|| "/auth".into())
        .trim_end_matches('/')
        .to_owned();
    if !prefix.starts_with('/') || prefix.len() < 2 {
        bail!("identity.prefix must be a path like /auth");
    }
    let public_url = i
        .public_url
        .get_or_insert_with(|| default_public_url.to_owned())
        .trim_end_matches('/')
        .to_owned();
    if !(public_url.starts_with("https://") || public_url.starts_with("http://")) {
        bail!("identity.public_url must be an http:// or https:// URL");
    }
    let min_length = *i
        .password_min_length
        .get_or_insert(preset.password_min_length);
    let max_length = *i.password_max_length.get_or_insert(128);
    if !(8..=max_length).contains(&min_length) || max_length > 1024 {
        bail!(
            "identity.password_min_length must be at least 8 and at most password_max_length (at most 1024)"
        );
    }
    let min_strength = *i
        .password_min_strength
        .get_or_insert(preset.password_min_strength);
    if min_strength > 4 {
        bail!("identity.password_min_strength is a zxcvbn score, 0 to 4");
    }
    let policy = PasswordPolicy {
        min_length,
        max_length,
        min_strength,
        composition: *i.password_composition.get_or_insert(false),
        history: *i.password_history.get_or_insert(5),
    };
    let session_idle = duration(
        "identity.session_idle_timeout",
        i.session_idle_timeout
            .get_or_insert(preset.session_idle.into()),
    )?;
    let session_absolute = duration(
        "identity.session_absolute_timeout",
        i.session_absolute_timeout
            .get_or_insert(preset.session_absolute.into()),
    )?;
    let hash = HashParams {
        memory_kib: *i
            .hash_memory_kib
            .get_or_insert(HashParams::OWASP.memory_kib),
        iterations: *i
            .hash_iterations
            .get_or_insert(HashParams::OWASP.iterations),
        parallelism: *i
            .hash_parallelism
            .get_or_insert(HashParams::OWASP.parallelism),
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let service = portcullis_identity::IdentityConfig {
        registration: match i.registration.get_or_insert(preset.registration) {
            RegistrationMode::Open => portcullis_identity::Registration::Open,
            RegistrationMode::Invite => portcullis_identity::Registration::Invite,
            RegistrationMode::Off => portcullis_identity::Registration::Off,
        },
        policy,
        session_idle,
        session_absolute,
        max_sessions: *i.max_sessions.get_or_insert(10),
        require_verified_email: *i
            .require_verified_email
            .get_or_insert(preset.require_verified_email),
        step_up_window: duration(
            "identity.step_up_window",
            i.step_up_window.get_or_insert("10m".into()),
        )?,
    };
    let settings = IdentitySettings {
        prefix,
        cookie_name: "__Host-portcullis_session".into(),
        cookie_max_age: session_absolute,
        device_cookie_name: "__Host-portcullis_device".into(),
        device_cookie_max_age: Duration::from_secs(90 * 24 * 3600),
        header_style: match i.header_style.get_or_insert(HeaderStyle::Portcullis) {
            HeaderStyle::Portcullis => IdentityHeaderStyle::Portcullis,
            HeaderStyle::Authelia => IdentityHeaderStyle::Authelia,
        },
        max_body_bytes: 16 * 1024,
        openapi: show_docs,
        api_key_user_scopes: i.api_key_user_scopes.get_or_insert_with(Vec::new).clone(),
        second_factor: match i.second_factor.get_or_insert(preset.second_factor) {
            SecondFactorMode::Optional => portcullis_gateway::SecondFactorPolicy::Optional,
            SecondFactorMode::Admins => portcullis_gateway::SecondFactorPolicy::Admins,
            SecondFactorMode::All => portcullis_gateway::SecondFactorPolicy::All,
        },
    };
    let max_wait = duration(
        "identity.login_max_wait",
        i.login_max_wait.get_or_insert("15m".into()),
    )?;
    let window = duration(
        "identity.login_window",
        i.login_window.get_or_insert("1h".into()),
    )?;
    if window < max_wait {
        bail!("identity.login_window must be at least identity.login_max_wait");
    }
    let backoff = |free| portcullis_state::Backoff {
        free,
        base: Duration::from_secs(1),
        max: max_wait,
        window,
    };
    let throttle = portcullis_identity::throttle::ThrottleConfig {
        pair: backoff(*i.login_free_attempts.get_or_insert(5)),
        ip: backoff(*i.login_ip_free_attempts.get_or_insert(50)),
        account: portcullis_state::Backoff {
            base: Duration::ZERO,
            ..backoff(*i.login_account_free_attempts.get_or_insert(20))
        },
        device_lifetime: Duration::from_secs(90 * 24 * 3600),
    };
    let link_base = format!("{public_url}{}", settings.prefix);
    let access_lifetime = duration(
        "identity.access_token_lifetime",
        i.access_token_lifetime.get_or_insert("15m".into()),
    )?;
    let refresh_lifetime = duration(
        "identity.refresh_token_lifetime",
        i.refresh_token_lifetime.get_or_insert("168h".into()),
    )?;
    if access_lifetime.is_zero() || access_lifetime > Duration::from_secs(3600) {
        bail!("identity.access_token_lifetime must be more than 0 and at most 1h");
    }
    let tokens = portcullis_identity::tokens::TokenConfig {
        issuer: i
            .token_issuer
            .get_or_insert_with(|| public_url.clone())
            .clone(),
        audience: i
            .token_audience
            .get_or_insert_with(|| public_url.clone())
            .clone(),
        access_lifetime,
        refresh_lifetime,
        identity_lifetime: Duration::from_secs(60),
    };
    let api_key_prefix = i.api_key_prefix.get_or_insert("pc_".into()).clone();
    if !portcullis_identity::api_keys::valid_prefix(&api_key_prefix) {
        bail!(
            "identity.api_key_prefix: {api_key_prefix:?} is not 1 to 15 lowercase letters or digits and a final \"_\""
        );
    }
    let api_keys = portcullis_identity::api_keys::ApiKeyConfig {
        prefix: api_key_prefix,
        rotation_grace: duration(
            "identity.api_key_rotation_grace",
            i.api_key_rotation_grace.get_or_insert("24h".into()),
        )?,
        ..portcullis_identity::api_keys::ApiKeyConfig::default()
    };
    let totp_issuer = i.totp_issuer.get_or_insert("Portcullis".into()).clone();
    if totp_issuer.is_empty() || totp_issuer.contains(':') || totp_issuer.len() > 64 {
        bail!("identity.totp_issuer: 1 to 64 characters, without \":\"");
    }
    let build = IdentityBuild {
        public_url: public_url.clone(),
        totp_issuer,
        api_keys,
        tokens,
        link_base,
        throttle,
        service,
        hash,
        // Half the cores at most: a login flood must leave the proxy room to run.
        hash_threads: *i.hash_threads.get_or_insert((cpus / 2).max(1)),
        hash_queue: *i.hash_queue.get_or_insert(64),
    };
    Ok((Some(settings), Some(build)))
}

fn resolve_route(
    index: usize,
    route: &mut RawRoute,
    detail: ErrorDetail,
) -> anyhow::Result<RouteSettings> {
    let name = route
        .name
        .get_or_insert_with(|| format!("route{index}"))
        .clone();
    let at = format!("route {name:?}");
    if !route.path.starts_with('/') {
        bail!("{at}: path must start with /");
    }
    let upstreams = match route.upstream.as_ref() {
        Some(Upstreams::One(url)) => vec![url.clone()],
        Some(Upstreams::Many(urls)) => urls.clone(),
        None => bail!("{at}: upstream is missing"),
    };
    let mut uris = Vec::new();
    for url in &upstreams {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| anyhow!("{at}: upstream {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => bail!("{at}: upstream {url:?} must be an http:// or https:// URL"),
        }
        if uri.authority().is_none() || uri.path().len() > 1 {
            bail!("{at}: upstream {url:?} must be scheme://host:port with no path");
        }
        uris.push(uri);
    }
    let cors = match &mut route.cors {
        Some(c) => Some(CorsSettings {
            origins: c.origins.clone(),
            credentials: c.credentials,
            methods: c
                .methods
                .get_or_insert_with(|| {
                    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                        .map(String::from)
                        .to_vec()
                })
                .clone(),
            headers: c
                .headers
                .get_or_insert_with(|| ["Content-Type", "Authorization"].map(String::from).to_vec())
                .clone(),
            max_age: duration(
                &format!("{at}: cors.max_age"),
                c.max_age.get_or_insert("10m".into()),
            )?,
        }),
        None => None,
    };
    Ok(RouteSettings {
        name,
        host: route.host.clone(),
        path: route.path.clone(),
        upstreams: uris,
        max_body_bytes: route.max_body_bytes,
        csp: route.csp.clone(),
        replace_upstream_errors: *route
            .replace_upstream_errors
            .get_or_insert(detail == ErrorDetail::Generic),
        secret: *route.secret.get_or_insert(false),
        cors,
        waf: RouteWafSettings {
            mode: route.waf.map(WafMode::settings),
            body_limit: route.waf_body_limit,
            over_limit: route.waf_over_limit.map(OverLimitAction::settings),
            exclusions: route
                .waf_exclusions
                .iter()
                .enumerate()
                .map(|(index, raw)| exclusion(&format!("{at}: waf_exclusions[{index}]"), raw))
                .collect::<anyhow::Result<_>>()?,
        },
        auth: match route.auth.get_or_insert(AuthMode::None) {
            AuthMode::None => RouteAuth::None,
            AuthMode::Session => RouteAuth::Session,
            AuthMode::Any => RouteAuth::Any,
            AuthMode::Token => RouteAuth::Token,
            AuthMode::ApiKey => RouteAuth::ApiKey,
        },
        roles: route.roles.clone(),
        scopes: route.scopes.clone(),
        mfa: match (route.mfa, route.auth) {
            (Some(true), Some(AuthMode::Session | AuthMode::Any)) => true,
            (Some(true), _) => bail!(
                "{at}: mfa = true needs auth = \"session\" or \"any\": only sessions prove a second factor"
            ),
            _ => false,
        },
        bot: match route.bot.get_or_insert(BotModeRaw::Off) {
            BotModeRaw::Off => portcullis_gateway::BotMode::Off,
            _ if matches!(route.auth, Some(AuthMode::Token | AuthMode::ApiKey)) => {
                bail!(
                    "{at}: bot defence is for browser routes; this route authenticates machine clients"
                )
            }
            BotModeRaw::Heuristics => portcullis_gateway::BotMode::Heuristics,
            BotModeRaw::Challenge => portcullis_gateway::BotMode::Challenge,
            BotModeRaw::Block => portcullis_gateway::BotMode::Block,
        },
        bot_difficulty: match route.bot_difficulty {
            Some(bits) if bits > 28 => bail!("{at}: bot_difficulty {bits} is over 28 bits"),
            bits => bits,
        },
        rate_limit: crate::rate_limit_config::route(
            &at,
            &crate::rate_limit_config::RouteRateKeys {
                rate_limit: route.rate_limit.as_deref(),
                burst: route.rate_limit_burst,
                by: route.rate_limit_by.as_ref(),
                delay: route.rate_limit_delay,
                dry_run: route.rate_limit_dry_run,
            },
        )?,
    })
}

impl WafMode {
    fn settings(self) -> portcullis_gateway::WafMode {
        match self {
            WafMode::Off => portcullis_gateway::WafMode::Off,
            WafMode::Detect => portcullis_gateway::WafMode::Detect,
            WafMode::Block => portcullis_gateway::WafMode::Block,
        }
    }
}

impl OverLimitAction {
    fn settings(self) -> portcullis_gateway::OverLimit {
        match self {
            OverLimitAction::Reject => portcullis_gateway::OverLimit::Reject,
            OverLimitAction::InspectPrefix => portcullis_gateway::OverLimit::InspectPrefix,
        }
    }
}

fn resolve_waf(w: &mut RawWaf, preset: &Presets, profile: Profile) -> anyhow::Result<WafSettings> {
    let paranoia = *w.paranoia.get_or_insert(1);
    if !(1..=4).contains(&paranoia) {
        bail!("waf.paranoia must be 1 to 4, found {paranoia}");
    }
    let detection_paranoia = *w.detection_paranoia.get_or_insert(paranoia);
    if !(paranoia..=4).contains(&detection_paranoia) {
        bail!(
            "waf.detection_paranoia must be from waf.paranoia ({paranoia}) to 4, found {detection_paranoia}"
        );
    }
    let mut exclusions = Vec::new();
    for (index, raw) in w.exclusions.iter().enumerate() {
        exclusions.push(exclusion(&format!("waf.exclusions[{index}]"), raw)?);
    }
    Ok(WafSettings {
        mode: w.mode.get_or_insert(preset.waf_mode).settings(),
        engine: portcullis_waf::EngineConfig {
            paranoia,
            detection_paranoia,
            threshold: *w.threshold.get_or_insert(5),
            exclusions,
        },
        body_limit: *w.body_limit.get_or_insert(1024 * 1024),
        over_limit: w
            .over_limit
            .get_or_insert(OverLimitAction::Reject)
            .settings(),
        // Rule ids tell an attacker which payloads pass: never in production.
        rule_header: *w.rule_header.get_or_insert(profile == Profile::Development)
            && profile != Profile::Production,
    })
}

fn exclusion(at: &str, raw: &RawExclusion) -> anyhow::Result<portcullis_waf::Exclusion> {
    for id in &raw.rules {
        if portcullis_waf::detect::rule(*id).is_none() {
            bail!("{at}: no WAF rule has id {id} (`portcullis waf rules` lists them)");
        }
    }
    let location = match raw.location.as_deref() {
        Some(name) => Some(portcullis_waf::Location::parse(name).ok_or_else(|| {
            anyhow!("{at}: location {name:?} is not one of path, query, body, cookie, header")
        })?),
        None => None,
    };
    Ok(portcullis_waf::Exclusion {
        rule_ids: raw.rules.clone(),
        location,
        field: raw.field.clone(),
    })
}

/// `250ms`, `10s`, `5m`, `1h`.
pub(crate) fn duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| anyhow!("{key}: {text:?} is not a duration like 250ms, 10s, 5m, 1h or 90d"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        "d" => Duration::from_secs(number.saturating_mul(86_400)),
        _ => bail!("{key}: {text:?} is not a duration like 250ms, 10s, 5m, 1h or 90d"),
    };
    Ok(duration)
}

impl Config {
    /// The effective configuration as TOML, secrets redacted.
    pub(crate) fn show(&self) -> anyhow::Result<String> {
        let mut shown = self.effective.clone();
        if shown.server.secret_key.is_some() {
            shown.server.secret_key = Some("[redacted]".into());
        }
        if let Some(url) = &shown.storage.url {
            shown.storage.url = Some(redact_url_password(url));
        }
        if let Some(url) = &shown.mail.url {
            shown.mail.url = Some(redact_url_password(url));
        }
        if let Some(captcha) = &mut shown.bot.captcha {
            captcha.secret = "[redacted]".into();
        }
        if shown.alert.webhook.is_some() {
            // A webhook URL is its own credential.
            shown.alert.webhook = Some("[redacted]".into());
        }
        Ok(toml::to_string_pretty(&shown)?)
    }

    /// Unsafe settings for this profile, one line each; empty when it is safe.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.profile != Profile::Production {
            return problems;
        }
        let file_server = self.file_table.get("server").and_then(Value::as_table);
        if file_server.is_some_and(|s| s.contains_key("secret_key")) {
            problems.push("server.secret_key is inline in the file; set PORTCULLIS_SERVER__SECRET_KEY or server.secret_key_file".into());
        }
        match &self.secret_key {
            None => problems.push(
                "no server key: set PORTCULLIS_SERVER__SECRET_KEY or server.secret_key_file".into(),
            ),
            Some(key) if key.len() < 32 => problems.push(format!(
                "the server key is {} bytes; it must be at least 32",
                key.len()
            )),
            Some(_) => {}
        }
        let file_url = self
            .file_table
            .get("storage")
            .and_then(Value::as_table)
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str);
        if file_url.is_some_and(|url| redact_url_password(url) != url) {
            problems.push("storage.url holds a password inline in the file; set PORTCULLIS_STORAGE__URL instead".into());
        }
        let s = &self.settings;
        if s.tls.is_none() && s.trusted_proxies.is_empty() && !s.listen.ip().is_loopback() {
            problems.push(format!(
                "server.listen {} is plain HTTP with no TLS and no trusted proxy; set server.tls or server.trusted_proxies",
                s.listen
            ));
        }
        for route in &s.routes {
            if let Some(cors) = &route.cors
                && cors.credentials
                && cors.origins.iter().any(|o| o == "*")
            {
                problems.push(format!(
                    "route {:?}: CORS allows origin * with credentials",
                    route.name
                ));
            }
        }
        if self.effective.waf.mode == Some(WafMode::Off) {
            problems.push("waf.mode is off".into());
        }
        for route in &self.effective.routes {
            if route.waf == Some(WafMode::Off) {
                problems.push(format!(
                    "route {:?}: waf is off",
                    route.name.as_deref().unwrap_or("")
                ));
            }
        }
        if self.effective.waf.rule_header == Some(true) {
            problems.push("waf.rule_header is true: rule ids tell attackers what passes (it is ignored in production)".into());
        }
        if s.hidden_paths.is_empty() {
            problems.push("API docs are exposed: server.hide_docs is false".into());
        }
        if let Some(identity) = &self.identity {
            let owasp = portcullis_identity::password::HashParams::OWASP;
            if identity.hash.memory_kib < owasp.memory_kib
                || identity.hash.iterations < owasp.iterations
            {
                problems.push(format!(
                    "identity: Argon2id cost m={},t={} is below OWASP's m=19456,t=2",
                    identity.hash.memory_kib, identity.hash.iterations
                ));
            }
            if identity.service.policy.min_length < 12 {
                problems.push("identity.password_min_length is below 12".into());
            }
            if self.effective.mail.url.is_none() {
                problems.push(
                    "mail.url is unset: verification, reset and unlock links would only be logged"
                        .into(),
                );
            }
            if !identity.link_base.starts_with("https://") {
                problems.push(
                    "identity.public_url is not https://: links in mail would travel in clear"
                        .into(),
                );
            }
        }
        if self.storage_url.is_none()
            && self.effective.storage.allow_sqlite_in_production != Some(true)
        {
            problems.push("storage is SQLite; use PostgreSQL or set storage.allow_sqlite_in_production = true".into());
        }
        problems
    }
}

fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_key_and_the_line() {
        let text = "profile = \"production\"\n[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n";
        let error = toml::from_str::<RawConfig>(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("listne"), "{error}");
        assert!(error.contains("line 4"), "{error}");
    }

    #[test]
    fn env_names_map_to_key_paths() {
        assert_eq!(
            env_key("PORTCULLIS_SERVER__LISTEN"),
            Some(vec!["server".into(), "listen".into()])
        );
        assert_eq!(env_key("PORTCULLIS_PROFILE"), Some(vec!["profile".into()]));
        assert_eq!(env_key("PORTCULLIS_LOG"), None);
        assert_eq!(
            parse_env_value("[\"10.0.0.0/8\"]").as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            parse_env_value("127.0.0.1:80").as_str(),
            Some("127.0.0.1:80")
        );
    }

    #[test]
    fn durations_parse_and_reject_garbage() {
        assert_eq!(
            duration("k", "250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(duration("k", "5m").ok(), Some(Duration::from_secs(300)));
        assert!(duration("k", "5 minutes").is_err());
        assert!(duration("k", "s").is_err());
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url_password("postgres://u:hunter2@db/x"),
            "postgres://u:[redacted]@db/x"
        );
        assert_eq!(
            redact_url_password("postgres://u@db/x"),
            "postgres://u@db/x"
        );
    }
}
