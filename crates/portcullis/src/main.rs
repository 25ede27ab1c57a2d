//! The `portcullis` binary: the command line, configuration loading and the wiring of the
//! store, the audit log, metrics and the gateway. The only crate that uses `anyhow`.
#![forbid(unsafe_code)]

mod apikey_cli;
mod config;
mod defence_config;
mod ip_cli;
mod rate_limit_config;
mod user_cli;
mod waf_cli;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis_core::{EventKind, SecurityEvent, SystemClock};
use portcullis_gateway::EventSink;
use portcullis_store::{AuditLog, Store, StoreConfig};

use crate::config::{Config, Flags, Profile};

/// mimalloc rather than glibc malloc: a proxy allocates and frees many small buffers per
/// request; bench/proxy measures the difference in CPU per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portcullis: a security gateway in front of any web backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Configuration file (TOML). Without one, the development profile's embedded defaults.
    #[arg(short, long, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// Security profile, overriding the file.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Directory of the embedded store, overriding the file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Public listener address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Admin listener address.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
        /// Send everything to this upstream (replaces the file's routes).
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Validate or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply the store's migrations.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Read or verify the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Explain the WAF's verdict on a payload, or measure it on a labelled corpus.
    #[command(subcommand)]
    Waf(WafCommand),
    /// Rotate the signing key of access tokens; the old key stays in the JWKS until its last
    /// token has expired.
    RotateTokenKey {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Manage accounts.
    User {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: user_cli::UserCommand,
    },
    /// Create, list, rotate and revoke API keys.
    Apikey {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: apikey_cli::ApiKeyCommand,
    },
    /// Block and allowlist client addresses and networks.
    Ip {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: ip_cli::IpCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WafCommand {
    /// Explain the verdict on one payload: decoded forms, rules, fingerprints, score. Exits 1
    /// when the payload is an attack.
    Check {
        /// The value as the application receives it (after one form decoding for query and
        /// body arguments).
        payload: String,
        /// Where the payload sits: query, body, header, path or cookie.
        #[arg(long, default_value = "query")]
        location: String,
        #[command(flatten)]
        paranoia: waf_cli::Paranoia,
    },
    /// Detection and false-positive rates per family of a JSON-lines file of
    /// `{"payload": ..., "location": ..., "attack": true|false, "family": ...}`.
    Eval {
        file: std::path::PathBuf,
        #[command(flatten)]
        paranoia: waf_cli::Paranoia,
    },
    /// List every rule: id, detector, severity, paranoia level.
    Rules,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate; exit non-zero on errors and, in production, on unsafe settings.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the effective configuration, presets applied and secrets redacted.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the last events, one JSON object per line.
    Tail {
        #[command(flatten)]
        config: ConfigArgs,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
    },
    /// Check the hash chain; exit non-zero if a row was edited, inserted or deleted.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ConfigArgs {
    fn load(&self, extra: Flags) -> anyhow::Result<Config> {
        let flags = Flags {
            profile: self.profile,
            data_dir: self.data_dir.clone(),
            ..extra
        };
        config::load(self.config.as_deref(), &flags)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            upstream,
        } => {
            let flags = Flags {
                listen,
                admin_listen,
                upstream,
                ..Flags::default()
            };
            serve(config.load(flags)?).await
        }
        Command::Config(ConfigCommand::Check { config }) => {
            let config = config.load(Flags::default())?;
            let problems = config.problems();
            for problem in &problems {
                println!("unsafe: {problem}");
            }
            if problems.is_empty() {
                println!(
                    "ok: configuration is valid for the {:?} profile",
                    config.profile
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Config(ConfigCommand::Show { config }) => {
            print!("{}", config.load(Flags::default())?.show()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let store = open_store(&config.load(Flags::default())?).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Tail { config, lines }) => {
            let store = open_store(&config.load(Flags::default())?).await?;
            let mut out = std::io::stdout().lock();
            for row in store.audit_tail(lines.max(0)).await? {
                writeln!(out, "{}", serde_json::to_string(&row)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Waf(WafCommand::Check {
            payload,
            location,
            paranoia,
        }) => waf_cli::check(&payload, &location, paranoia),
        Command::Waf(WafCommand::Eval { file, paranoia }) => waf_cli::eval(&file, paranoia),
        Command::Waf(WafCommand::Rules) => waf_cli::rules(),
        Command::RotateTokenKey { config } => {
            let config = config.load(Flags::default())?;
            let store = open_store(&config).await?;
            if config.storage_url.is_none() {
                store.migrate().await?;
            }
            let tokens = token_service(&config, store).await?;
            let kid = tokens.rotate().await?;
            println!("new signing key {kid}; running instances pick it up on their next reload");
            Ok(ExitCode::SUCCESS)
        }
        Command::User { config, command } => {
            let config = config.load(Flags::default())?;
            let store = open_store(&config).await?;
            if config.storage_url.is_none() {
                store.migrate().await?;
            }
            user_cli::run(&config, store, command).await
        }
        Command::Apikey { config, command } => {
            let config = config.load(Flags::default())?;
            let store = open_store(&config).await?;
            if config.storage_url.is_none() {
                store.migrate().await?;
            }
            apikey_cli::run(&config, store, command).await
        }
        Command::Ip { config, command } => {
            let config = config.load(Flags::default())?;
            let store = open_store(&config).await?;
            if config.storage_url.is_none() {
                store.migrate().await?;
            }
            ip_cli::run(store, command).await
        }
        Command::Audit(AuditCommand::Verify { config, json }) => {
            let store = open_store(&config.load(Flags::default())?).await?;
            let report = store.verify_audit().await?;
            if json {
                let breaks: Vec<String> = report.breaks.iter().map(ToString::to_string).collect();
                let value =
                    serde_json::json!({"rows": report.rows, "head": report.head, "breaks": breaks});
                println!("{value}");
            } else {
                for problem in &report.breaks {
                    println!("broken: {problem}");
                }
                println!("{} rows, head {}", report.rows, report.head);
            }
            if report.breaks.is_empty() {
                println!("audit log intact");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("audit log TAMPERED");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The shared state: Redis when `[state] url` is set, else in this process.
async fn shared_state(config: &Config) -> anyhow::Result<portcullis_state::SharedState> {
    let state = &config.effective.state;
    match &state.url {
        Some(url) => {
            portcullis_state::SharedState::redis(url, state.key_prefix.as_deref().unwrap_or(""))
                .await
                .context("connecting to the shared state ([state] url)")
        }
        None => Ok(portcullis_state::SharedState::local(
            state.max_local_keys.unwrap_or(1_000_000),
        )),
    }
}

/// The access-token service: the key ring from the store, sealed under the server key.
async fn token_service(
    config: &Config,
    store: Store,
) -> anyhow::Result<portcullis_identity::tokens::Tokens> {
    let token_config = config
        .identity
        .as_ref()
        .map(|build| build.tokens.clone())
        .ok_or_else(|| anyhow::anyhow!("[identity] is disabled in this configuration"))?;
    let key = server_key(config)?;
    portcullis_identity::tokens::Tokens::load(store, token_config, &key, Arc::new(SystemClock))
        .await
        .context("loading the token signing keys")
}

/// The API keys, hashed under a pepper derived from the server key.
pub(crate) fn api_key_service(
    config: &Config,
    store: Store,
) -> anyhow::Result<portcullis_identity::api_keys::ApiKeys> {
    let keys = config
        .identity
        .as_ref()
        .map(|build| build.api_keys.clone())
        .ok_or_else(|| anyhow::anyhow!("[identity] is disabled in this configuration"))?;
    Ok(portcullis_identity::api_keys::ApiKeys::new(
        store,
        keys,
        &server_key(config)?,
        Arc::new(SystemClock),
    ))
}

/// Passkeys for the relying party at `identity.public_url` (its host is the RP id).
fn passkey_service(
    config: &Config,
    store: Store,
    rp_name: &str,
) -> anyhow::Result<portcullis_identity::passkeys::Passkeys> {
    let public_url = config
        .identity
        .as_ref()
        .map(|build| build.public_url.clone())
        .ok_or_else(|| anyhow::anyhow!("[identity] is disabled in this configuration"))?;
    let host = public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .ok_or_else(|| anyhow::anyhow!("identity.public_url {public_url:?} has no host"))?;
    portcullis_identity::passkeys::Passkeys::new(
        store,
        &host,
        &public_url,
        rp_name,
        Arc::new(SystemClock),
    )
    .context("setting up passkeys for identity.public_url")
}

/// The mailer and the base of the links it sends.
pub(crate) fn mail_links(config: &Config) -> anyhow::Result<portcullis_identity::MailLinks> {
    let mail = &config.effective.mail;
    let mailer = match &mail.url {
        Some(url) => {
            portcullis_identity::mail::Mailer::smtp(url, mail.from.as_deref().unwrap_or(""))?
        }
        None => portcullis_identity::mail::Mailer::Log,
    };
    let base = config
        .identity
        .as_ref()
        .map(|i| i.link_base.clone())
        .unwrap_or_default();
    Ok(portcullis_identity::MailLinks { mailer, base })
}

/// The server key; without one configured, a random key kept in the data dir (`server.key`,
/// mode 0600), so that device cookies and sealed signing keys survive a restart. `config
/// check` refuses production without a configured key.
fn server_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &config.secret_key {
        return Ok(key.clone());
    }
    let path = config.data_dir.join("server.key");
    if let Ok(key) = std::fs::read(&path) {
        return Ok(key.trim_ascii().to_vec());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let key = portcullis_identity::token::random_token();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(key.as_bytes())?;
    tracing::warn!(path = %path.display(), "no server key configured: generated one in the data dir");
    Ok(key.into_bytes())
}

/// The identity service over `store`, or `None` when `[identity]` is off.
pub(crate) fn identity_service(
    config: &Config,
    store: Store,
) -> anyhow::Result<Option<portcullis_identity::Identity>> {
    let Some(build) = &config.identity else {
        return Ok(None);
    };
    let hasher = portcullis_identity::password::PasswordHasher::new(
        build.hash,
        build.hash_threads,
        build.hash_queue,
    )
    .context("identity.hash_*: invalid Argon2id parameters")?;
    Ok(Some(portcullis_identity::Identity::new(
        store,
        hasher,
        build.service.clone(),
        Arc::new(SystemClock),
    )))
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let effective = &config.effective.storage;
    let mut store_config = match &config.storage_url {
        Some(url) => StoreConfig {
            url: url.clone(),
            ..StoreConfig::sqlite_in(Path::new("."))
        },
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
            StoreConfig::sqlite_in(&config.data_dir)
        }
    };
    if let Some(timeout) = &effective.statement_timeout {
        store_config.statement_timeout = config::duration("storage.statement_timeout", timeout)?;
    }
    if let Some(timeout) = &effective.acquire_timeout {
        store_config.acquire_timeout = config::duration("storage.acquire_timeout", timeout)?;
    }
    if let Some(max) = effective.max_connections {
        store_config.max_connections = max;
    }
    // The store's errors may name hosts; they go to the operator, not to clients.
    Store::connect(&store_config)
        .await
        .context("opening the store")
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let store = open_store(&config).await?;
    // SQLite is ours alone, so serve migrates it; a shared PostgreSQL is migrated by the operator.
    if config.storage_url.is_none() {
        store.migrate().await?;
    }
    let audit = AuditLog::start(store.clone());
    let events = EventSink::new(Some(audit), Arc::new(SystemClock));
    let profile = config.profile;
    let state = shared_state(&config).await?;
    let identity = match identity_service(&config, store.clone())? {
        Some(identity) => {
            let throttle = config
                .identity
                .as_ref()
                .map(|build| build.throttle.clone())
                .unwrap_or_default();
            let key = server_key(&config)?;
            let links = mail_links(&config)?;
            let tokens = token_service(&config, store.clone()).await?;
            let keys = api_key_service(&config, store.clone())?;
            let issuer = config
                .identity
                .as_ref()
                .map_or("Portcullis", |build| build.totp_issuer.as_str());
            let factors = portcullis_identity::second_factor::SecondFactors::new(
                store.clone(),
                &key,
                issuer,
                Arc::new(SystemClock),
            );
            let factors = factors.with_code_sender(Arc::new(
                portcullis_identity::codes::MailCodes::new(mail_links(&config)?.mailer),
            ));
            // WebAuthn needs a domain: browsers refuse passkeys on a bare IP address.
            let factors = match passkey_service(&config, store.clone(), issuer) {
                Ok(passkeys) => factors.with_passkeys(passkeys),
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "passkeys are off: identity.public_url needs a domain name (localhost will do)"
                    );
                    factors
                }
            };
            // Revocations made elsewhere (another instance, `portcullis apikey revoke`) reach
            // this instance's cache within a second; last uses are written in batches.
            keys.watch(Duration::from_millis(250), Duration::from_secs(5));
            // Another instance (or `rotate-token-key`) may rotate the key ring: read it again
            // every minute, well within the time a retired key keeps verifying.
            let reloading = tokens.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    if let Err(error) = reloading.reload().await {
                        tracing::error!(%error, "reloading the token signing keys failed");
                    }
                }
            });
            Some(
                identity
                    .with_throttle(portcullis_identity::throttle::Throttle::new(
                        state.clone(),
                        throttle,
                        &key,
                    ))
                    .with_mail(links)
                    .with_tokens(tokens)
                    .with_api_keys(keys)
                    .with_second_factors(factors),
            )
        }
        None => None,
    };
    // No admin yet: a one-time link lets a person create the first one.
    let needs_admin = match &identity {
        Some(identity) => identity.admin_count().await? == 0,
        None => false,
    };
    let handle = identity.map(portcullis_gateway::IdentityHandle::new);
    let bootstrap = needs_admin
        .then(|| {
            handle
                .as_ref()
                .map(portcullis_gateway::IdentityHandle::arm_bootstrap)
        })
        .flatten();
    let prefix = config
        .settings
        .identity
        .as_ref()
        .map_or_else(String::new, |i| i.prefix.clone());
    let ip_decisions = portcullis_defence::ip::IpDecisions::load(
        store.clone(),
        Arc::new(SystemClock),
        config.defence.bans,
        config.defence.allowlist.clone(),
    )
    .await
    .context("reading the IP decisions")?;
    ip_decisions.refresh_every(IP_DECISION_REFRESH);
    let (challenge_secs, pass_secs) = config.bot_lifetimes;
    let challenges = Arc::new(portcullis_defence::challenge::Challenges::new(
        &server_key(&config)?,
        challenge_secs,
        pass_secs,
    ));
    let events = match config.alert.clone() {
        Some(alert) => events.with_alerts(
            portcullis_gateway::Alerter::new(alert, &config.settings.upstream)
                .context("setting up the alert webhook")?,
        ),
        None => events,
    };
    // The intrusion detection records its decisions through a sink that does not feed it back.
    let events = match config.defence.ids.clone() {
        Some(rules) => {
            let recorder = events.clone();
            let record: portcullis_defence::ids::Recorder = Arc::new(move |event| {
                let recorder = recorder.clone();
                Box::pin(async move { recorder.emit(event).await })
            });
            let ids = portcullis_defence::ids::Ids::start(
                rules,
                state.clone(),
                ip_decisions.clone(),
                record,
            );
            events.with_ids(ids)
        }
        None => events,
    };
    let running = portcullis_gateway::start(
        config.settings,
        portcullis_gateway::Services {
            events: events.clone(),
            store: Some(store),
            metrics,
            identity: handle,
            state,
            ip_decisions: Some(ip_decisions),
            challenges,
        },
    )
    .await?;
    let scheme = if running.tls { "https" } else { "http" };
    println!("portcullis {profile:?} profile");
    println!("listening on {scheme}://{}", running.public_addr);
    if let Some(token) = bootstrap {
        println!(
            "no admin yet: create the first one, once, at {scheme}://{addr}{prefix}/bootstrap?token={token} \
             (or POST {prefix}/api/bootstrap {{\"token\": \"{token}\", \"email\": ..., \"password\": ...}})",
            addr = running.public_addr
        );
    }
    println!("admin on http://{}", running.admin_addr);
    std::io::stdout().flush()?;
    let started = SecurityEvent::new(EventKind::GatewayStarted, events.now()).with_details(
        serde_json::json!({
            "profile": format!("{profile:?}").to_lowercase(),
            "listen": running.public_addr.to_string(),
        }),
    );
    events.emit(started).await;
    tokio::select! {
        () = running.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = terminate() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// How soon a decision made elsewhere (another instance, `portcullis ip`) takes effect here.
const IP_DECISION_REFRESH: Duration = Duration::from_secs(5);

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
