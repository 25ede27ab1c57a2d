//! The proof-of-work challenge, after Anubis: the browser finds a nonce whose SHA-256 with the
//! challenge starts with `difficulty` zero bits (about 2^difficulty hashes: a moment for one
//! visitor, a cost per page for a crawler fleet), and gets a pass for a while.
//!
//! Challenges and passes are signed (HMAC-SHA256 under a key derived from the server key, so
//! every instance with that key accepts them) and bound to the client: a hash of its network
//! (IPv4 /24, IPv6 /64) and its user agent, so a pass copied to another network or client is
//! worthless. Each challenge carries a random id; the caller makes it single-use in the shared
//! state, which [`Challenges::verify`] does not do itself so that it stays free of I/O.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Why a solution or a pass is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not something this server signed.
    #[error("forged or malformed")]
    Forged,
    /// Signed, but its time is over.
    #[error("expired")]
    Expired,
    /// Signed for another client (network or user agent).
    #[error("bound to another client")]
    Rebound,
    /// The nonce does not reach the difficulty.
    #[error("the work does not reach the difficulty")]
    Insufficient,
}

/// A verified solution: the challenge's id, to be used once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The challenge's random id.
    pub id: String,
    /// Seconds the challenge stays valid from now: how long its id must be remembered.
    pub remaining_secs: i64,
}

/// Issues and checks challenges and passes.
#[derive(Clone)]
pub struct Challenges {
    key: HmacSha256,
    /// How long a challenge may be solved.
    pub challenge_secs: i64,
    /// How long a pass lasts.
    pub pass_secs: i64,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

/// The hex SHA-256 of the client's network and user agent.
pub fn binding(ip: IpAddr, user_agent: &str) -> String {
    let network = match ip {
        IpAddr::V4(v4) => ipnet::Ipv4Net::new(v4, 24).map(|n| n.trunc().to_string()),
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64).map(|n| n.trunc().to_string()),
    }
    .unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(network.as_bytes());
    hash.update(b"\n");
    hash.update(user_agent.as_bytes());
    hex::encode(hash.finalize())
}

/// Leading zero bits of SHA-256(`challenge` ":" `nonce`): the work a solution shows.
pub fn work(challenge: &str, nonce: &str) -> u32 {
    let digest = Sha256::digest(format!("{challenge}:{nonce}").as_bytes());
    let mut bits = 0;
    for byte in digest {
        if byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

impl Challenges {
    /// Keys derived from `server_key`.
    pub fn new(server_key: &[u8], challenge_secs: i64, pass_secs: i64) -> Self {
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        let mut derive = HmacSha256::new_from_slice(server_key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        derive.update(b"portcullis challenge v1");
        let derived = derive.finalize().into_bytes();
        let key = HmacSha256::new_from_slice(&derived)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        Self {
            key,
            challenge_secs,
            pass_secs,
        }
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{}.{tag}", URL_SAFE_NO_PAD.encode(payload))
    }

    /// The payload of a token this server signed, checked in constant time.
    fn open(&self, token: &str) -> Result<String, ChallengeError> {
        let (payload, tag) = token.split_once('.').ok_or(ChallengeError::Forged)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ChallengeError::Forged)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| ChallengeError::Forged)?;
        let mut mac = self.key.clone();
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| ChallengeError::Forged)?;
        String::from_utf8(payload).map_err(|_| ChallengeError::Forged)
    }

    /// A challenge of `difficulty` bits for the client `binding`.
    pub fn issue(&self, binding: &str, difficulty: u8, now: i64) -> String {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        let expires = now + self.challenge_secs;
        self.sign(&format!(
            "c1|{}|{difficulty}|{expires}|{binding}",
            hex::encode(id)
        ))
    }

    /// The difficulty a challenge asks for, if this server signed it.
    pub fn difficulty(&self, challenge: &str) -> Option<u8> {
        let payload = self.open(challenge).ok()?;
        payload.split('|').nth(2)?.parse().ok()
    }

    /// Checks a solution: signed here, in time, for this client, with enough work.
    pub fn verify(
        &self,
        challenge: &str,
        nonce: &str,
        binding: &str,
        now: i64,
    ) -> Result<Solved, ChallengeError> {
        let payload = self.open(challenge)?;
        let parts: Vec<&str> = payload.split('|').collect();
        let [version, id, difficulty, expires, bound] = parts[..] else {
            return Err(ChallengeError::Forged);
        };
        let difficulty: u32 = difficulty.parse().map_err(|_| ChallengeError::Forged)?;
        let expires: i64 = expires.parse().map_err(|_| ChallengeError::Forged)?;
        if version != "c1" {
            return Err(ChallengeError::Forged);
        }
        if now >= expires {
            return Err(ChallengeError::Expired);
        }
        if bound != binding {
            return Err(ChallengeError::Rebound);
        }
        if nonce.len() > 32 || work(challenge, nonce) < difficulty {
            return Err(ChallengeError::Insufficient);
        }
        Ok(Solved {
            id: id.to_owned(),
            remaining_secs: expires - now,
        })
    }

    /// A pass for the client `binding`, as a cookie value.
    pub fn pass(&self, binding: &str, now: i64) -> String {
        self.sign(&format!("p1|{}|{binding}", now + self.pass_secs))
    }

    /// Checks a pass cookie.
    pub fn check_pass(&self, pass: &str, binding: &str, now: i64) -> Result<(), ChallengeError> {
        let payload = self.open(pass)?;
        let mut parts = payload.split('|');
        let (Some("p1"), Some(expires), Some(bound), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ChallengeError::Forged);
        };
        let expires: i64 = expires.parse().map_err(|_| ChallengeError::Forged)?;
        if now >= expires {
            return Err(ChallengeError::Expired);
        }
        if bound != binding {
            return Err(ChallengeError::Rebound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve(challenge: &str, difficulty: u32) -> String {
        (0u64..)
            .map(|n| n.to_string())
            .find(|nonce| work(challenge, nonce) >= difficulty)
            .unwrap_or_default()
    }

    #[test]
    fn a_solution_passes_once_bound_and_in_time() {
        let challenges = Challenges::new(b"server key", 300, 3600);
        let me = binding(
            "203.0.113.7".parse().unwrap_or_else(|_| panic!()),
            "Firefox",
        );
        let challenge = challenges.issue(&me, 8, 1000);
        assert_eq!(challenges.difficulty(&challenge), Some(8));
        let nonce = solve(&challenge, 8);
        let solved = challenges.verify(&challenge, &nonce, &me, 1001);
        assert!(solved.is_ok_and(|s| s.id.len() == 32 && s.remaining_secs == 299));
        // The same network (/24) and browser: the same binding.
        let neighbour = binding(
            "203.0.113.200".parse().unwrap_or_else(|_| panic!()),
            "Firefox",
        );
        assert_eq!(me, neighbour);
        let other = binding(
            "198.51.100.7".parse().unwrap_or_else(|_| panic!()),
            "Firefox",
        );
        assert_eq!(
            challenges.verify(&challenge, &nonce, &other, 1001),
            Err(ChallengeError::Rebound)
        );
        assert_eq!(
            challenges.verify(&challenge, &nonce, &me, 1300),
            Err(ChallengeError::Expired)
        );
        let lazy = (0u64..)
            .map(|n| n.to_string())
            .find(|nonce| work(&challenge, nonce) < 8)
            .unwrap_or_default();
        assert_eq!(
            challenges.verify(&challenge, &lazy, &me, 1001),
            Err(ChallengeError::Insufficient)
        );
        // Harder than signed: the difficulty cannot be lowered by editing the challenge.
        let (payload, tag) = challenge.split_once('.').unwrap_or_default();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
            .unwrap_or_default()
            .replace("|8|", "|0|");
        let edited = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(text));
        assert_eq!(
            challenges.verify(&edited, &lazy, &me, 1001),
            Err(ChallengeError::Forged)
        );
        // Another server key signs other challenges.
        let elsewhere = Challenges::new(b"other key", 300, 3600);
        assert_eq!(
            elsewhere.verify(&challenge, &nonce, &me, 1001),
            Err(ChallengeError::Forged)
        );
    }

    #[test]
    fn passes_are_bound_and_expire() {
        let challenges = Challenges::new(b"server key", 300, 60);
        let pass = challenges.pass("me", 1000);
        assert_eq!(challenges.check_pass(&pass, "me", 1059), Ok(()));
        assert_eq!(
            challenges.check_pass(&pass, "me", 1060),
            Err(ChallengeError::Expired)
        );
        assert_eq!(
            challenges.check_pass(&pass, "you", 1000),
            Err(ChallengeError::Rebound)
        );
        assert_eq!(
            challenges.check_pass("x.y", "me", 1000),
            Err(ChallengeError::Forged)
        );
        // A challenge is not a pass.
        let challenge = challenges.issue("me", 1, 1000);
        assert_eq!(
            challenges.check_pass(&challenge, "me", 1000),
            Err(ChallengeError::Forged)
        );
    }
}
