//! Bot defence on browser routes (`bot = "heuristics" | "challenge" | "block"`): heuristics
//! that weigh a request, as Anubis does, rather than block it by user agent alone; the
//! proof-of-work challenge (`defence::challenge`) with its page, its solver script under a
//! strict CSP with a nonce, a no-script path for the lightest weights, and the signed pass
//! cookie; verified bots pass by network, never by user agent, which anyone can send.
//!
//! Never on API routes that authenticate by token or key (`config check` refuses `bot` with
//! `auth = "token"`), nor for a bearer token on `auth = "any"` routes, which verify it: API
//! clients are not browsers, and a challenge there would only break them.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use portcullis_defence::challenge::{self, ChallengeError, Challenges};
use portcullis_state::{Attempt, Backoff, SharedState};

use crate::auth::cookie;
use crate::body::Body;
use crate::respond::escape_html;
use crate::settings::{BotMode, BotSettings, RouteAuth, RouteSettings};

/// Where the challenge is answered.
pub(crate) const CHALLENGE_PREFIX: &str = "/.portcullis/challenge";
/// The target of the hidden link in the gateway's pages: a honeypot hit.
pub(crate) const TRAP_LINK_PATH: &str = "/.portcullis/trap";

/// Weights at or above this are known bots: `block` refuses them, `heuristics` challenges them.
const BOT_WEIGHT: u32 = 10;
/// Weights below this look like a browser: `heuristics` lets them pass, and the challenge
/// offers them the no-script wait.
const BROWSER_WEIGHT: u32 = 3;
/// Seconds the no-script path waits.
const NOSCRIPT_WAIT: i64 = 5;

/// Security scanners' user agents: each is a tool, never a person.
const SCANNERS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "dirbuster",
    "gobuster",
    "dirb",
    "wpscan",
    "acunetix",
    "netsparker",
    "openvas",
    "w3af",
    "whatweb",
    "feroxbuster",
    "ffuf",
    "httpx",
    "jaeles",
    "arachni",
    "skipfish",
    "commix",
    "hydra",
];

/// Generic automation: libraries and crawlers that say what they are.
const AUTOMATION: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "scrapy",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "headlesschrome",
    "phantomjs",
];

/// AI crawlers and agents, lower-cased, one a line (ai.robots.txt, MIT; see `data/NOTICE.md`).
const AI_ROBOTS: &str = include_str!("../data/ai-robots.txt");

/// How much a request looks like a bot, and why.
pub(crate) fn weigh(headers: &HeaderMap) -> (u32, &'static str) {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if agent.is_empty() {
        return (BOT_WEIGHT, "no user agent");
    }
    if SCANNERS.iter().any(|s| agent.contains(s)) {
        return (BOT_WEIGHT + 10, "security scanner");
    }
    if AI_ROBOTS.lines().any(|name| agent.contains(name)) {
        return (BOT_WEIGHT, "AI crawler");
    }
    let mut weight = 0;
    let mut reason = "browser";
    if AUTOMATION.iter().any(|s| agent.contains(s)) {
        weight += 6;
        reason = "automation";
    }
    // Every browser sends these on a navigation.
    if !headers.contains_key(header::ACCEPT_LANGUAGE) {
        weight += 2;
        reason = if weight > 2 {
            reason
        } else {
            "missing browser headers"
        };
    }
    if !headers.contains_key(header::ACCEPT) {
        weight += 1;
    }
    if agent.starts_with("mozilla/") && !headers.contains_key("sec-fetch-mode") {
        // Claims a current browser, which sends Fetch Metadata, but sent none.
        weight += 1;
    }
    (weight, reason)
}

/// What the bot stage decided.
pub(crate) enum Gate {
    /// Pass on.
    Pass,
    /// Answer with this (the challenge page, or a refusal).
    Answer(Response<Body>),
    /// Refuse as a bot, with the reason.
    Refuse(&'static str),
}

/// The stage: pass, challenge or refuse one request on a browser route.
pub(crate) struct BotGate<'a> {
    pub(crate) settings: &'a BotSettings,
    pub(crate) challenges: &'a Challenges,
    pub(crate) now: i64,
}

impl BotGate<'_> {
    pub(crate) fn decide(
        &self,
        route: &RouteSettings,
        method: &Method,
        uri: &str,
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Gate {
        let mode = route.bot;
        let difficulty = route.bot_difficulty.unwrap_or(self.settings.difficulty);
        // API clients pass when the route will verify their credential (a bearer token or an
        // API key on `auth = "any"`: a forged one gets 401 there). A credential header alone
        // proves nothing: on a route that does not check it, it would let any bot walk past
        // the challenge.
        let api_client = route.auth == RouteAuth::Any
            && (crate::auth::bearer(headers).is_some()
                || headers.contains_key(crate::auth::X_API_KEY));
        // Verified crawlers pass by their network.
        if mode == BotMode::Off
            || api_client
            || self
                .settings
                .verified_networks
                .iter()
                .any(|n| n.contains(&ip))
        {
            return Gate::Pass;
        }
        let (weight, reason) = weigh(headers);
        let binding = challenge::binding(ip, user_agent(headers));
        let passed = cookie::read(headers, &self.settings.pass_cookie)
            .is_some_and(|pass| self.challenges.check_pass(pass, &binding, self.now).is_ok());
        match mode {
            BotMode::Off => Gate::Pass,
            BotMode::Block if weight >= BOT_WEIGHT => Gate::Refuse(reason),
            BotMode::Block => Gate::Pass,
            _ if passed => Gate::Pass,
            BotMode::Heuristics if weight < BROWSER_WEIGHT => Gate::Pass,
            BotMode::Heuristics | BotMode::Challenge => {
                if !matches!(*method, Method::GET | Method::HEAD) {
                    return Gate::Refuse("no challenge pass");
                }
                // Heavier requests do more work: one bit more for each point of weight.
                let bits = difficulty.saturating_add(u8::try_from(weight.min(8)).unwrap_or(8));
                Gate::Answer(self.page(&binding, bits, weight, uri))
            }
        }
    }

    /// The challenge page: the CAPTCHA's widget when one is configured; else the solver script
    /// under a nonce and, for the lightest weights, a no-script wait as well.
    fn page(&self, binding: &str, bits: u8, weight: u32, next: &str) -> Response<Body> {
        if let Some(captcha) = &self.settings.captcha {
            let action = format!("{CHALLENGE_PREFIX}/captcha");
            let (html, csp) = crate::captcha::page(captcha, &action, crate::auth::safe_next(next));
            let mut response = crate::respond::html_page(html);
            if let Ok(csp) = HeaderValue::from_str(&csp) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            return response;
        }
        let token = self.challenges.issue(binding, bits, self.now);
        let next = crate::auth::safe_next(next);
        let nonce = portcullis_identity::token::random_token();
        let noscript = if weight < BROWSER_WEIGHT {
            let wait = self.challenges.issue(binding, 0, self.now);
            let target: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("c", &wait)
                .append_pair("next", next)
                .finish();
            format!(
                "<noscript><meta http-equiv=\"refresh\" content=\"{NOSCRIPT_WAIT}; url={CHALLENGE_PREFIX}/wait?{}\">\
                 <p>Without JavaScript, this takes {NOSCRIPT_WAIT} seconds.</p></noscript>",
                escape_html(&target)
            )
        } else {
            "<noscript><p>This check needs JavaScript.</p></noscript>".to_owned()
        };
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">{noscript}\
             <title>Checking your browser</title></head><body>\
             <p>Checking that you are not a robot&hellip;</p>\
             <form id=\"pc-challenge\" method=\"post\" action=\"{CHALLENGE_PREFIX}/verify\">\
             <input type=\"hidden\" name=\"c\" value=\"{token}\">\
             <input type=\"hidden\" name=\"d\" value=\"{bits}\">\
             <input type=\"hidden\" name=\"n\" value=\"\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\"></form>\
             <script nonce=\"{nonce}\">{SOLVER}</script></body></html>",
            escape_html(next)
        );
        let mut response = crate::respond::html_page(html);
        if let Ok(csp) = HeaderValue::from_str(&page_csp(&nonce)) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        response
    }
}

/// The challenge page's policy: its own script by nonce, a form to this origin, nothing else.
fn page_csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// Finds the nonce with WebCrypto and posts it (needs a secure context: HTTPS or localhost).
const SOLVER: &str = r"(async () => {
  const form = document.getElementById('pc-challenge');
  const challenge = form.elements.c.value, bits = Number(form.elements.d.value);
  const encoder = new TextEncoder();
  for (let nonce = 0; ; nonce++) {
    const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(challenge + ':' + nonce)));
    let zeros = 0;
    for (const byte of hash) { if (byte === 0) { zeros += 8; continue; } zeros += Math.clz32(byte) - 24; break; }
    if (zeros >= bits) { form.elements.n.value = String(nonce); form.submit(); return; }
  }
})();";

fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

impl BotGate<'_> {
    /// Checks an answer (`verify`: the solved challenge; `wait`: the no-script wait), makes its
    /// challenge single-use in the shared state (so across instances), and answers 303 to
    /// `next` with a pass cookie.
    pub(crate) async fn answer(
        &self,
        state: &SharedState,
        fields: &[(String, String)],
        wait: bool,
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Result<Response<Body>, AnswerError> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map_or("", |(_, value)| value.as_str())
        };
        let challenges = self.challenges;
        let binding = challenge::binding(ip, user_agent(headers));
        let refused = |e: ChallengeError| AnswerError::Refused(e.to_string());
        let solved = if wait {
            // The no-script path: a zero-work challenge, answered no sooner than the wait.
            let solved = challenges
                .verify(field("c"), "", &binding, self.now)
                .map_err(refused)?;
            let waited = challenges.challenge_secs - solved.remaining_secs;
            if challenges.difficulty(field("c")) != Some(0) || waited < NOSCRIPT_WAIT {
                return Err(AnswerError::Refused("answered before the wait".into()));
            }
            solved
        } else {
            challenges
                .verify(field("c"), field("n"), &binding, self.now)
                .map_err(refused)?
        };
        if !use_once(state, &solved).await.map_err(AnswerError::State)? {
            return Err(AnswerError::Refused("challenge already used".into()));
        }
        Ok(self.grant_pass(&binding, field("next")))
    }

    /// 303 back to `next` with a pass for the client `binding`.
    pub(crate) fn grant_pass(&self, binding: &str, next: &str) -> Response<Body> {
        let pass = self.challenges.pass(binding, self.now);
        let mut response = see_other(crate::auth::safe_next(next));
        let lifetime = Duration::from_secs(u64::try_from(self.challenges.pass_secs).unwrap_or(0));
        if let Some(cookie) = cookie::set(&self.settings.pass_cookie, &pass, lifetime) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// Checks a CAPTCHA answer with its provider; a pass when it is good.
    pub(crate) async fn captcha_answer(
        &self,
        client: &crate::proxy::UpstreamClient,
        fields: &[(String, String)],
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Result<Response<Body>, AnswerError> {
        let Some(captcha) = &self.settings.captcha else {
            return Err(AnswerError::Refused(
                "no CAPTCHA provider is configured".into(),
            ));
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map_or("", |(_, value)| value.as_str())
        };
        let token = field(captcha.provider.response_field());
        match crate::captcha::verify(client, captcha, token, ip).await {
            Ok(true) => {
                let binding = challenge::binding(ip, user_agent(headers));
                Ok(self.grant_pass(&binding, field("next")))
            }
            Ok(false) => Err(AnswerError::Refused(
                "the CAPTCHA provider refused the answer".into(),
            )),
            Err(reason) => Err(AnswerError::Provider(reason)),
        }
    }
}

/// Why an answer to the challenge was refused.
pub(crate) enum AnswerError {
    /// Malformed, forged, expired, rebound, insufficient or replayed.
    Refused(String),
    /// The shared state failed.
    State(portcullis_state::StateError),
    /// The CAPTCHA provider could not be asked.
    Provider(String),
}

/// Records a solved challenge as used, in the shared state (so across instances) for as long
/// as it could still be answered; true the first time only.
pub(crate) async fn use_once(
    state: &SharedState,
    solved: &challenge::Solved,
) -> Result<bool, portcullis_state::StateError> {
    let once = Backoff {
        free: u64::MAX,
        base: Duration::ZERO,
        max: Duration::ZERO,
        window: Duration::from_secs(u64::try_from(solved.remaining_secs.max(1)).unwrap_or(1)),
    };
    let key = format!("challenge:{}", solved.id);
    Ok(state.attempt(&key, &once).await? == Attempt::Counted(1))
}

/// `303` to `location`.
fn see_other(location: &str) -> Response<Body> {
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn browsers_weigh_little_and_tools_much() {
        let firefox = headers(&[
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            ),
            ("accept", "text/html"),
            ("accept-language", "en"),
            ("sec-fetch-mode", "navigate"),
        ]);
        assert_eq!(weigh(&firefox).0, 0);
        assert!(weigh(&headers(&[("user-agent", "sqlmap/1.8")])).0 >= BOT_WEIGHT);
        assert!(
            weigh(&headers(&[(
                "user-agent",
                "Mozilla/5.0 (compatible; GPTBot/1.2)"
            )]))
            .0 >= BOT_WEIGHT
        );
        assert!(weigh(&headers(&[])).0 >= BOT_WEIGHT);
        let curl = weigh(&headers(&[("user-agent", "curl/8.5.0"), ("accept", "*/*")])).0;
        assert!((BROWSER_WEIGHT..BOT_WEIGHT).contains(&curl), "{curl}");
    }
}
