//! `portcullis apikey ...`: API keys from the command line, written straight to the store.
//! Running gateways see a revocation or a rotation within a second (they poll the store for
//! changed keys); each change is recorded in the audit log.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use portcullis_core::{EventKind, SecurityEvent, SystemClock};
use portcullis_gateway::EventSink;
use portcullis_identity::api_keys::{ApiKey, KeyOwner, NewApiKey};
use portcullis_store::{AuditLog, Store};

use crate::config::{Config, duration};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ApiKeyCommand {
    /// Create a key and print it (shown this once).
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// A scope, e.g. customers:read; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The owning account (e-mail address or id).
        #[arg(long, conflicts_with = "service")]
        owner: Option<String>,
        /// The owning service account's name (the default owner: "default").
        #[arg(long)]
        service: Option<String>,
        /// Lifetime, e.g. 90d or 12h (default: until revoked).
        #[arg(long)]
        expires: Option<String>,
        /// A network the key may be used from (CIDR); repeat for several.
        #[arg(long = "allow-network")]
        networks: Vec<String>,
        /// Print `{"id": ..., "key": ...}`.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves).
    List {
        /// Only the keys of this account (e-mail address or id).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Replace a key with a new one; the old one works on for the grace period.
    Rotate {
        id: String,
        /// How long the old key keeps working, e.g. 1h (default: identity.api_key_rotation_grace).
        #[arg(long)]
        grace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: refused everywhere within a second.
    Revoke { id: String },
}

pub(crate) async fn run(
    config: &Config,
    store: Store,
    command: ApiKeyCommand,
) -> anyhow::Result<ExitCode> {
    let identity = crate::identity_service(config, store.clone())?
        .ok_or_else(|| anyhow!("[identity] is disabled in this configuration"))?;
    let keys = crate::api_key_service(config, store.clone())?;
    let events = EventSink::new(Some(AuditLog::start(store)), Arc::new(SystemClock));
    let record = |kind: EventKind, key: &ApiKey| {
        let event = SecurityEvent::new(kind, events.now())
            .with_user(key.account_id.as_deref())
            .with_key(Some(&key.id))
            .with_details(portcullis_gateway::api_key_details(key, "cli"));
        let events = events.clone();
        async move { events.emit(event).await }
    };
    let account_id = |owner: Option<String>| {
        let identity = identity.clone();
        async move {
            match owner {
                None => Ok::<_, anyhow::Error>(None),
                Some(owner) => match identity.find_account(&owner).await? {
                    Some(account) => Ok(Some(account.id)),
                    None => bail!("no account {owner:?}"),
                },
            }
        }
    };
    match command {
        ApiKeyCommand::Create {
            name,
            scopes,
            owner,
            service,
            expires,
            networks,
            json,
        } => {
            let owner = match account_id(owner).await? {
                Some(account) => KeyOwner::Account(account),
                None => KeyOwner::Service(service.unwrap_or_else(|| "default".into())),
            };
            let expires_in = expires
                .map(|text| duration("--expires", &text))
                .transpose()?;
            let networks = networks
                .iter()
                .map(|net| portcullis_defence::ip::parse_network(net))
                .collect::<Result<Vec<_>, _>>()?;
            let (key, secret) = keys
                .create(NewApiKey {
                    name,
                    owner,
                    scopes,
                    expires_in,
                    networks,
                })
                .await?;
            record(EventKind::ApiKeyCreated, &key).await;
            print_new(&key, &secret, json);
        }
        ApiKeyCommand::List { owner, json } => {
            let owner = account_id(owner).await?;
            let listed = keys.list(owner.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                for key in &listed {
                    let state = match (key.revoked_at, key.rotated_to.as_deref()) {
                        (Some(_), _) => "revoked".to_owned(),
                        (None, Some(next)) => format!("rotated to {next}"),
                        (None, None) => "active".to_owned(),
                    };
                    let owner = key
                        .owner_email
                        .clone()
                        .or_else(|| key.service.as_ref().map(|s| format!("service:{s}")))
                        .unwrap_or_default();
                    println!(
                        "{}  {}  {:?}  owner={}  scopes={}  {}",
                        key.id,
                        key.hint,
                        key.name,
                        owner,
                        key.scopes.join(","),
                        state
                    );
                }
            }
        }
        ApiKeyCommand::Rotate { id, grace, json } => {
            let grace = grace.map(|text| duration("--grace", &text)).transpose()?;
            let old = keys.get(&id).await?;
            let (key, secret) = keys.rotate(&id, grace).await?;
            record(EventKind::ApiKeyRotated, &keys.get(&old.id).await?).await;
            record(EventKind::ApiKeyCreated, &key).await;
            print_new(&key, &secret, json);
        }
        ApiKeyCommand::Revoke { id } => {
            let key = keys.revoke(&id).await?;
            record(EventKind::ApiKeyRevoked, &key).await;
            println!("revoked {}", key.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_new(key: &ApiKey, secret: &str, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "id": key.id, "key": secret }));
    } else {
        println!("{secret}");
        eprintln!(
            "id {}: store this key now; it is not shown again (only its hash is kept)",
            key.id
        );
    }
}
