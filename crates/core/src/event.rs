//! Security events: one typed record per security fact, emitted by every stage and written to
//! the audit log, the JSON log and the metrics.
//!
//! Details are free-form JSON, so anything that may hold personal data goes through
//! [`mask_pii`] before it is put there.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::RequestId;

/// What happened. One variant per security fact; the string form is stable (stored, counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A path was rejected by normalization (traversal, encoded separators, NUL, bad UTF-8).
    PathRejected,
    /// A request was malformed.
    MalformedRequest,
    /// A hidden path (API docs in production) was requested.
    HiddenPathProbed,
    /// A header, URL or body limit was exceeded.
    RequestLimitExceeded,
    /// A client was too slow sending its request.
    RequestTimeout,
    /// The concurrent connection limit turned a connection away.
    ConnectionLimitReached,
    /// An upstream server error body was replaced by the common error body.
    UpstreamErrorWithheld,
    /// A CORS preflight from a disallowed origin.
    CorsDenied,
    /// The gateway started.
    GatewayStarted,
    /// The WAF blocked a request; details hold the rule ids, the score and masked evidence.
    WafBlock,
    /// The WAF found an attack but only reports it (detect mode, or shadow rules).
    WafDetect,
    /// A login succeeded.
    LoginSuccess,
    /// A login failed; the reason (unknown account, wrong password, ...) is kept internal.
    LoginFailure,
    /// A login was refused unchecked because of earlier failures.
    LoginThrottled,
    /// An account was locked (by an operator or the brute-force defence).
    AccountLocked,
    /// An operator unlocked an account.
    AccountUnlocked,
    /// An operator replaced an account's roles.
    RolesChanged,
    /// A password was set or changed.
    PasswordChanged,
    /// An account was created.
    AccountCreated,
    /// A session ended: logout, revocation, eviction over the session limit.
    SessionRevoked,
    /// A request lacked the authentication its route requires.
    AuthenticationRequired,
    /// An authenticated request lacked a role or scope its route requires.
    AccessDenied,
    /// A cookie-authenticated unsafe request came from another origin.
    CsrfRejected,
    /// A refresh token was used twice: it leaked, and its whole family was revoked.
    RefreshTokenReused,
    /// Access and refresh tokens were issued.
    TokenIssued,
    /// A client went over a rate limit (the first refusal of a key in a while, not each one).
    RateLimited,
    /// A network was blocked, by an operator, the intrusion detection or a honeypot.
    IpBlocked,
    /// A network was allowlisted.
    IpAllowed,
    /// An operator ended a block or an allowlisting before its time.
    IpDecisionEnded,
    /// An intrusion-detection rule that only alerts overflowed.
    IdsAlert,
    /// A client requested a honeypot trap.
    HoneypotHit,
    /// The bot defence refused a request.
    BotRefused,
    /// An answer to the browser challenge was refused.
    ChallengeFailed,
    /// An upstream reported a security fact about the request it answered (e.g. a payment
    /// manipulation attempt), in the `X-Portcullis-Report` response header.
    UpstreamReport,
    /// An API key was created.
    ApiKeyCreated,
    /// An API key was rotated (the old one works on for its grace period).
    ApiKeyRotated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A request's API key was refused (malformed, unknown, revoked, expired, from outside its
    /// networks, or of an inactive owner).
    ApiKeyDenied,
    /// A password was right for an account with a second factor: the login waits for it.
    SecondFactorRequired,
    /// A second factor was set up (TOTP confirmed with a code).
    SecondFactorEnabled,
    /// A second factor was removed.
    SecondFactorDisabled,
    /// A backup code was used (details say how many remain).
    BackupCodeUsed,
    /// An account's e-mail address was changed.
    EmailChanged,
}

impl EventKind {
    /// The stable name, as stored and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PathRejected => "path_rejected",
            Self::MalformedRequest => "malformed_request",
            Self::HiddenPathProbed => "hidden_path_probed",
            Self::RequestLimitExceeded => "request_limit_exceeded",
            Self::RequestTimeout => "request_timeout",
            Self::ConnectionLimitReached => "connection_limit_reached",
            Self::UpstreamErrorWithheld => "upstream_error_withheld",
            Self::CorsDenied => "cors_denied",
            Self::GatewayStarted => "gateway_started",
            Self::WafBlock => "waf_block",
            Self::WafDetect => "waf_detect",
            Self::LoginSuccess => "login_success",
            Self::LoginFailure => "login_failure",
            Self::LoginThrottled => "login_throttled",
            Self::AccountLocked => "account_locked",
            Self::AccountUnlocked => "account_unlocked",
            Self::RolesChanged => "roles_changed",
            Self::PasswordChanged => "password_changed",
            Self::AccountCreated => "account_created",
            Self::SessionRevoked => "session_revoked",
            Self::AuthenticationRequired => "authentication_required",
            Self::AccessDenied => "access_denied",
            Self::CsrfRejected => "csrf_rejected",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::TokenIssued => "token_issued",
            Self::RateLimited => "rate_limited",
            Self::IpBlocked => "ip_blocked",
            Self::IpAllowed => "ip_allowed",
            Self::IpDecisionEnded => "ip_decision_ended",
            Self::IdsAlert => "ids_alert",
            Self::HoneypotHit => "honeypot_hit",
            Self::UpstreamReport => "upstream_report",
            Self::BotRefused => "bot_refused",
            Self::ChallengeFailed => "challenge_failed",
            Self::ApiKeyCreated => "api_key_created",
            Self::ApiKeyRotated => "api_key_rotated",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::ApiKeyDenied => "api_key_denied",
            Self::SecondFactorRequired => "second_factor_required",
            Self::SecondFactorEnabled => "second_factor_enabled",
            Self::SecondFactorDisabled => "second_factor_disabled",
            Self::BackupCodeUsed => "backup_code_used",
            Self::EmailChanged => "email_changed",
        }
    }

    /// How much an operator should care, by default.
    pub fn severity(self) -> Severity {
        match self {
            Self::GatewayStarted
            | Self::UpstreamErrorWithheld
            | Self::LoginSuccess
            | Self::PasswordChanged
            | Self::AccountCreated
            | Self::SessionRevoked
            | Self::AuthenticationRequired
            | Self::TokenIssued
            | Self::IpAllowed
            | Self::IpDecisionEnded
            | Self::ApiKeyCreated
            | Self::ApiKeyRotated
            | Self::ApiKeyRevoked
            | Self::SecondFactorRequired
            | Self::SecondFactorEnabled => Severity::Info,
            Self::RefreshTokenReused => Severity::High,
            Self::LoginFailure | Self::AccessDenied => Severity::Low,
            Self::LoginThrottled
            | Self::AccountLocked
            | Self::AccountUnlocked
            | Self::RolesChanged
            | Self::CsrfRejected
            | Self::SecondFactorDisabled
            | Self::BackupCodeUsed
            | Self::EmailChanged => Severity::Medium,
            Self::RequestTimeout
            | Self::ConnectionLimitReached
            | Self::CorsDenied
            | Self::RequestLimitExceeded
            | Self::MalformedRequest
            | Self::RateLimited
            | Self::BotRefused
            | Self::ChallengeFailed
            | Self::ApiKeyDenied => Severity::Low,
            Self::PathRejected | Self::HiddenPathProbed | Self::WafDetect => Severity::Medium,
            Self::IdsAlert | Self::HoneypotHit => Severity::Medium,
            Self::WafBlock | Self::IpBlocked | Self::UpstreamReport => Severity::High,
        }
    }
}

/// How much an operator should care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth counting.
    Low,
    /// Worth looking at.
    Medium,
    /// Worth acting on.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// One security fact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// What happened.
    pub kind: EventKind,
    /// How much it matters.
    pub severity: Severity,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The request it is about, if any.
    pub request_id: Option<String>,
    /// The client address as the client-IP stage determined it.
    pub client_ip: Option<IpAddr>,
    /// The authenticated user, when known.
    pub user_id: Option<String>,
    /// The API key, when known.
    pub key_id: Option<String>,
    /// The route that matched, when one did.
    pub route: Option<String>,
    /// Detail, with personal data masked.
    pub details: serde_json::Value,
}

impl SecurityEvent {
    /// An event of `kind` at `time`, with its default severity and nothing else known.
    pub fn new(kind: EventKind, time: OffsetDateTime) -> Self {
        Self {
            kind,
            severity: kind.severity(),
            time,
            request_id: None,
            client_ip: None,
            user_id: None,
            key_id: None,
            route: None,
            details: serde_json::Value::Null,
        }
    }

    /// Sets the request the event is about.
    pub fn with_request(mut self, id: &RequestId, client_ip: IpAddr) -> Self {
        self.request_id = Some(id.as_str().to_owned());
        self.client_ip = Some(client_ip);
        self
    }

    /// The client an event is about, outside a request (a ban by the intrusion detection).
    pub fn with_client(mut self, client_ip: IpAddr) -> Self {
        self.client_ip = Some(client_ip);
        self
    }

    /// The account the event is about.
    pub fn with_user(mut self, user_id: Option<&str>) -> Self {
        self.user_id = user_id.map(str::to_owned);
        self
    }

    /// The API key the event is about.
    pub fn with_key(mut self, key_id: Option<&str>) -> Self {
        self.key_id = key_id.map(str::to_owned);
        self
    }

    /// Sets the route.
    pub fn with_route(mut self, route: Option<&str>) -> Self {
        self.route = route.map(str::to_owned);
        self
    }

    /// Sets the details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Longest attacker-controlled string kept in event details.
const MAX_DETAIL_CHARS: usize = 200;

/// Masks the personal data an event detail may carry: e-mail addresses keep their first letter
/// and domain, long digit runs (card, phone, account numbers) keep their last four digits, and
/// the whole is cut to a bounded length, since it may be attacker-controlled.
pub fn mask_pii(text: &str) -> String {
    let mut words = Vec::new();
    for word in text.split(' ') {
        words.push(mask_word(word));
    }
    let masked = words.join(" ");
    if masked.chars().count() > MAX_DETAIL_CHARS {
        let cut: String = masked.chars().take(MAX_DETAIL_CHARS).collect();
        format!("{cut}…")
    } else {
        masked
    }
}

fn mask_word(word: &str) -> String {
    if let Some((local, domain)) = word.split_once('@')
        && !local.is_empty()
        && domain.contains('.')
    {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let digits = word.chars().filter(char::is_ascii_digit).count();
    if digits >= 7 {
        let total = word.chars().count();
        return word
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if c.is_ascii_digit() && i + 4 < total {
                    '*'
                } else {
                    c
                }
            })
            .collect();
    }
    word.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_long_numbers() {
        assert_eq!(
            mask_pii("login alice@example.com"),
            "login a***@example.com"
        );
        assert_eq!(mask_pii("card 4111111111111111"), "card ************1111");
        assert_eq!(mask_pii("order 12345"), "order 12345");
    }

    #[test]
    fn bounds_attacker_controlled_text() {
        let long = "x".repeat(10_000);
        assert!(mask_pii(&long).chars().count() <= MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn kinds_serialize_as_their_stable_names() {
        let json = serde_json::to_value(EventKind::PathRejected).ok();
        assert_eq!(
            json,
            Some(serde_json::json!(EventKind::PathRejected.as_str()))
        );
    }
}
