//! Brute-force defence that an attacker cannot turn against the account's owner.
//!
//! Every login attempt is counted before its password is checked, atomically, under three keys:
//! the (account, client IP) pair, the client IP, and the account. Past a few free attempts the
//! pair and the IP must wait, the wait doubling with each further attempt (1 s, 2 s, 4 s, ... up
//! to 15 min): a guessing loop from one address slows to a crawl while other addresses are not
//! affected. Failures on one account from many addresses never lock it; they make logins to it
//! need an extra proof (an unlock link sent to its e-mail address; the proof-of-work challenge
//! later). A browser that logged in to the account before carries a signed device cookie, and
//! its logins are counted on the device alone, so failures from elsewhere never slow it down.
//!
//! Accounts are keyed by their normalized e-mail address, known or not, so the throttling
//! itself says nothing about which addresses have accounts. IPv6 clients are grouped by /64,
//! since one host commonly holds a whole /64.

use std::net::IpAddr;
use std::time::Duration;

use hmac::{KeyInit as _, Mac as _};
use portcullis_state::{Attempt, Backoff, SharedState, StateError};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The three counters' rules and the device cookie's lifetime.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// One account from one address (and one known device).
    pub pair: Backoff,
    /// One address, across accounts (credential stuffing).
    pub ip: Backoff,
    /// One account, across addresses: past `free`, logins need an extra proof.
    pub account: Backoff,
    /// How long a device cookie is honoured.
    pub device_lifetime: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        let backoff = |free| Backoff {
            free,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
            window: hour,
        };
        Self {
            pair: backoff(5),
            ip: backoff(50),
            account: Backoff {
                free: 20,
                base: Duration::ZERO,
                max: Duration::ZERO,
                window: hour,
            },
            device_lifetime: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Whether a login attempt may check its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Yes; settle these keys with [`Throttle::settle`] once the outcome is known.
    Open(Vec<String>),
    /// No: retry after this long.
    Throttled(Duration),
    /// No: the account is under attack from many addresses; prove control of its mailbox.
    ProofRequired,
}

/// The brute-force defence over the shared state.
#[derive(Clone)]
pub struct Throttle {
    state: SharedState,
    config: ThrottleConfig,
    device_key: hmac::Hmac<Sha256>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("state", &self.state)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// The defence over `state`; device cookies are signed with a key derived from `server_key`.
    pub fn new(state: SharedState, config: ThrottleConfig, server_key: &[u8]) -> Self {
        let derived = crate::seal::derive(server_key, b"portcullis device cookie v1");
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        let device_key = hmac::Hmac::<Sha256>::new_from_slice(&derived)
            .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new(&Default::default()));
        Self {
            state,
            config,
            device_key,
        }
    }

    /// The shared state.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Counts a login attempt for `email` from `ip` (or from a device known to the account)
    /// and says whether its password may be checked. `proven`: the client solved the
    /// proof-of-work, which stands in for the extra proof an account under distributed attack
    /// asks for (each guess then costs its work); the attempt still counts.
    pub async fn admit(
        &self,
        email: &str,
        ip: IpAddr,
        device: Option<&str>,
        proven: bool,
        now_unix: i64,
    ) -> Result<Gate, StateError> {
        if let Some(device) = device.and_then(|d| self.device_id(d, email, now_unix)) {
            let key = format!("device:{device}:{email}");
            return Ok(match self.state.attempt(&key, &self.config.pair).await? {
                Attempt::Blocked(wait) => Gate::Throttled(wait),
                Attempt::Counted(_) => Gate::Open(vec![key]),
            });
        }
        let ip_key = format!("ip:{}", group(ip));
        if let Attempt::Blocked(wait) = self.state.attempt(&ip_key, &self.config.ip).await? {
            return Ok(Gate::Throttled(wait));
        }
        let pair_key = format!("pair:{email}:{}", group(ip));
        if let Attempt::Blocked(wait) = self.state.attempt(&pair_key, &self.config.pair).await? {
            return Ok(Gate::Throttled(wait));
        }
        let account_key = format!("account:{email}");
        if let Attempt::Counted(count) = self
            .state
            .attempt(&account_key, &self.config.account)
            .await?
            && count > self.config.account.free
            && !proven
        {
            return Ok(Gate::ProofRequired);
        }
        Ok(Gate::Open(vec![pair_key, ip_key, account_key]))
    }

    /// After the password check: a success clears the pair (or device) and takes its attempt
    /// back from the address and the account; a failure stays counted.
    pub async fn settle(&self, keys: &[String], success: bool) -> Result<(), StateError> {
        if !success {
            return Ok(());
        }
        for (index, key) in keys.iter().enumerate() {
            if index == 0 {
                self.state.forget(key).await?;
            } else {
                self.state.uncount(key).await?;
            }
        }
        Ok(())
    }

    /// A device cookie for `email`: `<device id>.<issued unix>.<mac>`, new id each time.
    pub fn device_cookie(&self, email: &str, now_unix: i64) -> String {
        let id = crate::token::random_token();
        let id = &id[..22];
        let mac = self.device_mac(id, email, now_unix);
        format!("{id}.{now_unix}.{mac}")
    }

    /// How long device cookies are honoured.
    pub fn device_lifetime(&self) -> Duration {
        self.config.device_lifetime
    }

    /// The device id of a valid, unexpired device cookie for `email`.
    fn device_id<'c>(&self, cookie: &'c str, email: &str, now_unix: i64) -> Option<&'c str> {
        let mut parts = cookie.split('.');
        let (id, issued, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let issued_at: i64 = issued.parse().ok()?;
        let lifetime = i64::try_from(self.config.device_lifetime.as_secs()).unwrap_or(i64::MAX);
        let fresh = issued_at <= now_unix && now_unix - issued_at < lifetime;
        let expected = self.device_mac(id, email, issued_at);
        let valid: bool = expected.as_bytes().ct_eq(mac.as_bytes()).into();
        (fresh && valid && parts.next().is_none()).then_some(id)
    }

    fn device_mac(&self, id: &str, email: &str, issued: i64) -> String {
        let mut mac = self.device_key.clone();
        mac.update(format!("{id}\n{email}\n{issued}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The address a client is counted under: itself for IPv4, its /64 for IPv6.
pub fn group(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        let config = ThrottleConfig {
            pair: Backoff {
                free: 3,
                ..ThrottleConfig::default().pair
            },
            ip: Backoff {
                free: 6,
                ..ThrottleConfig::default().ip
            },
            account: Backoff {
                free: 10,
                ..ThrottleConfig::default().account
            },
            ..ThrottleConfig::default()
        };
        Throttle::new(
            SharedState::local(10_000),
            config,
            b"test server key of enough length!",
        )
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test]
    async fn one_address_guessing_one_account_is_slowed() {
        let t = throttle();
        for _ in 0..4 {
            assert!(matches!(
                t.admit("a@x.com", ip(1), None, false, 0).await,
                Ok(Gate::Open(_))
            ));
        }
        assert!(matches!(
            t.admit("a@x.com", ip(1), None, false, 0).await,
            Ok(Gate::Throttled(_))
        ));
        // Another address is not affected.
        assert!(matches!(
            t.admit("a@x.com", ip(2), None, false, 0).await,
            Ok(Gate::Open(_))
        ));
    }

    #[tokio::test]
    async fn many_addresses_on_one_account_require_a_proof_never_a_lock() {
        let t = throttle();
        for last in 1..=10 {
            assert!(matches!(
                t.admit("a@x.com", ip(last), None, false, 0).await,
                Ok(Gate::Open(_))
            ));
        }
        assert_eq!(
            t.admit("a@x.com", ip(50), None, false, 0).await.ok(),
            Some(Gate::ProofRequired)
        );
        // A client that did the proof-of-work is let through to the password check.
        assert!(matches!(
            t.admit("a@x.com", ip(51), None, true, 0).await,
            Ok(Gate::Open(_))
        ));
        // The owner's known browser is counted on its own.
        let cookie = t.device_cookie("a@x.com", 0);
        assert!(matches!(
            t.admit("a@x.com", ip(50), Some(&cookie), false, 10).await,
            Ok(Gate::Open(_))
        ));
    }

    #[tokio::test]
    async fn device_cookies_are_bound_to_their_account_and_signature() {
        let t = throttle();
        let cookie = t.device_cookie("a@x.com", 100);
        assert!(t.device_id(&cookie, "a@x.com", 200).is_some());
        assert!(
            t.device_id(&cookie, "b@x.com", 200).is_none(),
            "other account"
        );
        assert!(
            t.device_id(&cookie, "a@x.com", 100 + 91 * 24 * 3600)
                .is_none(),
            "expired"
        );
        // The MAC's last hex digit, changed (never to itself: 'x' is no hex digit).
        let forged = format!("{}x", &cookie[..cookie.len() - 1]);
        assert!(t.device_id(&forged, "a@x.com", 200).is_none(), "bad mac");
        let other_key = Throttle::new(
            SharedState::local(16),
            ThrottleConfig::default(),
            b"another key",
        );
        assert!(
            other_key.device_id(&cookie, "a@x.com", 200).is_none(),
            "other server key"
        );
    }

    #[tokio::test]
    async fn a_success_clears_the_pair() {
        let t = throttle();
        let mut keys = Vec::new();
        for _ in 0..3 {
            if let Ok(Gate::Open(k)) = t.admit("a@x.com", ip(1), None, false, 0).await {
                keys = k;
            }
        }
        assert!(t.settle(&keys, true).await.is_ok());
        for _ in 0..3 {
            assert!(matches!(
                t.admit("a@x.com", ip(1), None, false, 0).await,
                Ok(Gate::Open(_))
            ));
        }
    }

    #[test]
    fn ipv6_clients_group_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(ip(0));
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap_or(ip(0));
        assert_eq!(group(a), group(b));
        assert_eq!(
            group("::ffff:192.0.2.1".parse().unwrap_or(ip(0))),
            "192.0.2.1"
        );
    }
}
