//! Route matching: by host, then by the longest path prefix on whole segments, always on the
//! normalized path, so a request reaches only a route its normalized path names.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::settings::RouteSettings;

/// A route ready to match, with its round-robin cursor.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) settings: RouteSettings,
    /// `Content-Security-Policy` for the route's upstream pages, parsed once.
    pub(crate) csp: Option<http::HeaderValue>,
    /// Request counts and latency of this route.
    pub(crate) telemetry: crate::telemetry::RouteTelemetry,
    /// The route's WAF policy.
    pub(crate) waf: crate::waf::Policy,
    /// The prefix without its trailing slash ("" for the root).
    prefix: String,
    next_upstream: AtomicUsize,
}

impl Route {
    /// The upstream for the next request, in turn.
    pub(crate) fn pick_upstream(&self) -> Option<&http::Uri> {
        let upstreams = &self.settings.upstreams;
        if upstreams.is_empty() {
            return None;
        }
        let turn = self.next_upstream.fetch_add(1, Ordering::Relaxed);
        upstreams.get(turn % upstreams.len())
    }

    fn matches_path(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    fn matches_host(&self, host: Option<&str>) -> bool {
        let Some(pattern) = &self.settings.host else {
            return true;
        };
        let Some(host) = host else { return false };
        match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|label| label.ends_with('.') && label.len() > 1),
            None => host == pattern,
        }
    }
}

/// All routes, most specific first.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn new(
        settings: &[RouteSettings],
        waf: &crate::settings::WafSettings,
    ) -> Result<Self, http::Error> {
        let mut routes = Vec::with_capacity(settings.len());
        for route in settings {
            routes.push(Route {
                prefix: route.path.trim_end_matches('/').to_owned(),
                csp: route
                    .csp
                    .as_deref()
                    .map(http::HeaderValue::from_str)
                    .transpose()?,
                telemetry: crate::telemetry::RouteTelemetry::new(&route.name),
                waf: crate::waf::Policy::new(waf, &route.waf),
                settings: RouteSettings {
                    host: route.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    ..route.clone()
                },
                next_upstream: AtomicUsize::new(0),
            });
        }
        // Longest prefix first; at equal length a route bound to a host wins over one for any.
        routes.sort_by_key(|route| {
            (
                std::cmp::Reverse(route.prefix.len()),
                route.settings.host.is_none(),
            )
        });
        Ok(Self { routes })
    }

    /// The route for `host` (lower-case, without port) and the normalized, decoded `path`.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.matches_host(host) && route.matches_path(path))
    }
}

/// Why the request's host cannot be trusted for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    #[error("more than one Host header")]
    Repeated,
    #[error("Host header is not a valid authority")]
    Malformed,
    #[error("request target authority and Host header disagree")]
    Conflicting,
}

/// The host a request names, lower-case, without port and trailing dot: `:authority` (or an
/// absolute-form target) or `Host`. Requests where these disagree, or with several `Host`
/// headers, are refused: the gateway would route on one name while the upstream reads the other.
pub(crate) fn request_host<B>(request: &http::Request<B>) -> Result<Option<String>, HostError> {
    let mut values = request.headers().get_all(http::header::HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(HostError::Repeated);
    }
    let from_header = header
        .map(|value| {
            let text = value.to_str().map_err(|_| HostError::Malformed)?;
            if let Some(host) = plain_host(text) {
                return Ok(normalize_host(host));
            }
            let authority: http::uri::Authority = text.parse().map_err(|_| HostError::Malformed)?;
            Ok(normalize_host(authority.host()))
        })
        .transpose()?;
    let from_target = request.uri().authority().map(|a| normalize_host(a.host()));
    match (from_target, from_header) {
        (Some(target), Some(header)) if target != header => Err(HostError::Conflicting),
        (Some(host), _) | (None, Some(host)) => Ok(Some(host)),
        (None, None) => Ok(None),
    }
}

/// The host of a `Host` value that is a plain name or IPv4 address with an optional port (as
/// nearly all are), read without building an [`http::uri::Authority`]; `None` for anything
/// else (IPv6, userinfo, stray bytes), which the full parse then accepts or refuses.
fn plain_host(value: &str) -> Option<&str> {
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    plain.then_some(host)
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, path: &str) -> RouteSettings {
        RouteSettings {
            name: name.into(),
            host: host.map(Into::into),
            path: path.into(),
            upstreams: vec![],
            max_body_bytes: None,
            csp: None,
            replace_upstream_errors: true,
            secret: false,
            cors: None,
            waf: crate::settings::RouteWafSettings::default(),
            auth: crate::settings::RouteAuth::None,
            roles: vec![],
            scopes: vec![],
            mfa: false,
            rate_limit: None,
            bot: crate::settings::BotMode::Off,
            bot_difficulty: None,
        }
    }

    fn table(routes: &[RouteSettings]) -> RouteTable {
        let waf = crate::settings::WafSettings {
            mode: crate::settings::WafMode::Off,
            engine: portcullis_waf::EngineConfig::default(),
            body_limit: 0,
            over_limit: crate::settings::OverLimit::Reject,
            rule_header: false,
        };
        match RouteTable::new(routes, &waf) {
            Ok(table) => table,
            Err(error) => panic!("{error}"),
        }
    }

    fn name(table: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        table.find(host, path).map(|r| r.settings.name.clone())
    }

    #[test]
    fn longest_prefix_on_whole_segments_wins() {
        let table = table(&[
            route("root", None, "/"),
            route("api", None, "/api/"),
            route("admin", None, "/admin"),
        ]);
        assert_eq!(name(&table, None, "/api/x").as_deref(), Some("api"));
        assert_eq!(name(&table, None, "/api").as_deref(), Some("api"));
        assert_eq!(name(&table, None, "/apiary").as_deref(), Some("root"));
        assert_eq!(name(&table, None, "/admin/users").as_deref(), Some("admin"));
        assert_eq!(
            name(&table, None, "/administrator").as_deref(),
            Some("root")
        );
    }

    #[test]
    fn host_routes_match_only_their_host() {
        let table = table(&[
            route("any", None, "/"),
            route("shop", Some("shop.example.com"), "/"),
            route("tenants", Some("*.example.com"), "/"),
        ]);
        assert_eq!(
            name(&table, Some("shop.example.com"), "/").as_deref(),
            Some("shop")
        );
        assert_eq!(
            name(&table, Some("a.example.com"), "/").as_deref(),
            Some("tenants")
        );
        assert_eq!(
            name(&table, Some("example.com"), "/").as_deref(),
            Some("any")
        );
        assert_eq!(
            name(&table, Some("evilexample.com"), "/").as_deref(),
            Some("any")
        );
        assert_eq!(name(&table, None, "/").as_deref(), Some("any"));
    }

    #[test]
    fn conflicting_or_repeated_hosts_are_refused() {
        let request = |target: &str, hosts: &[&str]| {
            let mut builder = http::Request::builder().uri(target);
            for host in hosts {
                builder = builder.header(http::header::HOST, *host);
            }
            builder.body(()).map_err(|e| e.to_string())
        };
        let host = |target: &str, hosts: &[&str]| request(target, hosts).map(|r| request_host(&r));
        assert_eq!(
            host("/", &["App.Example.:8080"]),
            Ok(Ok(Some("app.example".into())))
        );
        assert_eq!(
            host("http://a.example/x", &["a.example"]),
            Ok(Ok(Some("a.example".into())))
        );
        assert_eq!(
            host("http://admin.example/x", &["www.example"]),
            Ok(Err(HostError::Conflicting))
        );
        assert_eq!(
            host("/", &["a.example", "b.example"]),
            Ok(Err(HostError::Repeated))
        );
        assert_eq!(host("/", &["a b"]), Ok(Err(HostError::Malformed)));
        assert_eq!(host("/", &[]), Ok(Ok(None)));
    }

    #[test]
    fn the_plain_host_shortcut_agrees_with_the_full_parse() {
        for value in [
            "example.com",
            "Example.COM:8080",
            "127.0.0.1:80",
            "a-b.c.",
            "x:65535",
        ] {
            let parsed: http::uri::Authority = value.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(plain_host(value), Some(parsed.host()), "{value}");
        }
        // Left to the full parse, which accepts some and refuses others.
        for value in [
            "[::1]:80",
            "user@host",
            "host:",
            "host:65536",
            "",
            ":80",
            "a b",
            "h:8o",
        ] {
            assert_eq!(plain_host(value), None, "{value}");
        }
    }

    #[test]
    fn no_route_when_nothing_names_the_path() {
        let table = table(&[route("api", None, "/api/")]);
        assert_eq!(name(&table, None, "/admin"), None);
    }
}
