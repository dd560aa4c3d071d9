//! A host set up with packaging/ (install.sh into a fixture root, the sysctl file applied
//! to its /proc/sys) and the example production config passes `rampart doctor`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rampart_doctor::{Host, Mode, Role, Status};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn install(root: &Path, uid: u32, gid: u32) {
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .args(["--root", &root.display().to_string(), "--no-bin"])
        .env("RAMPART_UID", uid.to_string())
        .env("RAMPART_GID", gid.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path under `dir` with its mode and size, for comparing two runs.
fn tree(dir: &Path) -> Vec<(String, u32, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            out.push((
                e.path().display().to_string(),
                m.permissions().mode(),
                if m.is_dir() { 0 } else { m.len() },
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// What `sysctl --system` would do to the fixture's /proc/sys.
fn apply_sysctl(root: &Path) {
    let text = std::fs::read_to_string(root.join("etc/sysctl.d/99-rampart.conf")).unwrap();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once('=').unwrap();
        let p = root.join("proc/sys").join(k.trim().replace('.', "/"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{}\n", v.trim())).unwrap();
    }
}

#[test]
fn install_is_idempotent_and_doctor_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // The fixture's `rampart` user is whoever runs the test, so that files can be ours.
    let me = std::fs::metadata(tmp.path()).unwrap();
    install(&root, me.uid(), me.gid());
    let first = tree(&root);
    install(&root, me.uid(), me.gid());
    assert_eq!(first, tree(&root), "a second run changed the tree");

    for (p, mode) in [
        ("etc/rampart", 0o700),
        ("etc/rampart/tls", 0o700),
        ("var/lib/rampart", 0o700),
        ("etc/rampart/rampart.toml", 0o600),
    ] {
        assert_eq!(
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            mode,
            "{p}"
        );
    }
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/rampart.service")).unwrap();
    for line in [
        "User=rampart",
        "LimitNOFILE=1048576",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "ReadWritePaths=/var/lib/rampart",
    ] {
        assert!(unit.contains(line), "unit lacks {line:?}");
    }

    // The kernel as it is after `sysctl --system`, and a host that has SYN cookies on.
    apply_sysctl(&root);

    // Certificates where the example config expects them, then the example config with
    // its paths moved into the fixture root.
    let tls = root.join("etc/rampart/tls");
    let pki = Pki::new((2030, 1, 1));
    pki.write(&tls, (2025, 12, 1), (2026, 2, 1));
    let cfg_path = root.join("etc/rampart/rampart.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let r = root.display().to_string();
    std::fs::write(
        &cfg_path,
        text.replace("\"/etc/rampart", &format!("\"{r}/etc/rampart"))
            .replace("\"/var/lib/rampart", &format!("\"{r}/var/lib/rampart")),
    )
    .unwrap();
    let cfg = rampart_config::Config::load(&cfg_path, &[]).unwrap();

    let mut o = opts("host-good", Role::Audit);
    o.host = Host::at(&root);
    let report = rampart_doctor::run(&cfg, &o);
    let text = rampart_doctor::render::text(&report);
    assert_eq!(report.mode, Mode::Production);
    assert!(!report.has_failures(), "{text}");
    for check in [
        "H1.file_max",
        "H1.nr_open",
        "H1.unit_limitnofile",
        "H2.conntrack_max",
        "C2.not_root",
        "C2.config_file",
        "C2.data_dir",
        "T3.certificate",
        "T5.crl",
    ] {
        for f in report.findings.iter().filter(|f| f.check == check) {
            assert!(
                matches!(f.status, Status::Pass | Status::NotApplicable),
                "{check}: {}\n{text}",
                f.evidence
            );
        }
    }
    // Not even a warning: what is not applicable is what the broker does not do yet.
    let warns: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Warn)
        .map(|f| f.check.as_str())
        .collect();
    assert!(warns.is_empty(), "{warns:?}\n{text}");
}
