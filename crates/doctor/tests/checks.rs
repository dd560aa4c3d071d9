//! Host fixtures, config fixtures and file-mode fixtures produce the expected findings.

mod common;

use common::*;
use rampart_doctor::{Mode, Role, Status};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const PROD: &str = r#"
[node]
data_dir = "/nonexistent/rampart-data"

[[listeners]]
name = "mqtts"
kind = "tls"
bind = "0.0.0.0:8883"

[listeners.tls]
cert_file = "/nonexistent/server.pem"
key_file = "/nonexistent/server.key"
"#;

#[test]
fn good_host_passes_host_checks() {
    let r = rampart_doctor::run(&config(PROD), &opts("host-good", Role::Audit));
    assert_eq!(r.mode, Mode::Production);
    for check in [
        "H1.file_max",
        "H1.nr_open",
        "H1.unit_limitnofile",
        "H2.syncookies",
        "H2.conntrack_max",
        "C2.not_root",
    ] {
        assert_eq!(status(&r, check, None), Status::Pass, "{check}");
    }
    // The drop-in overrides the unit's own LimitNOFILE, and the finding points at it.
    let f = find(&r, "H1.unit_limitnofile", None);
    let loc = f.location.as_ref().unwrap();
    assert_eq!(
        loc.file,
        "/etc/systemd/system/rampart.service.d/limits.conf"
    );
    assert_eq!(loc.line, Some(2));
    // An audit reads the unit's limit, not the operator shell's.
    assert_eq!(status(&r, "H1.process_nofile", None), Status::NotApplicable);
    assert!(find(&r, "C2.not_root", None)
        .evidence
        .contains("User=rampart"));
}

#[test]
fn bad_host_fails_with_remediation() {
    let cfg = config(&format!("{PROD}\n[mqtt]\nmax_connections = 100000\n"));
    let r = rampart_doctor::run(&cfg, &opts("host-bad", Role::Audit));
    assert_eq!(status(&r, "H1.file_max", None), Status::Fail);
    assert_eq!(status(&r, "H1.nr_open", None), Status::Warn);
    assert_eq!(status(&r, "H2.syncookies", None), Status::Fail);
    assert_eq!(status(&r, "H2.conntrack_max", None), Status::Fail);
    assert_eq!(status(&r, "C2.not_root", None), Status::Fail);
    // 100000 connections cannot fit in the unit's 4096 descriptors.
    assert_eq!(status(&r, "M3.max_connections", None), Status::Fail);

    let f = find(&r, "H1.unit_limitnofile", None);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.evidence, "LimitNOFILE=4096 is below 1048576");
    let loc = f.location.as_ref().unwrap();
    assert_eq!(
        (loc.file.as_str(), loc.line),
        ("/lib/systemd/system/rampart.service", Some(6))
    );
    assert!(f
        .remediation
        .as_deref()
        .unwrap()
        .contains("LimitNOFILE=1048576"));

    let f = find(&r, "H1.file_max", None);
    assert_eq!(f.evidence, "fs.file-max = 100000");
    assert_eq!(f.location.as_ref().unwrap().file, "/proc/sys/fs/file-max");
    assert!(f
        .remediation
        .as_deref()
        .unwrap()
        .starts_with("sysctl -w fs.file-max="));
    assert!(find(&r, "H2.conntrack_max", None)
        .remediation
        .as_deref()
        .unwrap()
        .contains("nf_conntrack_max=262144"));
    assert!(r.has_failures());
}

#[test]
fn startup_reads_this_process() {
    let cfg = config(&format!("{PROD}\n[mqtt]\nmax_connections = 100000\n"));
    let r = rampart_doctor::run(&cfg, &opts("host-bad", Role::Startup));
    assert_eq!(status(&r, "H1.process_nofile", None), Status::Fail);
    assert_eq!(
        find(&r, "C2.not_root", None).evidence,
        "effective uid 0 (root)"
    );
    assert_eq!(status(&r, "C2.not_root", None), Status::Fail);

    let r = rampart_doctor::run(&config(PROD), &opts("host-good", Role::Startup));
    assert_eq!(status(&r, "H1.process_nofile", None), Status::Pass);
    assert_eq!(
        find(&r, "C2.not_root", None).evidence,
        "effective uid 990 (rampart)"
    );
    // The live probe never runs at start-up: the listeners are not bound yet.
    assert_eq!(
        status(&r, "T1.live_probe", Some("mqtts")),
        Status::NotApplicable
    );
}

#[test]
fn unreadable_host_warns_instead_of_guessing() {
    let empty = tempfile::tempdir().unwrap();
    let mut o = opts("host-good", Role::Audit);
    o.host = rampart_doctor::Host::at(empty.path());
    let r = rampart_doctor::run(&config(PROD), &o);
    assert_eq!(status(&r, "H1.file_max", None), Status::Warn);
    assert_eq!(status(&r, "H2.syncookies", None), Status::Warn);
    assert_eq!(status(&r, "H2.conntrack_max", None), Status::NotApplicable);
    assert_eq!(status(&r, "H1.unit_limitnofile", None), Status::Warn);
    assert_eq!(status(&r, "C2.not_root", None), Status::Warn);
}

#[test]
fn development_mode_is_a_warning() {
    let o = opts("host-good", Role::Audit);
    let r = rampart_doctor::run(&rampart_config::Config::local_only(), &o);
    assert_eq!(r.mode, Mode::Development);
    let f = find(&r, "DEV.mode", None);
    assert_eq!(f.status, Status::Warn);
    assert!(f.evidence.starts_with("development mode"));

    let loopback =
        config("[[listeners]]\nname = \"l\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\n");
    let r = rampart_doctor::run(&loopback, &o);
    assert_eq!(r.mode, Mode::Development);
    assert_eq!(status(&r, "DEV.mode", None), Status::Warn);
    assert_eq!(status(&r, "H3.listener", Some("l")), Status::Pass);

    let r = rampart_doctor::run(&config(PROD), &o);
    assert_eq!(status(&r, "DEV.mode", None), Status::Pass);
}

#[test]
fn danger_options_fail_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"[[listeners]]
name = "plain"
kind = "tcp"
bind = "0.0.0.0:1883"

[[listeners]]
name = "office"
kind = "tcp"
bind = "10.1.2.3:1884"

[danger]
allow_plaintext = true
allow_anonymous = true
"#;
    let cfg = config_file(dir.path(), toml, 0o600);
    let r = rampart_doctor::run(&cfg, &opts("host-good", Role::Audit));
    let f = find(&r, "H3.listener", Some("plain"));
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.location.as_ref().unwrap().line, Some(4));
    assert!(f.remediation.as_deref().unwrap().contains("kind = \"tls\""));
    assert_eq!(status(&r, "H3.listener", Some("office")), Status::Warn);
    let f = find(&r, "H3.danger_allow_plaintext", None);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.location.as_ref().unwrap().line, Some(12));
    assert_eq!(
        f.remediation.as_deref(),
        Some("danger.allow_plaintext = false, and use tls/wss listeners for remote clients")
    );
    let f = find(&r, "M1.danger_allow_anonymous", None);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.location.as_ref().unwrap().line, Some(13));
    // No TLS listener on a production broker.
    assert_eq!(status(&r, "H3.tls_listener", None), Status::Warn);
}

#[test]
fn quotas_are_judged_and_env_overrides_located() {
    let env = vec![(
        "RAMPART_MQTT__MAX_PACKET_SIZE".to_string(),
        "33554432".to_string(),
    )];
    let toml = format!("{PROD}\n[mqtt]\nmax_topic_levels = 64\nmax_queued_bytes = 67108864\n");
    let cfg = rampart_config::Config::from_str(&toml, "fixture.toml", &env).unwrap();
    let r = rampart_doctor::run(&cfg, &opts("host-good", Role::Audit));
    let f = find(&r, "M3.max_packet_size", None);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        f.location.as_ref().unwrap().file,
        "env RAMPART_MQTT__MAX_PACKET_SIZE"
    );
    assert_eq!(status(&r, "M3.max_topic_levels", None), Status::Warn);
    assert_eq!(status(&r, "M3.max_client_id_length", None), Status::Pass);
    assert_eq!(status(&r, "M2.acl_final_deny", None), Status::Pass);
}

/// A host root whose service user is whoever runs the test (files we create are ours).
fn host_as_me(root: &Path) -> rampart_doctor::Host {
    std::fs::create_dir_all(root).unwrap();
    let probe = root.join("me");
    std::fs::write(&probe, "").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("proc/self/status"),
        format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        format!("svc:x:{uid}:{uid}::/:/bin/false\n"),
    )
    .unwrap();
    rampart_doctor::Host::at(root)
}

fn tls_config(dir: &Path, extra_tls: &str) -> String {
    format!(
        r#"[node]
data_dir = "{d}/data"

[[listeners]]
name = "mqtts"
kind = "tls"
bind = "0.0.0.0:8883"

[listeners.tls]
cert_file = "{d}/server.pem"
key_file = "{d}/server.key"
ca_file = "{d}/clients-ca.pem"
client_auth = "required"
{extra_tls}
"#,
        d = dir.display()
    )
}

#[test]
fn file_modes_and_owners() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Pki::new((2030, 1, 1)).write(d, (2025, 12, 1), (2026, 2, 1));
    std::fs::create_dir(d.join("data")).unwrap();
    chmod(&d.join("data"), 0o700);
    let mut o = opts("host-good", Role::Startup);
    o.host = host_as_me(&d.join("root"));

    let cfg = config_file(d, &tls_config(d, ""), 0o600);
    let r = rampart_doctor::run(&cfg, &o);
    for check in [
        "C2.config_file",
        "C2.key_file",
        "C2.cert_file",
        "C2.ca_file",
        "C2.data_dir",
    ] {
        assert_eq!(
            r.findings.iter().find(|f| f.check == check).unwrap().status,
            Status::Pass,
            "{check}"
        );
    }

    // Loosen everything.
    chmod(&d.join("rampart.toml"), 0o644);
    chmod(&d.join("server.key"), 0o640);
    chmod(&d.join("server.pem"), 0o666);
    chmod(&d.join("data"), 0o755);
    let r = rampart_doctor::run(&cfg, &o);
    let key = d.join("server.key").display().to_string();
    let f = find(&r, "C2.key_file", Some(&key));
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence
            .contains("mode 0640, readable or writable by group/other"),
        "{}",
        f.evidence
    );
    assert_eq!(
        f.remediation.as_deref(),
        Some(format!("chmod 0600 {key}").as_str())
    );
    let cfgp = d.join("rampart.toml").display().to_string();
    assert_eq!(status(&r, "C2.config_file", Some(&cfgp)), Status::Fail);
    let pem = d.join("server.pem").display().to_string();
    let f = find(&r, "C2.cert_file", Some(&pem));
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        f.remediation.as_deref(),
        Some(format!("chmod go-w {pem}").as_str())
    );
    let data = d.join("data").display().to_string();
    let f = find(&r, "C2.data_dir", Some(&data));
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        f.remediation.as_deref(),
        Some(format!("chmod 0700 {data}").as_str())
    );

    // Right modes, wrong owner: the service user is someone else.
    chmod(&d.join("rampart.toml"), 0o600);
    std::fs::write(
        d.join("root/proc/self/status"),
        "Uid:\t4242\t4242\t4242\t4242\n",
    )
    .unwrap();
    let r = rampart_doctor::run(&cfg, &o);
    let f = find(&r, "C2.config_file", Some(&cfgp));
    assert_eq!(f.status, Status::Warn);
    assert_eq!(
        f.remediation.as_deref(),
        Some(format!("chown 4242: {cfgp}").as_str())
    );

    // A missing data directory is a warning with the command that creates it.
    std::fs::remove_dir(d.join("data")).unwrap();
    let r = rampart_doctor::run(&cfg, &o);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "C2.data_dir")
        .unwrap();
    assert_eq!(f.status, Status::Warn);
    assert!(f
        .remediation
        .as_deref()
        .unwrap()
        .starts_with("install -d -m 0700"));
}

#[test]
fn certificates_and_crls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let crl = format!("crl_files = [\"{}/clients-ca.crl\"]", d.display());
    let o = opts("host-good", Role::Audit);
    let run = |pki_expiry, crl_this, crl_next, extra: &str| {
        Pki::new(pki_expiry).write(d, crl_this, crl_next);
        rampart_doctor::run(&config(&tls_config(d, extra)), &o)
    };

    let r = run((2030, 1, 1), (2025, 12, 1), (2026, 2, 1), &crl);
    let f = find(&r, "T3.certificate", Some("mqtts"));
    assert_eq!(f.status, Status::Pass, "{}", f.evidence);
    assert!(
        f.evidence
            .contains("2 certificate(s); leaf valid until 2030-01-01T00:00:00Z"),
        "{}",
        f.evidence
    );
    assert_eq!(status(&r, "T4.client_auth", Some("mqtts")), Status::Pass);
    let f = find(&r, "T5.crl", Some("mqtts"));
    assert_eq!(f.status, Status::Pass, "{}", f.evidence);
    assert!(
        f.evidence
            .contains("issued 31 days ago, nextUpdate 2026-02-01T00:00:00Z"),
        "{}",
        f.evidence
    );
    assert_eq!(status(&r, "T1.min_version", Some("mqtts")), Status::Pass);
    assert_eq!(status(&r, "T2.ciphers", Some("mqtts")), Status::Pass);
    // The leaf names its OCSP responder and cert_file holds its issuer.
    assert_eq!(status(&r, "T6.ocsp", Some("mqtts")), Status::Pass);
    let r = run(
        (2030, 1, 1),
        (2025, 12, 1),
        (2026, 2, 1),
        &format!("{crl}\nocsp_url = \"http://ocsp.fixture/\"\ncrl_expired = \"allow\""),
    );
    assert_eq!(status(&r, "T6.ocsp", Some("mqtts")), Status::Pass);
    // An https:// responder needs a root to verify it by.
    let r2 = run(
        (2030, 1, 1),
        (2025, 12, 1),
        (2026, 2, 1),
        &format!("{crl}\nocsp_url = \"https://ocsp.fixture/\"\nfetch_system_roots = false"),
    );
    let f = find(&r2, "T6.ocsp", Some("mqtts"));
    assert_eq!(f.status, Status::Warn, "{}", f.evidence);
    assert!(f.evidence.contains("no root is trusted"), "{}", f.evidence);
    let f = find(&r, "T5.crl", Some("mqtts"));
    assert_eq!(f.status, Status::Warn);
    assert_eq!(
        f.remediation.as_deref(),
        Some("crl_expired = \"deny\", and refresh the CRLs before their nextUpdate")
    );

    // Stale CRL, expired leaf.
    let r = run((2025, 6, 1), (2025, 11, 1), (2025, 12, 1), &crl);
    let f = find(&r, "T5.crl", Some("mqtts"));
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence
            .contains("stale: nextUpdate 2025-12-01T00:00:00Z has passed"),
        "{}",
        f.evidence
    );
    let f = find(&r, "T3.certificate", Some("mqtts"));
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence.contains("leaf expired 2025-06-01"),
        "{}",
        f.evidence
    );

    // Expiring soon; no CRL at all.
    let r = run((2026, 1, 20), (2025, 12, 1), (2026, 2, 1), "");
    assert_eq!(status(&r, "T3.certificate", Some("mqtts")), Status::Warn);
    assert_eq!(status(&r, "T5.crl", Some("mqtts")), Status::Warn);

    // No responder anywhere: stapling is on but has nothing to staple.
    Pki::build((2030, 1, 1), false).write(d, (2025, 12, 1), (2026, 2, 1));
    let r = rampart_doctor::run(&config(&tls_config(d, "")), &o);
    let f = find(&r, "T6.ocsp", Some("mqtts"));
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.evidence.contains("no responder is known"),
        "{}",
        f.evidence
    );
    let r = rampart_doctor::run(&config(&tls_config(d, "ocsp_stapling = false")), &o);
    assert_eq!(status(&r, "T6.ocsp", Some("mqtts")), Status::Warn);

    // Chain out of order: intermediate first.
    let pki = Pki::new((2030, 1, 1));
    pki.write(d, (2025, 12, 1), (2026, 2, 1));
    std::fs::write(
        d.join("server.pem"),
        format!("{}{}", pki.inter.pem(), pki.leaf.pem()),
    )
    .unwrap();
    let r = rampart_doctor::run(&config(&tls_config(d, "")), &o);
    let f = find(&r, "T3.certificate", Some("mqtts"));
    assert_eq!(f.status, Status::Fail);
    assert!(f.evidence.contains("chain out of order"), "{}", f.evidence);

    // Optional client certificates are a warning; a missing cert file a failure.
    std::fs::remove_file(d.join("server.pem")).unwrap();
    let toml =
        tls_config(d, "").replace("client_auth = \"required\"", "client_auth = \"optional\"");
    let r = rampart_doctor::run(&config(&toml), &o);
    assert_eq!(status(&r, "T4.client_auth", Some("mqtts")), Status::Warn);
    assert_eq!(status(&r, "T3.certificate", Some("mqtts")), Status::Fail);
}

#[test]
fn startup_gate_refuses_only_exposed_brokers() {
    let o = opts("host-bad", Role::Startup);
    let refused = rampart_doctor::startup_check_with(&config(PROD), &o, false).unwrap_err();
    assert!(refused.failures.iter().any(|f| f.check == "H1.file_max"));
    assert!(refused.to_string().contains("--danger-ignore-doctor"));
    // The explicit override starts anyway (and logs every failure).
    let r = rampart_doctor::startup_check_with(&config(PROD), &o, true).unwrap();
    assert!(r.has_failures());
    // Loopback only: development mode starts despite the same host failures.
    let dev = config("[[listeners]]\nname = \"l\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\n");
    assert!(rampart_doctor::startup_check_with(&dev, &o, false)
        .unwrap()
        .has_failures());
}

#[test]
fn authentication_and_acl() {
    let o = opts("host-good", Role::Audit);
    // Exposed, no backend at all.
    let r = rampart_doctor::run(&config(PROD), &o);
    assert_eq!(status(&r, "M1.backends", None), Status::Fail);
    assert_eq!(status(&r, "M1.authentication", Some("mqtts")), Status::Warn);
    assert_eq!(status(&r, "M2.acl_final_deny", None), Status::Pass);

    // A certificate backend on a listener that asks for no certificate does not count.
    let toml = format!("{PROD}\n[[auth.backends]]\nname = \"certs\"\nkind = \"certificate\"\n\n[acl]\nno_match = \"allow\"\n");
    let r = rampart_doctor::run(&config(&toml), &o);
    assert_eq!(status(&r, "M1.backends", None), Status::Pass);
    let f = find(&r, "M1.authentication", Some("mqtts"));
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.evidence.contains("only a certificate backend"),
        "{}",
        f.evidence
    );
    let f = find(&r, "M2.acl_final_deny", None);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        f.remediation.as_deref(),
        Some("no_match = \"deny\" in [acl]")
    );

    // A password backend serves it.
    let toml = format!("{PROD}\n[[auth.backends]]\nname = \"users\"\nkind = \"builtin\"\n\n[auth.brute_force]\nenabled = false\n");
    let r = rampart_doctor::run(&config(&toml), &o);
    assert_eq!(status(&r, "M1.authentication", Some("mqtts")), Status::Pass);
    assert_eq!(status(&r, "M1.brute_force", None), Status::Warn);
}

#[test]
fn conntrack_counts_listener_caps() {
    // 100000 broker-wide, but the only listener takes at most 1000: 65536 entries suffice.
    let toml = PROD.replace(
        "bind = \"0.0.0.0:8883\"",
        "bind = \"0.0.0.0:8883\"\nmax_connections = 1000",
    );
    let cfg = config(&format!("{toml}\n[mqtt]\nmax_connections = 100000\n"));
    let r = rampart_doctor::run(&cfg, &opts("host-bad", Role::Audit));
    let f = find(&r, "H2.conntrack_max", None);
    assert_eq!(f.status, Status::Pass, "{}", f.evidence);
    assert!(
        f.evidence.contains("connection cap = 1000"),
        "{}",
        f.evidence
    );
}
