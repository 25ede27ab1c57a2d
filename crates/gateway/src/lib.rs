//! The request path of Portcullis: the listener, the stages in request order, the proxy to the
//! upstreams and the admin listener.
//!
//! Settings arrive here validated and typed (the binary parses and checks the file); nothing in
//! this crate reads configuration or the environment. Every rejection is a [`Reject`] answered
//! with the common error body and, when it is a security fact, one [`SecurityEvent`].
//!
//! [`Reject`]: portcullis_core::Reject
//! [`SecurityEvent`]: portcullis_core::SecurityEvent
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod admin_api;
mod alert;
mod auth;
mod body;
mod bot;
mod captcha;
mod client_ip;
mod compress;
mod cors;
mod events;
mod header_filter;
mod hidden;
mod limits;
mod listener;
mod normalize;
mod pool;
mod proxy;
mod rate_limit;
mod request_timer;
mod respond;
mod route;
mod settings;
mod slow_client;
mod stack;
mod telemetry;
mod tls;
mod waf;

pub use alert::{AlertSettings, Alerter};
pub use auth::IdentityHandle;
pub use auth::keys::key_details as api_key_details;
pub use captcha::{CaptchaProvider, CaptchaSettings};
pub use events::EventSink;
pub use listener::{Running, Services, StartError, start};
pub use settings::{
    BotMode, BotSettings, CorsSettings, ErrorDetail, HeaderSettings, IdentityHeaderStyle,
    IdentitySettings, LimitSettings, OverLimit, RateKey, RateLimit, RateLimitSettings, RouteAuth,
    RouteSettings, RouteWafSettings, SecondFactorPolicy, Settings, TlsSettings, UpstreamSettings,
    WafMode, WafSettings,
};
pub use tls::{TlsError, load_server_config};
