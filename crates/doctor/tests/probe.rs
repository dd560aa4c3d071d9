//! The live probe against real rustls listeners on loopback: a strong configuration that
//! matches its config, a weak one that does not, a fake legacy server, and a closed port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rampart_doctor::probe::{self, Legacy};
use rampart_doctor::{Role, Status};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// Serves TLS on 127.0.0.1 until the test process ends; each connection is handled on its
/// own thread and held open (bounded by a read timeout) after the handshake, like a broker
/// waiting for CONNECT.
fn serve(cfg: ServerConfig) -> SocketAddr {
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(mut conn) = ServerConnection::new(cfg) else {
                    return;
                };
                // Handshake, then keep reading until the peer leaves or times out.
                for _ in 0..64 {
                    match conn.complete_io(&mut sock) {
                        Ok((0, 0)) if !conn.is_handshaking() => {
                            let mut buf = [0u8; 256];
                            if matches!(conn.reader().read(&mut buf), Ok(0)) {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    addr
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn key(pki: &Pki) -> PrivateKeyDer<'static> {
    PrivateKeyDer::try_from(pki.leaf_key.serialize_der()).unwrap()
}

fn tls_toml(dir: &Path, addr: SocketAddr, min_version: &str) -> String {
    format!(
        r#"[[listeners]]
name = "mqtts"
kind = "tls"
bind = "{addr}"

[listeners.tls]
cert_file = "{d}/server.pem"
key_file = "{d}/server.key"
ca_file = "{d}/clients-ca.pem"
client_auth = "required"
min_version = "{min_version}"
"#,
        d = dir.display()
    )
}

fn probe_opts() -> rampart_doctor::Options {
    let mut o = opts("host-good", Role::Audit);
    o.probe = true;
    o.probe_timeout = Duration::from_secs(2);
    o
}

#[test]
fn strong_listener_passes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new((2030, 1, 1));
    pki.write(dir.path(), (2025, 12, 1), (2026, 2, 1));
    let mut roots = RootCertStore::empty();
    roots.add(pki.client_ca.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![pki.leaf.der().clone(), pki.inter.der().clone()];
    // Any bytes do as an OCSP response: the probe reports that one is stapled.
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert_with_ocsp(chain, key(&pki), vec![0x30, 0x03, 0x0a, 0x01, 0x00])
        .unwrap();
    let addr = serve(cfg);

    let cfg = config(&tls_toml(dir.path(), addr, "1.2"));
    let r = rampart_doctor::run(&cfg, &probe_opts());
    let s = |c: &str| status(&r, c, Some("mqtts"));
    let ev = |c: &str| find(&r, c, Some("mqtts")).evidence.clone();
    assert_eq!(
        s("T1.live_versions"),
        Status::Pass,
        "{}",
        ev("T1.live_versions")
    );
    assert!(ev("T1.live_versions").contains("TLS 1.3 accepted, TLS 1.2 accepted"));
    assert!(ev("T1.live_versions").contains("TLS 1.0 refused"));
    assert!(ev("T1.live_versions").contains("TLS 1.1 refused"));
    assert_eq!(
        s("T2.live_suites"),
        Status::Pass,
        "{}",
        ev("T2.live_suites")
    );
    assert!(ev("T2.live_suites").contains("TLS_AES_256_GCM_SHA384"));
    assert!(ev("T2.live_suites").contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"));
    assert!(ev("T2.live_suites").contains("CBC suites refused"));
    assert_eq!(s("T3.live_chain"), Status::Pass, "{}", ev("T3.live_chain"));
    assert!(ev("T3.live_chain").contains("identical to cert_file"));
    assert_eq!(
        s("T4.live_client_auth"),
        Status::Pass,
        "{}",
        ev("T4.live_client_auth")
    );
    assert_eq!(s("T6.live_ocsp"), Status::Pass, "{}", ev("T6.live_ocsp"));
    // The live findings sit with the other transport findings.
    let phases: Vec<_> = r.findings.iter().map(|f| f.phase).collect();
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
}

#[test]
fn weak_listener_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new((2030, 1, 1));
    pki.write(dir.path(), (2025, 12, 1), (2026, 2, 1));
    // Leaf only, TLS 1.2 allowed, no client certificates, no staple: all of which the
    // config (min 1.3, mTLS required, whole chain in cert_file) says should not happen.
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.der().clone()], key(&pki))
        .unwrap();
    let addr = serve(cfg);

    let cfg = config(&tls_toml(dir.path(), addr, "1.3"));
    let r = rampart_doctor::run(&cfg, &probe_opts());
    let f = find(&r, "T1.live_versions", Some("mqtts"));
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence
            .contains("min_version = 1.3 but TLS 1.2 is accepted"),
        "{}",
        f.evidence
    );
    let f = find(&r, "T3.live_chain", Some("mqtts"));
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence
            .contains("serves 1 of the 2 certificates in cert_file"),
        "{}",
        f.evidence
    );
    let f = find(&r, "T4.live_client_auth", Some("mqtts"));
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence.contains("is not even asked for one"),
        "{}",
        f.evidence
    );
    assert_eq!(status(&r, "T6.live_ocsp", Some("mqtts")), Status::Warn);
    assert!(r.has_failures());
}

/// A server that answers any ClientHello with a TLS 1.0 ServerHello choosing a CBC suite.
fn legacy_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf);
            let mut hello = vec![0x02, 0x00, 0x00, 0x26, 0x03, 0x01];
            hello.extend([0x11; 32]);
            hello.extend([0x00, 0xc0, 0x13, 0x00]);
            let mut rec = vec![0x16, 0x03, 0x01, 0x00, u8::try_from(hello.len()).unwrap()];
            rec.extend(hello);
            let _ = sock.write_all(&rec);
        }
    });
    addr
}

#[test]
fn legacy_protocols_are_detected() {
    let addr = legacy_server();
    let t = Duration::from_secs(2);
    assert_eq!(
        probe::legacy_attempt(addr, 0x0301, &[0xc013, 0x002f], t),
        Legacy::Accepted(0x0301, 0xc013)
    );
    let obs = probe::observe(addr, t);
    assert!(
        obs.legacy
            .iter()
            .all(|(_, l)| matches!(l, Legacy::Accepted(..))),
        "{:?}",
        obs.legacy
    );
    let cfg = config(&format!(
        "[[listeners]]\nname = \"old\"\nkind = \"tls\"\nbind = \"{addr}\"\n[listeners.tls]\ncert_file = \"/x.pem\"\nkey_file = \"/x.key\"\n"
    ));
    let findings = probe::judge(&cfg.listeners[0], &obs, NOW);
    let get = |c: &str| findings.iter().find(|f| f.check == c).unwrap();
    assert_eq!(get("T1.live_versions").status, Status::Fail);
    assert!(get("T1.live_versions")
        .evidence
        .contains("TLS 1.0 accepted"));
    assert_eq!(get("T2.live_suites").status, Status::Fail);

    // Answers are classified from the first record alone.
    assert_eq!(
        probe::classify_answer(&[0x15, 3, 3, 0, 2, 2, 70]),
        Legacy::Refused("alert".into())
    );
    assert_eq!(
        probe::classify_answer(&[]),
        Legacy::Refused("closed the connection".into())
    );
    assert!(matches!(
        probe::classify_answer(&[0x16, 3, 1, 0, 1, 2]),
        Legacy::NoAnswer(_)
    ));
}

#[test]
fn closed_port_is_reported_not_guessed() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&tls_toml(dir.path(), addr, "1.2"));
    let r = rampart_doctor::run(&cfg, &probe_opts());
    let f = find(&r, "T1.live_probe", Some("mqtts"));
    assert_eq!(f.status, Status::Warn);
    assert!(f.evidence.contains("not reachable"), "{}", f.evidence);
    assert!(!r.findings.iter().any(|f| f.check == "T3.live_chain"));
}
