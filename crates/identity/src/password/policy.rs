//! Password policy after NIST SP 800-63B: length, the common-password list, a strength
//! estimate (zxcvbn) and the account's own names; composition rules only when asked for. Every
//! rule a password fails is reported at once, so a person fixes it in one try.

use serde::Serialize;

use super::common;

/// The rules a new password must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values): 8, 10 or 12 by profile.
    pub min_length: usize,
    /// Most characters: longer passwords are refused, never silently cut.
    pub max_length: usize,
    /// Lowest zxcvbn score (0–4) accepted.
    pub min_strength: u8,
    /// Also require a lower-case and an upper-case letter, a digit and a symbol (opt-in).
    pub composition: bool,
    /// How many previous passwords (the current one included) may not be reused.
    pub history: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 128,
            min_strength: 0,
            composition: false,
            history: 5,
        }
    }
}

/// One rule a password fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum PolicyFailure {
    /// Shorter than the minimum.
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// Longer than the maximum.
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// On the list of common passwords.
    Common,
    /// Too easy to guess.
    TooWeak {
        /// The lowest accepted zxcvbn score.
        min: u8,
    },
    /// The e-mail address or the name.
    ContainsIdentity,
    /// One of the account's recent passwords.
    Reused {
        /// How many recent passwords are remembered.
        count: usize,
    },
    /// Lacks a character class (composition rules only).
    MissingClass {
        /// What is missing.
        class: &'static str,
    },
}

impl PolicyFailure {
    /// What the password must do instead, in words.
    pub fn requirement(&self) -> String {
        match self {
            Self::TooShort { min } => format!("be at least {min} characters long"),
            Self::TooLong { max } => format!("be at most {max} characters long"),
            Self::Common => "not be a commonly used password".to_owned(),
            Self::TooWeak { .. } => "be harder to guess (add more unrelated words)".to_owned(),
            Self::ContainsIdentity => "not be your e-mail address or your name".to_owned(),
            Self::Reused { count } => format!("not be one of your last {count} passwords"),
            Self::MissingClass { class } => format!("contain {class}"),
        }
    }
}

/// All the rules a password fails, with one message that lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyViolations {
    /// One sentence naming every failed rule.
    pub message: String,
    /// The failed rules.
    pub failures: Vec<PolicyFailure>,
}

impl PolicyViolations {
    /// The violations of `failures`, or `None` when there are none.
    pub fn of(failures: Vec<PolicyFailure>) -> Option<Self> {
        if failures.is_empty() {
            return None;
        }
        let rules: Vec<String> = failures.iter().map(PolicyFailure::requirement).collect();
        Some(Self {
            message: format!("The password must {}.", rules.join("; ")),
            failures,
        })
    }
}

impl PasswordPolicy {
    /// The rules `password` fails, given the account's e-mail address and name. Reuse is the
    /// caller's to check: it needs the stored hashes.
    pub fn check(&self, password: &str, email: &str, name: &str) -> Vec<PolicyFailure> {
        let mut failures = Vec::new();
        let length = password.chars().count();
        if length < self.min_length {
            failures.push(PolicyFailure::TooShort {
                min: self.min_length,
            });
        }
        if length > self.max_length {
            failures.push(PolicyFailure::TooLong {
                max: self.max_length,
            });
            // zxcvbn's cost grows with length: stop before it.
            return failures;
        }
        if common::is_common(password) {
            failures.push(PolicyFailure::Common);
        }
        let lowered = password.to_lowercase();
        let local = email.split_once('@').map_or(email, |(local, _)| local);
        let identities = [email, local, name]
            .into_iter()
            .map(str::to_lowercase)
            .filter(|identity| identity.chars().count() >= 3);
        if identities.clone().any(|identity| lowered == identity) {
            failures.push(PolicyFailure::ContainsIdentity);
        }
        if self.min_strength > 0 && !password.is_empty() {
            let inputs: Vec<String> = identities.collect();
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let score = u8::from(zxcvbn::zxcvbn(password, &inputs).score());
            if score < self.min_strength {
                failures.push(PolicyFailure::TooWeak {
                    min: self.min_strength,
                });
            }
        }
        if self.composition {
            type Class = (&'static str, fn(char) -> bool);
            let classes: [Class; 4] = [
                ("a lower-case letter", char::is_lowercase),
                ("an upper-case letter", char::is_uppercase),
                ("a digit", |c| c.is_ascii_digit()),
                ("a symbol", |c| !c.is_alphanumeric()),
            ];
            for (class, test) in classes {
                if !password.chars().any(test) {
                    failures.push(PolicyFailure::MissingClass { class });
                }
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 12,
            min_strength: 3,
            ..PasswordPolicy::default()
        }
    }

    fn rules(policy: &PasswordPolicy, password: &str) -> Vec<PolicyFailure> {
        policy.check(password, "alice.smith@example.com", "Alice Smith")
    }

    #[test]
    fn a_long_unusual_passphrase_passes() {
        assert_eq!(
            rules(&production(), "velvet tractor orbits quietly"),
            vec![]
        );
        assert_eq!(rules(&PasswordPolicy::default(), "gr8-otter-jam"), vec![]);
    }

    #[test]
    fn every_failed_rule_is_listed_in_one_message() {
        let failures = rules(&production(), "password");
        assert_eq!(
            failures,
            vec![
                PolicyFailure::TooShort { min: 12 },
                PolicyFailure::Common,
                PolicyFailure::TooWeak { min: 3 }
            ]
        );
        let message = PolicyViolations::of(failures)
            .map(|v| v.message)
            .unwrap_or_default();
        assert_eq!(
            message,
            "The password must be at least 12 characters long; not be a commonly used password; \
             be harder to guess (add more unrelated words)."
        );
    }

    #[test]
    fn the_email_and_the_name_are_refused() {
        let policy = PasswordPolicy::default();
        assert!(
            rules(&policy, "Alice.Smith@example.com").contains(&PolicyFailure::ContainsIdentity)
        );
        assert!(rules(&policy, "alice.smith").contains(&PolicyFailure::ContainsIdentity));
        assert!(rules(&policy, "ALICE SMITH").contains(&PolicyFailure::ContainsIdentity));
    }

    #[test]
    fn over_long_passwords_are_refused_not_cut() {
        let long = "x".repeat(129);
        assert_eq!(
            rules(&production(), &long),
            vec![PolicyFailure::TooLong { max: 128 }]
        );
        // 128 characters of four bytes each: length counts characters.
        assert!(
            !rules(&PasswordPolicy::default(), &"🦀".repeat(128))
                .contains(&PolicyFailure::TooLong { max: 128 })
        );
    }

    #[test]
    fn composition_is_opt_in() {
        let policy = PasswordPolicy {
            composition: true,
            ..PasswordPolicy::default()
        };
        assert_eq!(
            rules(&policy, "gr8-otter-jam"),
            vec![PolicyFailure::MissingClass {
                class: "an upper-case letter"
            }]
        );
    }
}
