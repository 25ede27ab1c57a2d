//! Anomaly scoring in the manner of the OWASP Core Rule Set.
//!
//! Every field is decoded, every detector runs on every form, and each rule that matches adds
//! its severity's score once per field. A request whose score reaches the threshold is an
//! attack. Rules above the blocking paranoia level but within the detection level still run and
//! are reported, without counting (shadow mode), so an operator can see what raising the level
//! would block before raising it.

use std::ops::Range;

use crate::decode::{self, Decoded};
use crate::detect::{self, Detector, Hit, Rule, Severity, protocol};
use crate::memo::CleanValues;
use crate::request::{Field, Location, Part, RequestParts};

/// The engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Rules up to this paranoia level count towards blocking (1–4).
    pub paranoia: u8,
    /// Rules up to this level run and are reported; never below `paranoia`.
    pub detection_paranoia: u8,
    /// The inbound anomaly score that makes a request an attack (CRS's default is 5: one
    /// critical rule).
    pub threshold: u32,
    pub exclusions: Vec<Exclusion>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            paranoia: 1,
            detection_paranoia: 1,
            threshold: 5,
            exclusions: Vec::new(),
        }
    }
}

/// Removes rules from fields, like CRS's `ctl:ruleRemoveTargetById`: a rich-text field may
/// hold markup, a search box may hold SQL words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// The rules removed; empty removes every rule.
    pub rule_ids: Vec<u32>,
    /// Only fields at this location; `None` for any.
    pub location: Option<Location>,
    /// Only fields with this name; a trailing `*` matches a prefix (`content*`), a leading one
    /// a suffix (`*.html`, for JSON paths). `None` for any.
    pub field: Option<String>,
}

impl Exclusion {
    fn matches(&self, rule: &Rule, location: Location, field: &str) -> bool {
        (self.rule_ids.is_empty() || self.rule_ids.contains(&rule.id))
            && self.location.is_none_or(|wanted| wanted == location)
            && self
                .field
                .as_deref()
                .is_none_or(|wanted| match wanted.strip_suffix('*') {
                    Some(prefix) => field.starts_with(prefix),
                    None => field == wanted,
                })
    }
}

/// One rule that matched one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub rule_id: u32,
    pub detector: Detector,
    pub severity: Severity,
    pub paranoia: u8,
    pub score: u32,
    pub description: &'static str,
    pub location: Location,
    pub part: Part,
    pub field: String,
    /// Which decoded form matched: `text` or `markup`.
    pub form: &'static str,
    /// Byte span in that form.
    pub span: Range<usize>,
    pub fingerprint: String,
    /// The matched bytes (at most [`MATCH_EXCERPT`] of them), unmasked: callers that log it
    /// mask it first.
    pub matched: String,
    /// Whether the finding counts towards blocking (its paranoia level is within the blocking
    /// level) or is shadow-mode evidence.
    pub counted: bool,
}

/// Longest excerpt a finding keeps.
pub const MATCH_EXCERPT: usize = 120;

/// The engine's answer for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    /// Sum of the counted findings' scores.
    pub score: u32,
    pub threshold: u32,
}

impl Verdict {
    pub fn is_attack(&self) -> bool {
        self.score >= self.threshold && self.threshold > 0
    }

    /// Ids of the rules that matched, counted or not, in order and without repeats.
    pub fn rule_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for finding in &self.findings {
            if !ids.contains(&finding.rule_id) {
                ids.push(finding.rule_id);
            }
        }
        ids
    }
}

/// One field after inspection: its decoded forms, and whether any detector hit it at all
/// (before exclusions and paranoia, which depend on more than the value).
struct InspectedField<'f> {
    decoded: Decoded<'f>,
    clean: bool,
}

/// The inspection engine: configuration only, cheap to build, `Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    config: EngineConfig,
}

impl Engine {
    pub fn new(mut config: EngineConfig) -> Self {
        config.paranoia = config.paranoia.clamp(1, 4);
        config.detection_paranoia = config.detection_paranoia.clamp(config.paranoia, 4);
        Engine { config }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Inspects a whole request.
    pub fn inspect(&self, parts: &RequestParts<'_>) -> Verdict {
        self.inspect_with(parts, None)
    }

    /// Inspects a whole request, skipping the head values `memo` holds as clean and adding
    /// those found clean now. The verdict is the one [`Engine::inspect`] gives.
    pub fn inspect_remembering(&self, parts: &RequestParts<'_>, memo: &mut CleanValues) -> Verdict {
        self.inspect_with(parts, Some(memo))
    }

    fn inspect_with(
        &self,
        parts: &RequestParts<'_>,
        mut memo: Option<&mut CleanValues>,
    ) -> Verdict {
        let level = self.config.detection_paranoia;
        let mut findings = Vec::new();
        for found in protocol::check_headers(&parts.headers) {
            self.record(
                &mut findings,
                Location::Header,
                Part::Value,
                &found.header,
                "text",
                b"",
                found.hit,
            );
        }
        for field in &parts.fields {
            let memo = memo
                .as_deref_mut()
                .filter(|_| CleanValues::applies_to(field));
            match memo {
                Some(memo) if memo.contains(level, field) => {}
                Some(memo) => {
                    if self.inspect_field(field, &mut findings).clean {
                        memo.insert(level, field);
                    }
                }
                None => {
                    self.inspect_field(field, &mut findings);
                }
            }
        }
        self.verdict(findings)
    }

    /// Adds findings that body parsing produced (an XML entity declaration) to a verdict.
    pub fn add_body_anomalies(&self, verdict: &mut Verdict, anomalies: Vec<(String, Hit)>) {
        let mut findings = std::mem::take(&mut verdict.findings);
        for (field, hit) in anomalies {
            self.record(
                &mut findings,
                Location::Body,
                Part::Value,
                &field,
                "text",
                b"",
                hit,
            );
        }
        *verdict = self.verdict(findings);
    }

    /// Inspects one field and returns its decoded forms too, for `waf check`.
    pub fn explain<'f>(&self, field: &'f Field<'_>) -> (Decoded<'f>, Verdict) {
        let mut findings = Vec::new();
        let inspected = self.inspect_field(field, &mut findings);
        (inspected.decoded, self.verdict(findings))
    }

    fn verdict(&self, findings: Vec<Finding>) -> Verdict {
        let score = findings
            .iter()
            .filter(|finding| finding.counted)
            .map(|finding| finding.score)
            .sum();
        Verdict {
            findings,
            score,
            threshold: self.config.threshold,
        }
    }

    fn inspect_field<'f>(
        &self,
        field: &'f Field<'_>,
        findings: &mut Vec<Finding>,
    ) -> InspectedField<'f> {
        let already_decoded = matches!(field.location, Location::Query | Location::Body);
        let decoded = decode::decode(&field.value, already_decoded);
        let mut hits = Vec::new();
        // Asked here, not in the call: `decode` has just written the flags' one byte, and the
        // call's four-byte load of it waited for that store to leave the buffer.
        if !decoded.evasions.is_empty() {
            protocol::evasion_hits(decoded.evasions, decoded.text.len(), &mut hits);
        }
        let before_forms = hits.len();
        let mut clean = hits.is_empty();
        for (form_name, scanned) in decoded.forms() {
            if !detect::may_hit(&scanned) {
                // A word alone, like most JSON keys and argument names.
                continue;
            }
            let start = hits.len();
            let form = scanned.bytes();
            detect::sqli::detect(&scanned, &mut hits);
            detect::xss::detect(&scanned, field.location == Location::Path, &mut hits);
            detect::traversal::detect(&scanned, &mut hits);
            detect::cmdi::detect(&scanned, &mut hits);
            if self.config.detection_paranoia >= 2 {
                detect::anomaly::detect(&scanned, &mut hits);
            }
            if matches!(
                field.location,
                Location::Query | Location::Header | Location::Cookie
            ) {
                protocol::detect_header_injection(form, &mut hits);
            }
            if hits.len() == start {
                // Most forms of most fields: nothing to record, and no list of new hits made.
                continue;
            }
            clean = false;
            for hit in hits.split_off(start) {
                let repeated = findings.iter().any(|finding: &Finding| {
                    finding.rule_id == hit.rule.id
                        && finding.field == field.name
                        && finding.part == field.part
                });
                if !repeated {
                    self.record(
                        findings,
                        field.location,
                        field.part,
                        &field.name,
                        form_name,
                        form,
                        hit,
                    );
                }
            }
        }
        for hit in hits.drain(..before_forms) {
            self.record(
                findings,
                field.location,
                field.part,
                &field.name,
                "text",
                &decoded.text,
                hit,
            );
        }
        InspectedField { decoded, clean }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        findings: &mut Vec<Finding>,
        location: Location,
        part: Part,
        field: &str,
        form_name: &'static str,
        form: &[u8],
        hit: Hit,
    ) {
        let rule = hit.rule;
        if rule.paranoia > self.config.detection_paranoia
            || self
                .config
                .exclusions
                .iter()
                .any(|exclusion| exclusion.matches(rule, location, field))
        {
            return;
        }
        let span = hit.span.start.min(form.len())..hit.span.end.min(form.len());
        let matched = &form[span.clone()];
        let matched =
            String::from_utf8_lossy(&matched[..matched.len().min(MATCH_EXCERPT)]).into_owned();
        findings.push(Finding {
            rule_id: rule.id,
            detector: rule.detector,
            severity: rule.severity,
            paranoia: rule.paranoia,
            score: rule.severity.score(),
            description: rule.description,
            location,
            part,
            field: field.to_owned(),
            form: form_name,
            span,
            fingerprint: hit.fingerprint,
            matched,
            counted: rule.paranoia <= self.config.paranoia,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_verdict(engine: &Engine, query: &'static str) -> Verdict {
        let mut parts = RequestParts::new();
        parts.add_query(query);
        engine.inspect(&parts)
    }

    #[test]
    fn an_attack_scores_and_names_its_evidence() {
        let engine = Engine::default();
        let verdict = query_verdict(&engine, "id=1%27%20OR%20%271%27%3D%271&name=O%27Brien");
        assert!(verdict.is_attack());
        assert_eq!(verdict.rule_ids(), vec![942100]);
        let finding = &verdict.findings[0];
        assert_eq!(
            (finding.location, finding.field.as_str()),
            (Location::Query, "id")
        );
        assert!(!finding.fingerprint.is_empty());
        assert_eq!(verdict.score, 5);
    }

    #[test]
    fn benign_requests_score_zero() {
        let engine = Engine::default();
        let verdict = query_verdict(
            &engine,
            "name=O%27Brien&plan=please+select+a+plan&q=rock+%26+roll",
        );
        assert_eq!(verdict.findings, Vec::new());
        assert!(!verdict.is_attack());
    }

    #[test]
    fn shadow_rules_report_without_counting() {
        let shadow = Engine::new(EngineConfig {
            detection_paranoia: 2,
            ..EngineConfig::default()
        });
        let verdict = query_verdict(&shadow, "x=I+like+cats%3B+cat+videos+are+fun");
        assert_eq!(verdict.rule_ids(), vec![932101]);
        assert!(!verdict.is_attack());
        let blocking = Engine::new(EngineConfig {
            paranoia: 2,
            ..EngineConfig::default()
        });
        assert!(query_verdict(&blocking, "x=I+like+cats%3B+cat+videos+are+fun").is_attack());
        assert!(
            query_verdict(&Engine::default(), "x=I+like+cats%3B+cat+videos+are+fun")
                .findings
                .is_empty()
        );
    }

    #[test]
    fn higher_paranoia_turns_on_more_checks() {
        let query = "comment=see+%3Cb%3Ethis%3C%2Fb%3E";
        assert!(!query_verdict(&Engine::default(), query).is_attack());
        let level = |paranoia| {
            Engine::new(EngineConfig {
                paranoia,
                ..EngineConfig::default()
            })
        };
        assert!(
            query_verdict(&level(2), query).is_attack(),
            "an HTML tag at paranoia 2"
        );
        let accented = "name=Zo%C3%AB";
        assert!(!query_verdict(&level(2), accented).is_attack());
        assert!(
            query_verdict(&level(3), accented).is_attack(),
            "non-ASCII at paranoia 3"
        );
    }

    #[test]
    fn remembered_values_give_the_same_verdicts() {
        // An exclusion drops the XSS rules from the `q` argument only: a value it hides there
        // must still be caught in another argument after the memory has seen it.
        let engine = Engine::new(EngineConfig {
            exclusions: vec![Exclusion {
                rule_ids: Vec::new(),
                location: Some(Location::Query),
                field: Some("q".to_owned()),
            }],
            ..EngineConfig::default()
        });
        let mut memo = CleanValues::default();
        let queries = [
            "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "page=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "sort=newest&page=2",
            "sort=newest&page=2",
            "sort=1%27%20OR%20%271%27%3D%271",
        ];
        for query in queries.iter().chain(&queries) {
            let mut parts = RequestParts::new();
            parts.add_path("/products/red-shoes");
            parts.add_query(query);
            parts.add_header("User-Agent", b"Mozilla/5.0 (X11; Linux x86_64)");
            let expected = engine.inspect(&parts);
            assert_eq!(
                engine.inspect_remembering(&parts, &mut memo),
                expected,
                "{query}"
            );
        }
        // The path, the agent, the argument names `q`, `page` and `sort`, and the values
        // `newest` and `2` are remembered; no attack and no value the exclusion hid is.
        assert_eq!(memo.len(), 7);
        let hidden = Field::new(Location::Query, "q", &b"<script>alert(1)</script>"[..]);
        assert!(!memo.contains(1, &hidden));
    }

    #[test]
    fn exclusions_remove_rules_from_named_fields() {
        let engine = Engine::new(EngineConfig {
            exclusions: vec![Exclusion {
                rule_ids: vec![941100, 941120, 941390],
                location: Some(Location::Body),
                field: Some("content*".to_owned()),
            }],
            ..EngineConfig::default()
        });
        let leaves = vec![
            Field::new(
                Location::Body,
                "content_html",
                &b"<img src=x onerror=alert(1)>"[..],
            ),
            Field::new(
                Location::Body,
                "title",
                &b"<img src=x onerror=alert(1)>"[..],
            ),
        ];
        let mut parts = RequestParts::new();
        parts.add_body_leaves(leaves);
        let fields: Vec<String> = engine
            .inspect(&parts)
            .findings
            .iter()
            .map(|finding| finding.field.clone())
            .collect();
        assert!(fields.iter().all(|field| field == "title"), "{fields:?}");
        assert!(!fields.is_empty());
    }

    #[test]
    fn overlong_utf8_in_an_argument_is_seen_through() {
        let verdict = query_verdict(&Engine::default(), "file=%c0%ae%c0%ae%c0%afetc%c0%afpasswd");
        assert_eq!(
            verdict.rule_ids(),
            vec![930100, 930120, 920250],
            "{verdict:?}"
        );
    }

    #[test]
    fn evasions_count_even_without_a_payload() {
        let verdict = query_verdict(&Engine::default(), "file=report%00.pdf");
        assert_eq!(verdict.rule_ids(), vec![920270]);
        assert!(verdict.is_attack());
    }
}
