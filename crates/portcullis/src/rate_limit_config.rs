//! `[rate_limit]` and the routes' `rate_limit*` keys: rates written as `100/min`, checked and
//! turned into GCRA rules.

use std::time::Duration;

use anyhow::{anyhow, bail};
use portcullis_gateway::{RateKey, RateLimit, RateLimitSettings};
use portcullis_state::RateRule;
use serde::{Deserialize, Serialize};

/// `[rate_limit]`: the per-client limit every request passes before routing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    /// Per client address, e.g. `100/min`, or `off` (preset: 1000/200/100 a minute).
    pub(crate) client: Option<String>,
    /// Requests a client may send at once beyond the first (default: the rest of the quota,
    /// so a page and its assets load at once and the long-run rate still holds).
    pub(crate) client_burst: Option<u32>,
    /// IPv6 clients are counted by their network of this prefix length (default 64).
    pub(crate) ipv6_prefix: Option<u8>,
    /// Record what would be refused, refuse nothing.
    pub(crate) dry_run: Option<bool>,
}

/// A route's `rate_limit_by`: one part or several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawRateBy {
    One(String),
    Many(Vec<String>),
}

/// A route's rate-limit keys, as written.
pub(crate) struct RouteRateKeys<'a> {
    pub(crate) rate_limit: Option<&'a str>,
    pub(crate) burst: Option<u32>,
    pub(crate) by: Option<&'a RawRateBy>,
    pub(crate) delay: Option<u32>,
    pub(crate) dry_run: Option<bool>,
}

/// Fills `[rate_limit]` with its effective values and builds its settings.
pub(crate) fn resolve(
    raw: &mut RawRateLimit,
    preset_client: &str,
) -> anyhow::Result<RateLimitSettings> {
    let ipv6_prefix = *raw.ipv6_prefix.get_or_insert(64);
    if !(32..=128).contains(&ipv6_prefix) {
        bail!("rate_limit.ipv6_prefix: {ipv6_prefix} is not between 32 and 128");
    }
    let dry_run = *raw.dry_run.get_or_insert(false);
    let text = raw.client.get_or_insert_with(|| preset_client.to_owned());
    let client = if text == "off" {
        None
    } else {
        let (quota, window) = rate("rate_limit.client", text)?;
        let burst = *raw
            .client_burst
            .get_or_insert(u32::try_from(quota - 1).unwrap_or(u32::MAX));
        Some(limit(
            "rate_limit.client",
            quota,
            window,
            burst,
            vec![RateKey::Ip],
            None,
            dry_run,
        )?)
    };
    Ok(RateLimitSettings {
        client,
        ipv6_prefix,
    })
}

/// A route's limit, when it sets `rate_limit`.
pub(crate) fn route(at: &str, keys: &RouteRateKeys<'_>) -> anyhow::Result<Option<RateLimit>> {
    let Some(text) = keys.rate_limit else {
        if keys.burst.is_some() || keys.by.is_some() || keys.delay.is_some() {
            bail!("{at}: rate_limit_burst, rate_limit_by and rate_limit_delay need rate_limit");
        }
        return Ok(None);
    };
    let key = format!("{at}: rate_limit");
    let (quota, window) = rate(&key, text)?;
    let names = match keys.by {
        None => vec!["ip".to_owned()],
        Some(RawRateBy::One(name)) => vec![name.clone()],
        Some(RawRateBy::Many(names)) => names.clone(),
    };
    let by = names
        .iter()
        .map(|name| match name.as_str() {
            "ip" => Ok(RateKey::Ip),
            "user" => Ok(RateKey::User),
            "api_key" => Ok(RateKey::ApiKey),
            "route" => Ok(RateKey::Route),
            other => Err(anyhow!(
                "{at}: rate_limit_by: {other:?} is not one of ip, user, api_key, route"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(limit(
        &key,
        quota,
        window,
        keys.burst.unwrap_or(0),
        by,
        keys.delay,
        keys.dry_run.unwrap_or(false),
    )?))
}

fn limit(
    key: &str,
    quota: u64,
    window: Duration,
    burst: u32,
    by: Vec<RateKey>,
    delay: Option<u32>,
    dry_run: bool,
) -> anyhow::Result<RateLimit> {
    let rule = RateRule::per(quota, window, burst).ok_or_else(|| anyhow!("{key}: zero rate"))?;
    Ok(RateLimit {
        rule,
        quota,
        window,
        by,
        // nodelay unless `rate_limit_delay` asks for nginx's delaying.
        undelayed: delay.unwrap_or(burst),
        dry_run,
    })
}

/// `100/min`, `10/s`, `5000/hour`, `2/5s`: requests per window.
pub(crate) fn rate(key: &str, text: &str) -> anyhow::Result<(u64, Duration)> {
    let bad = || anyhow!("{key}: {text:?} is not a rate like 100/min, 10/s or 5000/hour");
    let (count, per) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
    let (multiple, unit) = per.split_at(split);
    let multiple: u64 = if multiple.is_empty() {
        1
    } else {
        multiple.parse().map_err(|_| bad())?
    };
    let seconds = match unit {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        _ => return Err(bad()),
    };
    if count == 0 || multiple == 0 {
        bail!("{key}: {text:?} allows nothing; remove the limit or raise it");
    }
    Ok((count, Duration::from_secs(seconds * multiple)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_reject_garbage() {
        assert_eq!(
            rate("k", "100/min").ok(),
            Some((100, Duration::from_secs(60)))
        );
        assert_eq!(rate("k", "10/s").ok(), Some((10, Duration::from_secs(1))));
        assert_eq!(rate("k", "2/5s").ok(), Some((2, Duration::from_secs(5))));
        assert_eq!(
            rate("k", "5000/hour").ok(),
            Some((5000, Duration::from_secs(3600)))
        );
        for bad in ["100", "100/fortnight", "x/min", "0/min", "10/0s", "/min"] {
            assert!(rate("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_default_allows_a_full_quota_at_once() {
        let mut raw = RawRateLimit::default();
        let settings = resolve(&mut raw, "100/min").unwrap_or_else(|e| panic!("{e}"));
        let client = settings.client.unwrap_or_else(|| panic!("on by default"));
        assert_eq!(client.rule.burst, 99);
        assert_eq!(client.rule.interval, Duration::from_millis(600));
        raw.client = Some("off".into());
        assert!(resolve(&mut raw, "100/min").is_ok_and(|s| s.client.is_none()));
    }
}
