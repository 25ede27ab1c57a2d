//! WebAuthn passkeys, with webauthn-rs: registration, authentication as a second factor, and
//! passwordless login with a discoverable passkey. User verification is required every time,
//! so a passkey is a second factor on its own (something held, unlocked by something known or
//! something one is).
//!
//! A ceremony's state (the challenge the browser must sign) is kept in the store, single use
//! and for five minutes, so any instance can finish a ceremony another one started.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::Clock;
use portcullis_store::{PasskeyRow, Store, StoreError};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, Url, Uuid,
    Webauthn, WebauthnBuilder,
};

pub use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::token::random_token;

/// How long a ceremony may wait for the browser.
const CEREMONY_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Failures of passkey ceremonies.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The relying party could not be set up (an origin that is not a URL, an RP id that is not
    /// its host or a parent of it).
    #[error("passkeys: {0}")]
    Setup(String),
    /// The ceremony is unknown, used, expired, or not this account's.
    #[error("no such passkey ceremony")]
    NoCeremony,
    /// The browser's answer does not verify.
    #[error("the passkey answer does not verify: {0}")]
    Refused(String),
    /// A stored credential could not be read.
    #[error("stored passkey unreadable: {0}")]
    Stored(String),
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PasskeyInfo {
    /// Random id.
    pub id: String,
    /// The name its owner gave it.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub last_used_at: Option<i64>,
}

impl From<&PasskeyRow> for PasskeyInfo {
    fn from(row: &PasskeyRow) -> Self {
        Self {
            id: row.id.clone(),
            name: row.name.clone(),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// A challenge for the browser (`navigator.credentials.create` or `.get` options, as JSON) and
/// the id of the ceremony to finish with its answer.
#[derive(Debug, Clone)]
pub struct Ceremony {
    /// Sent back with the answer.
    pub id: String,
    /// The `publicKey` options, as JSON.
    pub options: serde_json::Value,
}

/// The passkeys of every account.
#[derive(Clone)]
pub struct Passkeys {
    webauthn: Arc<Webauthn>,
    store: Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys").finish_non_exhaustive()
    }
}

const REGISTER: &str = "register";
const AUTHENTICATE: &str = "authenticate";
const DISCOVER: &str = "discover";

impl Passkeys {
    /// Passkeys for the relying party `rp_id` (a host name) served at `origin`; on a loopback
    /// host any port is allowed, as browsers allow for development.
    pub fn new(
        store: Store,
        rp_id: &str,
        origin: &str,
        rp_name: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PasskeyError> {
        let origin = Url::parse(origin).map_err(|e| PasskeyError::Setup(e.to_string()))?;
        let loopback = matches!(origin.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        let webauthn = WebauthnBuilder::new(rp_id, &origin)
            .map_err(|e| PasskeyError::Setup(e.to_string()))?
            .rp_name(rp_name)
            .allow_any_port(loopback)
            .build()
            .map_err(|e| PasskeyError::Setup(e.to_string()))?;
        Ok(Self {
            webauthn: Arc::new(webauthn),
            store,
            clock,
        })
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    async fn keep(
        &self,
        account_id: Option<&str>,
        kind: &str,
        state: &impl serde::Serialize,
        options: &impl serde::Serialize,
    ) -> Result<Ceremony, PasskeyError> {
        let id = random_token();
        let state = serde_json::to_string(state).map_err(|e| PasskeyError::Setup(e.to_string()))?;
        let now = self.now_ms();
        let lifetime = i64::try_from(CEREMONY_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        self.store
            .insert_ceremony(
                &id,
                account_id,
                kind,
                &state,
                now,
                now.saturating_add(lifetime),
            )
            .await?;
        let options =
            serde_json::to_value(options).map_err(|e| PasskeyError::Setup(e.to_string()))?;
        Ok(Ceremony { id, options })
    }

    /// Takes the state of ceremony `id` of `kind`, started for `account_id` (or for nobody).
    async fn take<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        kind: &str,
        account_id: Option<&str>,
    ) -> Result<T, PasskeyError> {
        let (owner, state) = self
            .store
            .take_ceremony(id, kind, self.now_ms())
            .await?
            .ok_or(PasskeyError::NoCeremony)?;
        if owner.as_deref() != account_id {
            return Err(PasskeyError::NoCeremony);
        }
        serde_json::from_str(&state).map_err(|_| PasskeyError::NoCeremony)
    }

    fn credentials(rows: &[PasskeyRow]) -> Result<Vec<Passkey>, PasskeyError> {
        rows.iter()
            .map(|row| {
                serde_json::from_str(&row.credential)
                    .map_err(|e| PasskeyError::Stored(e.to_string()))
            })
            .collect()
    }

    /// The account's passkeys.
    pub async fn list(&self, account_id: &str) -> Result<Vec<PasskeyInfo>, PasskeyError> {
        let rows = self.store.passkeys(account_id).await?;
        Ok(rows.iter().map(PasskeyInfo::from).collect())
    }

    /// Whether the account has a passkey.
    pub async fn any(&self, account_id: &str) -> Result<bool, PasskeyError> {
        Ok(!self.store.passkeys(account_id).await?.is_empty())
    }

    /// Removes one of the account's passkeys; false when there was none.
    pub async fn remove(&self, account_id: &str, id: &str) -> Result<bool, PasskeyError> {
        Ok(self.store.delete_passkey(account_id, id).await?)
    }

    /// Starts registering a passkey for the account (its id is a UUID, the WebAuthn user
    /// handle); its existing passkeys are excluded, so one authenticator is not added twice.
    pub async fn start_registration(
        &self,
        account_id: &str,
        email: &str,
        display_name: &str,
    ) -> Result<Ceremony, PasskeyError> {
        let user = Uuid::parse_str(account_id).map_err(|e| PasskeyError::Setup(e.to_string()))?;
        let existing = Self::credentials(&self.store.passkeys(account_id).await?)?;
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user, email, display_name, Some(exclude))
            .map_err(|e| PasskeyError::Setup(e.to_string()))?;
        self.keep(Some(account_id), REGISTER, &state, &options)
            .await
    }

    /// Finishes a registration with the browser's answer; stores the passkey under `name`.
    pub async fn finish_registration(
        &self,
        account_id: &str,
        ceremony: &str,
        name: &str,
        answer: &RegisterPublicKeyCredential,
    ) -> Result<PasskeyInfo, PasskeyError> {
        let state: PasskeyRegistration = self.take(ceremony, REGISTER, Some(account_id)).await?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(answer, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        let row = PasskeyRow {
            id: crate::token::random_id(),
            account_id: account_id.to_owned(),
            name: if name.is_empty() {
                "Passkey".into()
            } else {
                name
            },
            credential_id: URL_SAFE_NO_PAD.encode::<&[u8]>(passkey.cred_id().as_ref()),
            credential: serde_json::to_string(&passkey)
                .map_err(|e| PasskeyError::Stored(e.to_string()))?,
            created_at: self.now_ms(),
            last_used_at: None,
        };
        self.store.insert_passkey(&row).await?;
        Ok(PasskeyInfo::from(&row))
    }

    /// A challenge for the account's passkeys, as a second factor; `None` when it has none.
    pub async fn start_authentication(
        &self,
        account_id: &str,
    ) -> Result<Option<Ceremony>, PasskeyError> {
        let passkeys = Self::credentials(&self.store.passkeys(account_id).await?)?;
        if passkeys.is_empty() {
            return Ok(None);
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| PasskeyError::Setup(e.to_string()))?;
        self.keep(Some(account_id), AUTHENTICATE, &state, &options)
            .await
            .map(Some)
    }

    /// Verifies the browser's answer to a second-factor challenge for the account.
    pub async fn finish_authentication(
        &self,
        account_id: &str,
        ceremony: &str,
        answer: &PublicKeyCredential,
    ) -> Result<(), PasskeyError> {
        let state: PasskeyAuthentication =
            self.take(ceremony, AUTHENTICATE, Some(account_id)).await?;
        let result = self
            .webauthn
            .finish_passkey_authentication(answer, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        self.record_use(account_id, &result).await
    }

    /// A challenge for a passwordless login: any discoverable passkey of any account.
    pub async fn start_discoverable(&self) -> Result<Ceremony, PasskeyError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| PasskeyError::Setup(e.to_string()))?;
        self.keep(None, DISCOVER, &state, &options).await
    }

    /// Verifies a passwordless login; returns the account it is for.
    pub async fn finish_discoverable(
        &self,
        ceremony: &str,
        answer: &PublicKeyCredential,
    ) -> Result<String, PasskeyError> {
        let state: DiscoverableAuthentication = self.take(ceremony, DISCOVER, None).await?;
        let (user, credential_id) = self
            .webauthn
            .identify_discoverable_authentication(answer)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let account_id = user.to_string();
        let rows = self.store.passkeys(&account_id).await?;
        let wanted = URL_SAFE_NO_PAD.encode(credential_id);
        let row = rows
            .iter()
            .find(|row| row.credential_id == wanted)
            .ok_or_else(|| PasskeyError::Refused("unknown credential".into()))?;
        let passkey: Passkey = serde_json::from_str(&row.credential)
            .map_err(|e| PasskeyError::Stored(e.to_string()))?;
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(answer, state, &passkey)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        self.record_use(&account_id, &result).await?;
        Ok(account_id)
    }

    /// Stores the moved counter (and backup state) of the passkey that was used.
    async fn record_use(
        &self,
        account_id: &str,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), PasskeyError> {
        let used = URL_SAFE_NO_PAD.encode::<&[u8]>(result.cred_id().as_ref());
        for row in self.store.passkeys(account_id).await? {
            if row.credential_id != used {
                continue;
            }
            let mut passkey: Passkey = serde_json::from_str(&row.credential)
                .map_err(|e| PasskeyError::Stored(e.to_string()))?;
            passkey.update_credential(result);
            let credential =
                serde_json::to_string(&passkey).map_err(|e| PasskeyError::Stored(e.to_string()))?;
            self.store
                .update_passkey(&row.id, &credential, self.now_ms())
                .await?;
        }
        Ok(())
    }
}
