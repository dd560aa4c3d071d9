//! `rampart doctor` argument parsing and exit statuses (the binary only forwards to
//! `rampart_doctor::cli::run`).

mod common;

use clap::Parser;
use rampart_doctor::cli::{self, DoctorArgs, FormatArg};
use std::process::ExitCode;

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    args: DoctorArgs,
}

fn parse(argv: &[&str]) -> Result<DoctorArgs, clap::Error> {
    Wrapper::try_parse_from(std::iter::once("doctor").chain(argv.iter().copied())).map(|w| w.args)
}

#[test]
fn arguments() {
    let a = parse(&[
        "--config",
        "/etc/rampart/rampart.toml",
        "--format",
        "sarif",
        "--no-probe",
    ])
    .unwrap();
    assert_eq!(
        a.config.as_deref(),
        Some(std::path::Path::new("/etc/rampart/rampart.toml"))
    );
    assert_eq!(a.format, FormatArg::Sarif);
    assert!(a.no_probe);
    assert_eq!(a.probe_timeout, 3);
    let a = parse(&[]).unwrap();
    assert_eq!((a.format, a.config), (FormatArg::Text, None));
    assert!(parse(&["--format", "xml"]).is_err());
    assert!(parse(&["--probe-timeout", "0"]).is_err());
}

#[test]
fn exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    // An invalid config: 2, as check-config.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[mqtt]\nmax_packet_size = \"big\"\n").unwrap();
    let mut a = parse(&["--no-probe", "--format", "json"]).unwrap();
    a.config = Some(bad);
    assert_eq!(cli::run(a), ExitCode::from(cli::EXIT_CONFIG));

    // A failing host: 1.
    let mut a = parse(&["--no-probe", "--format", "json"]).unwrap();
    a.host_root = Some(common::fixture("host-bad"));
    assert_eq!(cli::run(a), ExitCode::from(cli::EXIT_FAIL));
}
