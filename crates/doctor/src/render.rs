//! The three output formats. JSON and SARIF are stable and documented in docs/doctor.md:
//! fields are only ever added, never renamed or removed, without bumping `format_version`.

use serde::Serialize;
use std::fmt::Write as _;

use crate::model::{Counts, Finding, Mode, Phase, Report, Status};

/// Version of the JSON document's shape.
pub const JSON_FORMAT_VERSION: u32 = 1;
pub const TOOL_NAME: &str = "rampart-doctor";
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => text(report),
        Format::Json => json(report),
        Format::Sarif => sarif(report),
    }
}

pub fn text(report: &Report) -> String {
    let mut s = String::new();
    let mode = match report.mode {
        Mode::Development => "development mode",
        Mode::Production => "production mode",
    };
    let _ = writeln!(
        s,
        "rampart doctor: {} ({mode})",
        report.config.as_deref().unwrap_or("no config file")
    );
    for phase in Phase::ALL {
        let items: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.phase == phase)
            .collect();
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{}", phase.title());
        for f in items {
            let subject = f
                .subject
                .as_deref()
                .map(|x| format!(" [{x}]"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {} {:<4} {}{subject}: {}",
                f.status.label(),
                f.id,
                f.title,
                f.evidence
            );
            if let Some(loc) = &f.location {
                match loc.line {
                    Some(l) => {
                        let _ = writeln!(s, "            at {}:{l}", loc.file);
                    }
                    None => {
                        let _ = writeln!(s, "            at {}", loc.file);
                    }
                }
            }
            if let Some(fix) = &f.remediation {
                let _ = writeln!(s, "            fix: {fix}");
            }
        }
    }
    let _ = writeln!(s, "\nScore per phase (pass / applicable)");
    for phase in Phase::ALL {
        let c = report.phase_counts(phase);
        if c == Counts::default() {
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<31} {:>3}%  {} pass, {} warn, {} fail, {} n/a",
            phase.title(),
            c.score(),
            c.pass,
            c.warn,
            c.fail,
            c.not_applicable
        );
    }
    let c = report.counts();
    let verdict = if c.fail > 0 {
        "FAIL"
    } else if c.warn > 0 {
        "PASS with warnings"
    } else {
        "PASS"
    };
    let _ = writeln!(
        s,
        "\nResult: {verdict} ({} pass, {} warn, {} fail, {} n/a)",
        c.pass, c.warn, c.fail, c.not_applicable
    );
    s
}

#[derive(Serialize)]
struct JsonPhase {
    phase: Phase,
    title: &'static str,
    score: u32,
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Serialize)]
struct JsonSummary {
    result: Status,
    #[serde(flatten)]
    counts: Counts,
    phases: Vec<JsonPhase>,
}

#[derive(Serialize)]
struct JsonTool {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    format: &'static str,
    format_version: u32,
    tool: JsonTool,
    config: Option<&'a str>,
    mode: Mode,
    summary: JsonSummary,
    findings: &'a [Finding],
}

fn worst(c: &Counts) -> Status {
    if c.fail > 0 {
        Status::Fail
    } else if c.warn > 0 {
        Status::Warn
    } else {
        Status::Pass
    }
}

pub fn json(report: &Report) -> String {
    let counts = report.counts();
    let doc = JsonReport {
        format: "rampart-doctor",
        format_version: JSON_FORMAT_VERSION,
        tool: JsonTool {
            name: TOOL_NAME,
            version: TOOL_VERSION,
        },
        config: report.config.as_deref(),
        mode: report.mode,
        summary: JsonSummary {
            result: worst(&counts),
            counts,
            phases: Phase::ALL
                .iter()
                .map(|&p| (p, report.phase_counts(p)))
                .filter(|(_, c)| *c != Counts::default())
                .map(|(phase, counts)| JsonPhase {
                    phase,
                    title: phase.title(),
                    score: counts.score(),
                    counts,
                })
                .collect(),
        },
        findings: &report.findings,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

// SARIF 2.1.0 (OASIS), the subset that code-scanning tools read.

#[derive(Serialize)]
struct SarifLog {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<SarifRun>,
}

#[derive(Serialize)]
struct SarifRun {
    tool: SarifTool,
    results: Vec<SarifResult>,
    properties: SarifRunProps,
}

#[derive(Serialize)]
struct SarifRunProps {
    mode: Mode,
    config: Option<String>,
}

#[derive(Serialize)]
struct SarifTool {
    driver: SarifDriver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifDriver {
    name: &'static str,
    version: &'static str,
    rules: Vec<SarifRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifRule {
    id: String,
    name: String,
    short_description: SarifText,
    properties: SarifRuleProps,
}

#[derive(Serialize)]
struct SarifRuleProps {
    hardening_id: &'static str,
    phase: Phase,
}

#[derive(Serialize)]
struct SarifText {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: String,
    rule_index: usize,
    kind: &'static str,
    level: &'static str,
    message: SarifText,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locations: Vec<SarifLocation>,
    properties: SarifResultProps,
}

#[derive(Serialize)]
struct SarifResultProps {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifLocation {
    physical_location: SarifPhysical,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifPhysical {
    artifact_location: SarifArtifact,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<SarifRegion>,
}

#[derive(Serialize)]
struct SarifArtifact {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifRegion {
    start_line: usize,
}

/// A file path as a SARIF artifact URI: absolute paths become `file://` URIs, relative
/// ones stay relative (SARIF resolves them against the run's base), both percent-encoded.
fn file_uri(path: &str) -> String {
    let mut out = String::new();
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn sarif(report: &Report) -> String {
    let mut rules: Vec<SarifRule> = Vec::new();
    let mut results = Vec::new();
    for f in &report.findings {
        let rule_index = match rules.iter().position(|r| r.id == f.check) {
            Some(i) => i,
            None => {
                rules.push(SarifRule {
                    id: f.check.clone(),
                    name: f.check.replace(['.', '_'], " "),
                    short_description: SarifText {
                        text: f.title.clone(),
                    },
                    properties: SarifRuleProps {
                        hardening_id: f.id,
                        phase: f.phase,
                    },
                });
                rules.len() - 1
            }
        };
        // SARIF 3.27.9: only kind "fail" carries a level other than "none".
        let (kind, level) = match f.status {
            Status::Fail => ("fail", "error"),
            Status::Warn => ("fail", "warning"),
            Status::Pass => ("pass", "none"),
            Status::NotApplicable => ("notApplicable", "none"),
        };
        let mut text = format!("{}: {}", f.title, f.evidence);
        if let Some(fix) = &f.remediation {
            let _ = write!(text, ". Fix: {fix}");
        }
        // Environment variables are not artifacts; only files become locations.
        let locations = f
            .location
            .iter()
            .filter(|l| !l.file.starts_with("env ") && !l.file.starts_with('<'))
            .map(|l| SarifLocation {
                physical_location: SarifPhysical {
                    artifact_location: SarifArtifact {
                        uri: file_uri(&l.file),
                    },
                    region: l.line.map(|start_line| SarifRegion { start_line }),
                },
            })
            .collect();
        results.push(SarifResult {
            rule_id: f.check.clone(),
            rule_index,
            kind,
            level,
            message: SarifText { text },
            locations,
            properties: SarifResultProps {
                status: f.status,
                subject: f.subject.clone(),
                evidence: f.evidence.clone(),
                remediation: f.remediation.clone(),
            },
        });
    }
    let log = SarifLog {
        schema: "https://json.schemastore.org/sarif-2.1.0.json",
        version: "2.1.0",
        runs: vec![SarifRun {
            tool: SarifTool {
                driver: SarifDriver {
                    name: TOOL_NAME,
                    version: TOOL_VERSION,
                    rules,
                },
            },
            results,
            properties: SarifRunProps {
                mode: report.mode,
                config: report.config.clone(),
            },
        }],
    };
    let mut s = serde_json::to_string_pretty(&log).unwrap_or_default();
    s.push('\n');
    s
}
