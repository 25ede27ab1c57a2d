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
    pub(crate) fn new(settings: &[RouteSettings]) -> Result<Self, http::Error> {
        let mut routes = Vec::with_capacity(settings.len());
        for route in settings {
            routes.push(Route {
                prefix: route.path.trim_end_matches('/').to_owned(),
                csp: route
                    .csp
                    .as_deref()
                    .map(http::HeaderValue::from_str)
                    .transpose()?,
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

/// The host a request names, lower-case and without port: `:authority` or `Host`.
pub(crate) fn request_host<B>(request: &http::Request<B>) -> Option<String> {
    let raw = request
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            let value = request.headers().get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            Some(authority.host().to_owned())
        })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
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
        }
    }

    fn table(routes: &[RouteSettings]) -> RouteTable {
        match RouteTable::new(routes) {
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
    fn no_route_when_nothing_names_the_path() {
        let table = table(&[route("api", None, "/api/")]);
        assert_eq!(name(&table, None, "/admin"), None);
    }
}
