//! E-mail addresses: one normal form, so that `Alice@Example.COM` and `alice@example.com` are
//! one account and neither can be registered beside the other.

use std::fmt;

/// A syntactically plausible, normalized e-mail address (trimmed, lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Why a string is not accepted as an e-mail address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Not `local@domain` with one `@`.
    #[error("an e-mail address looks like name@example.com")]
    Shape,
    /// Longer than RFC 5321 allows (64 before the `@`, 254 in all).
    #[error("the e-mail address is too long")]
    TooLong,
    /// Spaces, control characters, quotes or angle brackets.
    #[error("the e-mail address holds characters that are not allowed")]
    Characters,
}

impl Email {
    /// Trims, lower-cases and checks `raw`. Quoted local parts and address literals are
    /// refused: no mail provider hands them out, and they are a favourite of parser confusion.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let address = raw.trim().to_lowercase();
        if address.len() > 254 {
            return Err(EmailError::TooLong);
        }
        if address.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '"' | '<' | '>' | '(' | ')' | ',' | ';' | '[' | ']' | '\\'
                )
        }) {
            return Err(EmailError::Characters);
        }
        let (local, domain) = address.split_once('@').ok_or(EmailError::Shape)?;
        if local.len() > 64 {
            return Err(EmailError::TooLong);
        }
        let labels_ok = domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        if local.is_empty() || domain.contains('@') || !domain.contains('.') || !labels_ok {
            return Err(EmailError::Shape);
        }
        Ok(Self(address))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0
            .split_once('@')
            .map_or(self.0.as_str(), |(local, _)| local)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_normal_form() {
        let email = Email::parse("  Alice.Smith@Example.COM ").map(|e| e.0);
        assert_eq!(email, Ok("alice.smith@example.com".to_owned()));
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a@b@c.com",
            "alice@-x.com",
            "alice@x..com",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Shape), "{bad:?}");
        }
        for bad in [
            "al ice@example.com",
            "\"a\"@example.com",
            "a<b>@example.com",
            "a@[127.0.0.1]",
            "a\u{0}@x.com",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Characters), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }
}
