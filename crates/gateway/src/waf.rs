//! The WAF stage: hands the request's parts to the inspection engine (`portcullis-waf`) and
//! turns its verdict into a pass, an event, or a 403.
//!
//! Bodies of the types the engine parses (forms, multipart, JSON, XML) are read into memory up
//! to the route's inspection limit before anything is forwarded, so an attack in the body never
//! reaches the upstream. The bytes read are then sent on first, followed by the rest of the
//! stream unread ([`InspectedBody`]). Other bodies (uploads, binary) stream through untouched.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{CleanValues, Engine, EngineConfig, RequestParts, Verdict};

use crate::request_timer::RequestTimers;
use crate::settings::{OverLimit, RouteWafSettings, WafMode, WafSettings};

/// One route's WAF policy, resolved from the gateway-wide settings and the route's overrides.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) mode: WafMode,
    engine: Engine,
    body_limit: usize,
    over_limit: OverLimit,
}

impl Policy {
    pub(crate) fn new(global: &WafSettings, route: &RouteWafSettings) -> Self {
        let mut exclusions = global.engine.exclusions.clone();
        exclusions.extend(route.exclusions.iter().cloned());
        Policy {
            mode: route.mode.unwrap_or(global.mode),
            engine: Engine::new(EngineConfig {
                exclusions,
                ..global.engine.clone()
            }),
            body_limit: route.body_limit.unwrap_or(global.body_limit),
            over_limit: route.over_limit.unwrap_or(global.over_limit),
        }
    }
}

thread_local! {
    /// Head values this worker found clean: a client's User-Agent, cookies and the paths it
    /// asks for are inspected once, not on every request. One per worker thread, bounded (see
    /// `portcullis_waf::memo`).
    static CLEAN_VALUES: std::cell::RefCell<CleanValues> = std::cell::RefCell::default();
}

/// Why the stage could not read the body it had to inspect.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    #[error("body over the WAF inspection limit of {0} bytes")]
    OverInspectionLimit(usize),
    #[error("client body not received in time")]
    Timeout,
    #[error("reading the client body: {0}")]
    Client(#[from] hyper::Error),
}

/// The outcome of inspection: the request to forward, the engine's verdict, and why the body
/// did not parse as its declared type, if it did not.
pub(crate) struct Inspected {
    pub(crate) request: Request<InspectedBody>,
    pub(crate) verdict: Verdict,
    pub(crate) malformed: Option<String>,
}

/// Inspects `request` under `policy`. `read_timeout` bounds the wait for an inspected body.
pub(crate) async fn inspect(
    policy: &Policy,
    request: Request<Incoming>,
    timers: &RequestTimers,
    read_timeout: std::time::Duration,
) -> Result<Inspected, StageError> {
    let (head, mut incoming) = request.into_parts();
    let mut malformed = None;
    let kind = match head
        .headers
        .get(header::CONTENT_TYPE)
        .map(|value| BodyKind::from_content_type(&String::from_utf8_lossy(value.as_bytes())))
    {
        Some(Ok(kind)) => kind,
        Some(Err(error)) => {
            malformed = Some(error.to_string());
            BodyKind::Opaque
        }
        None => BodyKind::Unlabelled,
    };
    // A compressed body would reach the detectors as compressed bytes, and the application
    // may decompress it: an inspected type must arrive as it is meant to be read.
    let encoded = head
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded && kind.is_inspected() {
        malformed = Some("a compressed body of an inspected type cannot be inspected".to_owned());
    }
    let mut prefix = None;
    let mut trailers = None;
    let mut complete = true;
    let mut exhausted = false;
    if kind.is_inspected() && malformed.is_none() && !incoming.is_end_stream() {
        let read = read_prefix(&mut incoming, policy.body_limit);
        let (bytes, read_trailers, finished) = timers
            .within(read_timeout, read)
            .await
            .map_err(|_| StageError::Timeout)??;
        exhausted = finished;
        complete = finished && bytes.len() <= policy.body_limit;
        // An unlabelled body past the limit is refused only when it reads as JSON; otherwise it
        // is a raw upload, inspected as far as the limit and passed on.
        let refusable = kind != BodyKind::Unlabelled || looks_like_json(&bytes);
        if !complete && policy.over_limit == OverLimit::Reject && refusable {
            return Err(StageError::OverInspectionLimit(policy.body_limit));
        }
        prefix = Some(bytes);
        trailers = read_trailers;
    }

    let mut parts = RequestParts::new();
    parts.add_path(head.uri.path());
    if let Some(query) = head.uri.query() {
        parts.add_query(query);
    }
    for (name, value) in &head.headers {
        parts.add_header(name.as_str(), value.as_bytes());
    }
    let mut anomalies = Vec::new();
    if let Some(bytes) = &prefix {
        let inspected = &bytes[..bytes.len().min(policy.body_limit)];
        match body::parse(&kind, inspected, complete) {
            Ok(parsed) => {
                parts.add_body_leaves(parsed.leaves);
                anomalies = parsed.anomalies;
            }
            Err(error) => malformed = Some(error.to_string()),
        }
    }
    let mut verdict =
        CLEAN_VALUES.with_borrow_mut(|memo| policy.engine.inspect_remembering(&parts, memo));
    if !anomalies.is_empty() {
        policy.engine.add_body_anomalies(&mut verdict, anomalies);
    }
    drop(parts);
    let body = InspectedBody {
        prefix,
        trailers,
        rest: (!exhausted).then_some(incoming),
    };
    Ok(Inspected {
        request: Request::from_parts(head, body),
        verdict,
        malformed,
    })
}

/// Whether a body starts like a JSON object or array.
fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|byte| !byte.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Reads data frames until `limit` bytes or the end: (bytes, trailers, reached the end).
async fn read_prefix(
    incoming: &mut Incoming,
    limit: usize,
) -> Result<(Bytes, Option<HeaderMap>, bool), hyper::Error> {
    let mut buffer = BytesMut::new();
    let mut trailers = None;
    loop {
        let Some(frame) = incoming.frame().await else {
            return Ok((buffer.freeze(), trailers, true));
        };
        match frame?.into_data() {
            Ok(data) => buffer.extend_from_slice(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
        if buffer.len() > limit {
            let finished = incoming.is_end_stream();
            return Ok((buffer.freeze(), trailers, finished));
        }
    }
}

/// The request body after inspection: the bytes already read, then the rest of the stream.
pub(crate) struct InspectedBody {
    prefix: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
}

impl InspectedBody {
    /// A body the stage did not read (WAF off, or a type it does not inspect).
    pub(crate) fn untouched(incoming: Incoming) -> Self {
        InspectedBody {
            prefix: None,
            trailers: None,
            rest: Some(incoming),
        }
    }
}

impl HttpBody for InspectedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take()
            && !prefix.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(rest) = self.rest.as_mut() {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|trailers| Ok(Frame::trailers(trailers))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |prefix| prefix.len() as u64);
        match &self.rest {
            Some(rest) => {
                let hint = rest.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + prefix);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + prefix);
                }
                total
            }
            None => SizeHint::with_exact(prefix),
        }
    }
}

/// The event details of a verdict: score, rule ids and evidence, with matched text masked.
pub(crate) fn event_details(verdict: &Verdict, mode: WafMode) -> serde_json::Value {
    /// Findings kept in one event; the rule ids list them all.
    const MAX_FINDINGS: usize = 10;
    let findings: Vec<serde_json::Value> = verdict
        .findings
        .iter()
        .take(MAX_FINDINGS)
        .map(|finding| {
            serde_json::json!({
                "rule": finding.rule_id,
                "detector": finding.detector,
                "severity": finding.severity,
                "location": finding.location,
                "field": portcullis_core::mask_pii(&finding.field),
                "fingerprint": portcullis_core::mask_pii(&finding.fingerprint),
                "evidence": portcullis_core::mask_pii(&finding.matched),
                "counted": finding.counted,
            })
        })
        .collect();
    serde_json::json!({
        "mode": match mode { WafMode::Off => "off", WafMode::Detect => "detect", WafMode::Block => "block" },
        "score": verdict.score,
        "threshold": verdict.threshold,
        "rules": verdict.rule_ids(),
        "findings": findings,
    })
}

/// The intrusion detection's signals of a blocked verdict: one per detector that matched, and
/// `waf_sensitive_file` when a path named a secret or system file (rule 930120).
pub(crate) fn signals(verdict: &Verdict) -> Vec<&'static str> {
    use portcullis_waf::detect::Detector;
    let mut signals: Vec<&'static str> = Vec::new();
    for finding in &verdict.findings {
        let signal = match finding.detector {
            Detector::Sqli => "waf_sqli",
            Detector::Xss => "waf_xss",
            Detector::Traversal if finding.rule_id == SENSITIVE_FILE_RULE => "waf_sensitive_file",
            Detector::Traversal => "waf_traversal",
            Detector::CommandInjection => "waf_command_injection",
            Detector::Protocol | Detector::Evasion => continue,
        };
        if !signals.contains(&signal) {
            signals.push(signal);
        }
    }
    signals
}

/// The rule of the path detector that fires on a named secret or system file.
const SENSITIVE_FILE_RULE: u32 = 930_120;
