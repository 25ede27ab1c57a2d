//! `portcullis waf check|eval|rules`: the inspection engine from the command line, to explain a
//! verdict, to measure detection on a labelled corpus, and to list the rules exclusions name.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use portcullis_waf::{Engine, EngineConfig, Field, Location, RequestParts};

/// Paranoia settings of a CLI run.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Paranoia {
    /// Rules up to this level count towards blocking (1–4).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    paranoia: u8,
    /// Rules up to this level are reported too (shadow mode).
    #[arg(long)]
    detection_paranoia: Option<u8>,
}

impl Paranoia {
    fn engine(self) -> Engine {
        Engine::new(EngineConfig {
            paranoia: self.paranoia,
            detection_paranoia: self.detection_paranoia.unwrap_or(self.paranoia),
            ..EngineConfig::default()
        })
    }
}

/// The payload as the named part of a request: a query or body argument `payload` (already
/// form-decoded once), a `User-Agent` header, a cookie, or the raw path.
fn field(location: Location, payload: &str) -> Field<'_> {
    let name = match location {
        Location::Header => "User-Agent",
        Location::Path => "",
        Location::Query | Location::Body | Location::Cookie => "payload",
    };
    Field::new(location, name, payload.as_bytes())
}

fn parse_location(name: &str) -> anyhow::Result<Location> {
    Location::parse(name)
        .ok_or_else(|| anyhow!("location {name:?} is not one of query, body, header, path, cookie"))
}

/// Explains the verdict on one payload; exits 1 when it is an attack.
pub(crate) fn check(payload: &str, location: &str, paranoia: Paranoia) -> anyhow::Result<ExitCode> {
    let location = parse_location(location)?;
    let engine = paranoia.engine();
    let field = field(location, payload);
    let (decoded, verdict) = engine.explain(&field);
    let mut out = std::io::stdout().lock();
    writeln!(out, "location   {location}")?;
    writeln!(
        out,
        "decoded    {}",
        String::from_utf8_lossy(&decoded.text).escape_debug()
    )?;
    if let Some(markup) = &decoded.markup {
        writeln!(
            out,
            "markup     {}",
            String::from_utf8_lossy(markup).escape_debug()
        )?;
    }
    if decoded.percent_rounds > 0 {
        writeln!(out, "percent    decoded {} time(s)", decoded.percent_rounds)?;
    }
    if !decoded.evasions.is_empty() {
        writeln!(out, "evasions   {}", decoded.evasions.names().join(", "))?;
    }
    for finding in &verdict.findings {
        writeln!(
            out,
            "rule       {} {} ({:?}, paranoia {}, +{}{}) in the {} form, bytes {}..{}: fingerprint {:?}, matched {:?}\n           {}",
            finding.rule_id,
            finding.detector.as_str(),
            finding.severity,
            finding.paranoia,
            finding.score,
            if finding.counted { "" } else { ", not counted" },
            finding.form,
            finding.span.start,
            finding.span.end,
            finding.fingerprint,
            finding.matched,
            finding.description,
        )?;
    }
    let attack = verdict.is_attack();
    writeln!(
        out,
        "score      {} of {} at paranoia {}: {}",
        verdict.score,
        verdict.threshold,
        engine.config().paranoia,
        if attack { "ATTACK" } else { "pass" }
    )?;
    Ok(if attack {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(serde::Deserialize)]
struct Labelled {
    payload: String,
    #[serde(default = "default_location")]
    location: String,
    attack: bool,
    #[serde(default)]
    family: Option<String>,
}

fn default_location() -> String {
    "query".to_owned()
}

#[derive(Default)]
struct Rates {
    attacks: usize,
    detected: usize,
    benign: usize,
    flagged: usize,
}

/// Detection and false-positive rates per family of a JSON-lines corpus.
pub(crate) fn eval(file: &Path, paranoia: Paranoia) -> anyhow::Result<ExitCode> {
    let engine = paranoia.engine();
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut families: BTreeMap<String, Rates> = BTreeMap::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let case: Labelled = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a labelled payload", file.display(), index + 1))?;
        let location = parse_location(&case.location)?;
        let mut parts = RequestParts::new();
        parts.add_body_leaves(vec![field(location, &case.payload)]);
        let attack = engine.inspect(&parts).is_attack();
        let rates = families
            .entry(case.family.unwrap_or_else(|| "-".to_owned()))
            .or_default();
        if case.attack {
            rates.attacks += 1;
            rates.detected += usize::from(attack);
        } else {
            rates.benign += 1;
            rates.flagged += usize::from(attack);
        }
    }
    let percent = |part: usize, whole: usize| {
        if whole == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}%", 100.0 * part as f64 / whole as f64)
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12}",
        "family", "attacks", "detected", "rate", "benign", "flagged", "fp rate"
    )?;
    let row = |out: &mut dyn Write, name: &str, rates: &Rates| {
        writeln!(
            out,
            "{name:<24} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12}",
            rates.attacks,
            rates.detected,
            percent(rates.detected, rates.attacks),
            rates.benign,
            rates.flagged,
            percent(rates.flagged, rates.benign)
        )
    };
    let mut total = Rates::default();
    for (family, rates) in &families {
        row(&mut out, family, rates)?;
        total.attacks += rates.attacks;
        total.detected += rates.detected;
        total.benign += rates.benign;
        total.flagged += rates.flagged;
    }
    row(&mut out, "total", &total)?;
    Ok(ExitCode::SUCCESS)
}

/// Every rule: id, detector, severity, paranoia level, description.
pub(crate) fn rules() -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for rule in portcullis_waf::detect::all_rules() {
        writeln!(
            out,
            "{}  {:<18} {:<9} PL{}  {}",
            rule.id,
            rule.detector.as_str(),
            format!("{:?}", rule.severity).to_lowercase(),
            rule.paranoia,
            rule.description
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
