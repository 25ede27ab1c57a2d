//! `findings DIR_OR_FILE...`: every distinct line of the given files (directories are walked)
//! inspected as one field at four locations (query, body, header, path) by the default engine
//! and by one at paranoia 4; prints one line per input with each verdict's score and findings
//! (rule, form, span, fingerprint, excerpt). Diffing its output between two builds shows
//! whether a change to the engine changed any finding:
//! `cargo run --release -p portcullis-waf --example findings -- crates/waf/tests/data /usr/share/common-licenses > before.txt`.

use std::io::Write;
use std::path::PathBuf;

use portcullis_waf::{Engine, EngineConfig, Field, Location, RequestParts};

fn main() -> std::io::Result<()> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)?
                    .flatten()
                    .map(|entry| entry.path()),
            );
        } else if let Ok(bytes) = std::fs::read(&path) {
            lines.extend(bytes.split(|&byte| byte == b'\n').map(<[u8]>::to_vec));
        }
    }
    lines.sort();
    lines.dedup();
    let engines = [
        Engine::default(),
        Engine::new(EngineConfig {
            paranoia: 4,
            detection_paranoia: 4,
            ..EngineConfig::default()
        }),
    ];
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in &lines {
        for engine in &engines {
            for location in [
                Location::Query,
                Location::Body,
                Location::Header,
                Location::Path,
            ] {
                let mut parts = RequestParts::new();
                parts.add_body_leaves(vec![Field::new(location, "f", line.clone())]);
                let verdict = engine.inspect(&parts);
                write!(out, "{}|", verdict.score)?;
                for finding in &verdict.findings {
                    write!(
                        out,
                        "{} {} {:?} {} {:?};",
                        finding.rule_id,
                        finding.form,
                        finding.span,
                        finding.fingerprint,
                        finding.matched
                    )?;
                }
            }
        }
        writeln!(out)?;
    }
    Ok(())
}
