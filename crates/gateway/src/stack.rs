//! The request path, in the order of DESIGN.md. [`Gateway::handle`] is the one place that shows
//! every stage a request passes, each a call into its own module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_core::{EventKind, Reject, RequestId, SecurityEvent};
use portcullis_defence::challenge::Challenges;
use portcullis_defence::ip::IpDecisions;
use portcullis_identity::api_keys::KeyDenied;

use crate::auth::{self, IdentityHandle, cookie, csrf};
use crate::body::{Body, LimitedBody, empty};
use crate::bot::{self, BotGate, Gate};
use crate::client_ip::{self, ClientAddr};
use crate::compress;
use crate::cors::{self, CorsDecision};
use crate::events::EventSink;
use crate::hidden;
use crate::limits;
use crate::listener::StartError;
use crate::normalize::normalize;
use crate::pool::UpstreamPool;
use crate::proxy::{self, Forwarding, UpstreamClient};
use crate::rate_limit::{self, Limiter};
use crate::request_timer::RequestTimers;
use crate::respond::{self, SecurityHeaders};
use crate::route::{self, Route, RouteTable};
use crate::settings::{RateLimit, RouteAuth, SecondFactorPolicy, Settings, WafMode};
use crate::telemetry::RouteTelemetry;
use crate::waf::{self, InspectedBody, StageError};

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
}

/// Everything a request needs, built once at start-up.
pub(crate) struct Gateway {
    pub(crate) settings: Settings,
    routes: RouteTable,
    /// Metrics of requests answered before a route matched.
    unrouted: RouteTelemetry,
    /// Outbound calls other than proxying (a CAPTCHA provider).
    upstream: UpstreamClient,
    /// Connections to the routes' upstreams.
    pool: Arc<UpstreamPool>,
    headers: SecurityHeaders,
    pub(crate) events: EventSink,
    /// The identity service, when identity is on.
    pub(crate) identity: Option<IdentityHandle>,
    pub(crate) limiter: Arc<Limiter>,
    ip_decisions: Option<Arc<IpDecisions>>,
    pub(crate) challenges: Arc<Challenges>,
    listener_is_loopback: bool,
    /// Timers for the request timeout, reused by this worker's requests.
    timers: RequestTimers,
}

/// What a route asks of an authenticated caller.
pub(crate) struct Need<'a> {
    /// One of these roles (any when empty).
    pub(crate) roles: &'a [String],
    /// Every one of these scopes.
    pub(crate) scopes: &'a [String],
    /// A second factor proved by the session.
    pub(crate) second_factor: bool,
}

/// A rejection with its internal reason, for logs, events and development error bodies.
pub(crate) type Rejection = (Reject, String);

/// What the stages know about the request so far.
pub(crate) struct RequestContext<'g> {
    pub(crate) id: RequestId,
    /// The id as a header value, made once for the upstream request and the response.
    id_header: Option<HeaderValue>,
    pub(crate) client: ClientAddr,
    pub(crate) secure: bool,
    pub(crate) wants_html: bool,
    route: Option<&'g Route>,
    /// The request's `Origin`, when the route's CORS policy allows it.
    cors_origin: Option<HeaderValue>,
    /// The request's method (compression skips HEAD).
    method: http::Method,
    /// The client accepts a gzipped response.
    accepts_gzip: bool,
    /// The response came from an upstream: its own CSP is kept unless the route sets one.
    from_upstream: bool,
    /// Ids of the WAF rules that matched, for the development response header.
    waf_rules: Option<String>,
    /// The stage that rejected the request already recorded a richer event than the rejection's.
    pub(crate) event_recorded: bool,
    /// The authenticated account, for events.
    pub(crate) user_id: Option<String>,
    /// Identity headers for the upstream, set by authentication.
    pub(crate) identity_headers: auth::IdentityHeaders,
    /// The API key the request authenticated with, for rate limits keyed by key.
    pub(crate) api_key_id: Option<String>,
    /// The header that carried a credential meant for the gateway (an API key): the upstream
    /// never sees it.
    pub(crate) spent_credential: Option<header::HeaderName>,
    /// `RateLimit-Policy` and `RateLimit` items of the limits the request passed through.
    rate_fields: Vec<(String, String)>,
    /// `Retry-After` seconds of a rate-limit refusal.
    retry_after: Option<u64>,
    /// The request path, normalized once normalization has run; for the intrusion detection.
    pub(crate) path: String,
    /// The client's network is blocked: refused first, and nothing more is done for it.
    blocked: bool,
}

impl Gateway {
    pub(crate) fn new(
        settings: Settings,
        events: EventSink,
        identity: Option<IdentityHandle>,
        limiter: Arc<Limiter>,
        ip_decisions: Option<Arc<IpDecisions>>,
        challenges: Arc<Challenges>,
    ) -> Result<Self, StartError> {
        let routes = RouteTable::new(&settings.routes, &settings.waf)?;
        Ok(Self {
            upstream: proxy::client(&settings.upstream)?,
            pool: UpstreamPool::new(&settings.upstream, proxy::upstream_tls(&settings.upstream)?),
            headers: SecurityHeaders::new(&settings.headers, settings.hsts)?,
            listener_is_loopback: settings.listen.ip().is_loopback(),
            timers: RequestTimers::default(),
            routes,
            unrouted: RouteTelemetry::new("none"),
            events,
            identity,
            limiter,
            ip_decisions,
            challenges,
            settings,
        })
    }

    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        conn: Connection,
    ) -> Response<Body> {
        let started = Instant::now();
        // Client IP first: every later stage, event and log line speaks of this address.
        let client =
            client_ip::resolve(conn.peer, request.headers(), &self.settings.trusted_proxies);
        // Request id: a client's own only from a trusted proxy, and only when well formed.
        let id = client
            .peer_trusted
            .then(|| request.headers().get(proxy::X_REQUEST_ID))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate);
        let forwarded_https = client.peer_trusted
            && request
                .headers()
                .get(proxy::X_FORWARDED_PROTO)
                .is_some_and(|v| v == "https");
        let mut ctx = RequestContext {
            // Always well formed: a generated id is hex, a kept one was checked above.
            id_header: HeaderValue::from_str(id.as_str()).ok(),
            id,
            client,
            secure: conn.tls || forwarded_https,
            wants_html: respond::wants_html(request.headers()),
            route: None,
            cors_origin: None,
            method: request.method().clone(),
            accepts_gzip: compress::accepts_gzip(request.headers()),
            from_upstream: false,
            waf_rules: None,
            event_recorded: false,
            user_id: None,
            identity_headers: auth::IdentityHeaders::default(),
            api_key_id: None,
            spent_credential: None,
            rate_fields: Vec::new(),
            retry_after: None,
            path: request.uri().path().to_owned(),
            blocked: false,
        };
        // Rare paths (refusals, the identity API, challenge answers) are boxed: a future is as
        // large as its largest state, and hyper moves each request's future more than once,
        // so inlined they made every proxied request copy 18 KB instead of 5 KB.
        let mut response = match self.route_and_forward(request, &mut ctx).await {
            Ok(response) => response,
            Err((reject, internal)) => Box::pin(self.reject(reject, &internal, &ctx)).await,
        };
        let status = response.status();
        // Probing shows as misses and refusals: the intrusion detection counts them by path
        // (not the refusals of a client it already banned, and not static assets: a page with
        // broken image links must not get its visitors banned, as CrowdSec's http-probing
        // also leaves them out).
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN)
            && !ctx.blocked
            && !is_static_asset(&ctx.path)
        {
            if status == StatusCode::NOT_FOUND {
                self.events
                    .signal("not_found", ctx.client.ip, &ctx.path)
                    .await;
            } else if status == StatusCode::FORBIDDEN {
                self.events
                    .signal("forbidden", ctx.client.ip, &ctx.path)
                    .await;
            }
        }
        self.finish(&mut response, &mut ctx);
        if ctx.from_upstream && ctx.accepts_gzip {
            let secret = ctx.route.is_some_and(|r| r.settings.secret);
            response = compress::maybe_compress(response, &ctx.method, secret);
        }
        ctx.route
            .map_or(&self.unrouted, |r| &r.telemetry)
            .record(status, started.elapsed());
        response
    }

    /// The stages after the client is known, up to the upstream's answer.
    async fn route_and_forward<'g>(
        &'g self,
        request: Request<Incoming>,
        ctx: &mut RequestContext<'g>,
    ) -> Result<Response<Body>, Rejection> {
        // First: a blocked client costs one lookup in memory.
        if let Some(blocked) = self
            .ip_decisions
            .as_ref()
            .and_then(|d| d.check(ctx.client.ip))
        {
            metrics::counter!("portcullis_ip_blocked_requests_total", "origin" => blocked.origin.as_str())
                .increment(1);
            ctx.blocked = true;
            return Err((
                Reject::IpBlocked,
                format!(
                    "{} blocked ({}): {}",
                    blocked.network,
                    blocked.origin.as_str(),
                    blocked.reason
                ),
            ));
        }
        limits::check(&self.settings.limits, &request)?;
        if let Some(limit) = &self.settings.rate_limits.client {
            self.rate_limit(CLIENT_POLICY, limit, ctx).await?;
        }
        let host =
            route::request_host(&request).map_err(|e| (Reject::BadRequest, e.to_string()))?;
        if self.settings.https_required && !ctx.secure && !self.listener_is_loopback {
            let host =
                host.ok_or_else(|| (Reject::BadRequest, "no host to redirect to".to_owned()))?;
            return Ok(https_redirect(&host, &request));
        }
        let path = normalize(request.uri().path()).map_err(|e| (Reject::BadPath, e.to_string()))?;
        ctx.path.clear();
        ctx.path.push_str(&path.decoded);
        if path.decoded == bot::TRAP_LINK_PATH
            || hidden::under_any(&self.settings.honeypot_paths, &path.decoded)
        {
            self.emit(EventKind::HoneypotHit, ctx, &path.decoded).await;
            return Err((Reject::NoRoute, format!("honeypot {}", path.decoded)));
        }
        if hidden::under_any(&self.settings.hidden_paths, &path.decoded) {
            return Err((Reject::Hidden, format!("hidden path {}", path.decoded)));
        }
        if path.decoded == JWKS_PATH
            && let Some(jwks) = self.identity.as_ref().and_then(IdentityHandle::jwks)
        {
            let mut response = respond::json(StatusCode::OK, &jwks);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            return Ok(response);
        }
        // The path borrows from the request, which these take: their part of it is copied.
        if let Some(rest) = self.identity_path(&path.decoded).map(str::to_owned) {
            return Box::pin(self.identity_api(request, &rest, host.as_deref(), ctx)).await;
        }
        if let Some(rest) = path.decoded.strip_prefix(bot::CHALLENGE_PREFIX) {
            let rest = rest.to_owned();
            return Box::pin(self.challenge_answer(request, &rest, ctx)).await;
        }
        let route = self
            .routes
            .find(host.as_deref(), &path.decoded)
            .ok_or_else(|| (Reject::NoRoute, String::new()))?;
        ctx.route = Some(route);
        match cors::decide(
            route.settings.cors.as_ref(),
            request.method(),
            request.headers(),
        ) {
            CorsDecision::Preflight(response) => return Ok(response),
            CorsDecision::Denied => return Err((Reject::CorsDenied, "origin not listed".into())),
            CorsDecision::Allowed(origin) => ctx.cors_origin = Some(origin),
            CorsDecision::None => {}
        }
        if route.settings.bot != crate::settings::BotMode::Off {
            let gate = self.bot_gate().decide(
                &route.settings,
                request.method(),
                request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
                request.headers(),
                ctx.client.ip,
            );
            match gate {
                Gate::Pass => {}
                Gate::Answer(response) => return Ok(response),
                Gate::Refuse(reason) => return Err((Reject::BotRefused, reason.to_owned())),
            }
        }
        // Most paths are already normal: forward the client's own bytes then, unparsed again.
        let path_and_query = match request.uri().path_and_query() {
            Some(original) if original.path() == path.encoded => original.clone(),
            _ => {
                let rebuilt = match request.uri().query() {
                    Some(query) => format!("{}?{query}", path.encoded),
                    None => path.encoded.into_owned(),
                };
                PathAndQuery::try_from(rebuilt).map_err(|e| (Reject::BadPath, e.to_string()))?
            }
        };
        // A declared length over the route's limit is refused before any byte is read.
        let limit = self.body_limit(route);
        if let Some(length) = content_length(&request)
            && length > limit
        {
            return Err((
                Reject::BodyTooLarge,
                format!("content-length {length} over {limit}"),
            ));
        }
        let request = self.inspect(request, route, ctx).await?;
        // Boxed, and only for routes that authenticate: the session and token lookups make a
        // large future, which inlined made every request's future larger to move.
        let authenticated = if route.settings.auth == RouteAuth::None {
            Ok(())
        } else {
            let (headers, method) = (request.headers(), request.method());
            Box::pin(self.authenticate(headers, method, route, host.as_deref(), ctx)).await
        };
        match authenticated {
            Ok(()) => {}
            // A browser asking for a page is sent to log in first, and brought back.
            Err((Reject::Unauthenticated, reason))
                if ctx.wants_html
                    && matches!(*request.method(), http::Method::GET | http::Method::HEAD) =>
            {
                if let Some(settings) = &self.settings.identity {
                    self.emit(EventKind::AuthenticationRequired, ctx, &reason)
                        .await;
                    return Ok(auth::redirect_to_login(
                        &settings.prefix,
                        path_and_query.as_str(),
                    ));
                }
                return Err((Reject::Unauthenticated, reason));
            }
            Err(rejection) => return Err(rejection),
        }
        if let Some(limit) = &route.settings.rate_limit {
            self.rate_limit(&route.settings.name, limit, ctx).await?;
        }
        self.forward(request, route, path_and_query, ctx).await
    }

    fn bot_gate(&self) -> BotGate<'_> {
        BotGate {
            settings: &self.settings.bot,
            challenges: &self.challenges,
            now: self.events.now().unix_timestamp(),
        }
    }

    /// `POST /.portcullis/challenge/verify` (the solver's answer) and `GET .../wait` (the
    /// no-script path): a pass cookie and 303 back, or 403.
    async fn challenge_answer(
        &self,
        request: Request<Incoming>,
        rest: &str,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        /// An answer is three short fields.
        const MAX_ANSWER: usize = 4096;
        let (wait, captcha) = match (request.method(), rest) {
            (&http::Method::POST, "/verify") => (false, false),
            (&http::Method::GET, "/wait") => (true, false),
            (&http::Method::POST, "/captcha") => (false, true),
            _ => return Err((Reject::NoRoute, String::new())),
        };
        let (parts, body) = request.into_parts();
        let fields: Vec<(String, String)> = if wait {
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect()
        } else {
            let read = http_body_util::Limited::new(body, MAX_ANSWER).collect();
            let bytes = self
                .timers
                .within(self.settings.limits.request_timeout, read)
                .await
                .map_err(|_| (Reject::RequestTimeout, "answer not received in time".into()))?
                .map_err(|_| (Reject::BadRequest, "answer could not be read".to_owned()))?
                .to_bytes();
            form_urlencoded::parse(&bytes).into_owned().collect()
        };
        let state = self.limiter.state();
        let gate = self.bot_gate();
        let answer = if captcha {
            gate.captcha_answer(&self.upstream, &fields, &parts.headers, ctx.client.ip)
                .await
        } else {
            gate.answer(state, &fields, wait, &parts.headers, ctx.client.ip)
                .await
        };
        match answer {
            Ok(response) => Ok(response),
            Err(bot::AnswerError::Refused(reason)) => Err((Reject::ChallengeFailed, reason)),
            Err(bot::AnswerError::State(error)) => {
                Err((Reject::Unavailable, format!("challenge state: {error}")))
            }
            Err(bot::AnswerError::Provider(reason)) => {
                Err((Reject::Unavailable, format!("CAPTCHA provider: {reason}")))
            }
        }
    }

    /// One rate limit: refuse, or wait out nginx's delay, or pass; the fields for the
    /// response either way.
    async fn rate_limit(
        &self,
        policy: &str,
        limit: &RateLimit,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(), Rejection> {
        let caller = rate_limit::Caller {
            ip: ctx.client.ip,
            user: ctx.user_id.as_deref(),
            api_key: ctx.api_key_id.as_deref(),
        };
        let outcome = self.limiter.check(policy, limit, &caller).await;
        ctx.rate_fields.extend(outcome.fields);
        if outcome.refused {
            ctx.retry_after = outcome.retry_after;
            // Only the first refusal of a key in a while becomes an event.
            ctx.event_recorded = !outcome.report;
            return Err((Reject::RateLimited, format!("over the {policy:?} limit")));
        }
        if outcome.report {
            let details = serde_json::json!({ "policy": policy, "dry_run": true });
            self.emit_details(EventKind::RateLimited, ctx, details)
                .await;
        }
        if !outcome.delay.is_zero() {
            tokio::time::sleep(outcome.delay).await;
        }
        Ok(())
    }

    /// The part of `path` after the identity prefix, when the path is under it.
    fn identity_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = &self.settings.identity.as_ref()?.prefix;
        let rest = path.strip_prefix(prefix.as_str())?;
        if rest.is_empty() {
            Some(rest)
        } else {
            rest.strip_prefix('/')
        }
    }

    /// Authentication and authorization: the route's requirement, a live session, the
    /// same-origin check of cookie-authenticated unsafe requests, the route's roles. Fills the
    /// identity headers for the upstream.
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        method: &http::Method,
        route: &Route,
        host: Option<&str>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(), Rejection> {
        if route.settings.auth == RouteAuth::None {
            return Ok(());
        }
        let caller = self
            .identify(headers, method, route.settings.auth, host, ctx)
            .await?;
        let need = Need {
            roles: &route.settings.roles,
            scopes: &route.settings.scopes,
            second_factor: route.settings.mfa,
        };
        self.authorize(&caller, &need, ctx)
    }

    /// The caller a request authenticates as, by bearer token (where `required` accepts one)
    /// or session cookie; cookie-authenticated unsafe requests must be same-origin.
    pub(crate) async fn identify(
        &self,
        headers: &http::HeaderMap,
        method: &http::Method,
        required: RouteAuth,
        host: Option<&str>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<auth::Caller, Rejection> {
        let (Some(handle), Some(settings)) = (&self.identity, &self.settings.identity) else {
            return Err((
                Reject::Unavailable,
                "route needs identity, which is off".into(),
            ));
        };
        // An API key, where keys are accepted; like a bearer token, never checked for CSRF.
        if matches!(required, RouteAuth::ApiKey | RouteAuth::Any)
            && let Some(prefix) = handle.api_key_prefix()
            && let Some((key, carrier)) = auth::keys::presented(headers, prefix)
        {
            let verdict = handle
                .verify_api_key(key, ctx.client.ip)
                .await
                .map_err(auth::api::service_failure)?;
            let key = match verdict {
                Ok(key) => key,
                Err(denied) => {
                    let hint: String = key.chars().take(prefix.len() + 4).collect();
                    let reject = if denied == KeyDenied::Network {
                        Reject::ApiKeyNetwork
                    } else {
                        Reject::InvalidApiKey
                    };
                    let details = serde_json::json!({ "reason": denied.as_str(), "hint": hint });
                    self.emit_details(EventKind::ApiKeyDenied, ctx, details)
                        .await;
                    ctx.event_recorded = true;
                    return Err((reject, denied.to_string()));
                }
            };
            let caller = auth::Caller::from_api_key(&key);
            ctx.user_id = Some(caller.id.clone());
            ctx.api_key_id = Some(key.id.clone());
            ctx.spent_credential = Some(carrier);
            return Ok(caller);
        }
        if required == RouteAuth::ApiKey {
            return Err((Reject::InvalidApiKey, "no API key".into()));
        }
        let bearer = auth::bearer(headers).map(str::to_owned);
        let caller = match (required, bearer) {
            // A bearer token, where tokens are accepted; never checked for CSRF, since a
            // browser does not attach it by itself.
            (RouteAuth::Token | RouteAuth::Any, Some(token)) => {
                let verdict = handle
                    .run(move |identity| async move { identity.authenticate_token(&token).await })
                    .await
                    .map_err(auth::api::service_failure)?;
                let claims = verdict.map_err(|reason| (Reject::Unauthenticated, reason))?;
                auth::Caller::from_token(&claims)
            }
            (RouteAuth::Token, None) => {
                return Err((Reject::Unauthenticated, "no bearer token".into()));
            }
            _ => {
                let token = cookie::read(headers, &settings.cookie_name)
                    .map(str::to_owned)
                    .ok_or_else(|| (Reject::Unauthenticated, "no session cookie".to_owned()))?;
                let principal = handle
                    .authenticate_session(token)
                    .await
                    .map_err(auth::api::service_failure)?
                    .ok_or_else(|| {
                        (
                            Reject::Unauthenticated,
                            "unknown or expired session".to_owned(),
                        )
                    })?;
                if csrf::is_unsafe(method) && !csrf::same_origin(headers, host, ctx.secure) {
                    ctx.user_id = Some(principal.account.id.clone());
                    return Err((
                        Reject::CsrfRejected,
                        "cookie-authenticated request from another origin".into(),
                    ));
                }
                auth::Caller::from_session(&principal)
            }
        };
        ctx.user_id = Some(caller.id.clone());
        Ok(caller)
    }

    /// The route's roles, scopes and second factor; then the identity headers for the
    /// upstream. A second factor is needed where the route says so, of admins on admin routes
    /// when the policy says so, and of every session when the policy says so; API keys and
    /// access tokens cannot carry one, so they do not reach routes that need it.
    pub(crate) fn authorize(
        &self,
        caller: &auth::Caller,
        need: &Need<'_>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(), Rejection> {
        if !caller.has_role(need.roles) {
            return Err((
                Reject::Forbidden,
                "lacks every role the route requires".into(),
            ));
        }
        if !caller.has_scopes(need.scopes) {
            return Err((Reject::Forbidden, "lacks a scope the route requires".into()));
        }
        let admin_route = need.roles.iter().any(|r| r == "admin");
        let policy_needs = match self.settings.identity.as_ref().map(|i| i.second_factor) {
            Some(SecondFactorPolicy::All) => caller.method == "session",
            Some(SecondFactorPolicy::Admins) => {
                admin_route && caller.roles.iter().any(|r| r == "admin")
            }
            Some(SecondFactorPolicy::Optional) | None => false,
        };
        if (need.second_factor || policy_needs) && !caller.second_factor {
            return Err((
                Reject::SecondFactorEnrolmentRequired,
                "the route needs a second factor the session has not proved".into(),
            ));
        }
        if let (Some(handle), Some(settings)) = (&self.identity, &self.settings.identity) {
            ctx.identity_headers = handle.identity_headers(caller, settings.header_style);
        }
        Ok(())
    }

    fn body_limit(&self, route: &Route) -> u64 {
        route
            .settings
            .max_body_bytes
            .unwrap_or(self.settings.limits.max_body_bytes)
    }

    /// The WAF stage: score the request; record what matched; block attacks in block mode.
    async fn inspect(
        &self,
        request: Request<Incoming>,
        route: &Route,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Request<InspectedBody>, Rejection> {
        let policy = &route.waf;
        if policy.mode == WafMode::Off {
            return Ok(request.map(InspectedBody::untouched));
        }
        let read_timeout = self.settings.limits.request_timeout;
        let inspected = waf::inspect(policy, request, &self.timers, read_timeout)
            .await
            .map_err(|error| match error {
                StageError::OverInspectionLimit(_) => (Reject::BodyTooLarge, error.to_string()),
                StageError::Timeout => (Reject::RequestTimeout, error.to_string()),
                StageError::Client(_) => (Reject::BadRequest, error.to_string()),
            })?;
        let blocking = policy.mode == WafMode::Block;
        if let Some(reason) = inspected.malformed {
            if blocking {
                return Err((Reject::MalformedBody, reason));
            }
            self.emit(EventKind::MalformedRequest, ctx, &reason).await;
        }
        let verdict = inspected.verdict;
        if !verdict.findings.is_empty() {
            let rules = verdict.rule_ids();
            let blocked = blocking && verdict.is_attack();
            let kind = if blocked {
                EventKind::WafBlock
            } else {
                EventKind::WafDetect
            };
            self.emit_details(kind, ctx, waf::event_details(&verdict, policy.mode))
                .await;
            let listed: Vec<String> = rules.iter().map(u32::to_string).collect();
            ctx.waf_rules = Some(listed.join(", "));
            if blocked {
                for signal in waf::signals(&verdict) {
                    self.events.signal(signal, ctx.client.ip, &ctx.path).await;
                }
                ctx.event_recorded = true;
                return Err((
                    Reject::WafBlocked,
                    format!(
                        "anomaly score {} from rules {}",
                        verdict.score,
                        listed.join(", ")
                    ),
                ));
            }
        }
        Ok(inspected.request)
    }

    /// Body limit, then the upstream exchange under the request timeout.
    async fn forward(
        &self,
        request: Request<InspectedBody>,
        route: &Route,
        path_and_query: PathAndQuery,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let limit = self.body_limit(route);
        let upstream = route
            .pick_upstream()
            .ok_or_else(|| (Reject::BadGateway, "route has no upstream".into()))?;
        let (parts, body) = request.into_parts();
        let (body, progress) = LimitedBody::new(body, limit);
        // `request_host` has refused a `Host` that is not visible ASCII.
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        });
        let forwarding = Forwarding {
            client_ip: ctx.client.ip,
            proto: if ctx.secure { "https" } else { "http" },
            host,
            request_id: ctx.id_header.clone(),
            identity: &ctx.identity_headers,
            spent_credential: ctx.spent_credential.as_ref(),
            session_cookie: self
                .settings
                .identity
                .as_ref()
                .map(|i| i.cookie_name.as_str()),
        };
        let upstream_request = proxy::upstream_request(
            parts,
            body.boxed_unsync(),
            upstream,
            path_and_query,
            &forwarding,
        )
        .map_err(|e| (Reject::BadRequest, e.to_string()))?;
        let exchange = self.pool.send(upstream, upstream_request);
        let response = match self
            .timers
            .within(self.settings.limits.request_timeout, exchange)
            .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(_)) if progress.over_limit() => {
                return Err((Reject::BodyTooLarge, format!("body over {limit}")));
            }
            Ok(Err(error)) => {
                let kind = if error.is_connect() {
                    "connect"
                } else {
                    "exchange"
                };
                metrics::counter!("portcullis_upstream_errors_total", "route" => route.settings.name.clone(), "kind" => kind)
                    .increment(1);
                return Err((
                    Reject::BadGateway,
                    format!("upstream {kind} error: {error}"),
                ));
            }
            Err(_) if !progress.finished() => {
                return Err((
                    Reject::RequestTimeout,
                    "client body not received in time".into(),
                ));
            }
            Err(_) => {
                metrics::counter!("portcullis_upstream_errors_total", "route" => route.settings.name.clone(), "kind" => "timeout")
                    .increment(1);
                return Err((
                    Reject::GatewayTimeout,
                    "upstream did not answer in time".into(),
                ));
            }
        };
        let status = response.status();
        if status.is_server_error() && route.settings.replace_upstream_errors {
            // The body may hold a traceback: drop it unread; the connection is not reused.
            return Err((
                Reject::UpstreamError(status.as_u16()),
                format!("upstream answered {status}"),
            ));
        }
        let mut response = proxy::downstream_response(response);
        if let Some(report) = response.headers_mut().remove(X_PORTCULLIS_REPORT) {
            self.upstream_report(&report, ctx).await;
        }
        ctx.from_upstream = true;
        Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
    }

    /// An upstream's report about the request it answered (`X-Portcullis-Report:
    /// payment_manipulation_attempt`): an event, and a signal of that name for the intrusion
    /// detection. Only the upstream can set a response header, and the gateway knows which
    /// client sent the request, so the report needs no credentials of its own.
    async fn upstream_report(&self, report: &HeaderValue, ctx: &RequestContext<'_>) {
        let name = report.to_str().unwrap_or("").trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !valid {
            tracing::warn!("upstream sent an unreadable X-Portcullis-Report; ignored");
            return;
        }
        let details =
            serde_json::json!({ "report": name, "path": portcullis_core::mask_pii(&ctx.path) });
        self.emit_details(EventKind::UpstreamReport, ctx, details)
            .await;
        self.events.signal(name, ctx.client.ip, &ctx.path).await;
    }

    /// The common error body, after the event that explains it is durable.
    async fn reject(
        &self,
        reject: Reject,
        internal: &str,
        ctx: &RequestContext<'_>,
    ) -> Response<Body> {
        if let Some(kind) = reject.event_kind()
            && !ctx.event_recorded
        {
            self.emit(kind, ctx, internal).await;
        }
        // A banned client's every request is refused: one log line each would let it flood the
        // log (the ban itself was logged, and the refusals are counted).
        if reject == Reject::IpBlocked {
            tracing::debug!(request_id = ctx.id.as_str(), client_ip = %ctx.client.ip, reason = internal, "request from a blocked network");
        } else {
            tracing::info!(
                request_id = ctx.id.as_str(),
                client_ip = %ctx.client.ip,
                code = reject.code(),
                reason = internal,
                "request rejected"
            );
        }
        respond::error_response(
            reject,
            &ctx.id,
            ctx.wants_html,
            self.settings.error_detail,
            internal,
        )
    }

    async fn emit(&self, kind: EventKind, ctx: &RequestContext<'_>, internal: &str) {
        let details = serde_json::json!({ "reason": portcullis_core::mask_pii(internal) });
        self.emit_details(kind, ctx, details).await;
    }

    pub(crate) async fn emit_details(
        &self,
        kind: EventKind,
        ctx: &RequestContext<'_>,
        details: serde_json::Value,
    ) {
        let event = SecurityEvent::new(kind, self.events.now())
            .with_request(&ctx.id, ctx.client.ip)
            .with_user(ctx.user_id.as_deref())
            .with_key(ctx.api_key_id.as_deref())
            .with_route(ctx.route.map(|r| r.settings.name.as_str()))
            .with_details(details);
        self.events.emit(event).await;
    }

    /// Response hardening, on every response, the gateway's own and the upstream's.
    fn finish(&self, response: &mut Response<Body>, ctx: &mut RequestContext<'_>) {
        let csp = if ctx.from_upstream {
            ctx.route.and_then(|r| r.csp.as_ref())
        } else if response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
        {
            // A page of ours with its own, stricter in what it names (the challenge's nonce).
            None
        } else {
            Some(self.headers.gateway_csp())
        };
        let headers = response.headers_mut();
        self.headers.apply(headers, csp, ctx.secure);
        if let Some(id) = &ctx.id_header {
            headers.insert(proxy::X_REQUEST_ID, id.clone());
        }
        rate_limit::add_fields(headers, std::mem::take(&mut ctx.rate_fields));
        if let Some(seconds) = ctx.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.settings.waf.rule_header
            && let Some(rules) = ctx.waf_rules.as_deref()
            && let Ok(rules) = HeaderValue::from_str(rules)
        {
            headers.insert(X_PORTCULLIS_WAF_RULES, rules);
        }
        if let (Some(origin), Some(cors)) = (
            &ctx.cors_origin,
            ctx.route.and_then(|r| r.settings.cors.as_ref()),
        ) {
            cors::add_allowed(headers, origin.clone(), cors);
        }
    }
}

/// The name of the per-client limit in `RateLimit-Policy`, events and metrics.
const CLIENT_POLICY: &str = "client";

/// Where the public keys of access and identity tokens are published.
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Set by an upstream to report a security fact about the request; never passed to the client.
const X_PORTCULLIS_REPORT: header::HeaderName =
    header::HeaderName::from_static("x-portcullis-report");

/// Lists the WAF rules that matched (development and test profiles only).
const X_PORTCULLIS_WAF_RULES: header::HeaderName =
    header::HeaderName::from_static("x-portcullis-waf-rules");

/// Whether `path` names a static asset (by its extension), which probing rules leave out.
fn is_static_asset(path: &str) -> bool {
    const ASSETS: &[&str] = &[
        "css", "js", "mjs", "map", "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico",
        "woff", "woff2", "ttf", "otf", "eot", "mp4", "webm", "mp3",
    ];
    let name = path.rsplit('/').next().unwrap_or("");
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| ASSETS.iter().any(|a| a.eq_ignore_ascii_case(ext)))
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `308` to the same target over HTTPS, on the validated host (default port), so a forged
/// `Host` cannot put anything but a host name into `Location`.
fn https_redirect<B>(host: &str, request: &Request<B>) -> Response<Body> {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{target}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
