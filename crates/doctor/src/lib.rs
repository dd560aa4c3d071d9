//! rampart-doctor: the hardening checklist (HARDENING.md, ids H1..A7) as an executable audit.
//!
//! Each check is data: a stable rule name, the checklist id, a status (pass, warn, fail, not
//! applicable), the evidence read (value, file and line) and the exact remediation. The same
//! checks serve `rampart doctor` (text, JSON or SARIF 2.1.0, see docs/doctor.md) and the
//! start-up gate of `rampart serve` ([`startup_check`]).
//!
//! It reads the host through an injectable root (so good and bad hosts are test fixtures),
//! the files the config names (modes, owners, certificates, CRLs), and, for `rampart doctor`
//! only, makes real TLS handshakes to the configured listeners. It never changes anything:
//! every fix is printed for the operator to apply. It never reads a private key's contents.
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rampart_config::Config;

mod checks;
pub mod cli;
pub mod der;
pub mod host;
pub mod model;
pub mod probe;
pub mod render;

pub use checks::mode_of;
pub use host::Host;
pub use model::{Counts, Finding, Location, Mode, Phase, Report, Status};

/// Who is asking: the operator's audit, or the broker itself before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `rampart doctor`: the broker's limits and user come from the installed unit; the
    /// live probe may run.
    Audit,
    /// `rampart serve`: this process is the broker; listeners are not bound yet, so no probe.
    Startup,
}

/// How to run the checks.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: Host,
    pub role: Role,
    /// Handshake with every TLS listener (Audit only).
    pub probe: bool,
    /// Bound on each connect, read and write of the probe. Worst case for one listener:
    /// about 16 handshakes, each at most this long.
    pub probe_timeout: Duration,
    /// Unix seconds used for certificate and CRL dates (injectable for golden tests).
    pub now: i64,
}

impl Options {
    pub fn audit() -> Options {
        Options {
            host: Host::system(),
            role: Role::Audit,
            probe: true,
            probe_timeout: Duration::from_secs(3),
            now: unix_now(),
        }
    }

    pub fn startup() -> Options {
        Options {
            role: Role::Startup,
            probe: false,
            ..Options::audit()
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Runs every check against `cfg`.
pub fn run(cfg: &Config, opts: &Options) -> Report {
    let cx = checks::Cx::new(cfg, opts);
    let mut findings = checks::all(&cx);
    let live = if opts.probe && opts.role == Role::Audit {
        probe::probe_config(cfg, opts)
    } else {
        probe::not_probed(cfg, opts.role)
    };
    // Keep the report grouped by checklist phase: live TLS findings join the transport ones.
    let at = findings
        .iter()
        .rposition(|f| f.phase <= Phase::Transport)
        .map_or(findings.len(), |i| i + 1);
    findings.splice(at..at, live);
    Report {
        config: cfg.source.as_ref().map(|p| p.display().to_string()),
        mode: mode_of(cfg),
        findings,
    }
}

/// `rampart serve` refused to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The failing findings (also logged).
    pub failures: Vec<Finding>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing to start: {} hardening check(s) failed ({}); fix them (run `rampart doctor --config FILE` for the remediation), or start with --danger-ignore-doctor",
            self.failures.len(),
            self.failures
                .iter()
                .map(|f| match &f.subject {
                    Some(s) => format!("{}[{s}]", f.check),
                    None => f.check.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl std::error::Error for Refused {}

/// The start-up gate: runs the checks (no live probe), logs each finding, and refuses on a
/// fail in production mode unless `ignore` (`--danger-ignore-doctor`) is set.
pub fn startup_check(cfg: &Config, ignore: bool) -> Result<Report, Refused> {
    startup_check_with(cfg, &Options::startup(), ignore)
}

/// [`startup_check`] with explicit options (an injected host root in tests).
pub fn startup_check_with(cfg: &Config, opts: &Options, ignore: bool) -> Result<Report, Refused> {
    let report = run(cfg, opts);
    for f in &report.findings {
        let subject = f.subject.as_deref().unwrap_or("");
        let fix = f.remediation.as_deref().unwrap_or("");
        match f.status {
            // A development broker starts anyway: its failures are warnings in its log.
            Status::Fail if report.mode == Mode::Development => {
                tracing::warn!(check = %f.check, id = f.id, subject, evidence = %f.evidence, fix, "doctor: FAIL {}", f.title)
            }
            Status::Fail => {
                tracing::error!(check = %f.check, id = f.id, subject, evidence = %f.evidence, fix, "doctor: FAIL {}", f.title)
            }
            Status::Warn => {
                tracing::warn!(check = %f.check, id = f.id, subject, evidence = %f.evidence, fix, "doctor: WARN {}", f.title)
            }
            Status::Pass | Status::NotApplicable => {
                tracing::debug!(check = %f.check, id = f.id, subject, status = %f.status, evidence = %f.evidence, "doctor: {}", f.title)
            }
        }
    }
    let failures: Vec<Finding> = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .cloned()
        .collect();
    let c = report.counts();
    tracing::info!(
        pass = c.pass,
        warn = c.warn,
        fail = c.fail,
        not_applicable = c.not_applicable,
        mode = ?report.mode,
        "doctor: start-up checks done"
    );
    if failures.is_empty() {
        return Ok(report);
    }
    match report.mode {
        Mode::Development => {
            tracing::warn!(
                failures = failures.len(),
                "doctor: development mode (loopback only): starting despite failed checks"
            );
            Ok(report)
        }
        Mode::Production if ignore => {
            tracing::error!(
                failures = failures.len(),
                "doctor: --danger-ignore-doctor: STARTING AN EXPOSED BROKER THAT FAILS THE HARDENING CHECKS"
            );
            Ok(report)
        }
        Mode::Production => Err(Refused { failures }),
    }
}
