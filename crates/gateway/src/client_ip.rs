//! The client's address.
//!
//! Threat: any client can send `X-Forwarded-For: 1.2.3.4` and, if believed, dodge bans and
//! rate limits or frame someone else in the audit log. Defence: the header is read only when the
//! TCP peer is a trusted proxy, walking right to left past further trusted proxies; the first
//! untrusted address is the client. Every forwarding header is then dropped and the gateway
//! sets its own, so an upstream reading the first entry sees what we decided.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderName;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
use ipnet::IpNet;

/// The client address as decided here, and whether the peer was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr {
    pub(crate) ip: IpAddr,
    pub(crate) peer_trusted: bool,
}

/// Appends `ip` in dotted decimal. Every request writes its client's address twice (the rate
/// limit's key, `X-Forwarded-For`); `itoa` spares the formatting machinery `Display` goes
/// through. An IPv6 address uses `Display`.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    let mut digits = itoa::Buffer::new();
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            out.push('.');
        }
        out.push_str(digits.format(octet));
    }
}

pub(crate) fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) compare as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(crate) fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let peer_ip = canonical(peer.ip());
    if !is_trusted(trusted, peer_ip) {
        return ClientAddr {
            ip: peer_ip,
            peer_trusted: false,
        };
    }
    // Entries from all X-Forwarded-For fields, in order; the rightmost was added last.
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else { break };
        entries.extend(text.split(',').map(str::trim));
    }
    let mut client = peer_ip;
    for entry in entries.iter().rev() {
        // An entry we cannot read was written by someone we do not trust: stop at the last
        // address we can vouch for.
        let Some(ip) = parse_entry(entry) else { break };
        client = ip;
        if !is_trusted(trusted, ip) {
            break;
        }
    }
    ClientAddr {
        ip: client,
        peer_trusted: true,
    }
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.255",
            "192.168.100.7",
            "255.255.255.255",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let mut written = String::from("x=");
            push_ip(&mut written, ip);
            assert_eq!(written, format!("x={ip}"));
        }
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            if let Ok(v) = value.parse() {
                map.append("x-forwarded-for", v);
            }
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 4000)
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let got = resolve(
            peer("203.0.113.9"),
            &headers(&["1.2.3.4"]),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got.ip, peer("203.0.113.9").ip());
        assert!(!got.peer_trusted);
    }

    #[test]
    fn walks_right_to_left_past_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = resolve(
            peer("10.0.0.1"),
            &headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]),
            &trusted,
        );
        assert_eq!(got.ip.to_string(), "198.51.100.7");
    }

    #[test]
    fn garbage_entry_stops_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = resolve(peer("10.0.0.1"), &headers(&["1.1.1.1, nonsense"]), &trusted);
        assert_eq!(got.ip.to_string(), "10.0.0.1");
    }

    #[test]
    fn mapped_ipv6_peer_counts_as_ipv4() {
        let got = resolve(
            peer("::ffff:10.0.0.1"),
            &headers(&["192.0.2.1"]),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got.ip.to_string(), "192.0.2.1");
    }
}
