//! Public rejections. Each one owns its status, its error code and a constant public message;
//! internal detail (which header, which upstream, which error) goes to logs and events only, so
//! no dependency's error text ever reaches a client.

use crate::event::EventKind;

/// Why the gateway answered a request itself instead of passing it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// The path could not be normalized unambiguously (encoded slash, NUL, traversal above root...).
    BadPath,
    /// The request is malformed in a way that is not about its path.
    BadRequest,
    /// No route names this host and path.
    NoRoute,
    /// The path is hidden in this profile (API docs in production).
    Hidden,
    /// Too many header bytes or header fields.
    HeadersTooLarge,
    /// The request target is longer than allowed.
    UriTooLong,
    /// The body is larger than the route allows.
    BodyTooLarge,
    /// The client took too long to send its request.
    RequestTimeout,
    /// Too many concurrent connections.
    Overloaded,
    /// The upstream could not be reached or broke the exchange.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// The upstream answered with a server error whose body is withheld.
    UpstreamError(u16),
    /// A CORS preflight from an origin that is not allowed.
    CorsDenied,
    /// The WAF scored the request as an attack.
    WafBlocked,
    /// The body does not parse as its declared type (strict multipart, JSON, XML).
    MalformedBody,
    /// The route requires authentication and the request carries none that is valid.
    Unauthenticated,
    /// The caller is authenticated but lacks a role or scope the route requires.
    Forbidden,
    /// A cookie-authenticated unsafe request from another origin.
    CsrfRejected,
    /// Wrong e-mail address or password (one answer for both, so accounts cannot be listed).
    InvalidCredentials,
    /// Too many failed logins: wait before trying again.
    LoginThrottled,
    /// The password hashing pool is saturated.
    Busy,
    /// The store that authentication needs cannot be reached: fail closed.
    Unavailable,
    /// The client went over a rate limit.
    RateLimited,
    /// The client's network is blocked.
    IpBlocked,
    /// The bot defence refused the request (a known tool, or no challenge pass).
    BotRefused,
    /// An answer to the browser challenge was wrong, forged, expired or used before.
    ChallengeFailed,
    /// The API key is malformed, unknown, revoked or expired. One answer for all: the client
    /// learns nothing about keys it does not hold.
    InvalidApiKey,
    /// The API key is valid but not usable from this network.
    ApiKeyNetwork,
    /// A sensitive action needs a second factor proved within the last 10 minutes.
    StepUpRequired,
    /// The route needs a second factor, and the caller has none set up (or authenticated in
    /// a way that cannot carry one).
    SecondFactorEnrolmentRequired,
    /// The call does not fit the current state (a second factor set up already).
    Conflict,
}

impl Reject {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Self::BadPath | Self::BadRequest | Self::MalformedBody => 400,
            Self::Unauthenticated | Self::InvalidCredentials | Self::InvalidApiKey => 401,
            Self::CorsDenied
            | Self::WafBlocked
            | Self::Forbidden
            | Self::CsrfRejected
            | Self::IpBlocked
            | Self::BotRefused
            | Self::ChallengeFailed
            | Self::ApiKeyNetwork
            | Self::StepUpRequired
            | Self::SecondFactorEnrolmentRequired => 403,
            Self::Conflict => 409,
            Self::LoginThrottled | Self::RateLimited => 429,
            Self::NoRoute | Self::Hidden => 404,
            Self::RequestTimeout => 408,
            Self::BodyTooLarge => 413,
            Self::UriTooLong => 414,
            Self::HeadersTooLarge => 431,
            Self::BadGateway => 502,
            Self::Overloaded | Self::Busy | Self::Unavailable => 503,
            Self::GatewayTimeout => 504,
            Self::UpstreamError(status) => status,
        }
    }

    /// The machine-readable error code of the common error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadPath => "bad_path",
            Self::BadRequest => "bad_request",
            Self::NoRoute | Self::Hidden => "not_found",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Overloaded => "overloaded",
            Self::BadGateway => "bad_gateway",
            Self::GatewayTimeout => "gateway_timeout",
            Self::UpstreamError(_) => "upstream_error",
            Self::CorsDenied => "cors_denied",
            Self::WafBlocked => "request_blocked",
            Self::MalformedBody => "malformed_body",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::CsrfRejected => "csrf_rejected",
            Self::InvalidCredentials => "invalid_credentials",
            Self::LoginThrottled => "login_throttled",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::IpBlocked => "ip_blocked",
            Self::BotRefused => "bot_refused",
            Self::ChallengeFailed => "challenge_failed",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ApiKeyNetwork => "api_key_network",
            Self::StepUpRequired => "step_up_required",
            Self::SecondFactorEnrolmentRequired => "second_factor_enrolment_required",
            Self::Conflict => "conflict",
        }
    }

    /// The constant public message.
    pub fn message(self) -> &'static str {
        match self {
            Self::BadPath => "The request path is not acceptable",
            Self::BadRequest => "The request is malformed",
            Self::NoRoute | Self::Hidden => "Not found",
            Self::HeadersTooLarge => "Request headers are too large",
            Self::UriTooLong => "The request URI is too long",
            Self::BodyTooLarge => "The request body is too large",
            Self::RequestTimeout => "The request took too long to arrive",
            Self::Overloaded => "The service is busy, try again later",
            Self::BadGateway => "The service is unavailable",
            Self::GatewayTimeout => "The service did not answer in time",
            Self::UpstreamError(_) => "The service failed to handle the request",
            Self::CorsDenied => "This origin is not allowed",
            Self::WafBlocked => "The request was blocked",
            Self::MalformedBody => "The request body does not match its content type",
            Self::Unauthenticated => "Authentication is required",
            Self::Forbidden => "You are not allowed to do this",
            Self::CsrfRejected => "Cross-origin request refused",
            Self::InvalidCredentials => "Wrong e-mail address or password",
            Self::LoginThrottled => "Too many failed attempts, try again later",
            Self::Busy => "The service is busy, try again later",
            Self::Unavailable => "The service is unavailable, try again later",
            Self::RateLimited => "Too many requests",
            Self::IpBlocked => "Requests from your network are blocked",
            Self::BotRefused => "Automated requests are not allowed here",
            Self::ChallengeFailed => "The browser check failed; reload the page",
            Self::InvalidApiKey => "The API key is not valid",
            Self::ApiKeyNetwork => "This API key may not be used from your network",
            Self::StepUpRequired => "Confirm with your second factor first",
            Self::SecondFactorEnrolmentRequired => {
                "Set up a second factor and log in with it to continue"
            }
            Self::Conflict => "This cannot be done in the current state",
        }
    }

    /// Whether a development error body may carry the internal reason. A failed login's
    /// reason (unknown account or wrong password) must not leave even in development: the
    /// answers must not tell the two apart.
    pub fn may_show_detail(self) -> bool {
        self != Self::InvalidCredentials
    }

    /// The security event a rejection records, if it is a security fact at all. Plain misses
    /// (no route) and upstream failures are metrics, not security events.
    pub fn event_kind(self) -> Option<EventKind> {
        match self {
            Self::BadPath => Some(EventKind::PathRejected),
            Self::BadRequest => Some(EventKind::MalformedRequest),
            Self::Hidden => Some(EventKind::HiddenPathProbed),
            Self::HeadersTooLarge | Self::UriTooLong | Self::BodyTooLarge => {
                Some(EventKind::RequestLimitExceeded)
            }
            Self::RequestTimeout => Some(EventKind::RequestTimeout),
            Self::Overloaded => Some(EventKind::ConnectionLimitReached),
            Self::UpstreamError(_) => Some(EventKind::UpstreamErrorWithheld),
            Self::CorsDenied => Some(EventKind::CorsDenied),
            Self::WafBlocked => Some(EventKind::WafBlock),
            Self::MalformedBody => Some(EventKind::MalformedRequest),
            Self::Unauthenticated => Some(EventKind::AuthenticationRequired),
            Self::Forbidden | Self::SecondFactorEnrolmentRequired => Some(EventKind::AccessDenied),
            Self::CsrfRejected => Some(EventKind::CsrfRejected),
            Self::RateLimited => Some(EventKind::RateLimited),
            Self::BotRefused => Some(EventKind::BotRefused),
            Self::ChallengeFailed => Some(EventKind::ChallengeFailed),
            Self::InvalidApiKey | Self::ApiKeyNetwork => Some(EventKind::ApiKeyDenied),
            // The login handler records its own, richer events.
            Self::InvalidCredentials | Self::LoginThrottled => None,
            // The block itself was the event; each refused request is a metric.
            Self::NoRoute
            | Self::IpBlocked
            | Self::BadGateway
            | Self::GatewayTimeout
            | Self::Busy
            | Self::Unavailable
            | Self::StepUpRequired
            | Self::Conflict => None,
        }
    }
}
