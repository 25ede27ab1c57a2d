//! Fast shared state: the numbers that decide security questions (failed-login counters,
//! rate-limit buckets), either in this process or on Redis so that several instances share
//! them.
//!
//! Every operation is atomic where it decides: an attempt is counted and checked in one step
//! (a Lua script on Redis, one lock here), so parallel requests cannot all read "under the
//! threshold" before any of them is counted. That race let parallel guesses past Zitadel's
//! lockout (GHSA-7h8m-vrxx-vr4m).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rate::RateTable;
pub use rate::{RateDecision, RateRule};

/// How a key's attempts are counted and throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts allowed before any wait.
    pub free: u64,
    /// The wait after the first attempt past `free`; it doubles with each further attempt.
    /// Zero: count only, never block.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// The count is forgotten this long after the last attempt.
    pub window: Duration,
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted; this is the key's count within its window, this attempt included.
    Counted(u64),
    /// Refused uncounted: the key is blocked for this long yet.
    Blocked(Duration),
}

/// Failures of the shared state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The state URL is not `redis://` or `rediss://`.
    #[error("unsupported state url (use redis:// or rediss://)")]
    UnsupportedUrl,
}

/// The state, in this process or on Redis.
#[derive(Clone)]
pub enum SharedState {
    /// In this process: one instance only.
    Local(LocalState),
    /// On Redis: shared by every instance.
    Redis(RedisState),
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local(_) => "SharedState::Local",
            Self::Redis(_) => "SharedState::Redis",
        })
    }
}

impl SharedState {
    /// In-process state holding at most `max_keys` keys.
    pub fn local(max_keys: usize) -> Self {
        Self::Local(LocalState::new(max_keys))
    }

    /// State on the Redis at `url`; keys are prefixed with `prefix`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, StateError> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(StateError::UnsupportedUrl);
        }
        let client = redis::Client::open(url)?;
        let connection = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self::Redis(RedisState {
            connection,
            prefix: prefix.to_owned(),
            attempt: Arc::new(redis::Script::new(ATTEMPT_SCRIPT)),
            gcra: Arc::new(redis::Script::new(rate::GCRA_SCRIPT)),
        }))
    }

    /// Counts an attempt on `key` and, past `rule.free`, blocks the key for a doubling wait;
    /// a blocked key's attempt is refused and not counted.
    pub async fn attempt(&self, key: &str, rule: &Backoff) -> Result<Attempt, StateError> {
        match self {
            Self::Local(local) => Ok(local.attempt(key, rule, Instant::now())),
            Self::Redis(redis) => redis.attempt(key, rule).await,
        }
    }

    /// Takes one request of `key` under `rule`, when the rule lets it pass.
    pub async fn rate_limit(&self, key: &str, rule: &RateRule) -> Result<RateDecision, StateError> {
        match self {
            Self::Local(local) => Ok(local.rates.check(key, rule, local.rates.now_us())),
            Self::Redis(redis) => redis.rate_limit(key, rule, None).await,
        }
    }

    /// [`Self::rate_limit`] at a given time in microseconds, for tests with a controlled
    /// clock (in process, on this process's clock; on Redis, instead of Redis's `TIME`).
    pub async fn rate_limit_at(
        &self,
        key: &str,
        rule: &RateRule,
        now_us: u64,
    ) -> Result<RateDecision, StateError> {
        match self {
            Self::Local(local) => Ok(local.rates.check(key, rule, now_us.max(1))),
            Self::Redis(redis) => redis.rate_limit(key, rule, Some(now_us.max(1))).await,
        }
    }

    /// Forgets `key` entirely (a success clears its failures).
    pub async fn forget(&self, key: &str) -> Result<(), StateError> {
        match self {
            Self::Local(local) => {
                local.lock().remove(key);
                Ok(())
            }
            Self::Redis(redis) => redis.forget(key).await,
        }
    }

    /// Takes back one counted attempt of `key` (it turned out not to be a failure).
    pub async fn uncount(&self, key: &str) -> Result<(), StateError> {
        match self {
            Self::Local(local) => {
                if let Some(entry) = local.lock().get_mut(key) {
                    entry.count = entry.count.saturating_sub(1);
                }
                Ok(())
            }
            Self::Redis(redis) => redis.uncount(key).await,
        }
    }

    /// Whether the state answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            Self::Local(_) => Ok(()),
            Self::Redis(redis) => {
                let mut connection = redis.connection.clone();
                redis::cmd("PING")
                    .query_async::<()>(&mut connection)
                    .await?;
                Ok(())
            }
        }
    }
}

fn wait_after(count: u64, rule: &Backoff) -> Option<Duration> {
    if count <= rule.free || rule.base.is_zero() {
        return None;
    }
    let doublings = u32::try_from((count - rule.free - 1).min(30)).unwrap_or(30);
    Some(rule.base.saturating_mul(1 << doublings).min(rule.max))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u64,
    /// The count is forgotten at this time.
    expires: Instant,
    blocked_until: Option<Instant>,
}

/// Counters in this process, bounded in number: when full, expired keys go first, then the
/// half with the earliest expiry, so a spray of fresh keys cannot exhaust memory.
#[derive(Clone)]
pub struct LocalState {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    max_keys: usize,
    rates: Arc<RateTable>,
}

impl LocalState {
    fn new(max_keys: usize) -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
            max_keys: max_keys.max(16),
            rates: RateTable::new(max_keys),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn attempt(&self, key: &str, rule: &Backoff, now: Instant) -> Attempt {
        let mut entries = self.lock();
        if entries.len() >= self.max_keys && !entries.contains_key(key) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.max_keys {
                let mut expiries: Vec<Instant> = entries.values().map(|e| e.expires).collect();
                expiries.sort_unstable();
                let cut = expiries[expiries.len() / 2];
                entries.retain(|_, entry| entry.expires > cut);
            }
        }
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            count: 0,
            expires: now,
            blocked_until: None,
        });
        if entry.expires <= now {
            *entry = Entry {
                count: 0,
                expires: now,
                blocked_until: None,
            };
        }
        if let Some(until) = entry.blocked_until
            && until > now
        {
            return Attempt::Blocked(until - now);
        }
        entry.count += 1;
        entry.expires = now + rule.window;
        entry.blocked_until = wait_after(entry.count, rule).map(|wait| now + wait);
        Attempt::Counted(entry.count)
    }
}

/// Counters on Redis.
#[derive(Clone)]
pub struct RedisState {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    attempt: Arc<redis::Script>,
    gcra: Arc<redis::Script>,
}

/// KEYS: count, block. ARGV: window ms, free, base ms, max ms. Returns {count, 0} when counted,
/// {-1, wait ms} when blocked. The doubling matches [`wait_after`].
const ATTEMPT_SCRIPT: &str = r"
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return {-1, wait} end
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local free = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
if n > free and base > 0 then
  local d = math.min(base * (2 ^ math.min(n - free - 1, 30)), tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(d))
end
return {n, 0}
";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisState {
    fn keys(&self, key: &str) -> (String, String) {
        (
            format!("{}count:{key}", self.prefix),
            format!("{}block:{key}", self.prefix),
        )
    }

    async fn attempt(&self, key: &str, rule: &Backoff) -> Result<Attempt, StateError> {
        let (count, block) = self.keys(key);
        let mut connection = self.connection.clone();
        let (n, wait): (i64, i64) = self
            .attempt
            .key(count)
            .key(block)
            .arg(millis(rule.window).max(1))
            .arg(rule.free)
            .arg(millis(rule.base))
            .arg(millis(rule.max))
            .invoke_async(&mut connection)
            .await?;
        Ok(if n < 0 {
            Attempt::Blocked(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
        } else {
            Attempt::Counted(u64::try_from(n).unwrap_or(0))
        })
    }

    async fn rate_limit(
        &self,
        key: &str,
        rule: &RateRule,
        now_us: Option<u64>,
    ) -> Result<RateDecision, StateError> {
        let (interval, burst, now) = rate::script_args(rule, now_us);
        let mut connection = self.connection.clone();
        let (allowed, ahead): (i64, i64) = self
            .gcra
            .key(format!("{}rate:{key}", self.prefix))
            .arg(interval)
            .arg(burst)
            .arg(now)
            .invoke_async(&mut connection)
            .await?;
        Ok(rate::decision_from(
            allowed == 1,
            u64::try_from(ahead).unwrap_or(0),
            rule,
        ))
    }

    async fn forget(&self, key: &str) -> Result<(), StateError> {
        let (count, block) = self.keys(key);
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(count)
            .arg(block)
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    async fn uncount(&self, key: &str) -> Result<(), StateError> {
        let (count, _) = self.keys(key);
        let mut connection = self.connection.clone();
        // Never below zero, and never creating a key that has expired.
        redis::Script::new(
            "local n = tonumber(redis.call('GET', KEYS[1]) or '0') \
             if n > 0 then redis.call('DECR', KEYS[1]) end return 0",
        )
        .key(count)
        .invoke_async::<i64>(&mut connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Backoff = Backoff {
        free: 2,
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
        window: Duration::from_secs(60),
    };

    #[test]
    fn free_attempts_then_doubling_waits() {
        let state = LocalState::new(100);
        let t0 = Instant::now();
        assert_eq!(state.attempt("k", &RULE, t0), Attempt::Counted(1));
        assert_eq!(state.attempt("k", &RULE, t0), Attempt::Counted(2));
        assert_eq!(state.attempt("k", &RULE, t0), Attempt::Counted(3));
        assert_eq!(
            state.attempt("k", &RULE, t0),
            Attempt::Blocked(Duration::from_secs(1))
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(state.attempt("k", &RULE, t1), Attempt::Counted(4));
        assert_eq!(
            state.attempt("k", &RULE, t1 + Duration::from_millis(1500)),
            Attempt::Blocked(Duration::from_millis(500))
        );
        // Capped at `max`.
        assert_eq!(wait_after(40, &RULE), Some(Duration::from_secs(8)));
        // Forgotten after the window.
        assert_eq!(
            state.attempt("k", &RULE, t0 + Duration::from_secs(200)),
            Attempt::Counted(1)
        );
    }

    /// The Redis of the test matrix, or `None` (with a note) outside CI when
    /// `PORTCULLIS_TEST_REDIS_URL` is unset.
    async fn redis(tag: &str) -> Option<SharedState> {
        let Ok(url) = std::env::var("PORTCULLIS_TEST_REDIS_URL") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but PORTCULLIS_TEST_REDIS_URL is unset"
            );
            eprintln!("SKIPPED {tag}: set PORTCULLIS_TEST_REDIS_URL to run it against Redis");
            return None;
        };
        let prefix = format!("test:{tag}:{}:{:?}:", std::process::id(), Instant::now());
        Some(
            SharedState::redis(&url, &prefix)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Fifty attempts at once: exactly `free` + 1 are counted, whatever the interleaving.
    async fn parallel_attempts_cannot_slip_past(state: SharedState) {
        let rule = Backoff {
            free: 5,
            base: Duration::from_secs(30),
            ..RULE
        };
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let state = state.clone();
                tokio::spawn(async move { state.attempt("pair:victim:1.2.3.4", &rule).await })
            })
            .collect();
        let mut counted = 0;
        for task in tasks {
            if let Ok(Ok(Attempt::Counted(_))) = task.await {
                counted += 1;
            }
        }
        assert_eq!(counted, 6);
        state
            .forget("pair:victim:1.2.3.4")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            state.attempt("pair:victim:1.2.3.4", &rule).await.ok(),
            Some(Attempt::Counted(1))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_attempts_in_process() {
        parallel_attempts_cannot_slip_past(SharedState::local(1000)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_attempts_on_redis() {
        let Some(state) = redis("parallel").await else {
            return;
        };
        parallel_attempts_cannot_slip_past(state).await;
    }

    #[tokio::test]
    async fn redis_waits_double_like_local_ones() {
        let Some(state) = redis("doubling").await else {
            return;
        };
        let rule = Backoff {
            free: 1,
            base: Duration::from_millis(200),
            ..RULE
        };
        assert_eq!(
            state.attempt("k", &rule).await.ok(),
            Some(Attempt::Counted(1))
        );
        assert_eq!(
            state.attempt("k", &rule).await.ok(),
            Some(Attempt::Counted(2))
        );
        let Ok(Attempt::Blocked(wait)) = state.attempt("k", &rule).await else {
            panic!("the third attempt must wait");
        };
        assert!(
            wait <= Duration::from_millis(200) && wait > Duration::from_millis(100),
            "{wait:?}"
        );
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
        assert_eq!(
            state.attempt("k", &rule).await.ok(),
            Some(Attempt::Counted(3))
        );
        let Ok(Attempt::Blocked(wait)) = state.attempt("k", &rule).await else {
            panic!("the fourth attempt must wait");
        };
        assert!(wait > Duration::from_millis(300), "doubled: {wait:?}");
        state.uncount("k").await.unwrap_or_else(|e| panic!("{e}"));
        state.forget("k").await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// The same requests at the same controlled times get the same answers in process and on
    /// Redis: bursts, refusals, recovery, several rules and keys.
    #[tokio::test]
    async fn redis_limits_like_the_process() {
        let Some(redis) = redis("gcra").await else {
            return;
        };
        let local = SharedState::local(1000);
        let rules = [
            RateRule::per(10, Duration::from_secs(1), 3),
            RateRule::per(100, Duration::from_secs(60), 0),
            RateRule::per(7, Duration::from_secs(1), 20),
        ];
        // A deterministic walk: clusters of requests at irregular gaps.
        let mut now: u64 = 1_700_000_000_000_000;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut refused = 0;
        for step in 0..600 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += seed % 150_000;
            let rule = rules[step % 3].unwrap_or_else(|| panic!());
            let key = format!("k{}", seed % 4);
            let here = local.rate_limit_at(&key, &rule, now).await;
            let there = redis.rate_limit_at(&key, &rule, now).await;
            assert_eq!(
                here.as_ref().ok(),
                there.as_ref().ok(),
                "step {step} at {now}"
            );
            refused += usize::from(here.as_ref().is_ok_and(|d| !d.allowed));
        }
        // The walk exercised both answers.
        assert!((100..500).contains(&refused), "{refused} refused");
    }

    #[test]
    fn a_spray_of_keys_stays_bounded() {
        let state = LocalState::new(1000);
        let now = Instant::now();
        for i in 0..100_000 {
            state.attempt(&format!("ip:{i}"), &RULE, now + Duration::from_micros(i));
        }
        assert!(state.lock().len() <= 1000);
    }
}
