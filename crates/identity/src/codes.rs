//! One-time codes sent out of band as a second factor: by e-mail here, by SMS through the same
//! trait once a provider is wired in. They are weaker than TOTP and passkeys: whoever controls
//! the mailbox (or, for SMS, the phone number: SIM swaps, SS7 interception) controls the
//! factor, and the code travels through systems the user does not control. They are offered
//! for users who cannot use an authenticator app, never required.
//!
//! A code is 6 random digits, works once and for 10 minutes, and is stored only as a hash bound
//! to its account. Guessing one goes through the brute-force defence like a password.

use sha2::{Digest as _, Sha256};

use crate::mail::{Mail, Mailer};

/// How long a sent code works.
pub const CODE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Delivers a code to its owner. Sending is in the background: a login must not take longer
/// (or fail) because a provider is slow.
pub trait CodeSender: Send + Sync + std::fmt::Debug {
    /// Sends `code` to `to` (an e-mail address for [`MailCodes`]; a phone number for an SMS
    /// provider).
    fn send(&self, to: &str, code: &str);
    /// The method's name in answers and events (`email_code`, `sms_code`).
    fn method(&self) -> &'static str;
}

/// Codes by e-mail, through the gateway's mailer (SMTP, or the log in development).
#[derive(Debug, Clone)]
pub struct MailCodes {
    mailer: Mailer,
}

impl MailCodes {
    /// Codes sent with `mailer`.
    pub fn new(mailer: Mailer) -> Self {
        Self { mailer }
    }
}

impl CodeSender for MailCodes {
    fn send(&self, to: &str, code: &str) {
        self.mailer.send_later(Mail {
            to: to.to_owned(),
            subject: "Your sign-in code".into(),
            body: format!(
                "Your sign-in code is {code}. It works once, for 10 minutes.\n\n\
                 If you did not just try to sign in, someone knows your password: change it now.\n"
            ),
        });
    }

    fn method(&self) -> &'static str {
        "email_code"
    }
}

/// Six random digits.
pub fn new_code() -> String {
    use rand::RngExt as _;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// The stored form of `code` for `account_id`: two accounts with the same code never collide.
pub fn code_hash(account_id: &str, code: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{account_id}:{}", code.trim()).as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_hashed_per_account() {
        let code = new_code();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(code_hash("a", "123456"), code_hash("b", "123456"));
        assert_eq!(code_hash("a", " 123456 "), code_hash("a", "123456"));
    }
}
