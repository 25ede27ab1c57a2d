//! The identity service: registration, login, sessions and account administration, over the
//! store and the password hasher. It decides; the gateway speaks HTTP and records the events.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Clock;
use portcullis_store::{AccountRow, SessionRow, Store, StoreError};

use crate::email::{Email, EmailError};
use crate::password::{
    HashError, PasswordHasher, PasswordPolicy, PolicyFailure, PolicyViolations, Verified,
};
use crate::throttle::{Gate, Throttle};
use crate::token::{random_id, random_token, token_hash};
use crate::tokens::{Claims, Subject, TokenError, Tokens};
use portcullis_store::RefreshUse;

mod second_step;

pub use second_step::TRUSTED_DEVICE_LIFETIME;

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Anyone, through the API.
    Open,
    /// Only by invitation: `portcullis user invite` creates the account and a link with which
    /// its owner chooses a password.
    Invite,
    /// Nobody through the API; operators add accounts with `portcullis user add`.
    Off,
}

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Who may register.
    pub registration: Registration,
    /// Rules for new passwords.
    pub policy: PasswordPolicy,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after login, used or not.
    pub session_absolute: Duration,
    /// Most sessions per account; a new login evicts the oldest beyond it.
    pub max_sessions: u32,
    /// Refuse logins until the e-mail address is verified.
    pub require_verified_email: bool,
    /// How long ago a second factor may have been proved for a sensitive action (10 minutes).
    pub step_up_window: Duration,
}

/// An account's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// May log in.
    Active,
    /// Locked by an operator; unlockable.
    Locked,
    /// Switched off.
    Disabled,
}

impl AccountStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Locked => "locked",
            Self::Disabled => "disabled",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "locked" => Self::Locked,
            // Anything unknown is treated as the most restrictive state.
            _ => Self::Disabled,
        }
    }
}

/// An account, as the rest of Portcullis sees it (never its password hash); serializes as the
/// API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// Random id.
    pub id: String,
    /// Normalized e-mail address.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Active, locked or disabled.
    pub status: AccountStatus,
    /// Whether the e-mail address is verified.
    pub email_verified: bool,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl From<&AccountRow> for Account {
    fn from(row: &AccountRow) -> Self {
        Self {
            id: row.id.clone(),
            email: row.email.clone(),
            display_name: row.display_name.clone(),
            roles: row.roles.clone(),
            status: AccountStatus::parse(&row.status),
            email_verified: row.email_verified,
            created_at: row.created_at,
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account.
    pub account: Account,
    /// The session the request carried.
    pub session_id: String,
    /// When the session last proved a second factor, Unix milliseconds.
    pub second_factor_at: Option<i64>,
}

/// Who is logging in, from where.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client address, as the gateway resolved it.
    pub ip: IpAddr,
    /// The device cookie the browser sent, if any.
    pub device: Option<String>,
    /// Browser family and OS, e.g. "Firefox on Linux".
    pub user_agent: Option<String>,
    /// The client solved the proof-of-work an account under distributed attack asks for.
    pub proven: bool,
    /// The trusted-device cookie the browser sent, if any.
    pub trusted_device: Option<String>,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// Who.
    pub account: Account,
    /// The new session's bearer token (goes into the cookie; never stored).
    pub token: String,
    /// The new session's public id.
    pub session_id: String,
    /// Older sessions evicted by the session limit.
    pub evicted: u64,
    /// The stored hash was upgraded to the current algorithm or cost.
    pub rehashed: bool,
    /// A fresh device cookie binding this browser to the account (when throttling is on).
    pub device_cookie: Option<String>,
    /// The second factor the login passed, when it needed one.
    pub second_factor: Option<crate::second_factor::Accepted>,
    /// A login from a remembered browser skipped the second factor.
    pub trusted_device: bool,
    /// The new "remember this device" cookie, when the second step asked for one.
    pub remember_cookie: Option<String>,
}

/// Why a login failed. Internal: every reason but the last two gets the same public answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No account has this address.
    UnknownAccount,
    /// The password is wrong (or the account has none).
    WrongPassword,
    /// The address is not a valid e-mail address.
    MalformedEmail,
    /// Right password, but the account is locked or disabled.
    Inactive(AccountStatus),
    /// Right password, but the e-mail address is not verified yet.
    Unverified,
    /// The second factor was wrong or used before, or the login's challenge expired.
    WrongSecondFactor,
}

impl FailureReason {
    /// The stable name, for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownAccount => "unknown_account",
            Self::WrongPassword => "wrong_password",
            Self::MalformedEmail => "malformed_email",
            Self::Inactive(AccountStatus::Locked) => "account_locked",
            Self::Inactive(_) => "account_disabled",
            Self::Unverified => "email_unverified",
            Self::WrongSecondFactor => "wrong_second_factor",
        }
    }
}

/// The result of a login attempt.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// A new session.
    Success(Box<LoggedIn>),
    /// No session, and why.
    Failure {
        /// Why (internal).
        reason: FailureReason,
        /// The account, when the address named one.
        account_id: Option<String>,
    },
    /// Refused before the password was checked: too many attempts from this address.
    Throttled {
        /// When to try again.
        retry_after: Duration,
    },
    /// The password was right and the account has a second factor: no session yet, but a
    /// challenge that the second step turns into one.
    SecondFactorRequired {
        /// Whose login.
        account_id: String,
        /// Short-lived and single use; for `Identity::login_second_factor`.
        challenge: String,
        /// A WebAuthn challenge for the account's passkeys, when it has some.
        passkey: Option<crate::passkeys::Ceremony>,
        /// What the account can answer with (`totp`, `passkey`, `email_code`, `backup_code`);
        /// a code was sent for `email_code`.
        methods: Vec<&'static str>,
    },
    /// Refused before the password was checked: the account is under attack from many
    /// addresses, and this browser must prove control of the mailbox first.
    ProofRequired {
        /// The account, when the address named one (to send it an unlock link).
        account_id: Option<String>,
    },
}

/// Failures of the identity service.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed or is saturated.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The e-mail address is not acceptable.
    #[error(transparent)]
    Email(#[from] EmailError),
    /// The password breaks the policy.
    #[error("{}", .0.message)]
    Policy(PolicyViolations),
    /// A second factor could not be set up or checked.
    #[error(transparent)]
    SecondFactor(#[from] crate::second_factor::SecondFactorError),
    /// A sensitive action needs a second factor proved within the last 10 minutes.
    #[error("prove your second factor again first")]
    StepUpRequired,
    /// Registration through the API is closed.
    #[error("registration is closed")]
    RegistrationClosed,
    /// No such account or session.
    #[error("not found")]
    NotFound,
    /// A role name holds characters other than letters, digits, `_`, `-`, `:` and `.`.
    #[error("invalid role name {0:?}")]
    InvalidRole(String),
    /// The current password given for a change is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// An account with this e-mail address exists (operator commands only; the API never
    /// says so).
    #[error("an account with this e-mail address exists")]
    Exists,
    /// The service's task failed (a panic in a dependency).
    #[error("internal error: {0}")]
    Internal(String),
    /// The shared state (failure counters) failed: logins fail closed.
    #[error(transparent)]
    State(#[from] portcullis_state::StateError),
    /// Signing keys could not be made or opened.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A verification, reset or unlock token is unknown, used or expired.
    #[error("the link is invalid or has expired")]
    InvalidToken,
}

/// What a single-use token sent by mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Proves the e-mail address.
    Verify,
    /// Sets a new password.
    Reset,
    /// Marks a browser as known to an account under attack (the extra login proof).
    Unlock,
    /// Carries a login whose password was right to its second factor.
    SecondFactor,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::Unlock => "unlock",
            Self::SecondFactor => "second_factor",
        }
    }
}

/// How long the second step of a login may wait for its code.
const SECOND_STEP_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long a mailed link works.
const LINK_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long an invitation link works.
const INVITE_LIFETIME: Duration = Duration::from_secs(72 * 3600);

/// Where mail goes and what its links point at.
#[derive(Debug, Clone)]
pub struct MailLinks {
    /// The mailer.
    pub mailer: crate::mail::Mailer,
    /// `https://app.example.com/auth`: links are `{base}/verify?token=...` and the like.
    pub base: String,
}

/// A new account, as an operator or a registration describes it.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    /// E-mail address, as typed.
    pub email: &'a str,
    /// Name; the e-mail's local part when empty.
    pub display_name: &'a str,
    /// Password, checked against the policy; `None` for an account that sets it later.
    pub password: Option<&'a str>,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether the address is already verified.
    pub email_verified: bool,
}

/// The identity service; cheap to clone.
#[derive(Clone)]
pub struct Identity {
    store: Store,
    hasher: PasswordHasher,
    config: Arc<IdentityConfig>,
    clock: Arc<dyn Clock>,
    throttle: Option<Throttle>,
    mail: Option<MailLinks>,
    tokens: Option<Tokens>,
    api_keys: Option<crate::api_keys::ApiKeys>,
    second_factors: Option<crate::second_factor::SecondFactors>,
    sessions: Arc<crate::session_cache::SessionCache>,
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The signed JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The opaque refresh token (single use: each use returns a new one).
    pub refresh_token: String,
}

/// What became of a refresh.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// New tokens.
    Granted(Box<(TokenSet, Account)>),
    /// The token was used before: its family is revoked.
    Reused {
        /// Whose.
        account_id: String,
    },
    /// Unknown, expired or revoked, or the account may no longer log in.
    Invalid,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Session activity is written at most this often, so reads do not each cost a write.
const TOUCH_EVERY_MS: i64 = 60_000;

impl Identity {
    /// The service over `store`.
    pub fn new(
        store: Store,
        hasher: PasswordHasher,
        config: IdentityConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            hasher,
            config: Arc::new(config),
            clock,
            throttle: None,
            mail: None,
            api_keys: None,
            second_factors: None,
            sessions: Arc::default(),
            tokens: None,
        }
    }

    /// Issues and verifies access tokens with `tokens`.
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The same service, with API keys.
    #[must_use]
    pub fn with_api_keys(mut self, keys: crate::api_keys::ApiKeys) -> Self {
        self.api_keys = Some(keys);
        self
    }

    /// The API keys, when on.
    pub fn api_keys(&self) -> Option<&crate::api_keys::ApiKeys> {
        self.api_keys.as_ref()
    }

    /// The token service, when on.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }

    fn token_service(&self) -> Result<&Tokens, IdentityError> {
        self.tokens
            .as_ref()
            .ok_or_else(|| IdentityError::Internal("tokens are off".into()))
    }

    /// A new access token and a new refresh-token family for `account`.
    pub async fn grant_tokens(&self, account: &Account) -> Result<TokenSet, IdentityError> {
        self.tokens_in_family(account, None).await
    }

    async fn tokens_in_family(
        &self,
        account: &Account,
        family: Option<&str>,
    ) -> Result<TokenSet, IdentityError> {
        let tokens = self.token_service()?;
        let subject = Subject {
            id: &account.id,
            email: &account.email,
            name: &account.display_name,
            roles: &account.roles,
            scopes: &[],
        };
        let (access_token, _) = tokens.issue_access(&subject)?;
        let refresh_token = tokens.issue_refresh(&account.id, family).await?;
        Ok(TokenSet {
            access_token,
            expires_in: tokens.config().access_lifetime.as_secs(),
            refresh_token,
        })
    }

    /// Rotates a refresh token: a new access token and the family's next refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<RefreshOutcome, IdentityError> {
        let tokens = self.token_service()?;
        match tokens.use_refresh(refresh_token).await? {
            RefreshUse::Fresh {
                family_id,
                account_id,
            } => {
                let Some(row) = self.store.account_by_id(&account_id).await? else {
                    return Ok(RefreshOutcome::Invalid);
                };
                let account = Account::from(&row);
                if account.status != AccountStatus::Active {
                    return Ok(RefreshOutcome::Invalid);
                }
                let set = self.tokens_in_family(&account, Some(&family_id)).await?;
                Ok(RefreshOutcome::Granted(Box::new((set, account))))
            }
            RefreshUse::Reused { account_id } => Ok(RefreshOutcome::Reused { account_id }),
            RefreshUse::Invalid => Ok(RefreshOutcome::Invalid),
        }
    }

    /// The claims of a valid, unrevoked access token, or why it is refused.
    pub async fn authenticate_token(
        &self,
        token: &str,
    ) -> Result<Result<Claims, String>, IdentityError> {
        match self.token_service()?.verify_access(token).await {
            Ok(claims) => Ok(Ok(claims)),
            Err(TokenError::Store(error)) => Err(error.into()),
            Err(refused) => Ok(Err(refused.to_string())),
        }
    }

    /// Revokes an access token (by its `jti`) or a refresh token (its whole family), RFC 7009
    /// style: an unknown token is not an error.
    pub async fn revoke_token(&self, token: &str) -> Result<(), IdentityError> {
        let tokens = self.token_service()?;
        if token.split('.').count() == 3 {
            if let Ok(claims) = tokens
                .verify(token, &tokens.config().audience, "access")
                .await
            {
                tokens.revoke(&claims).await?;
            }
        } else {
            tokens.revoke_refresh(token).await?;
        }
        Ok(())
    }

    /// A short-lived identity token for the upstream, when tokens are on.
    pub fn identity_token(&self, subject: &Subject<'_>, auth: &str) -> Option<(String, Claims)> {
        self.tokens.as_ref()?.issue_identity(subject, auth).ok()
    }

    /// Sends verification, reset and unlock links through `mail`.
    pub fn with_mail(mut self, mail: MailLinks) -> Self {
        self.mail = Some(mail);
        self
    }

    /// Issues a single-use token for `purpose` and mails its link to `to`.
    async fn mail_link(
        &self,
        account_id: &str,
        to: &str,
        purpose: TokenPurpose,
        subject: &str,
        intro: &str,
    ) -> Result<(), IdentityError> {
        let Some(mail) = &self.mail else {
            return Ok(());
        };
        let token = self.issue_token(account_id, purpose, LINK_LIFETIME).await?;
        let link = format!("{}/{}?token={token}", mail.base, purpose.as_str());
        mail.mailer.send_later(crate::mail::Mail {
            to: to.to_owned(),
            subject: subject.to_owned(),
            body: format!(
                "{intro}\n\n{link}\n\nThe link works once, for 30 minutes. If you did not ask for it, ignore this message.\n"
            ),
        });
        Ok(())
    }

    /// A single-use token for `purpose`, stored hashed, valid for `lifetime`.
    async fn issue_token(
        &self,
        account_id: &str,
        purpose: TokenPurpose,
        lifetime: Duration,
    ) -> Result<String, IdentityError> {
        let token = random_token();
        let now = self.now_ms();
        self.store
            .insert_one_time_token(
                &token_hash(&token),
                purpose.as_str(),
                account_id,
                now,
                now.saturating_add(millis(lifetime)),
            )
            .await?;
        Ok(token)
    }

    /// Invites someone (`registration = "invite"`, or any mode): an account with no password,
    /// and a link, valid for 72 hours and once, with which its owner chooses one; using it
    /// verifies the address. The link is mailed when mail is set up, and returned either way
    /// so that an operator can hand it over.
    pub async fn invite(&self, new: NewAccount<'_>) -> Result<(Account, String), IdentityError> {
        let account = self
            .create_account(NewAccount {
                password: None,
                email_verified: false,
                ..new
            })
            .await?;
        let token = self
            .issue_token(&account.id, TokenPurpose::Reset, INVITE_LIFETIME)
            .await?;
        let base = self.mail.as_ref().map_or("", |mail| mail.base.as_str());
        let link = format!("{base}/{}?token={token}", TokenPurpose::Reset.as_str());
        if let Some(mail) = &self.mail {
            let invitation = crate::mail::Mail {
                to: account.email.clone(),
                subject: "Your account is ready".to_owned(),
                body: format!(
                    "An administrator created an account for you. To choose your password, open:\n\n{link}\n\nThe link works once, for 72 hours.\n"
                ),
            };
            if let Err(error) = mail.mailer.send(&invitation).await {
                tracing::error!(%error, "invitation not mailed; hand the link over instead");
            }
        }
        Ok((account, link))
    }

    /// Mail of this kind to this address beyond three an hour is dropped, so the API cannot
    /// be used to flood a mailbox.
    async fn mail_allowed(&self, kind: &str, email: &str) -> Result<bool, IdentityError> {
        let Some(throttle) = &self.throttle else {
            return Ok(true);
        };
        let rule = portcullis_state::Backoff {
            free: 3,
            base: Duration::ZERO,
            max: Duration::ZERO,
            window: Duration::from_secs(3600),
        };
        let key = format!("mail:{kind}:{email}");
        Ok(
            matches!(throttle.state().attempt(&key, &rule).await?, portcullis_state::Attempt::Counted(n) if n <= rule.free),
        )
    }

    /// Uses a mailed token: its account, if it is valid for `purpose`.
    async fn take_token(
        &self,
        token: &str,
        purpose: TokenPurpose,
    ) -> Result<AccountRow, IdentityError> {
        let account_id = self
            .store
            .take_one_time_token(&token_hash(token), purpose.as_str(), self.now_ms())
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        self.store
            .account_by_id(&account_id)
            .await?
            .ok_or(IdentityError::InvalidToken)
    }

    /// Marks the address of the token's account verified.
    pub async fn verify_email(&self, token: &str) -> Result<Account, IdentityError> {
        let row = self.take_token(token, TokenPurpose::Verify).await?;
        self.store
            .set_email_verified(&row.id, self.now_ms())
            .await?;
        let mut account = Account::from(&row);
        account.email_verified = true;
        Ok(account)
    }

    /// Mails a reset link when the address has an account; answers the same either way.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), IdentityError> {
        let Ok(email) = Email::parse(email) else {
            return Ok(());
        };
        if !self.mail_allowed("reset", email.as_str()).await? {
            return Ok(());
        }
        if let Some(row) = self.store.account_by_email(email.as_str()).await? {
            self.mail_link(
                &row.id,
                &row.email,
                TokenPurpose::Reset,
                "Reset your password",
                "Someone asked to reset the password of your account. To choose a new one, open:",
            )
            .await?;
        }
        Ok(())
    }

    /// Sets a new password with a reset token; every session of the account ends, and the
    /// address counts as verified (the link reached it). Returns the account.
    pub async fn reset_password(
        &self,
        token: &str,
        password: &str,
    ) -> Result<Account, IdentityError> {
        // The link is used only once the new password passes the policy, so a refused one
        // can be corrected with the same link.
        let hash = token_hash(token);
        let purpose = TokenPurpose::Reset.as_str();
        let account_id = self
            .store
            .peek_one_time_token(&hash, purpose, self.now_ms())
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        let row = self
            .store
            .account_by_id(&account_id)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        self.set_password(&row, password).await?;
        // A second use racing this one finds the token gone and sets nothing more.
        if self
            .store
            .take_one_time_token(&hash, purpose, self.now_ms())
            .await?
            .is_none()
        {
            return Err(IdentityError::InvalidToken);
        }
        self.revoke_sessions(&row.id, None).await?;
        self.store
            .set_email_verified(&row.id, self.now_ms())
            .await?;
        Ok(Account::from(&row))
    }

    /// Mails an unlock link to an account under attack (at most three an hour).
    pub async fn send_unlock_link(&self, account_id: &str) -> Result<(), IdentityError> {
        let Some(row) = self.store.account_by_id(account_id).await? else {
            return Ok(());
        };
        if !self.mail_allowed("unlock", &row.email).await? {
            return Ok(());
        }
        self.mail_link(
            &row.id,
            &row.email,
            TokenPurpose::Unlock,
            "Unusual login attempts on your account",
            "Many failed logins to your account came from elsewhere, so logins from new browsers need this link. To log in from this browser, open:",
        )
        .await
    }

    /// Uses an unlock token: returns the account and a device cookie that lets this browser
    /// log in despite the attack.
    pub async fn unlock(&self, token: &str) -> Result<(Account, Option<String>), IdentityError> {
        let row = self.take_token(token, TokenPurpose::Unlock).await?;
        let cookie = self
            .throttle
            .as_ref()
            .map(|t| t.device_cookie(&row.email, self.clock.now().unix_timestamp()));
        Ok((Account::from(&row), cookie))
    }

    /// Adds the brute-force defence to logins.
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The brute-force defence, when on.
    pub fn throttle(&self) -> Option<&Throttle> {
        self.throttle.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Creates an account, checking the address, the roles and the password policy.
    pub async fn create_account(&self, new: NewAccount<'_>) -> Result<Account, IdentityError> {
        let email = Email::parse(new.email)?;
        let display_name = match new.display_name.trim() {
            "" => email.local_part().to_owned(),
            name => name.chars().take(100).collect(),
        };
        for role in &new.roles {
            check_role(role)?;
        }
        let password_hash = match new.password {
            Some(password) => {
                let failures = self
                    .config
                    .policy
                    .check(password, email.as_str(), &display_name);
                if let Some(violations) = PolicyViolations::of(failures) {
                    return Err(IdentityError::Policy(violations));
                }
                Some(self.hasher.hash(password).await?)
            }
            None => None,
        };
        let now = self.now_ms();
        let row = AccountRow {
            id: random_id(),
            email: email.as_str().to_owned(),
            display_name,
            roles: new.roles,
            status: AccountStatus::Active.as_str().to_owned(),
            email_verified: new.email_verified,
            password_hash,
            created_at: now,
            updated_at: now,
        };
        match self.store.insert_account(&row).await {
            Ok(()) => Ok(Account::from(&row)),
            Err(StoreError::Conflict) => Err(IdentityError::Exists),
            Err(error) => Err(error.into()),
        }
    }

    /// Self-service registration. An address that is already taken gets the same answer as a
    /// new one (`Ok(None)` here), after the same work, so registration does not reveal who has
    /// an account.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Option<Account>, IdentityError> {
        if self.config.registration != Registration::Open {
            return Err(IdentityError::RegistrationClosed);
        }
        let new = NewAccount {
            email,
            display_name,
            password: Some(password),
            roles: vec!["user".to_owned()],
            email_verified: false,
        };
        match self.create_account(new).await {
            Ok(account) => {
                self.mail_link(
                    &account.id,
                    &account.email,
                    TokenPurpose::Verify,
                    "Verify your e-mail address",
                    "Welcome. To verify your e-mail address, open:",
                )
                .await?;
                Ok(Some(account))
            }
            Err(IdentityError::Exists) => {
                // Tell the owner, not the caller: the answer is the same as for a new account.
                if let (Some(mail), Ok(email)) = (&self.mail, Email::parse(email))
                    && self.mail_allowed("notice", email.as_str()).await?
                {
                    mail.mailer.send_later(crate::mail::Mail {
                        to: email.as_str().to_owned(),
                        subject: "Someone tried to register with your address".to_owned(),
                        body: "Someone tried to create an account with this e-mail address, which already has one. If it was you, log in or reset your password; otherwise ignore this message.\n".to_owned(),
                    });
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Checks a password and, when it is right and the account may log in, opens a session.
    /// An unknown address costs one dummy hash check, as a wrong password costs one real one.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, IdentityError> {
        let parsed = Email::parse(email);
        // Throttling keys on the normal form, or on the text as typed when it is no address.
        let key: String = match &parsed {
            Ok(email) => email.as_str().to_owned(),
            Err(_) => email.trim().to_lowercase().chars().take(254).collect(),
        };
        let keys = match self.gate(&key, client).await? {
            Gate::Open(keys) => keys,
            Gate::Throttled(retry_after) => return Ok(LoginOutcome::Throttled { retry_after }),
            Gate::ProofRequired => {
                let account_id = match &parsed {
                    Ok(email) => self
                        .store
                        .account_by_email(email.as_str())
                        .await?
                        .map(|r| r.id),
                    Err(_) => None,
                };
                return Ok(LoginOutcome::ProofRequired { account_id });
            }
        };
        let outcome = self.check_password(parsed.ok(), password, client).await?;
        self.settle(&keys, matches!(outcome, LoginOutcome::Success(_)))
            .await?;
        Ok(outcome)
    }

    async fn check_password(
        &self,
        email: Option<Email>,
        password: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, IdentityError> {
        let row = match &email {
            Some(email) => self.store.account_by_email(email.as_str()).await?,
            None => None,
        };
        let stored = row.as_ref().and_then(|r| r.password_hash.as_deref());
        let verified = self.hasher.verify(password, stored).await?;
        let Some(row) = row else {
            let reason = if email.is_some() {
                FailureReason::UnknownAccount
            } else {
                FailureReason::MalformedEmail
            };
            return Ok(LoginOutcome::Failure {
                reason,
                account_id: None,
            });
        };
        let failure = |reason| LoginOutcome::Failure {
            reason,
            account_id: Some(row.id.clone()),
        };
        let Verified::Yes { rehash } = verified else {
            return Ok(failure(FailureReason::WrongPassword));
        };
        let account = Account::from(&row);
        if account.status != AccountStatus::Active {
            return Ok(failure(FailureReason::Inactive(account.status)));
        }
        if self.config.require_verified_email && !account.email_verified {
            return Ok(failure(FailureReason::Unverified));
        }
        if rehash {
            let hash = self.hasher.hash(password).await?;
            self.store
                .set_password_hash(&account.id, &hash, false, 0, self.now_ms())
                .await?;
        }
        // A remembered browser stands in for the second factor; the session carries the time
        // that factor was proved.
        let mut second_factor_at = None;
        if let Some(factors) = &self.second_factors
            && factors.enrolled(&account.id).await?
        {
            second_factor_at = self.trusted_device(&account, client).await?;
            if second_factor_at.is_none() {
                let challenge = self
                    .issue_token(
                        &account.id,
                        TokenPurpose::SecondFactor,
                        SECOND_STEP_LIFETIME,
                    )
                    .await?;
                let passkey = match factors.passkeys() {
                    Some(passkeys) => passkeys
                        .start_authentication(&account.id)
                        .await
                        .map_err(crate::second_factor::SecondFactorError::from)?,
                    None => None,
                };
                let methods = factors.methods(&account.id).await?;
                factors.send_login_code(&account.id, &account.email).await?;
                return Ok(LoginOutcome::SecondFactorRequired {
                    account_id: account.id,
                    challenge,
                    passkey,
                    methods,
                });
            }
        }
        let mut logged_in = self
            .finish_login(account, client, second_factor_at, None)
            .await?;
        logged_in.rehashed = rehash;
        Ok(LoginOutcome::Success(Box::new(logged_in)))
    }

    /// The brute-force gate for an attempt on `key` (an e-mail address): open (with the keys
    /// to settle once the attempt is judged), or refused. Always open without a throttle.
    async fn gate(&self, key: &str, client: &ClientInfo) -> Result<Gate, IdentityError> {
        let Some(throttle) = &self.throttle else {
            return Ok(Gate::Open(Vec::new()));
        };
        let now = self.clock.now().unix_timestamp();
        Ok(throttle
            .admit(key, client.ip, client.device.as_deref(), client.proven, now)
            .await?)
    }

    /// Settles the gate's keys: a success takes the attempt back, a failure leaves it counted.
    async fn settle(&self, keys: &[String], success: bool) -> Result<(), IdentityError> {
        if let Some(throttle) = &self.throttle {
            throttle.settle(keys, success).await?;
        }
        Ok(())
    }

    /// The end of every successful login: a new session (with the time a second factor was
    /// proved, if one was) and a fresh device cookie.
    async fn finish_login(
        &self,
        account: Account,
        client: &ClientInfo,
        second_factor_at: Option<i64>,
        second_factor: Option<crate::second_factor::Accepted>,
    ) -> Result<LoggedIn, IdentityError> {
        let (token, session_id, evicted) = self
            .open_session(&account.id, client, second_factor_at)
            .await?;
        let device_cookie = self
            .throttle
            .as_ref()
            .map(|t| t.device_cookie(&account.email, self.clock.now().unix_timestamp()));
        Ok(LoggedIn {
            account,
            token,
            session_id,
            evicted,
            rehashed: false,
            device_cookie,
            second_factor,
            trusted_device: second_factor.is_none() && second_factor_at.is_some(),
            remember_cookie: None,
        })
    }

    /// A new session for `account_id`; returns its token, its id and how many were evicted.
    async fn open_session(
        &self,
        account_id: &str,
        client: &ClientInfo,
        second_factor_at: Option<i64>,
    ) -> Result<(String, String, u64), IdentityError> {
        let now = self.now_ms();
        let token = random_token();
        let row = SessionRow {
            id: random_id(),
            token_hash: token_hash(&token),
            account_id: account_id.to_owned(),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(millis(self.config.session_absolute)),
            client_ip: Some(client.ip.to_string()),
            user_agent: client.user_agent.clone(),
            second_factor_at,
        };
        let evicted = self
            .store
            .insert_session(&row, i64::from(self.config.max_sessions.max(1)))
            .await?;
        if evicted > 0 {
            // Which ones went is the store's knowledge: read the account's sessions again.
            self.sessions.forget_account(account_id);
        }
        Ok((token, row.id, evicted))
    }

    /// The caller a session token belongs to, if the session is live and its account active.
    pub async fn authenticate_session(
        &self,
        token: &str,
    ) -> Result<Option<Principal>, IdentityError> {
        if token.len() != 43 {
            return Ok(None);
        }
        let key = crate::session_cache::key(token);
        if let Some(principal) = self.sessions.get(&key, self.now_ms()) {
            return Ok(Some(principal));
        }
        let Some(session) = self.store.session_by_token_hash(&token_hash(token)).await? else {
            return Ok(None);
        };
        let now = self.now_ms();
        let idle_limit = session
            .last_seen_at
            .saturating_add(millis(self.config.session_idle));
        if now >= session.expires_at || now >= idle_limit {
            self.store
                .delete_session(&session.account_id, &session.id)
                .await?;
            return Ok(None);
        }
        let Some(row) = self.store.account_by_id(&session.account_id).await? else {
            return Ok(None);
        };
        let account = Account::from(&row);
        if account.status != AccountStatus::Active {
            return Ok(None);
        }
        if now - session.last_seen_at >= TOUCH_EVERY_MS {
            self.store.touch_session(&session.id, now).await?;
        }
        let principal = Principal {
            account,
            session_id: session.id,
            second_factor_at: session.second_factor_at,
        };
        self.sessions.put(key, principal.clone(), now);
        Ok(Some(principal))
    }

    /// The caller a session token belongs to, from memory only: `None` when it must be read
    /// from the store (see [`Identity::authenticate_session`]). No I/O, so callable anywhere.
    pub fn cached_session(&self, token: &str) -> Option<Principal> {
        (token.len() == 43)
            .then(|| {
                self.sessions
                    .get(&crate::session_cache::key(token), self.now_ms())
            })
            .flatten()
    }

    /// Ends the session `token` names; returns its principal if there was one.
    pub async fn logout(&self, token: &str) -> Result<Option<Principal>, IdentityError> {
        let principal = self.authenticate_session(token).await?;
        if let Some(principal) = &principal {
            self.store
                .delete_session(&principal.account.id, &principal.session_id)
                .await?;
            self.sessions.forget_session(&principal.session_id);
        }
        Ok(principal)
    }

    /// The account's sessions, newest first.
    pub async fn sessions(&self, account_id: &str) -> Result<Vec<SessionRow>, IdentityError> {
        Ok(self.store.account_sessions(account_id).await?)
    }

    /// Revokes one session of the account.
    pub async fn revoke_session(
        &self,
        account_id: &str,
        session_id: &str,
    ) -> Result<(), IdentityError> {
        let deleted = self.store.delete_session(account_id, session_id).await?;
        self.sessions.forget_session(session_id);
        if deleted {
            Ok(())
        } else {
            Err(IdentityError::NotFound)
        }
    }

    /// Ends every login of the account but the session `keep`: sessions and refresh-token
    /// families alike. Returns how many sessions ended.
    pub async fn revoke_sessions(
        &self,
        account_id: &str,
        keep: Option<&str>,
    ) -> Result<u64, IdentityError> {
        let ended = self.store.delete_account_sessions(account_id, keep).await?;
        self.sessions.forget_account(account_id);
        self.store.delete_account_refresh_tokens(account_id).await?;
        Ok(ended)
    }

    /// Changes a password after checking the current one; other sessions end. The new one must
    /// meet the policy and differ from the last `policy.history` passwords.
    pub async fn change_password(
        &self,
        account_id: &str,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
    ) -> Result<(), IdentityError> {
        let row = self
            .store
            .account_by_id(account_id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        if self
            .hasher
            .verify(current, row.password_hash.as_deref())
            .await?
            == Verified::No
        {
            return Err(IdentityError::WrongPassword);
        }
        self.set_password(&row, new).await?;
        self.revoke_sessions(account_id, keep_session).await?;
        Ok(())
    }

    /// Changes the caller's e-mail address, a sensitive action: an account with a second factor
    /// must have proved it within the step-up window, one without must give its password. The
    /// new address is unverified until its owner follows the link mailed to it; the old one is
    /// told.
    pub async fn change_email(
        &self,
        principal: &Principal,
        new_email: &str,
        current_password: Option<&str>,
    ) -> Result<Account, IdentityError> {
        let account = &principal.account;
        let enrolled = match &self.second_factors {
            Some(factors) => factors.enrolled(&account.id).await?,
            None => false,
        };
        if enrolled {
            if !self.stepped_up(principal) {
                return Err(IdentityError::StepUpRequired);
            }
        } else {
            let row = self
                .store
                .account_by_id(&account.id)
                .await?
                .ok_or(IdentityError::NotFound)?;
            let given = current_password.unwrap_or("");
            if self
                .hasher
                .verify(given, row.password_hash.as_deref())
                .await?
                == Verified::No
            {
                return Err(IdentityError::WrongPassword);
            }
        }
        let email = Email::parse(new_email)?;
        if self.store.account_by_email(email.as_str()).await?.is_some() {
            return Err(IdentityError::Exists);
        }
        if !self
            .store
            .set_account_email(&account.id, email.as_str(), self.now_ms())
            .await?
        {
            return Err(IdentityError::NotFound);
        }
        self.sessions.forget_account(&account.id);
        self.mail_link(
            &account.id,
            email.as_str(),
            TokenPurpose::Verify,
            "Confirm your new e-mail address",
            "Follow this link to confirm this address for your account:",
        )
        .await?;
        if let Some(mail) = &self.mail {
            mail.mailer.send_later(crate::mail::Mail {
                to: account.email.clone(),
                subject: "Your e-mail address was changed".into(),
                body: "The e-mail address of your account was just changed to another one.\n\n\
                       If this was not you, reset your password from the new address's link or \
                       contact your administrator now.\n"
                    .into(),
            });
        }
        let row = self
            .store
            .account_by_id(&account.id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        Ok(Account::from(&row))
    }

    /// Sets a password chosen by an operator or a reset, with the policy and history checks.
    pub async fn set_password(&self, row: &AccountRow, new: &str) -> Result<(), IdentityError> {
        let mut failures = self.config.policy.check(new, &row.email, &row.display_name);
        let history = self.config.policy.history;
        if history > 0
            && !failures
                .iter()
                .any(|f| matches!(f, PolicyFailure::TooLong { .. }))
        {
            let mut previous = self.store.password_history(&row.id).await?;
            previous.truncate(history.saturating_sub(1));
            previous.extend(row.password_hash.clone());
            for old in &previous {
                if let Verified::Yes { .. } = self.hasher.verify(new, Some(old)).await? {
                    failures.push(PolicyFailure::Reused { count: history });
                    break;
                }
            }
        }
        if let Some(violations) = PolicyViolations::of(failures) {
            return Err(IdentityError::Policy(violations));
        }
        let hash = self.hasher.hash(new).await?;
        let keep = i64::try_from(history.saturating_sub(1)).unwrap_or(i64::MAX);
        self.store
            .set_password_hash(&row.id, &hash, true, keep, self.now_ms())
            .await?;
        // A new password ends every "remember this device": whoever knew the old one may have
        // remembered a browser of their own.
        self.store.delete_account_trusted_devices(&row.id).await?;
        Ok(())
    }

    /// The account with this e-mail address or id.
    pub async fn find_account(
        &self,
        email_or_id: &str,
    ) -> Result<Option<AccountRow>, IdentityError> {
        if let Ok(email) = Email::parse(email_or_id) {
            return Ok(self.store.account_by_email(email.as_str()).await?);
        }
        Ok(self.store.account_by_id(email_or_id).await?)
    }

    /// Accounts, ordered by e-mail address.
    pub async fn list_accounts(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Account>, IdentityError> {
        let rows = self.store.list_accounts(limit, offset).await?;
        Ok(rows.iter().map(Account::from).collect())
    }

    /// Sets the status; locking or disabling ends every session at once.
    pub async fn set_status(
        &self,
        account_id: &str,
        status: AccountStatus,
    ) -> Result<(), IdentityError> {
        if !self
            .store
            .set_account_status(account_id, status.as_str(), self.now_ms())
            .await?
        {
            return Err(IdentityError::NotFound);
        }
        if status != AccountStatus::Active {
            self.revoke_sessions(account_id, None).await?;
        }
        // Gateways read the account's keys again, and find them unusable or usable again.
        self.store
            .touch_account_api_keys(account_id, self.now_ms())
            .await?;
        Ok(())
    }

    /// Replaces the roles; sessions end, so the next login carries the new privileges.
    pub async fn set_roles(
        &self,
        account_id: &str,
        roles: Vec<String>,
    ) -> Result<(), IdentityError> {
        for role in &roles {
            check_role(role)?;
        }
        if !self
            .store
            .set_account_roles(account_id, &roles, self.now_ms())
            .await?
        {
            return Err(IdentityError::NotFound);
        }
        self.revoke_sessions(account_id, None).await?;
        Ok(())
    }

    /// Marks an address verified.
    pub async fn mark_email_verified(&self, account_id: &str) -> Result<(), IdentityError> {
        if self
            .store
            .set_email_verified(account_id, self.now_ms())
            .await?
        {
            Ok(())
        } else {
            Err(IdentityError::NotFound)
        }
    }

    /// How many active accounts hold the admin role.
    pub async fn admin_count(&self) -> Result<i64, IdentityError> {
        Ok(self.store.count_active_with_role("admin").await?)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn check_role(role: &str) -> Result<(), IdentityError> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidRole(role.to_owned()))
    }
}

/// "Firefox on Linux" from a `User-Agent`, for the session list: enough for a person to know
/// their own devices, and nothing that fingerprints them.
pub fn user_agent_family(user_agent: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .into_iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map_or("Other", |(_, name)| name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map(|(_, name)| name);
    match os {
        Some(os) => format!("{browser} on {os}"),
        None => browser.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_fold_to_a_family() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0";
        assert_eq!(user_agent_family(firefox), "Firefox on Linux");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36";
        assert_eq!(user_agent_family(chrome), "Chrome on Windows");
        assert_eq!(user_agent_family("curl/8.5.0"), "curl");
    }

    #[test]
    fn role_names_are_checked() {
        assert!(check_role("admin").is_ok());
        assert!(check_role("billing:read").is_ok());
        assert!(check_role("").is_err());
        assert!(check_role("a b").is_err());
        assert!(check_role("x,y").is_err());
    }
}
