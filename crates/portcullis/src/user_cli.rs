//! `portcullis user ...`: account administration from the command line. Each change is
//! recorded in the audit log as the gateway would record it. Passwords are read from standard
//! input, never from arguments, which other users of the machine can read in `ps`.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use portcullis_core::{EventKind, SecurityEvent, SystemClock};
use portcullis_gateway::EventSink;
use portcullis_identity::{Account, AccountStatus, Identity, IdentityError, NewAccount};
use portcullis_store::{AccountRow, AuditLog, Store};
use serde::Deserialize;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account. The password, if any, is read from standard input.
    Add {
        email: String,
        /// Name shown to people (default: the e-mail's local part).
        #[arg(long, default_value = "")]
        name: String,
        /// A role; repeat for several (default: user).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Mark the e-mail address as verified.
        #[arg(long)]
        verified: bool,
    },
    /// Invite someone: an account with no password, and a link (printed, and mailed when
    /// `[mail]` is set up) with which they choose one, valid for 72 hours and once.
    Invite {
        email: String,
        /// Name shown to people (default: the e-mail's local part).
        #[arg(long, default_value = "")]
        name: String,
        /// A role; repeat for several (default: user).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one account and its sessions.
    Show {
        /// E-mail address or id.
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// List an account's sessions.
    Sessions {
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// End one session of an account (ids from `user sessions`).
    RevokeSession { account: String, session: String },
    /// Lock an account: it cannot log in and its sessions end.
    Lock { account: String },
    /// Unlock a locked account.
    Unlock { account: String },
    /// Disable an account for good: it cannot log in and its sessions end.
    Disable { account: String },
    /// Replace an account's roles; its sessions end, so new privileges take a new login.
    SetRole {
        account: String,
        #[arg(required = true)]
        roles: Vec<String>,
    },
    /// Set an account's password, read from standard input; its sessions end.
    SetPassword { account: String },
    /// Import accounts with their password hashes (bcrypt, Argon2, PBKDF2-SHA256) from a JSON
    /// array or a CSV file with a header row: email, password_hash, display_name, roles
    /// (separated by `;`), email_verified. Each hash is rehashed to Argon2id at its owner's
    /// next login.
    Import {
        file: PathBuf,
        /// `json` or `csv` (default: from the file name).
        #[arg(long)]
        format: Option<String>,
    },
}

pub(crate) async fn run(
    config: &Config,
    store: Store,
    command: UserCommand,
) -> anyhow::Result<ExitCode> {
    let identity = crate::identity_service(config, store.clone())?
        .ok_or_else(|| anyhow!("[identity] is disabled in this configuration"))?
        .with_mail(crate::mail_links(config)?);
    let events = EventSink::new(Some(AuditLog::start(store.clone())), Arc::new(SystemClock));
    let record = |kind: EventKind, user: &str, details: serde_json::Value| {
        let event = SecurityEvent::new(kind, events.now())
            .with_user(Some(user))
            .with_details(details);
        let events = events.clone();
        async move { events.emit(event).await }
    };
    let mut out = std::io::stdout().lock();
    match command {
        UserCommand::Add {
            email,
            name,
            roles,
            password_stdin,
            verified,
        } => {
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let roles = if roles.is_empty() {
                vec!["user".to_owned()]
            } else {
                roles
            };
            let account = identity
                .create_account(NewAccount {
                    email: &email,
                    display_name: &name,
                    password: password.as_deref(),
                    roles,
                    email_verified: verified,
                })
                .await
                .map_err(explain)?;
            record(
                EventKind::AccountCreated,
                &account.id,
                serde_json::json!({"via": "cli"}),
            )
            .await;
            writeln!(out, "{}", account.id)?;
        }
        UserCommand::Invite { email, name, roles } => {
            let roles = if roles.is_empty() {
                vec!["user".to_owned()]
            } else {
                roles
            };
            let (account, link) = identity
                .invite(NewAccount {
                    email: &email,
                    display_name: &name,
                    password: None,
                    roles,
                    email_verified: false,
                })
                .await
                .map_err(explain)?;
            record(
                EventKind::AccountCreated,
                &account.id,
                serde_json::json!({"via": "cli", "invited": true}),
            )
            .await;
            writeln!(out, "{}", account.id)?;
            writeln!(out, "invitation link (72 hours, once): {link}")?;
        }
        UserCommand::List { json } => {
            let mut offset = 0;
            loop {
                let page = identity.list_accounts(500, offset).await?;
                for account in &page {
                    if json {
                        writeln!(out, "{}", account_json(account))?;
                    } else {
                        writeln!(
                            out,
                            "{}  {:<32}  {:<8}  {}",
                            account.id,
                            account.email,
                            account.status.as_str(),
                            account.roles.join(",")
                        )?;
                    }
                }
                if page.len() < 500 {
                    break;
                }
                offset += 500;
            }
        }
        UserCommand::Show { account, json } => {
            let row = find(&identity, &account).await?;
            let sessions = identity.sessions(&row.id).await?;
            let mut value = account_json(&Account::from(&row));
            value["password_hash_algorithm"] = serde_json::Value::from(
                row.password_hash
                    .as_deref()
                    .map(hash_algorithm)
                    .unwrap_or("none"),
            );
            value["sessions"] = serde_json::Value::from(sessions.len());
            if json {
                writeln!(out, "{value}")?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            }
        }
        UserCommand::Sessions { account, json } => {
            let row = find(&identity, &account).await?;
            for session in identity.sessions(&row.id).await? {
                let value = serde_json::json!({
                    "id": session.id,
                    "created_at": session.created_at,
                    "last_seen_at": session.last_seen_at,
                    "ip": session.client_ip,
                    "user_agent": session.user_agent,
                });
                if json {
                    writeln!(out, "{value}")?;
                } else {
                    writeln!(
                        out,
                        "{}  {:<15}  {}",
                        session.id,
                        session.client_ip.as_deref().unwrap_or("-"),
                        session.user_agent.as_deref().unwrap_or("-")
                    )?;
                }
            }
        }
        UserCommand::RevokeSession { account, session } => {
            let row = find(&identity, &account).await?;
            identity
                .revoke_session(&row.id, &session)
                .await
                .map_err(explain)?;
            record(
                EventKind::SessionRevoked,
                &row.id,
                serde_json::json!({"via": "cli", "reason": "revoked_by_admin", "count": 1}),
            )
            .await;
            writeln!(out, "session {session} of {} ended", row.email)?;
        }
        UserCommand::Lock { account } => {
            let row = find(&identity, &account).await?;
            identity.set_status(&row.id, AccountStatus::Locked).await?;
            record(
                EventKind::AccountLocked,
                &row.id,
                serde_json::json!({"via": "cli"}),
            )
            .await;
            writeln!(out, "locked {}", row.email)?;
        }
        UserCommand::Unlock { account } => {
            let row = find(&identity, &account).await?;
            identity.set_status(&row.id, AccountStatus::Active).await?;
            writeln!(out, "unlocked {}", row.email)?;
        }
        UserCommand::Disable { account } => {
            let row = find(&identity, &account).await?;
            identity
                .set_status(&row.id, AccountStatus::Disabled)
                .await?;
            record(
                EventKind::AccountLocked,
                &row.id,
                serde_json::json!({"via": "cli", "disabled": true}),
            )
            .await;
            writeln!(out, "disabled {}", row.email)?;
        }
        UserCommand::SetRole { account, roles } => {
            let row = find(&identity, &account).await?;
            identity
                .set_roles(&row.id, roles.clone())
                .await
                .map_err(explain)?;
            writeln!(out, "{}: {}", row.email, roles.join(","))?;
        }
        UserCommand::SetPassword { account } => {
            let row = find(&identity, &account).await?;
            let password = read_password()?;
            identity
                .set_password(&row, &password)
                .await
                .map_err(explain)?;
            identity.revoke_sessions(&row.id, None).await?;
            record(
                EventKind::PasswordChanged,
                &row.id,
                serde_json::json!({"via": "cli"}),
            )
            .await;
            writeln!(out, "password set for {}", row.email)?;
        }
        UserCommand::Import { file, format } => {
            let (imported, skipped) = import(&identity, &store, &file, format.as_deref()).await?;
            writeln!(out, "imported {imported} accounts, skipped {skipped}")?;
            if skipped > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn find(identity: &Identity, account: &str) -> anyhow::Result<AccountRow> {
    identity
        .find_account(account)
        .await?
        .ok_or_else(|| anyhow!("no account {account:?}"))
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

/// Errors worded for the operator (the policy message lists every failed rule).
fn explain(error: IdentityError) -> anyhow::Error {
    anyhow!("{error}")
}

fn account_json(account: &Account) -> serde_json::Value {
    serde_json::to_value(account).unwrap_or_default()
}

fn hash_algorithm(hash: &str) -> &'static str {
    match portcullis_identity::password::check_importable(hash) {
        Ok(portcullis_identity::password::HashFormat::Argon2) if hash.starts_with("$argon2id$") => {
            "argon2id"
        }
        Ok(portcullis_identity::password::HashFormat::Argon2) => "argon2",
        Ok(portcullis_identity::password::HashFormat::Bcrypt) => "bcrypt",
        Ok(portcullis_identity::password::HashFormat::Pbkdf2Sha256) => "pbkdf2-sha256",
        Err(_) => "unknown",
    }
}

/// One account of an import file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedAccount {
    email: String,
    password_hash: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    email_verified: bool,
}

/// Imports every account it can; a bad row is reported with its number and skipped.
async fn import(
    identity: &Identity,
    store: &Store,
    file: &std::path::Path,
    format: Option<&str>,
) -> anyhow::Result<(usize, usize)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let csv = match format {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => bail!("--format {other:?}: expected json or csv"),
        None => file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    let accounts = if csv {
        parse_csv(&text)?
    } else {
        serde_json::from_str::<Vec<ImportedAccount>>(&text)?
    };
    let (mut imported, mut skipped) = (0, 0);
    for (index, account) in accounts.into_iter().enumerate() {
        let row = index + 1;
        if let Err(error) = portcullis_identity::password::check_importable(&account.password_hash)
        {
            eprintln!("row {row}: {error}");
            skipped += 1;
            continue;
        }
        let roles = if account.roles.is_empty() {
            vec!["user".to_owned()]
        } else {
            account.roles
        };
        let created = identity
            .create_account(NewAccount {
                email: &account.email,
                display_name: &account.display_name,
                password: None,
                roles,
                email_verified: account.email_verified,
            })
            .await;
        let created = match created {
            Ok(created) => created,
            Err(error) => {
                eprintln!("row {row}: {error}");
                skipped += 1;
                continue;
            }
        };
        // The imported hash is stored as it is; the first login verifies it and rehashes.
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        store
            .set_password_hash(&created.id, &account.password_hash, false, 0, now)
            .await?;
        imported += 1;
    }
    Ok((imported, skipped))
}

/// A CSV with a header row naming the columns. Fields may be double-quoted; roles are
/// separated by `;` within their field.
fn parse_csv(text: &str) -> anyhow::Result<Vec<ImportedAccount>> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header = lines.next().ok_or_else(|| anyhow!("empty CSV"))?;
    let columns: Vec<String> = split_csv_line(header)
        .into_iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let column = |name: &str| columns.iter().position(|c| c == name);
    let email = column("email").ok_or_else(|| anyhow!("CSV header lacks an email column"))?;
    let hash = column("password_hash")
        .ok_or_else(|| anyhow!("CSV header lacks a password_hash column"))?;
    let (name, roles, verified) = (
        column("display_name"),
        column("roles"),
        column("email_verified"),
    );
    let mut accounts = Vec::new();
    for line in lines {
        let fields = split_csv_line(line);
        let field = |index: Option<usize>| {
            index
                .and_then(|i| fields.get(i))
                .cloned()
                .unwrap_or_default()
        };
        accounts.push(ImportedAccount {
            email: field(Some(email)),
            password_hash: field(Some(hash)),
            display_name: field(name),
            roles: field(roles)
                .split(';')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            email_verified: matches!(field(verified).trim(), "true" | "1" | "yes"),
        });
    }
    Ok(accounts)
}

/// One CSV record (RFC 4180 quoting, within one line: hashes and e-mails hold no newlines).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_split_with_quotes() {
        assert_eq!(
            split_csv_line(r#"a@x.com,"$2b$12$a,b","Smith, ""Al""",admin;user"#),
            vec!["a@x.com", "$2b$12$a,b", "Smith, \"Al\"", "admin;user"]
        );
    }

    #[test]
    fn csv_files_need_their_columns() {
        let parsed = parse_csv("email,password_hash,roles\nA@x.com,$2b$04$x,admin; user\n")
            .unwrap_or_default();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].roles, vec!["admin", "user"]);
        assert!(parse_csv("mail,hash\n").is_err());
    }
}
