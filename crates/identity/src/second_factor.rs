//! Second factors: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew either way,
//! as Google Authenticator and every other authenticator app expect) and single-use backup
//! codes.
//!
//! - TOTP secrets are 160 random bits, sealed at rest under the server key (with its key id),
//!   bound to their account. A setup stays pending until the user enters one code from it.
//! - No code is accepted twice: the newest step accepted is stored, and a code is taken only
//!   with a conditional update that requires a later step, so a replayed code (or any other
//!   code of the same or an earlier step) fails on every instance, even when two race.
//! - Backup codes are 10 codes of 10 characters (about 50 bits each) from an alphabet without
//!   look-alikes, stored as HMAC-SHA256 under a key derived from the server key, never in
//!   clear; each works once, and making new ones ends the old ones.
//!
//! The QR code's PNG is drawn here from the code's modules (the `png` crate encodes it): the
//! QR crates' own PNG output pulls in a whole image stack for one grey-scale picture.

use std::sync::Arc;

use hmac::Mac as _;
use portcullis_core::Clock;
use portcullis_store::{Store, StoreError};
use rand::Rng as _;
use totp_rs::{Algorithm, Builder, Totp};

use crate::seal::{SealError, Sealer};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Purposes of sent codes among the single-use tokens.
const SENT_CODE: &str = "sent_code";
const EMAIL_ENROL: &str = "email_enrol";

/// Backup codes made at a time.
pub const BACKUP_CODES: usize = 10;
/// Characters of a backup code: no 0/o, 1/l/i look-alikes.
const BACKUP_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const BACKUP_CODE_CHARS: usize = 10;

/// A TOTP setup to show the user: the secret for typing in, and the `otpauth://` URI the QR
/// code carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpSetup {
    /// Base32, as authenticator apps take it.
    pub secret: String,
    /// `otpauth://totp/Issuer:email?secret=...&issuer=Issuer`.
    pub uri: String,
}

/// What the user offers as a second factor.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A 6-digit code from the authenticator app.
    Totp(String),
    /// One of the backup codes.
    BackupCode(String),
    /// A code sent by e-mail (or SMS) for this login.
    SentCode(String),
    /// Six digits typed into a page: a TOTP code, else a sent code.
    OneTimeCode(String),
    /// A passkey's answer to the challenge of ceremony `ceremony`.
    Passkey {
        /// The ceremony the challenge came from.
        ceremony: String,
        /// The browser's `PublicKeyCredential`.
        answer: Box<webauthn_rs::prelude::PublicKeyCredential>,
    },
}

/// A second factor that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A TOTP code.
    Totp,
    /// A passkey.
    Passkey,
    /// A code sent by e-mail (or SMS).
    SentCode,
    /// A backup code; this many remain.
    BackupCode {
        /// Unused codes left.
        remaining: i64,
    },
}

impl Accepted {
    /// The method's name, for events.
    pub fn method(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Passkey => "passkey",
            Self::SentCode => "sent_code",
            Self::BackupCode { .. } => "backup_code",
        }
    }
}

/// Failures of second-factor management.
#[derive(Debug, thiserror::Error)]
pub enum SecondFactorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A confirmed TOTP credential exists: disable it first.
    #[error("a second factor is already set up")]
    AlreadyEnrolled,
    /// No TOTP setup is pending.
    #[error("no TOTP setup is pending")]
    NotPending,
    /// The stored secret does not open with this server key.
    #[error("the stored TOTP secret cannot be opened with this server key")]
    Sealed,
    /// Sealing or building the credential failed.
    #[error("TOTP: {0}")]
    Totp(String),
    /// A passkey ceremony failed.
    #[error(transparent)]
    Passkey(#[from] crate::passkeys::PasskeyError),
}

impl From<SealError> for SecondFactorError {
    fn from(error: SealError) -> Self {
        Self::Totp(error.to_string())
    }
}

/// The second factors of every account.
#[derive(Clone)]
pub struct SecondFactors {
    store: Store,
    sealer: Arc<Sealer>,
    backup_key: Arc<zeroize::Zeroizing<[u8; 32]>>,
    issuer: Arc<str>,
    clock: Arc<dyn Clock>,
    passkeys: Option<crate::passkeys::Passkeys>,
    codes: Option<Arc<dyn crate::codes::CodeSender>>,
}

impl std::fmt::Debug for SecondFactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactors")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl SecondFactors {
    /// Second factors over `store`; secrets sealed and backup codes keyed under `server_key`;
    /// `issuer` names the service in authenticator apps (no `:`).
    pub fn new(store: Store, server_key: &[u8], issuer: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            sealer: Arc::new(Sealer::new(server_key, b"portcullis totp v1")),
            backup_key: Arc::new(zeroize::Zeroizing::new(crate::seal::derive(
                server_key,
                b"portcullis backup codes v1",
            ))),
            issuer: Arc::from(issuer.replace(':', " ")),
            clock,
            passkeys: None,
            codes: None,
        }
    }

    /// The same second factors, with codes sent out of band by `sender`.
    #[must_use]
    pub fn with_code_sender(mut self, sender: Arc<dyn crate::codes::CodeSender>) -> Self {
        self.codes = Some(sender);
        self
    }

    /// The methods the account can use at the second step, for the answer that asks for it.
    pub async fn methods(&self, account_id: &str) -> Result<Vec<&'static str>, SecondFactorError> {
        let mut methods = Vec::new();
        if self
            .store
            .totp(account_id)
            .await?
            .is_some_and(|t| t.confirmed_at.is_some())
        {
            methods.push("totp");
        }
        if self.has_passkey(account_id).await? {
            methods.push("passkey");
        }
        if let Some(sender) = &self.codes
            && self.store.email_factor(account_id).await?
        {
            methods.push(sender.method());
        }
        if self.store.unused_backup_codes(account_id).await? > 0 {
            methods.push("backup_code");
        }
        Ok(methods)
    }

    /// Sends a login code to an account that takes them; false when it does not.
    pub async fn send_login_code(
        &self,
        account_id: &str,
        email: &str,
    ) -> Result<bool, SecondFactorError> {
        let Some(sender) = &self.codes else {
            return Ok(false);
        };
        if !self.store.email_factor(account_id).await? {
            return Ok(false);
        }
        self.send_code(sender.as_ref(), account_id, email, SENT_CODE)
            .await?;
        Ok(true)
    }

    async fn send_code(
        &self,
        sender: &dyn crate::codes::CodeSender,
        account_id: &str,
        to: &str,
        purpose: &str,
    ) -> Result<(), SecondFactorError> {
        let code = crate::codes::new_code();
        let now = self.now_ms();
        let lifetime = i64::try_from(crate::codes::CODE_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        self.store
            .insert_one_time_token(
                &crate::codes::code_hash(account_id, &code),
                purpose,
                account_id,
                now,
                now.saturating_add(lifetime),
            )
            .await?;
        sender.send(to, &code);
        Ok(())
    }

    /// Takes a sent code of `purpose` for the account, once.
    async fn take_code(
        &self,
        account_id: &str,
        code: &str,
        purpose: &str,
    ) -> Result<bool, SecondFactorError> {
        let owner = self
            .store
            .take_one_time_token(
                &crate::codes::code_hash(account_id, code),
                purpose,
                self.now_ms(),
            )
            .await?;
        Ok(owner.as_deref() == Some(account_id))
    }

    /// Starts turning on e-mailed codes: a code to the address, to show it is the user's.
    pub async fn begin_email(
        &self,
        account_id: &str,
        email: &str,
    ) -> Result<(), SecondFactorError> {
        let sender = self.codes.clone().ok_or(SecondFactorError::NotPending)?;
        self.send_code(sender.as_ref(), account_id, email, EMAIL_ENROL)
            .await
    }

    /// Turns e-mailed codes on with the code sent; returns new backup codes when the account
    /// had none, or `None` for a wrong code.
    pub async fn confirm_email(
        &self,
        account_id: &str,
        code: &str,
    ) -> Result<Option<Vec<String>>, SecondFactorError> {
        if !self.take_code(account_id, code, EMAIL_ENROL).await? {
            return Ok(None);
        }
        self.store
            .set_email_factor(account_id, self.now_ms())
            .await?;
        if self.store.unused_backup_codes(account_id).await? > 0 {
            return Ok(Some(Vec::new()));
        }
        let codes = new_backup_codes();
        let hashes: Vec<String> = codes.iter().map(|c| self.backup_hash(c)).collect();
        self.store
            .set_backup_codes(account_id, &hashes, self.now_ms())
            .await?;
        Ok(Some(codes))
    }

    /// The same second factors, with passkeys.
    #[must_use]
    pub fn with_passkeys(mut self, passkeys: crate::passkeys::Passkeys) -> Self {
        self.passkeys = Some(passkeys);
        self
    }

    /// The passkeys, when on.
    pub fn passkeys(&self) -> Option<&crate::passkeys::Passkeys> {
        self.passkeys.as_ref()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    fn now_unix(&self) -> u64 {
        u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0)
    }

    fn totp(&self, secret: Vec<u8>, email: &str) -> Result<Totp, SecondFactorError> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(30)
            .with_secret(secret)
            .with_issuer(Some(self.issuer.as_ref()))
            .with_account_name(email.replace(':', " "))
            .build()
            .map_err(|e| SecondFactorError::Totp(e.to_string()))
    }

    fn open(&self, account_id: &str, sealed: &str) -> Result<Vec<u8>, SecondFactorError> {
        self.sealer
            .open(sealed, account_id.as_bytes())
            .ok_or(SecondFactorError::Sealed)
    }

    /// Whether the account has a confirmed second factor.
    pub async fn enrolled(&self, account_id: &str) -> Result<bool, SecondFactorError> {
        let totp = self
            .store
            .totp(account_id)
            .await?
            .is_some_and(|t| t.confirmed_at.is_some());
        Ok(totp
            || self.has_passkey(account_id).await?
            || (self.codes.is_some() && self.store.email_factor(account_id).await?))
    }

    async fn has_passkey(&self, account_id: &str) -> Result<bool, SecondFactorError> {
        match &self.passkeys {
            Some(passkeys) => Ok(passkeys.any(account_id).await?),
            None => Ok(false),
        }
    }

    /// Starts (or restarts) a TOTP setup: a new secret, pending until confirmed.
    pub async fn begin_totp(
        &self,
        account_id: &str,
        email: &str,
    ) -> Result<TotpSetup, SecondFactorError> {
        let mut secret = vec![0u8; 20];
        rand::rng().fill_bytes(&mut secret);
        let totp = self.totp(secret.clone(), email)?;
        let sealed = self.sealer.seal(&secret, account_id.as_bytes())?;
        if !self
            .store
            .put_pending_totp(account_id, &sealed, self.now_ms())
            .await?
        {
            return Err(SecondFactorError::AlreadyEnrolled);
        }
        Ok(TotpSetup {
            secret: totp_rs::Secret::from(secret).to_base32(),
            uri: totp
                .to_url()
                .map_err(|e| SecondFactorError::Totp(e.to_string()))?,
        })
    }

    /// The account's TOTP credential: the confirmed one, or the pending setup.
    async fn credential(
        &self,
        account_id: &str,
        email: &str,
        confirmed: bool,
    ) -> Result<Option<Totp>, SecondFactorError> {
        let Some(row) = self
            .store
            .totp(account_id)
            .await?
            .filter(|t| t.confirmed_at.is_some() == confirmed)
        else {
            return Ok(None);
        };
        Ok(Some(self.totp(self.open(account_id, &row.secret)?, email)?))
    }

    /// The `otpauth://` URI of the pending setup (for its QR code).
    pub async fn pending_uri(
        &self,
        account_id: &str,
        email: &str,
    ) -> Result<String, SecondFactorError> {
        let totp = self
            .credential(account_id, email, false)
            .await?
            .ok_or(SecondFactorError::NotPending)?;
        totp.to_url()
            .map_err(|e| SecondFactorError::Totp(e.to_string()))
    }

    /// Confirms the pending setup with a code from it; returns the new backup codes, shown
    /// once, or `None` when the code is wrong.
    pub async fn confirm_totp(
        &self,
        account_id: &str,
        email: &str,
        code: &str,
    ) -> Result<Option<Vec<String>>, SecondFactorError> {
        let totp = self
            .credential(account_id, email, false)
            .await?
            .ok_or(SecondFactorError::NotPending)?;
        let Some(step) = totp.check(code.trim(), self.now_unix()) else {
            return Ok(None);
        };
        let codes = new_backup_codes();
        let hashes: Vec<String> = codes.iter().map(|c| self.backup_hash(c)).collect();
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !self
            .store
            .confirm_totp(account_id, step, &hashes, self.now_ms())
            .await?
        {
            return Err(SecondFactorError::NotPending);
        }
        Ok(Some(codes))
    }

    /// Checks a second factor for the account; `None` when it is wrong, used before, or the
    /// account has none.
    pub async fn verify(
        &self,
        account_id: &str,
        email: &str,
        proof: &Proof,
    ) -> Result<Option<Accepted>, SecondFactorError> {
        match proof {
            Proof::Totp(code) => self.verify_totp(account_id, email, code).await,
            Proof::OneTimeCode(code) => match self.verify_totp(account_id, email, code).await? {
                Some(accepted) => Ok(Some(accepted)),
                None => Ok(self
                    .take_code(account_id, code, SENT_CODE)
                    .await?
                    .then_some(Accepted::SentCode)),
            },
            Proof::Passkey { ceremony, answer } => {
                let Some(passkeys) = &self.passkeys else {
                    return Ok(None);
                };
                match passkeys
                    .finish_authentication(account_id, ceremony, answer)
                    .await
                {
                    Ok(()) => Ok(Some(Accepted::Passkey)),
                    Err(crate::passkeys::PasskeyError::Store(error)) => Err(error.into()),
                    Err(error) => {
                        tracing::info!(%error, "passkey refused as a second factor");
                        Ok(None)
                    }
                }
            }
            Proof::SentCode(code) => Ok(self
                .take_code(account_id, code, SENT_CODE)
                .await?
                .then_some(Accepted::SentCode)),
            Proof::BackupCode(code) => {
                let hash = self.backup_hash(code);
                if !self
                    .store
                    .use_backup_code(account_id, &hash, self.now_ms())
                    .await?
                {
                    return Ok(None);
                }
                let remaining = self.store.unused_backup_codes(account_id).await?;
                Ok(Some(Accepted::BackupCode { remaining }))
            }
        }
    }

    async fn verify_totp(
        &self,
        account_id: &str,
        email: &str,
        code: &str,
    ) -> Result<Option<Accepted>, SecondFactorError> {
        let Some(totp) = self.credential(account_id, email, true).await? else {
            return Ok(None);
        };
        let Some(step) = totp.check(code.trim(), self.now_unix()) else {
            return Ok(None);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        Ok(self
            .store
            .use_totp_step(account_id, step)
            .await?
            .then_some(Accepted::Totp))
    }

    /// New backup codes for an enrolled account, ending the old ones; shown once.
    pub async fn regenerate_backup_codes(
        &self,
        account_id: &str,
    ) -> Result<Vec<String>, SecondFactorError> {
        if !self.enrolled(account_id).await? {
            return Err(SecondFactorError::NotPending);
        }
        let codes = new_backup_codes();
        let hashes: Vec<String> = codes.iter().map(|c| self.backup_hash(c)).collect();
        self.store
            .set_backup_codes(account_id, &hashes, self.now_ms())
            .await?;
        Ok(codes)
    }

    /// How many unused backup codes the account has.
    pub async fn backup_codes_left(&self, account_id: &str) -> Result<i64, SecondFactorError> {
        Ok(self.store.unused_backup_codes(account_id).await?)
    }

    /// Removes the account's TOTP credential and backup codes; false when it had none.
    pub async fn disable(&self, account_id: &str) -> Result<bool, SecondFactorError> {
        Ok(self.store.delete_second_factors(account_id).await?)
    }

    /// The stored form of a backup code: case, spaces and dashes do not matter.
    fn backup_hash(&self, code: &str) -> String {
        let normal: String = code
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.backup_key[..])
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(normal.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn new_backup_codes() -> Vec<String> {
    use rand::RngExt as _;
    let mut rng = rand::rng();
    (0..BACKUP_CODES)
        .map(|_| {
            let chars: String = (0..BACKUP_CODE_CHARS)
                .map(|_| char::from(BACKUP_ALPHABET[rng.random_range(0..BACKUP_ALPHABET.len())]))
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// The QR code of `uri` as SVG.
pub fn qr_svg(uri: &str) -> Result<String, SecondFactorError> {
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| SecondFactorError::Totp(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build())
}

/// The QR code of `uri` as a grey-scale PNG: 6 pixels a module, with the 4-module quiet zone
/// the standard asks for.
pub fn qr_png(uri: &str) -> Result<Vec<u8>, SecondFactorError> {
    const SCALE: usize = 6;
    const QUIET: usize = 4;
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| SecondFactorError::Totp(e.to_string()))?;
    let modules = code.width();
    let side = (modules + 2 * QUIET) * SCALE;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (
            (index % modules + QUIET) * SCALE,
            (index / modules + QUIET) * SCALE,
        );
        for row in y..y + SCALE {
            pixels[row * side + x..row * side + x + SCALE].fill(0);
        }
    }
    let mut png = Vec::new();
    let side = u32::try_from(side).map_err(|e| SecondFactorError::Totp(e.to_string()))?;
    let mut encoder = png::Encoder::new(&mut png, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| SecondFactorError::Totp(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| SecondFactorError::Totp(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| SecondFactorError::Totp(e.to_string()))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_codes_are_ten_distinct_codes_without_look_alikes() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), BACKUP_CODES);
        let distinct: std::collections::HashSet<&String> = codes.iter().collect();
        assert_eq!(distinct.len(), BACKUP_CODES);
        for code in &codes {
            assert_eq!(code.len(), 11, "{code}");
            assert!(!code.contains(['0', 'o', '1', 'l', 'i']), "{code}");
        }
    }

    #[test]
    fn qr_codes_render_as_svg_and_png() {
        let uri =
            "otpauth://totp/Portcullis:kim%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Portcullis";
        let svg = qr_svg(uri).unwrap_or_else(|e| panic!("{e}"));
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
        let png = qr_png(uri).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
