//! Outgoing mail: verification, password reset and unlock links, and notices. SMTP through
//! lettre (rustls with aws-lc-rs; `smtps://` for implicit TLS, `smtp://...?tls=required` for
//! STARTTLS); without an SMTP server (development) the message is written to the log instead.
//!
//! Mail is sent in the background: a response must not take longer when a message goes out,
//! or its timing would tell whether an address has an account.

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

/// One message to one recipient, plain text.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Errors building the mailer.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP URL or the sender address is not valid.
    #[error("mail configuration: {0}")]
    Config(String),
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp {
        /// The pooled transport.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The sender.
        from: Mailbox,
    },
    /// The log (development without an SMTP server): links appear in the JSON log.
    Log,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Smtp { .. } => "Mailer::Smtp",
            Self::Log => "Mailer::Log",
        })
    }
}

impl Mailer {
    /// An SMTP mailer for `url` (`smtp://host:25`, `smtp://host:587?tls=required`,
    /// `smtps://user:pass@host:465`) sending as `from`.
    pub fn smtp(url: &str, from: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Config(format!("smtp url: {e}")))?
            .build();
        let from = from
            .parse()
            .map_err(|e| MailError::Config(format!("sender {from:?}: {e}")))?;
        Ok(Self::Smtp { transport, from })
    }

    /// Sends `mail` in the background; failures are logged, never returned to the caller.
    pub fn send_later(&self, mail: Mail) {
        let mailer = self.clone();
        tokio::spawn(async move {
            if let Err(error) = mailer.send(&mail).await {
                tracing::error!(%error, subject = mail.subject, "mail not sent");
            }
        });
    }

    /// Sends `mail` now.
    pub async fn send(&self, mail: &Mail) -> Result<(), String> {
        match self {
            Self::Log => {
                tracing::warn!(
                    to = portcullis_core::mask_pii(&mail.to),
                    subject = mail.subject,
                    body = mail.body,
                    "no SMTP server configured ([mail] url): mail written to the log"
                );
                Ok(())
            }
            Self::Smtp { transport, from } => {
                let to: Mailbox = mail.to.parse().map_err(|e| format!("recipient: {e}"))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(&mail.subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body.clone())
                    .map_err(|e| format!("building the message: {e}"))?;
                transport.send(message).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }
}
