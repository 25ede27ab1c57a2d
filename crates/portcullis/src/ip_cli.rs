//! `portcullis ip ...`: allow and block decisions on client networks from the command line.
//! Running gateways read them within their refresh interval (5 s); each change is recorded in
//! the audit log.

use std::process::ExitCode;
use std::sync::Arc;

use portcullis_core::{EventKind, SecurityEvent, SystemClock};
use portcullis_defence::ip::{Action, BanPolicy, IpDecisions, parse_network};
use portcullis_gateway::EventSink;
use portcullis_store::{AuditLog, Store};

use crate::config::duration;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum IpCommand {
    /// Block an address or CIDR network.
    Block {
        network: String,
        /// How long, e.g. 30m, 12h (default: until unblocked).
        #[arg(long = "for")]
        duration: Option<String>,
        /// Why, for the audit log and `ip list`.
        #[arg(long, default_value = "blocked by an operator")]
        reason: String,
    },
    /// End the blocks of exactly this address or network.
    Unblock { network: String },
    /// Allowlist a network: it is never blocked automatically.
    Allow {
        network: String,
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "allowlisted by an operator")]
        reason: String,
    },
    /// End the allowlisting of exactly this network.
    Unallow { network: String },
    /// List the decisions in force.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(store: Store, command: IpCommand) -> anyhow::Result<ExitCode> {
    let decisions = IpDecisions::load(
        store.clone(),
        Arc::new(SystemClock),
        BanPolicy::default(),
        Vec::new(),
    )
    .await?;
    let events = EventSink::new(Some(AuditLog::start(store)), Arc::new(SystemClock));
    let record = |kind: EventKind, details: serde_json::Value| {
        let event = SecurityEvent::new(kind, events.now()).with_details(details);
        let events = events.clone();
        async move { events.emit(event).await }
    };
    match command {
        IpCommand::List { json } => list(&decisions, json).await?,
        IpCommand::Block {
            network,
            duration,
            reason,
        } => {
            let made = decide(&decisions, Action::Block, &network, duration, &reason).await?;
            record(EventKind::IpBlocked, made).await;
        }
        IpCommand::Allow {
            network,
            duration,
            reason,
        } => {
            let made = decide(&decisions, Action::Allow, &network, duration, &reason).await?;
            record(EventKind::IpAllowed, made).await;
        }
        IpCommand::Unblock { network } => {
            let ended = end(&decisions, Action::Block, &network).await?;
            record(EventKind::IpDecisionEnded, ended).await;
        }
        IpCommand::Unallow { network } => {
            let ended = end(&decisions, Action::Allow, &network).await?;
            record(EventKind::IpDecisionEnded, ended).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Records an operator's decision; prints it; returns the event's details.
async fn decide(
    decisions: &IpDecisions,
    action: Action,
    network: &str,
    length: Option<String>,
    reason: &str,
) -> anyhow::Result<serde_json::Value> {
    let network = parse_network(network)?;
    let length = length.map(|d| duration("--for", &d)).transpose()?;
    let made = decisions.decide(network, action, length, reason).await?;
    let until = made.row.expires_at.map_or_else(
        || "until removed".to_owned(),
        |ms| format!("until {}", time_text(ms)),
    );
    println!("{} {} {until}", action.as_str(), made.row.network);
    Ok(serde_json::json!({
        "network": made.row.network,
        "action": action.as_str(),
        "origin": "manual",
        "reason": reason,
        "expires_at": made.row.expires_at,
    }))
}

/// Ends an operator's earlier decisions on exactly `network`; fails when there were none.
async fn end(
    decisions: &IpDecisions,
    action: Action,
    network: &str,
) -> anyhow::Result<serde_json::Value> {
    let network = parse_network(network)?;
    let ended = decisions.remove(network, action).await?;
    if ended == 0 {
        anyhow::bail!("no {} of {network} is in force", action.as_str());
    }
    println!("ended {ended} {} of {network}", action.as_str());
    Ok(
        serde_json::json!({"network": network.to_string(), "action": action.as_str(), "ended": ended}),
    )
}

async fn list(decisions: &IpDecisions, json: bool) -> anyhow::Result<()> {
    for row in decisions.list().await? {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "network": row.network, "action": row.action, "origin": row.origin,
                    "reason": row.reason, "created_at": row.created_at,
                    "expires_at": row.expires_at,
                })
            );
        } else {
            let until = row
                .expires_at
                .map_or_else(|| "until removed".to_owned(), time_text);
            println!(
                "{:<6} {:<40} {:<9} {:<26} {}",
                row.action, row.network, row.origin, until, row.reason
            );
        }
    }
    Ok(())
}

fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
