//! The second step of a login, step-up, and the management of an account's second factors.
//! The password step ([`Identity::login`]) ends in a challenge instead of a session for an
//! account with a second factor; the second step here turns the challenge and a code into the
//! session. Its attempts go through the same brute-force defence as passwords, so a stolen
//! password does not buy unlimited guesses at the code.

use std::time::Duration;

use portcullis_store::TrustedDeviceRow;

use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::passkeys::{Ceremony, PasskeyError, PasskeyInfo, Passkeys};
use crate::second_factor::{Accepted, Proof, SecondFactorError, SecondFactors, TotpSetup};
use crate::throttle::Gate;
use crate::token::{random_id, random_token, token_hash};

/// How long "remember this device" lasts.
pub const TRUSTED_DEVICE_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

use super::{
    Account, ClientInfo, FailureReason, Identity, IdentityError, LoginOutcome, Principal,
    TokenPurpose, millis,
};

impl Identity {
    /// The same service, with second factors.
    #[must_use]
    pub fn with_second_factors(mut self, factors: SecondFactors) -> Self {
        self.second_factors = Some(factors);
        self
    }

    /// The second factors, when on.
    pub fn second_factors(&self) -> Option<&SecondFactors> {
        self.second_factors.as_ref()
    }

    fn factors(&self) -> Result<&SecondFactors, IdentityError> {
        self.second_factors
            .as_ref()
            .ok_or_else(|| IdentityError::Internal("second factors are off".into()))
    }

    /// The second step of a login: the challenge the password step gave and a second factor.
    /// With `remember`, the browser is remembered for [`TRUSTED_DEVICE_LIFETIME`].
    pub async fn login_second_factor(
        &self,
        challenge: &str,
        proof: &Proof,
        remember: bool,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, IdentityError> {
        let factors = self.factors()?;
        let hash = token_hash(challenge);
        let purpose = TokenPurpose::SecondFactor.as_str();
        let wrong = |account_id| LoginOutcome::Failure {
            reason: FailureReason::WrongSecondFactor,
            account_id,
        };
        let Some(account_id) = self
            .store
            .peek_one_time_token(&hash, purpose, self.now_ms())
            .await?
        else {
            return Ok(wrong(None));
        };
        let Some(row) = self.store.account_by_id(&account_id).await? else {
            return Ok(wrong(None));
        };
        let account = Account::from(&row);
        let keys = match self.gate(&account.email, client).await? {
            Gate::Open(keys) => keys,
            Gate::Throttled(retry_after) => return Ok(LoginOutcome::Throttled { retry_after }),
            Gate::ProofRequired => {
                return Ok(LoginOutcome::ProofRequired {
                    account_id: Some(account.id),
                });
            }
        };
        let accepted = factors.verify(&account.id, &account.email, proof).await?;
        // The challenge is spent only by a right code, and only once.
        let accepted = match accepted {
            Some(accepted)
                if self
                    .store
                    .take_one_time_token(&hash, purpose, self.now_ms())
                    .await?
                    .is_some() =>
            {
                accepted
            }
            _ => return Ok(wrong(Some(account.id))),
        };
        self.settle(&keys, true).await?;
        let now = self.now_ms();
        if let Accepted::BackupCode { remaining } = accepted {
            self.notify_backup_code_used(&account, remaining);
        }
        let remember_cookie = if remember {
            Some(self.remember_device(&account.id, client, now).await?)
        } else {
            None
        };
        let mut logged_in = self
            .finish_login(account, client, Some(now), Some(accepted))
            .await?;
        logged_in.remember_cookie = remember_cookie;
        Ok(LoginOutcome::Success(Box::new(logged_in)))
    }

    /// Remembers this browser for the account; returns the cookie's token.
    async fn remember_device(
        &self,
        account_id: &str,
        client: &ClientInfo,
        now: i64,
    ) -> Result<String, IdentityError> {
        let token = random_token();
        let row = TrustedDeviceRow {
            id: random_id(),
            token_hash: token_hash(&token),
            account_id: account_id.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(millis(TRUSTED_DEVICE_LIFETIME)),
            last_used_at: now,
            user_agent: client.user_agent.clone(),
            client_ip: Some(client.ip.to_string()),
        };
        self.store.insert_trusted_device(&row).await?;
        Ok(token)
    }

    /// When the second factor was proved that made the browser of `client` trusted by
    /// `account`: `None` without a valid cookie for this account and this browser family.
    pub(super) async fn trusted_device(
        &self,
        account: &Account,
        client: &ClientInfo,
    ) -> Result<Option<i64>, IdentityError> {
        let Some(cookie) = client.trusted_device.as_deref().filter(|c| c.len() == 43) else {
            return Ok(None);
        };
        let Some(device) = self
            .store
            .use_trusted_device(&token_hash(cookie), self.now_ms())
            .await?
        else {
            return Ok(None);
        };
        // Bound to the account and to the browser it was remembered in: a cookie copied into
        // another browser family does not skip the second factor.
        let same_browser = device.user_agent.is_none() || device.user_agent == client.user_agent;
        Ok((device.account_id == account.id && same_browser).then_some(device.created_at))
    }

    /// The caller's remembered browsers, newest first.
    pub async fn trusted_devices(
        &self,
        principal: &Principal,
    ) -> Result<Vec<TrustedDeviceRow>, IdentityError> {
        Ok(self
            .store
            .trusted_devices(&principal.account.id, self.now_ms())
            .await?)
    }

    /// Forgets one of the caller's remembered browsers.
    pub async fn revoke_trusted_device(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), IdentityError> {
        if self
            .store
            .delete_trusted_device(&principal.account.id, id)
            .await?
        {
            Ok(())
        } else {
            Err(IdentityError::NotFound)
        }
    }

    /// Step-up: a second factor proved again within a session, for sensitive actions.
    pub async fn step_up(
        &self,
        principal: &Principal,
        proof: &Proof,
    ) -> Result<Option<Accepted>, IdentityError> {
        let account = &principal.account;
        let accepted = self
            .factors()?
            .verify(&account.id, &account.email, proof)
            .await?;
        if let Some(accepted) = accepted {
            self.mark_second_factor(principal).await?;
            if let Accepted::BackupCode { remaining } = accepted {
                self.notify_backup_code_used(account, remaining);
            }
        }
        Ok(accepted)
    }

    /// Records that the session proved a second factor now (and drops its cached copy).
    async fn mark_second_factor(&self, principal: &Principal) -> Result<(), IdentityError> {
        self.store
            .set_session_second_factor(&principal.session_id, self.now_ms())
            .await?;
        self.sessions.forget_session(&principal.session_id);
        Ok(())
    }

    /// Whether the session proved a second factor within the step-up window.
    pub fn stepped_up(&self, principal: &Principal) -> bool {
        principal
            .second_factor_at
            .is_some_and(|at| self.now_ms() - at < millis(self.config.step_up_window))
    }

    /// Starts a TOTP setup for the caller.
    pub async fn begin_totp(&self, principal: &Principal) -> Result<TotpSetup, IdentityError> {
        let account = &principal.account;
        Ok(self
            .factors()?
            .begin_totp(&account.id, &account.email)
            .await?)
    }

    /// The `otpauth://` URI of the caller's pending setup.
    pub async fn pending_totp_uri(&self, principal: &Principal) -> Result<String, IdentityError> {
        let account = &principal.account;
        Ok(self
            .factors()?
            .pending_uri(&account.id, &account.email)
            .await?)
    }

    /// Confirms the caller's pending setup; the session counts as having proved it. Returns
    /// the backup codes, or `None` for a wrong code.
    pub async fn confirm_totp(
        &self,
        principal: &Principal,
        code: &str,
    ) -> Result<Option<Vec<String>>, IdentityError> {
        let account = &principal.account;
        let codes = self
            .factors()?
            .confirm_totp(&account.id, &account.email, code)
            .await?;
        if codes.is_some() {
            self.mark_second_factor(principal).await?;
        }
        Ok(codes)
    }

    /// Removes the caller's second factors; needs a step-up within the window.
    pub async fn disable_second_factor(
        &self,
        principal: &Principal,
    ) -> Result<bool, IdentityError> {
        if !self.stepped_up(principal) {
            return Err(IdentityError::StepUpRequired);
        }
        Ok(self.factors()?.disable(&principal.account.id).await?)
    }

    /// New backup codes for the caller, ending the old ones; needs a step-up within the window.
    pub async fn regenerate_backup_codes(
        &self,
        principal: &Principal,
    ) -> Result<Vec<String>, IdentityError> {
        if !self.stepped_up(principal) {
            return Err(IdentityError::StepUpRequired);
        }
        Ok(self
            .factors()?
            .regenerate_backup_codes(&principal.account.id)
            .await?)
    }

    /// Whether the caller has a second factor, and how many backup codes are left.
    pub async fn second_factor_status(
        &self,
        principal: &Principal,
    ) -> Result<(bool, i64), IdentityError> {
        let Some(factors) = &self.second_factors else {
            return Ok((false, 0));
        };
        let id = &principal.account.id;
        Ok((
            factors.enrolled(id).await?,
            factors.backup_codes_left(id).await?,
        ))
    }

    /// The second factors the caller has set up (`totp`, `passkey`, `email_code`,
    /// `backup_code`).
    pub async fn second_factor_methods(
        &self,
        principal: &Principal,
    ) -> Result<Vec<&'static str>, IdentityError> {
        match &self.second_factors {
            Some(factors) => Ok(factors.methods(&principal.account.id).await?),
            None => Ok(Vec::new()),
        }
    }

    fn passkeys(&self) -> Result<&Passkeys, IdentityError> {
        self.factors()?
            .passkeys()
            .ok_or_else(|| IdentityError::Internal("passkeys are off".into()))
    }

    /// Starts turning on e-mailed codes for the caller: a code goes to their address.
    pub async fn begin_email_factor(&self, principal: &Principal) -> Result<(), IdentityError> {
        let account = &principal.account;
        Ok(self
            .factors()?
            .begin_email(&account.id, &account.email)
            .await?)
    }

    /// Turns e-mailed codes on with the code sent; the session counts as having proved it.
    /// Returns new backup codes when the account had none (empty otherwise), or `None` for a
    /// wrong code.
    pub async fn confirm_email_factor(
        &self,
        principal: &Principal,
        code: &str,
    ) -> Result<Option<Vec<String>>, IdentityError> {
        let codes = self
            .factors()?
            .confirm_email(&principal.account.id, code)
            .await?;
        if codes.is_some() {
            self.mark_second_factor(principal).await?;
        }
        Ok(codes)
    }

    /// Starts registering a passkey for the caller.
    pub async fn start_passkey_registration(
        &self,
        principal: &Principal,
    ) -> Result<Ceremony, IdentityError> {
        let account = &principal.account;
        Ok(self
            .passkeys()?
            .start_registration(&account.id, &account.email, &account.display_name)
            .await
            .map_err(SecondFactorError::from)?)
    }

    /// Finishes registering a passkey; the session counts as having proved a second factor.
    pub async fn finish_passkey_registration(
        &self,
        principal: &Principal,
        ceremony: &str,
        name: &str,
        answer: &RegisterPublicKeyCredential,
    ) -> Result<PasskeyInfo, IdentityError> {
        let info = self
            .passkeys()?
            .finish_registration(&principal.account.id, ceremony, name, answer)
            .await
            .map_err(SecondFactorError::from)?;
        self.mark_second_factor(principal).await?;
        Ok(info)
    }

    /// The caller's passkeys.
    pub async fn list_passkeys(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PasskeyInfo>, IdentityError> {
        Ok(self
            .passkeys()?
            .list(&principal.account.id)
            .await
            .map_err(SecondFactorError::from)?)
    }

    /// Removes one of the caller's passkeys; needs a step-up within the window.
    pub async fn remove_passkey(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<bool, IdentityError> {
        if !self.stepped_up(principal) {
            return Err(IdentityError::StepUpRequired);
        }
        Ok(self
            .passkeys()?
            .remove(&principal.account.id, id)
            .await
            .map_err(SecondFactorError::from)?)
    }

    /// Starts a passwordless login with a discoverable passkey.
    pub async fn start_passkey_login(&self) -> Result<Ceremony, IdentityError> {
        Ok(self
            .passkeys()?
            .start_discoverable()
            .await
            .map_err(SecondFactorError::from)?)
    }

    /// Finishes a passwordless login: a passkey, verified by its user, is a login with a second
    /// factor on its own.
    pub async fn login_passkey(
        &self,
        ceremony: &str,
        answer: &PublicKeyCredential,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, IdentityError> {
        let refused = |account_id| LoginOutcome::Failure {
            reason: FailureReason::WrongSecondFactor,
            account_id,
        };
        let account_id = match self.passkeys()?.finish_discoverable(ceremony, answer).await {
            Ok(account_id) => account_id,
            Err(PasskeyError::Store(error)) => return Err(error.into()),
            Err(error) => {
                tracing::info!(%error, "passwordless passkey login refused");
                return Ok(refused(None));
            }
        };
        let Some(row) = self.store.account_by_id(&account_id).await? else {
            return Ok(refused(None));
        };
        let account = Account::from(&row);
        if account.status != crate::AccountStatus::Active {
            return Ok(LoginOutcome::Failure {
                reason: FailureReason::Inactive(account.status),
                account_id: Some(account.id),
            });
        }
        let now = self.now_ms();
        let logged_in = self
            .finish_login(account, client, Some(now), Some(Accepted::Passkey))
            .await?;
        Ok(LoginOutcome::Success(Box::new(logged_in)))
    }

    /// Tells the owner a backup code was used, and how many are left.
    fn notify_backup_code_used(&self, account: &Account, remaining: i64) {
        let Some(mail) = &self.mail else {
            return;
        };
        mail.mailer.send_later(crate::mail::Mail {
            to: account.email.clone(),
            subject: "A backup code was used".into(),
            body: format!(
                "One of your backup codes was just used to sign in. {remaining} unused codes remain.\n\n\
                 If this was not you, change your password and make new backup codes now.\n"
            ),
        });
    }
}
