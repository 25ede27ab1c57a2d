//! `[ids]` and `[honeypot]`: the intrusion detection's rules and bans, and the trap paths.

use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use portcullis_defence::ids::{Decision, IdsConfig, Rule, default_rules};
use portcullis_defence::ip::{BanPolicy, Origin};
use serde::{Deserialize, Serialize};

use crate::config::duration;

/// `[ids]`: leaky-bucket rules over security signals, each overflow a ban.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawIds {
    pub(crate) enabled: Option<bool>,
    /// The first ban; each repeat within `memory` doubles it.
    pub(crate) ban: Option<String>,
    pub(crate) max_ban: Option<String>,
    /// How long earlier bans count for the doubling.
    pub(crate) memory: Option<String>,
    /// Networks never banned automatically (default: loopback, so a local proxy missing from
    /// `trusted_proxies` cannot get every client banned at once).
    pub(crate) allowlist: Option<Vec<IpNet>>,
    /// Ship the default rules (CrowdSec's and fail2ban's thresholds) before `rule`s.
    pub(crate) default_rules: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) rule: Vec<RawIdsRule>,
}

/// `[[ids.rule]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdsRule {
    pub(crate) name: String,
    /// Signal names: event kinds, `not_found`, `forbidden`, `waf_sqli`, `waf_xss`,
    /// `waf_traversal`, `waf_command_injection`, `waf_sensitive_file`, upstream reports.
    pub(crate) on: Vec<String>,
    /// Events the bucket holds; one more overflows it (0: the first one does).
    pub(crate) capacity: u32,
    /// One event leaks out every `leak`.
    pub(crate) leak: String,
    /// `group_by = "ip"`: buckets per client address (the only grouping a ban can act on).
    pub(crate) group_by: Option<String>,
    /// `distinct = "path"`: each path counts once.
    pub(crate) distinct: Option<String>,
    /// `ban` (default) or `alert`.
    pub(crate) decision: Option<String>,
}

/// `[honeypot]`: trap paths.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawHoneypot {
    /// Paths no site serves and no honest client asks for. Add `/wp-login.php` and the like
    /// only when no WordPress sits behind the gateway.
    pub(crate) paths: Option<Vec<String>>,
}

/// `[bot]`: the bot defence, for the routes that set `bot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawBot {
    /// Zero bits the challenge asks for at weight 0 (16: about 65,000 hashes, well under a
    /// second in a browser); each point of a request's weight adds one.
    pub(crate) difficulty: Option<u8>,
    /// Zero bits a login to an account under distributed attack asks for (20: about a million
    /// hashes, a second or two; each guess of a distributed attack costs as much).
    pub(crate) login_difficulty: Option<u8>,
    /// How long a challenge may be answered.
    pub(crate) challenge_lifetime: Option<String>,
    /// How long a pass lasts.
    pub(crate) pass_lifetime: Option<String>,
    pub(crate) pass_cookie: Option<String>,
    /// Networks that verified crawlers publish (Googlebot's, Bingbot's): never challenged.
    pub(crate) verified_networks: Option<Vec<IpNet>>,
    /// An external CAPTCHA in place of the proof-of-work.
    pub(crate) captcha: Option<RawCaptcha>,
}

/// `[bot.captcha]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCaptcha {
    /// `turnstile`, `hcaptcha` or `recaptcha`.
    pub(crate) provider: String,
    pub(crate) site_key: String,
    /// Set it with `PORTCULLIS_BOT__CAPTCHA__SECRET`; `config show` redacts it.
    pub(crate) secret: String,
    /// The provider's `siteverify` unless set.
    pub(crate) verify_url: Option<String>,
}

fn resolve_captcha(raw: &mut RawCaptcha) -> anyhow::Result<portcullis_gateway::CaptchaSettings> {
    use portcullis_gateway::CaptchaProvider;
    let provider = match raw.provider.as_str() {
        "turnstile" => CaptchaProvider::Turnstile,
        "hcaptcha" => CaptchaProvider::Hcaptcha,
        "recaptcha" => CaptchaProvider::Recaptcha,
        other => bail!("bot.captcha.provider: {other:?} is not turnstile, hcaptcha or recaptcha"),
    };
    if raw.site_key.is_empty() || raw.secret.is_empty() {
        bail!("bot.captcha: site_key and secret are required");
    }
    let verify_url = raw
        .verify_url
        .get_or_insert_with(|| provider.default_verify_url().to_owned());
    let verify_url: http::Uri = verify_url
        .parse()
        .map_err(|e| anyhow::anyhow!("bot.captcha.verify_url: {e}"))?;
    if !matches!(verify_url.scheme_str(), Some("http" | "https")) {
        bail!("bot.captcha.verify_url must be an http:// or https:// URL");
    }
    Ok(portcullis_gateway::CaptchaSettings {
        provider,
        site_key: raw.site_key.clone(),
        secret: raw.secret.clone(),
        verify_url,
    })
}

/// `[alert]`: security events sent to a webhook as they happen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAlert {
    /// `https://hooks.slack.com/services/...` or any receiver of JSON; a secret (the URL is the
    /// credential): set it with `PORTCULLIS_ALERT__WEBHOOK`.
    pub(crate) webhook: Option<String>,
    /// Event kinds that alert.
    pub(crate) kinds: Option<Vec<portcullis_core::EventKind>>,
    /// Tries per alert, with waits of 1 s, 2 s, 4 s ... between them.
    pub(crate) attempts: Option<u32>,
}

pub(crate) fn resolve_alert(
    raw: &mut RawAlert,
) -> anyhow::Result<Option<portcullis_gateway::AlertSettings>> {
    use portcullis_core::EventKind;
    let kinds = raw
        .kinds
        .get_or_insert_with(|| {
            vec![
                EventKind::IpBlocked,
                EventKind::UpstreamReport,
                EventKind::RefreshTokenReused,
            ]
        })
        .clone();
    let attempts = *raw.attempts.get_or_insert(4);
    if !(1..=10).contains(&attempts) {
        bail!("alert.attempts: {attempts} is not between 1 and 10");
    }
    let Some(webhook) = &raw.webhook else {
        return Ok(None);
    };
    let webhook: http::Uri = webhook
        .parse()
        .map_err(|e| anyhow::anyhow!("alert.webhook: {e}"))?;
    if !matches!(webhook.scheme_str(), Some("http" | "https")) || webhook.host().is_none() {
        bail!("alert.webhook must be an http:// or https:// URL");
    }
    Ok(Some(portcullis_gateway::AlertSettings {
        webhook,
        kinds,
        attempts,
    }))
}

/// What the binary builds the intrusion detection and the IP decisions from.
#[derive(Debug, Clone)]
pub(crate) struct DefenceBuild {
    /// `None` when the intrusion detection is off.
    pub(crate) ids: Option<IdsConfig>,
    pub(crate) bans: BanPolicy,
    pub(crate) allowlist: Vec<IpNet>,
}

/// The bot defence's settings and the lifetimes its challenges are built with.
pub(crate) struct BotBuild {
    pub(crate) settings: portcullis_gateway::BotSettings,
    pub(crate) challenge_secs: i64,
    pub(crate) pass_secs: i64,
}

pub(crate) fn resolve_bot(raw: &mut RawBot) -> anyhow::Result<BotBuild> {
    let difficulty = *raw.difficulty.get_or_insert(16);
    let login_difficulty = *raw.login_difficulty.get_or_insert(20);
    if difficulty > 28 || login_difficulty > 28 {
        bail!("bot.difficulty and bot.login_difficulty: over 28 bits would take a browser minutes");
    }
    let seconds = |key: &str, text: &str| -> anyhow::Result<i64> {
        Ok(i64::try_from(duration(key, text)?.as_secs()).unwrap_or(i64::MAX))
    };
    let challenge_secs = seconds(
        "bot.challenge_lifetime",
        raw.challenge_lifetime.get_or_insert("5m".into()),
    )?;
    let pass_secs = seconds(
        "bot.pass_lifetime",
        raw.pass_lifetime.get_or_insert("24h".into()),
    )?;
    if challenge_secs < 10 || pass_secs < 1 {
        bail!("bot.challenge_lifetime must be at least 10s and bot.pass_lifetime at least 1s");
    }
    Ok(BotBuild {
        settings: portcullis_gateway::BotSettings {
            difficulty,
            login_difficulty,
            pass_cookie: raw
                .pass_cookie
                .get_or_insert("__Host-portcullis_pass".into())
                .clone(),
            verified_networks: raw.verified_networks.get_or_insert_with(Vec::new).clone(),
            captcha: raw.captcha.as_mut().map(resolve_captcha).transpose()?,
        },
        challenge_secs,
        pass_secs,
    })
}

pub(crate) fn resolve_ids(raw: &mut RawIds) -> anyhow::Result<DefenceBuild> {
    let bans = BanPolicy {
        base: duration("ids.ban", raw.ban.get_or_insert("4h".into()))?,
        max: duration("ids.max_ban", raw.max_ban.get_or_insert("168h".into()))?,
        memory: duration("ids.memory", raw.memory.get_or_insert("720h".into()))?,
    };
    let allowlist = raw
        .allowlist
        .get_or_insert_with(|| {
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect()
        })
        .clone();
    let mut rules = if *raw.default_rules.get_or_insert(true) {
        default_rules()
    } else {
        Vec::new()
    };
    for (index, rule) in raw.rule.iter().enumerate() {
        let at = format!("ids.rule[{index}] ({:?})", rule.name);
        if rule.name.is_empty() || rule.on.is_empty() {
            bail!("{at}: name and on are required");
        }
        if rule.group_by.as_deref().is_some_and(|g| g != "ip") {
            bail!("{at}: group_by must be \"ip\"");
        }
        let distinct = match rule.distinct.as_deref() {
            None => false,
            Some("path") => true,
            Some(other) => bail!("{at}: distinct = {other:?}; only \"path\" is known"),
        };
        let decision = match rule.decision.as_deref() {
            None | Some("ban") => Decision::Ban,
            Some("alert") => Decision::Alert,
            Some(other) => bail!("{at}: decision = {other:?}; use \"ban\" or \"alert\""),
        };
        let leak = duration(&format!("{at}: leak"), &rule.leak)?;
        if leak < Duration::from_millis(1) {
            bail!("{at}: leak must be at least 1ms");
        }
        // A rule of the same name replaces the shipped one.
        rules.retain(|r| r.name != rule.name);
        rules.push(Rule {
            name: rule.name.clone(),
            on: rule.on.clone(),
            capacity: rule.capacity,
            leak,
            distinct,
            decision,
            origin: if rule.on.iter().any(|s| s == "honeypot_hit") {
                Origin::Honeypot
            } else {
                Origin::Ids
            },
        });
    }
    let ids = (*raw.enabled.get_or_insert(true)).then_some(IdsConfig {
        rules,
        queue: 10_000,
    });
    Ok(DefenceBuild {
        ids,
        bans,
        allowlist,
    })
}

pub(crate) fn resolve_honeypot(raw: &mut RawHoneypot) -> anyhow::Result<Vec<String>> {
    let paths = raw
        .paths
        .get_or_insert_with(|| {
            [
                "/.env",
                "/.git/config",
                "/.git/HEAD",
                "/.aws/credentials",
                "/wp-config.php",
            ]
            .map(String::from)
            .to_vec()
        })
        .clone();
    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/') || p.len() < 2) {
        bail!("honeypot.paths: {bad:?} must be an absolute path other than /");
    }
    Ok(paths)
}
