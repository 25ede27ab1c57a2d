//! Rate limits by GCRA, the generic cell rate algorithm of ATM networks that nginx's
//! `limit_req` and Envoy's limiter also implement: one number per key, the theoretical arrival
//! time (TAT) of the next request at the configured rate. A request passes while it arrives no
//! more than `burst` intervals ahead of schedule, so `1 + burst` pass back to back and then one
//! per interval, with no window edges to game (a fixed window lets twice the rate through
//! around each edge).
//!
//! Time is in microseconds, on Redis from its own `TIME` so that every instance reads one
//! clock. A key whose TAT has passed is exactly a key never seen, so idle keys are dropped
//! without changing any answer: that bounds memory for free.
//!
//! Written here rather than taken from `governor`: that crate keeps its state in process only,
//! and the Redis script must give the same answers as the in-process table, step for step,
//! which is easiest to promise when both run the few lines of [`decide`].

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A limit: one request per `interval` on average, `burst` more back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// The emission interval: the period divided by the number of requests in it.
    pub interval: Duration,
    /// Requests allowed at once beyond the first.
    pub burst: u32,
}

impl RateRule {
    /// `limit` requests per `period`, `burst` more back to back; `None` when `limit` is zero.
    pub fn per(limit: u64, period: Duration, burst: u32) -> Option<Self> {
        if limit == 0 {
            return None;
        }
        let micros = u64::try_from(period.as_micros()).unwrap_or(u64::MAX) / limit;
        Some(Self {
            interval: Duration::from_micros(micros.max(1)),
            burst,
        })
    }

    fn interval_us(&self) -> u64 {
        u64::try_from(self.interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn tolerance_us(&self) -> u64 {
        self.interval_us().saturating_mul(u64::from(self.burst))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// The request may pass.
    pub allowed: bool,
    /// Requests that may still pass right now (after this one, when it passed).
    pub remaining: u32,
    /// How long until the key is back to its full burst.
    pub reset: Duration,
    /// When refused: how long until one request would pass. Zero when allowed.
    pub retry_after: Duration,
    /// When allowed: how far ahead of its schedule the request came, for nginx's `delay`.
    pub ahead: Duration,
}

impl RateDecision {
    /// nginx's `delay=N`: the first `undelayed` requests of a burst pass at once; later ones
    /// wait until they are no more than that many intervals ahead of schedule. `undelayed` of
    /// `burst` or more is `nodelay`.
    pub fn delay(&self, rule: &RateRule, undelayed: u32) -> Duration {
        if !self.allowed {
            return Duration::ZERO;
        }
        self.ahead
            .saturating_sub(rule.interval.saturating_mul(undelayed))
    }
}

/// The whole algorithm: given the key's TAT (0 for a new key) and the time, the decision and
/// the TAT to store when the request passed. The Redis script is a line-by-line copy.
pub(crate) fn decide(tat: u64, now: u64, rule: &RateRule) -> (RateDecision, Option<u64>) {
    let ahead = tat.saturating_sub(now);
    let decision = decision_from(ahead <= rule.tolerance_us(), ahead, rule);
    let stored = decision
        .allowed
        .then(|| tat.max(now).saturating_add(rule.interval_us()));
    (decision, stored)
}

/// The decision from what the script returns: whether it passed, and how far ahead of
/// schedule the key was when the request arrived.
pub(crate) fn decision_from(allowed: bool, ahead: u64, rule: &RateRule) -> RateDecision {
    let interval = rule.interval_us();
    let tolerance = rule.tolerance_us();
    if allowed {
        let remaining = (tolerance - ahead) / interval;
        RateDecision {
            allowed,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_micros(ahead.saturating_add(interval)),
            retry_after: Duration::ZERO,
            ahead: Duration::from_micros(ahead),
        }
    } else {
        RateDecision {
            allowed,
            remaining: 0,
            reset: Duration::from_micros(ahead),
            retry_after: Duration::from_micros(ahead - tolerance),
            ahead: Duration::ZERO,
        }
    }
}

/// KEYS: the TAT. ARGV: interval µs, burst, now µs (negative: Redis's own clock). Returns
/// {allowed 0|1, ahead µs}. The same steps as [`decide`]; `%.0f` keeps every digit of the
/// microsecond clock (Lua's default number format keeps 14).
pub(crate) const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local ahead = 0
if tat > now then ahead = tat - now else tat = now end
if ahead > tolerance then return {0, ahead} end
local stored = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', stored), 'PX', math.ceil((stored - now) / 1000))
return {1, ahead}
";

/// The script's arguments for `rule` at `now_us` (`None`: Redis's clock).
pub(crate) fn script_args(rule: &RateRule, now_us: Option<u64>) -> (u64, u32, i64) {
    let now = now_us.map_or(-1, |now| i64::try_from(now).unwrap_or(i64::MAX));
    (rule.interval_us(), rule.burst, now)
}

/// Per-key TATs in this process, in shards so that workers rarely wait on one lock. Keys are
/// kept as 64-bit keyed hashes (SipHash under a random key): 16 bytes an entry, whatever the
/// key's length, and no collisions an attacker could aim for.
///
/// A key already in the table is updated under the shard's read lock, its TAT by
/// compare-and-swap: workers limiting one busy client (a flood from one address) never wait
/// for each other, nor for a worker the kernel preempted while it held a lock. Only a new key
/// and the eviction it may need take the write lock.
pub(crate) struct RateTable {
    shards: Box<[RwLock<Tats>]>,
    hasher: std::collections::hash_map::RandomState,
    max_per_shard: usize,
    epoch: Instant,
}

const SHARDS: usize = 16;

/// TATs by keyed hash. The hash is already SipHash under a secret key, uniform in every bit:
/// hashing it a second time, as the default hasher would on each lookup, buys nothing.
type Tats = HashMap<u64, AtomicU64, BuildHasherDefault<KeyedHash>>;

/// Passes a [`RateTable`] key's hash through as the table's hash.
#[derive(Default)]
struct KeyedHash(u64);

impl Hasher for KeyedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with this; a fold keeps it a hash for anything else.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

impl RateTable {
    pub(crate) fn new(max_keys: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_per_shard: (max_keys / SHARDS).max(16),
            epoch: Instant::now(),
        })
    }

    /// Microseconds on this process's clock; starts at 1 so that 0 means "never seen".
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    pub(crate) fn check(&self, key: &str, rule: &RateRule, now: u64) -> RateDecision {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[usize::try_from(hash % SHARDS as u64).unwrap_or(0)];
        // A panic while holding the lock leaves plain numbers behind: still usable.
        if let Some(tat) = shard
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
        {
            return update(tat, now, rule);
        }
        let mut tats = shard
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tats.len() >= self.max_per_shard && !tats.contains_key(&hash) {
            evict(&mut tats, now, self.max_per_shard);
        }
        update(tats.entry(hash).or_default(), now, rule)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |s| s.len()))
            .sum()
    }
}

/// Decides on one key's TAT and stores the new one, unless another worker changed it between
/// the read and the write: then again, from the TAT it left.
fn update(tat: &AtomicU64, now: u64, rule: &RateRule) -> RateDecision {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let (decision, stored) = decide(current, now, rule);
        let Some(stored) = stored else {
            return decision;
        };
        match tat.compare_exchange_weak(current, stored, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return decision,
            Err(actual) => current = actual,
        }
    }
}

/// Makes room in a full shard. Keys whose TAT has passed go first: forgetting them changes no
/// answer. When a spray of fresh keys leaves none idle, the half closest to idle goes: each of
/// those may get a fresh burst, the least any forgetting can give away.
fn evict(tats: &mut Tats, now: u64, max: usize) {
    tats.retain(|_, tat| *tat.get_mut() > now);
    if tats.len() < max {
        return;
    }
    let mut values: Vec<u64> = tats.values_mut().map(|tat| *tat.get_mut()).collect();
    let middle = values.len() / 2;
    let cut = *values.select_nth_unstable(middle).1;
    tats.retain(|_, tat| *tat.get_mut() > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(per_second: u64, burst: u32) -> RateRule {
        RateRule::per(per_second, Duration::from_secs(1), burst).unwrap_or_else(|| panic!())
    }

    #[test]
    fn workers_racing_on_one_key_never_let_more_than_the_burst_through() {
        let table = RateTable::new(1000);
        let r = rule(10, 99);
        let passed: usize = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..200)
                            .filter(|_| table.check("busy", &r, 1_000_000).allowed)
                            .count()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap_or(0)).sum()
        });
        // No time passes: exactly the first request and its burst, whoever took them.
        assert_eq!(passed, 100);
    }

    #[test]
    fn one_plus_burst_pass_back_to_back() {
        let table = RateTable::new(1000);
        let r = rule(10, 5);
        let passed = (0..50)
            .filter(|_| table.check("k", &r, 1_000_000).allowed)
            .count();
        assert_eq!(passed, 6);
        // One more an interval later, not before.
        assert!(!table.check("k", &r, 1_000_000 + 99_999).allowed);
        assert!(table.check("k", &r, 1_000_000 + 100_000).allowed);
    }

    #[test]
    fn remaining_reset_and_retry_after() {
        let table = RateTable::new(1000);
        let r = rule(10, 2);
        let first = table.check("k", &r, 5_000_000);
        assert_eq!(
            (first.remaining, first.reset),
            (2, Duration::from_millis(100))
        );
        table.check("k", &r, 5_000_000);
        let third = table.check("k", &r, 5_000_000);
        assert_eq!(
            (third.allowed, third.remaining, third.reset),
            (true, 0, Duration::from_millis(300))
        );
        let refused = table.check("k", &r, 5_020_000);
        assert_eq!(
            (refused.allowed, refused.retry_after, refused.reset),
            (false, Duration::from_millis(80), Duration::from_millis(280))
        );
    }

    #[test]
    fn steady_rate_within_one_percent_over_a_minute() {
        // 100 a minute, burst 5, a client asking every millisecond for 60 s of controlled time.
        let table = RateTable::new(1000);
        let r = RateRule::per(100, Duration::from_secs(60), 5).unwrap_or_else(|| panic!());
        let start = 10_000_000;
        let passed = (0..60_000u64)
            .filter(|ms| table.check("k", &r, start + ms * 1000).allowed)
            .count();
        // The burst, then one every 600 ms: 1 + 5 + 99 within the minute.
        let steady = passed - 6;
        assert!((98..=100).contains(&steady), "{passed}");
        assert!((steady as f64 - 99.0).abs() / 99.0 < 0.01);
    }

    #[test]
    fn nginx_delay_semantics() {
        let table = RateTable::new(1000);
        let r = rule(10, 4);
        let delays: Vec<Duration> = (0..5)
            .map(|_| table.check("k", &r, 1_000_000).delay(&r, 2))
            .collect();
        // delay=2: the first request and two excess pass at once, the next two wait their turn.
        assert_eq!(
            delays,
            [0, 0, 0, 100, 200].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn idle_keys_are_forgotten_without_changing_answers() {
        let table = RateTable::new(16 * SHARDS);
        let r = rule(1, 0);
        for i in 0..100_000u64 {
            table.check(&format!("ip:{i}"), &r, 1 + i);
        }
        assert!(table.len() <= 16 * SHARDS, "{}", table.len());
        // A key seen long ago is as good as new.
        assert!(table.check("ip:0", &r, 10_000_000_000).allowed);
    }
}
