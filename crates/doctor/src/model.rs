//! Findings as data: what was checked, what was seen, where, and how to fix it.

use serde::Serialize;
use std::fmt;

/// The outcome of one check. Ordered from best to worst so that `max` gives the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The check does not apply to this configuration or host (the note says why).
    NotApplicable,
    Pass,
    /// Weaker than the checklist, or could not be confirmed; the broker still starts.
    Warn,
    /// Violates the checklist; `rampart serve` refuses to start outside local-only mode.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotApplicable => "not_applicable",
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// Fixed-width label for the text report.
    pub fn label(self) -> &'static str {
        match self {
            Status::NotApplicable => "N/A ",
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sections of HARDENING.md, in its order; the text report scores each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Development mode and other facts about how the broker is run.
    Mode,
    Host,
    Cluster,
    Transport,
    Mqtt,
    Admin,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Mode,
        Phase::Host,
        Phase::Cluster,
        Phase::Transport,
        Phase::Mqtt,
        Phase::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Mode => "mode",
            Phase::Host => "host",
            Phase::Cluster => "cluster",
            Phase::Transport => "transport",
            Phase::Mqtt => "mqtt",
            Phase::Admin => "admin",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Phase::Mode => "Mode",
            Phase::Host => "Host and network",
            Phase::Cluster => "Cluster and secret files",
            Phase::Transport => "Transport (TLS)",
            Phase::Mqtt => "MQTT",
            Phase::Admin => "Administration and operations",
        }
    }

    /// The phase of a HARDENING.md id (`H1` -> host); `DEV` and unknown ids are `Mode`.
    pub fn of_id(id: &str) -> Phase {
        match id.as_bytes().first() {
            Some(b'H') => Phase::Host,
            Some(b'C') => Phase::Cluster,
            Some(b'T') => Phase::Transport,
            Some(b'M') => Phase::Mqtt,
            Some(b'A') => Phase::Admin,
            _ => Phase::Mode,
        }
    }
}

/// Where the evidence was read: a file (and line), or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// A path as the operator would type it (`/proc/sys/fs/nr_open`, the config file), or
    /// `env RAMPART_...` for an environment override.
    pub file: String,
    /// 1-based line, when the evidence comes from one line of a text file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// One finding. `check` is the stable rule name (JSON, SARIF `ruleId`); `id` is the
/// HARDENING.md item it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name such as `H1.nr_open` or `T3.live_chain[mqtts]`; see docs/doctor.md.
    pub check: String,
    /// HARDENING.md id (`H1`..`A7`), or `DEV` for the development-mode notice.
    pub id: &'static str,
    /// What the check was applied to when it runs once per thing: a listener name or a
    /// path. `check` plus `subject` is unique within a report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub phase: Phase,
    /// What was checked, in a few words.
    pub title: String,
    pub status: Status,
    /// What was read (the value and its source), never a secret.
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The exact command or config line that fixes it; `None` when nothing needs fixing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

impl Finding {
    pub fn new(
        check: impl Into<String>,
        id: &'static str,
        title: impl Into<String>,
        status: Status,
        evidence: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            id,
            subject: None,
            phase: Phase::of_id(id),
            title: title.into(),
            status,
            evidence: evidence.into(),
            location: None,
            remediation: None,
        }
    }

    pub fn on(mut self, subject: impl Into<String>) -> Finding {
        self.subject = Some(subject.into());
        self
    }

    pub fn at(mut self, file: impl Into<String>, line: Option<usize>) -> Finding {
        self.location = Some(Location {
            file: file.into(),
            line,
        });
        self
    }

    pub fn at_loc(mut self, loc: Option<Location>) -> Finding {
        if loc.is_some() {
            self.location = loc;
        }
        self
    }

    /// Sets the remediation; it is kept only for warn and fail (a pass needs no fix).
    pub fn fix(mut self, remediation: impl Into<String>) -> Finding {
        if matches!(self.status, Status::Warn | Status::Fail) {
            self.remediation = Some(remediation.into());
        }
        self
    }
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub not_applicable: usize,
}

impl Counts {
    pub fn add(&mut self, s: Status) {
        match s {
            Status::Pass => self.pass += 1,
            Status::Warn => self.warn += 1,
            Status::Fail => self.fail += 1,
            Status::NotApplicable => self.not_applicable += 1,
        }
    }

    /// Percentage of applicable checks that pass (100 when none applies).
    pub fn score(&self) -> u32 {
        let applicable = self.pass + self.warn + self.fail;
        if applicable == 0 {
            return 100;
        }
        // Integer arithmetic so that the score is identical on every platform.
        u32::try_from(self.pass * 100 / applicable).unwrap_or(100)
    }
}

/// Whether the broker runs exposed or for development only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Zero-config, or every listener on a loopback address: failures are reported but do not
    /// stop `rampart serve`.
    Development,
    Production,
}

/// The result of a doctor run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The config file, or `None` in zero-config mode.
    pub config: Option<String>,
    pub mode: Mode,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for f in &self.findings {
            c.add(f.status);
        }
        c
    }

    pub fn phase_counts(&self, phase: Phase) -> Counts {
        let mut c = Counts::default();
        for f in self.findings.iter().filter(|f| f.phase == phase) {
            c.add(f.status);
        }
        c
    }

    pub fn has_failures(&self) -> bool {
        self.findings.iter().any(|f| f.status == Status::Fail)
    }
}
