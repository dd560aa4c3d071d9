//! `rampart doctor`: the command-line front end (the binary only forwards its arguments).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rampart_config::Config;

use crate::render::{self, Format};
use crate::{Host, Options};

/// Exit status when a check fails.
pub const EXIT_FAIL: u8 = 1;
/// Exit status when the configuration itself is invalid (as `rampart check-config`).
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Sarif,
}

/// Audit this host and configuration against the hardening checklist (HARDENING.md).
///
/// Every finding has the checklist id, a status (pass, warn, fail, n/a), the evidence and
/// the fix. Exits 1 when any check fails, 2 when the configuration is invalid.
/// JSON and SARIF 2.1.0 are stable formats, documented in docs/doctor.md.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// TOML configuration file (without it: the zero-config development mode).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Skip the live TLS handshakes with the configured listeners.
    #[arg(long)]
    pub no_probe: bool,
    /// Seconds allowed for each connect, read and write of the live probe.
    #[arg(long, value_name = "SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub probe_timeout: u64,
    /// Read /proc, /sys and /etc under this directory instead of / (to audit an image or
    /// a fixture).
    #[arg(long, value_name = "DIR", hide = true)]
    pub host_root: Option<PathBuf>,
}

pub fn run(args: DoctorArgs) -> ExitCode {
    let env = rampart_config::process_env();
    let loaded = match &args.config {
        Some(p) => Config::load(p, &env),
        None => Config::local_only_with_env(&env),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{} error(s); fix the configuration first (rampart check-config)",
                errors.0.len()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut opts = Options::audit();
    opts.probe = !args.no_probe;
    opts.probe_timeout = Duration::from_secs(args.probe_timeout);
    if let Some(root) = args.host_root {
        opts.host = Host::at(root);
    }
    let report = crate::run(&cfg, &opts);
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Sarif => Format::Sarif,
    };
    print!("{}", render::render(&report, format));
    if report.has_failures() {
        ExitCode::from(EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    }
}
