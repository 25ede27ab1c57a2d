//! IP decisions. Every request is checked against an in-memory copy of the decisions in force
//! (a hash lookup for single addresses, a short scan for networks), so a blocked client costs
//! almost nothing; the store is read again every few seconds, so a decision made by another
//! instance or by `portcullis ip block` takes effect everywhere within that time.
//!
//! Allowlisted networks are never blocked automatically: a decision by the intrusion detection
//! or a honeypot for an address inside one is not made. An operator's manual block still
//! applies, since the operator asked for it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use portcullis_core::Clock;
use portcullis_store::{IpDecisionRow, Store, StoreError};

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An operator, by the CLI or the admin API.
    Manual,
    /// The intrusion detection, from security events.
    Ids,
    /// A honeypot hit.
    Honeypot,
}

impl Origin {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Ids => "ids",
            Self::Honeypot => "honeypot",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "ids" => Self::Ids,
            "honeypot" => Self::Honeypot,
            _ => Self::Manual,
        }
    }
}

/// What a decision does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refuse every request from the network.
    Block,
    /// Never block the network automatically.
    Allow,
}

impl Action {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Allow => "allow",
        }
    }
}

/// A block in force for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The blocked network.
    pub network: IpNet,
    /// Who blocked it.
    pub origin: Origin,
    /// Why (for logs; never shown to the client).
    pub reason: Arc<str>,
    /// Until when, Unix milliseconds; `None`: until removed.
    pub until_ms: Option<i64>,
}

/// How automatic bans grow for repeat offenders: `base` × 1, 2, 4, ... up to `max`, counting
/// the network's automatic bans within `memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// The first ban.
    pub base: Duration,
    /// The longest ban.
    pub max: Duration,
    /// How long earlier bans count.
    pub memory: Duration,
}

impl Default for BanPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(4 * 3600),
            max: Duration::from_secs(7 * 86_400),
            memory: Duration::from_secs(30 * 86_400),
        }
    }
}

impl BanPolicy {
    /// The ban after `earlier` automatic bans within the memory.
    pub fn duration(&self, earlier: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << earlier.min(20))
            .min(self.max)
    }
}

/// Failures of IP decisions.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not an address or a CIDR network.
    #[error("{0:?} is not an IP address or CIDR network")]
    BadNetwork(String),
}

/// Parses `203.0.113.7`, `203.0.113.0/24` or `2001:db8::/48` into a truncated network;
/// IPv4-mapped IPv6 addresses become IPv4.
pub fn parse_network(text: &str) -> Result<IpNet, DecisionError> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => text
            .parse::<IpAddr>()
            .map(|ip| IpNet::from(canonical(ip)))
            .map_err(|_| DecisionError::BadNetwork(text.to_owned()))?,
    };
    Ok(net.trunc())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The decisions in force, as read from the store, and the holds not stored yet.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    /// Blocks of single addresses.
    hosts: HashMap<IpAddr, Blocked>,
    /// Addresses the intrusion detection holds until its ban is stored (or for one base ban,
    /// if storing it fails).
    held: HashMap<IpAddr, Blocked>,
    /// Blocks of wider networks.
    networks: Vec<Blocked>,
    /// Allowlisted networks, with their expiry.
    allowed: Vec<(IpNet, Option<i64>)>,
}

impl Snapshot {
    fn build(rows: &[IpDecisionRow]) -> Self {
        let mut snapshot = Self::default();
        for row in rows {
            let Ok(network) = parse_network(&row.network) else {
                tracing::warn!(
                    network = row.network,
                    "unparsable stored IP decision skipped"
                );
                continue;
            };
            if row.action == Action::Allow.as_str() {
                snapshot.allowed.push((network, row.expires_at));
                continue;
            }
            let blocked = Blocked {
                network,
                origin: Origin::parse(&row.origin),
                reason: Arc::from(row.reason.as_str()),
                until_ms: row.expires_at,
            };
            if network.prefix_len() == network.max_prefix_len() {
                // The longest-lasting block of an address wins.
                let entry = snapshot.hosts.entry(network.addr());
                let longer = |old: &Blocked| {
                    old.until_ms
                        .is_some_and(|old| blocked.until_ms.is_none_or(|new| new > old))
                };
                match entry {
                    std::collections::hash_map::Entry::Occupied(mut slot) => {
                        if longer(slot.get()) {
                            slot.insert(blocked);
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(blocked);
                    }
                }
            } else {
                snapshot.networks.push(blocked);
            }
        }
        snapshot
    }

    fn allowed(&self, ip: IpAddr, now_ms: i64) -> bool {
        self.allowed
            .iter()
            .any(|(net, until)| net.contains(&ip) && until.is_none_or(|until| until > now_ms))
    }

    /// The block in force for `ip`. `now_ms` is called only once a block names `ip`: nearly
    /// every address has none, and its request then reads no clock.
    fn blocked(&self, ip: IpAddr, now_ms: impl Fn() -> i64) -> Option<&Blocked> {
        let live = |b: &&Blocked| b.until_ms.is_none_or(|until| until > now_ms());
        let found = self
            .stored_block(ip, &now_ms)
            .or_else(|| self.held.get(&ip).filter(live))?;
        // An automatic block never holds inside an allowlisted network.
        (found.origin == Origin::Manual || !self.allowed(ip, now_ms())).then_some(found)
    }

    /// The stored block in force for `ip`, allowlist aside.
    fn stored_block(&self, ip: IpAddr, now_ms: impl Fn() -> i64) -> Option<&Blocked> {
        let live = |b: &&Blocked| b.until_ms.is_none_or(|until| until > now_ms());
        self.hosts.get(&ip).filter(live).or_else(|| {
            self.networks
                .iter()
                .find(|b| b.network.contains(&ip) && live(b))
        })
    }

    /// Keeps the live holds of `earlier` for addresses this snapshot does not block yet.
    fn keep_holds(&mut self, earlier: &Self, now_ms: i64) {
        for (ip, held) in &earlier.held {
            let live = held.until_ms.is_none_or(|until| until > now_ms);
            if live && self.stored_block(*ip, || now_ms).is_none() {
                self.held.insert(*ip, held.clone());
            }
        }
    }
}

/// The decisions: checked from memory, changed through the store.
pub struct IpDecisions {
    store: Store,
    clock: Arc<dyn Clock>,
    bans: BanPolicy,
    /// Networks from the configuration that are never blocked automatically.
    allowlist: Vec<IpNet>,
    /// Read on every request by every worker: an `ArcSwap` load writes only to this thread's
    /// own slots, where a read lock and an `Arc` clone each wrote to lines all workers share.
    snapshot: ArcSwap<Snapshot>,
    /// Held while a change is made, so that no two changes lose each other.
    changing: Mutex<()>,
}

impl std::fmt::Debug for IpDecisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpDecisions").finish_non_exhaustive()
    }
}

/// A decision that was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// The stored row.
    pub row: IpDecisionRow,
    /// Earlier automatic bans of the network within the memory (0 for a first offence).
    pub earlier: u32,
}

impl IpDecisions {
    /// Reads the decisions in force; `allowlist` adds networks never blocked automatically.
    pub async fn load(
        store: Store,
        clock: Arc<dyn Clock>,
        bans: BanPolicy,
        allowlist: Vec<IpNet>,
    ) -> Result<Arc<Self>, DecisionError> {
        let decisions = Arc::new(Self {
            store,
            clock,
            bans,
            allowlist,
            snapshot: ArcSwap::default(),
            changing: Mutex::new(()),
        });
        decisions.refresh().await?;
        Ok(decisions)
    }

    /// The time on the decisions' clock.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The block in force for `ip`, if any. No I/O.
    pub fn check(&self, ip: IpAddr) -> Option<Blocked> {
        let ip = canonical(ip);
        self.current().blocked(ip, || self.now_ms()).cloned()
    }

    /// Whether `ip` is in an allowlisted network.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.current().allowed(canonical(ip), self.now_ms())
    }

    /// Reads the decisions in force from the store again.
    pub async fn refresh(&self) -> Result<(), DecisionError> {
        let rows = self.store.active_ip_decisions(self.now_ms()).await?;
        let mut snapshot = Snapshot::build(&rows);
        snapshot
            .allowed
            .extend(self.allowlist.iter().map(|net| (*net, None)));
        let now_ms = self.now_ms();
        self.change(|current| {
            snapshot.keep_holds(current, now_ms);
            snapshot
        });
        Ok(())
    }

    /// Replaces the copy in memory with `next(current)`, one change at a time so that no two
    /// changes lose each other.
    fn change(&self, next: impl FnOnce(&Snapshot) -> Snapshot) {
        let _changing = self
            .changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.snapshot.load_full();
        self.snapshot.store(Arc::new(next(&current)));
    }

    /// Holds `ip` in memory at once, for one base ban, until `ban` stores the decision: the
    /// store takes milliseconds, in which a fast scanner would get more answers.
    pub fn hold(&self, ip: IpAddr, origin: Origin) {
        let ip = canonical(ip);
        let until = self.now_ms().saturating_add(millis(self.bans.base));
        self.change(|current| {
            let mut next = current.clone();
            next.held.insert(
                ip,
                Blocked {
                    network: IpNet::from(ip),
                    origin,
                    reason: Arc::from("held until the ban is stored"),
                    until_ms: Some(until),
                },
            );
            next
        });
    }

    /// Refreshes every `every` (and forgets decisions ended a ban memory ago) until the
    /// runtime stops. Call on the runtime that owns the store.
    pub fn refresh_every(self: &Arc<Self>, every: Duration) {
        let decisions = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(decisions) = decisions.upgrade() else {
                    return;
                };
                if let Err(error) = decisions.refresh().await {
                    tracing::error!(%error, "reading IP decisions failed; the last ones hold");
                }
                let forget_before = decisions.now_ms() - millis(decisions.bans.memory);
                if let Err(error) = decisions.store.purge_ip_decisions(forget_before).await {
                    tracing::warn!(%error, "purging old IP decisions failed");
                }
            }
        });
    }

    /// An operator's decision on `network`, for `duration` (`None`: until removed).
    pub async fn decide(
        &self,
        network: IpNet,
        action: Action,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<Made, DecisionError> {
        let made = self
            .insert(network, action, Origin::Manual, duration, reason, 0)
            .await?;
        self.refresh().await?;
        Ok(made)
    }

    /// An automatic ban of the client `ip` (its address alone), longer for each earlier
    /// automatic ban within the memory. `None` when the address is allowlisted, or already
    /// blocked (a burst of events makes one ban, not many).
    pub async fn ban(
        &self,
        ip: IpAddr,
        origin: Origin,
        reason: &str,
    ) -> Result<Option<Made>, DecisionError> {
        let ip = canonical(ip);
        let stored = |this: &Self| this.current().stored_block(ip, || this.now_ms()).is_some();
        if self.is_allowed(ip) || stored(self) {
            return Ok(None);
        }
        // Another instance may have banned it a moment ago (the buckets are shared): read the
        // store first, so one offence makes one ban and not a doubled second one.
        self.refresh().await?;
        if stored(self) {
            return Ok(None);
        }
        let network = IpNet::from(ip);
        let since = self.now_ms() - millis(self.bans.memory);
        let mut earlier = 0u32;
        for counted in [Origin::Ids, Origin::Honeypot] {
            let count = self
                .store
                .count_ip_blocks(&network.to_string(), counted.as_str(), since)
                .await?;
            earlier = earlier.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        }
        let duration = self.bans.duration(earlier);
        let made = self
            .insert(
                network,
                Action::Block,
                origin,
                Some(duration),
                reason,
                earlier,
            )
            .await?;
        self.refresh().await?;
        Ok(Some(made))
    }

    async fn insert(
        &self,
        network: IpNet,
        action: Action,
        origin: Origin,
        duration: Option<Duration>,
        reason: &str,
        earlier: u32,
    ) -> Result<Made, DecisionError> {
        let now = self.now_ms();
        let row = IpDecisionRow {
            id: uuid::Uuid::new_v4().to_string(),
            network: network.trunc().to_string(),
            action: action.as_str().to_owned(),
            reason: reason.chars().take(200).collect(),
            origin: origin.as_str().to_owned(),
            created_at: now,
            expires_at: duration.map(|d| now.saturating_add(millis(d))),
        };
        self.store.insert_ip_decision(&row).await?;
        Ok(Made { row, earlier })
    }

    /// Ends the decisions with `action` on exactly `network`; returns how many.
    pub async fn remove(&self, network: IpNet, action: Action) -> Result<u64, DecisionError> {
        let ended = self
            .store
            .end_ip_decisions(&network.trunc().to_string(), action.as_str(), self.now_ms())
            .await?;
        self.refresh().await?;
        Ok(ended)
    }

    /// The decisions in force, oldest first.
    pub async fn list(&self) -> Result<Vec<IpDecisionRow>, DecisionError> {
        Ok(self.store.active_ip_decisions(self.now_ms()).await?)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(network: &str, action: &str, origin: &str, expires_at: Option<i64>) -> IpDecisionRow {
        IpDecisionRow {
            id: network.to_owned(),
            network: network.to_owned(),
            action: action.to_owned(),
            reason: "test".to_owned(),
            origin: origin.to_owned(),
            created_at: 0,
            expires_at,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    #[test]
    fn hosts_networks_expiry_and_the_allowlist() {
        let snapshot = Snapshot::build(&[
            row("203.0.113.7/32", "block", "ids", Some(1000)),
            row("198.51.100.0/24", "block", "manual", None),
            row("2001:db8::/64", "block", "honeypot", None),
            row("10.0.0.0/8", "allow", "manual", None),
            row("10.1.2.3/32", "block", "ids", None),
            row("10.9.9.9/32", "block", "manual", None),
        ]);
        assert!(snapshot.blocked(ip("203.0.113.7"), || 999).is_some());
        assert!(
            snapshot.blocked(ip("203.0.113.7"), || 1000).is_none(),
            "expired"
        );
        assert!(snapshot.blocked(ip("203.0.113.8"), || 0).is_none());
        assert!(snapshot.blocked(ip("198.51.100.200"), || 0).is_some());
        assert!(snapshot.blocked(ip("2001:db8::1:2"), || 0).is_some());
        assert!(snapshot.blocked(ip("2001:db8:0:1::1"), || 0).is_none());
        // Automatic blocks never hold in an allowlisted network; an operator's do.
        assert!(snapshot.blocked(ip("10.1.2.3"), || 0).is_none());
        assert!(snapshot.blocked(ip("10.9.9.9"), || 0).is_some());
    }

    #[test]
    fn networks_parse_truncated_and_mapped_addresses_as_ipv4() {
        let parsed = |text| parse_network(text).map(|n| n.to_string()).ok();
        assert_eq!(parsed("203.0.113.7").as_deref(), Some("203.0.113.7/32"));
        assert_eq!(parsed("203.0.113.7/24").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(
            parsed("::ffff:203.0.113.7").as_deref(),
            Some("203.0.113.7/32")
        );
        assert_eq!(parsed("2001:db8::5/64").as_deref(), Some("2001:db8::/64"));
        assert!(parse_network("example.com").is_err());
    }

    #[test]
    fn bans_double_up_to_the_maximum() {
        let bans = BanPolicy {
            base: Duration::from_secs(60),
            max: Duration::from_secs(300),
            memory: Duration::from_secs(3600),
        };
        let durations: Vec<u64> = (0..5).map(|n| bans.duration(n).as_secs()).collect();
        assert_eq!(durations, [60, 120, 240, 300, 300]);
    }
}
