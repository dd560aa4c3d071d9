//! In-process handshakes against a listener's `TlsSource`: mTLS identity, SNI, refusals and
//! live reload on file change. The PKI is generated with rcgen in each test.

use rampart_config::{ClientAuth, CrlExpired, TlsListenerConfig, TlsVersion};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(15);

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    Ca {
        issuer: CertifiedIssuer::self_signed(p, key).expect("ca"),
    }
}

/// An intermediate CA issued by `parent`.
fn sub_ca(parent: &Ca, name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    Ca {
        issuer: CertifiedIssuer::signed_by(p, key, &parent.issuer).expect("sub ca"),
    }
}

/// (cert PEM, key PEM, cert DER)
fn leaf(ca: &Ca, cn: &str, sans: Vec<SanType>, client: bool) -> (String, String, Vec<u8>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.subject_alt_names = sans;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Rampart Test");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("sign");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("dns"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &p).expect("rename");
    p
}

fn config(cert: PathBuf, key: PathBuf) -> TlsListenerConfig {
    TlsListenerConfig {
        cert_file: cert,
        key_file: key,
        ca_file: None,
        client_auth: ClientAuth::None,
        crl_files: Vec::new(),
        min_version: TlsVersion::V1_2,
        ciphers: Vec::new(),
        verify_depth: 4,
        groups: Vec::new(),
        handshake_timeout_secs: 5,
        sni_cert_files: Vec::new(),
        sni_key_files: Vec::new(),
        crl_expired: CrlExpired::Deny,
        crl_fetch: false,
        crl_refresh_secs: 3600,
        ocsp_stapling: false,
        ocsp_url: None,
        fetch_ca_file: None,
        fetch_system_roots: false,
        reload_poll_secs: 1,
        client_id_from: None,
    }
}

fn client_config(root: &Ca, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.issuer.der().clone()).expect("root");
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let cfg = match identity {
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            b.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// One handshake over loopback: returns the server's view (TlsInfo) or its error, and the
/// leaf certificate the client received.
async fn handshake(
    source: &rampart_tls::TlsSource,
    client: Arc<rustls::ClientConfig>,
    sni: &str,
) -> (
    Result<rampart_core::conn_info::TlsInfo, String>,
    Option<Vec<u8>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = source.acceptor();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(sock).await.map_err(|e| e.to_string())?;
        let info = rampart_tls::tls_info(tls.get_ref().1);
        // Proves the session works both ways: echo one byte.
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(info)
    });
    let connector = tokio_rustls::TlsConnector::from(client);
    let sock = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let mut leaf = None;
    if let Ok(mut tls) = connector.connect(name, sock).await {
        leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let _ = tls.write_all(b"x").await;
        let mut b = [0u8; 1];
        let _ = tokio::time::timeout(WAIT, tls.read_exact(&mut b)).await;
    }
    let info = tokio::time::timeout(WAIT, server)
        .await
        .expect("server side finished")
        .expect("join");
    (info, leaf)
}

#[tokio::test]
async fn mtls_identity_reaches_the_connection() {
    let dir = tempfile::tempdir().expect("dir");
    let root = ca("Test Root");
    let (scert, skey, _) = leaf(&root, "localhost", vec![dns("localhost")], false);
    let (ccert, ckey, cder) = leaf(
        &root,
        "sensor-17",
        vec![
            SanType::Rfc822Name("sensor-17@example.test".try_into().expect("email")),
            SanType::URI("urn:device:17".try_into().expect("uri")),
        ],
        true,
    );
    let mut cfg = config(
        write(dir.path(), "s.pem", &scert),
        write(dir.path(), "s.key", &skey),
    );
    cfg.ca_file = Some(write(dir.path(), "ca.pem", &root.issuer.pem()));
    cfg.client_auth = ClientAuth::Required;
    let source = rampart_tls::start("t", &cfg).expect("start");

    let (info, _) = handshake(
        &source,
        client_config(&root, Some((&ccert, &ckey))),
        "localhost",
    )
    .await;
    let info = info.expect("handshake");
    let id = info.client_cert.expect("client identity");
    assert_eq!(id.common_name.as_deref(), Some("sensor-17"));
    assert_eq!(id.subject_dn, "CN=sensor-17,O=Rampart Test");
    assert_eq!(id.sans, vec!["sensor-17@example.test", "urn:device:17"]);
    let want = ring::digest::digest(&ring::digest::SHA256, &cder);
    assert_eq!(id.fingerprint_sha256.len(), 64);
    assert!(id
        .fingerprint_sha256
        .starts_with(&format!("{:02x}", want.as_ref()[0])));
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    assert_eq!(info.protocol.as_deref(), Some("TLSv1.3"));

    // Required means required: no certificate, no session.
    let (info, _) = handshake(&source, client_config(&root, None), "localhost").await;
    assert!(info.is_err(), "{info:?}");
    // And a certificate from another CA is refused.
    let other = ca("Other Root");
    let (ocert, okey, _) = leaf(&other, "intruder", vec![], true);
    let (info, _) = handshake(
        &source,
        client_config(&root, Some((&ocert, &okey))),
        "localhost",
    )
    .await;
    assert!(info.is_err(), "{info:?}");
}

#[tokio::test]
async fn verify_depth_counts_the_verified_path() {
    // root -> i1 -> i2 -> client; the CA bundle is the root only, so the path has two
    // intermediates whatever the client sends.
    let dir = tempfile::tempdir().expect("dir");
    let root = ca("Depth Root");
    let i1 = sub_ca(&root, "Depth I1");
    let i2 = sub_ca(&i1, "Depth I2");
    let (scert, skey, _) = leaf(&root, "localhost", vec![dns("localhost")], false);
    let (ccert, ckey, _) = leaf(&i2, "deep-client", vec![], true);
    let chain = format!("{ccert}{}{}", i2.issuer.pem(), i1.issuer.pem());
    // Padding the chain with copies does not lengthen the verified path.
    let padded = format!("{chain}{}{}", i1.issuer.pem(), i2.issuer.pem());
    let source_with = |depth: u8| {
        let mut cfg = config(
            write(dir.path(), "s.pem", &scert),
            write(dir.path(), "s.key", &skey),
        );
        cfg.ca_file = Some(write(dir.path(), "ca.pem", &root.issuer.pem()));
        cfg.client_auth = ClientAuth::Required;
        cfg.verify_depth = depth;
        rampart_tls::start(&format!("depth{depth}"), &cfg).expect("start")
    };
    let deep_enough = source_with(2);
    for presented in [&chain, &padded] {
        let (info, _) = handshake(
            &deep_enough,
            client_config(&root, Some((presented, &ckey))),
            "localhost",
        )
        .await;
        assert!(
            info.is_ok(),
            "depth 2 must accept a two-intermediate path: {info:?}"
        );
    }
    let too_shallow = source_with(1);
    let (info, _) = handshake(
        &too_shallow,
        client_config(&root, Some((&chain, &ckey))),
        "localhost",
    )
    .await;
    let err = info.expect_err("depth 1 must refuse a two-intermediate path");
    assert!(err.contains("ApplicationVerificationFailure"), "{err}");
    // With i1 in the CA bundle the path is one intermediate (i2): depth 1 is enough, even
    // when the client still sends i1.
    let mut cfg = config(
        write(dir.path(), "s.pem", &scert),
        write(dir.path(), "s.key", &skey),
    );
    cfg.ca_file = Some(write(
        dir.path(),
        "ca2.pem",
        &format!("{}{}", root.issuer.pem(), i1.issuer.pem()),
    ));
    cfg.client_auth = ClientAuth::Required;
    cfg.verify_depth = 1;
    let anchored = rampart_tls::start("anchored", &cfg).expect("start");
    let (info, _) = handshake(
        &anchored,
        client_config(&root, Some((&chain, &ckey))),
        "localhost",
    )
    .await;
    assert!(info.is_ok(), "{info:?}");
}

#[tokio::test]
async fn sni_selects_among_certificates() {
    let dir = tempfile::tempdir().expect("dir");
    let root = ca("Test Root");
    let (a, akey, ader) = leaf(&root, "a", vec![dns("a.test")], false);
    let (b, bkey, bder) = leaf(&root, "b", vec![dns("*.b.test")], false);
    let mut cfg = config(
        write(dir.path(), "a.pem", &a),
        write(dir.path(), "a.key", &akey),
    );
    cfg.sni_cert_files = vec![write(dir.path(), "b.pem", &b)];
    cfg.sni_key_files = vec![write(dir.path(), "b.key", &bkey)];
    let source = rampart_tls::start("sni", &cfg).expect("start");
    let (_, got) = handshake(&source, client_config(&root, None), "x.b.test").await;
    assert_eq!(got.as_deref(), Some(bder.as_slice()));
    let (_, got) = handshake(&source, client_config(&root, None), "a.test").await;
    assert_eq!(got.as_deref(), Some(ader.as_slice()));
}

#[tokio::test]
async fn certificate_file_change_is_published_for_new_handshakes() {
    let dir = tempfile::tempdir().expect("dir");
    let root = ca("Test Root");
    let (c1, k1, d1) = leaf(&root, "one", vec![dns("localhost")], false);
    let (c2, k2, d2) = leaf(&root, "two", vec![dns("localhost")], false);
    let cfg = config(
        write(dir.path(), "s.pem", &c1),
        write(dir.path(), "s.key", &k1),
    );
    let source = rampart_tls::start("reload", &cfg).expect("start");
    let mut updates = source.subscribe();
    updates.borrow_and_update();
    let (_, got) = handshake(&source, client_config(&root, None), "localhost").await;
    assert_eq!(got.as_deref(), Some(d1.as_slice()));

    // A broken certificate is never published: the first update is the good pair below.
    write(
        dir.path(),
        "s.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    write(dir.path(), "s.key", &k2);
    write(dir.path(), "s.pem", &c2);
    tokio::time::timeout(WAIT, updates.changed())
        .await
        .expect("reload within the poll period")
        .expect("open");
    let (_, got) = handshake(&source, client_config(&root, None), "localhost").await;
    assert_eq!(got.as_deref(), Some(d2.as_slice()));
}

#[test]
fn start_refuses_mismatched_key() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let _g = rt.enter();
    let dir = tempfile::tempdir().expect("dir");
    let root = ca("Test Root");
    let (c1, _, _) = leaf(&root, "one", vec![dns("localhost")], false);
    let (_, k2, _) = leaf(&root, "two", vec![dns("localhost")], false);
    let cfg = config(
        write(dir.path(), "s.pem", &c1),
        write(dir.path(), "s.key", &k2),
    );
    let err = rampart_tls::start("bad", &cfg).err().expect("refused");
    assert!(
        err.to_string().contains("is not the key of cert_file"),
        "{err}"
    );
}

#[tokio::test]
async fn expiry_is_exported_and_an_expired_certificate_raises_an_alarm() {
    let dir = tempfile::tempdir().expect("dir");
    let root = ca("Test Root");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &root.issuer).expect("sign");
    let cfg = config(
        write(dir.path(), "old.pem", &cert.pem()),
        write(dir.path(), "old.key", &key.serialize_pem()),
    );
    let _source = rampart_tls::start("expired-listener", &cfg).expect("start");
    let e = rampart_tls::expiry::cert_expiries()
        .into_iter()
        .find(|e| e.listener == "expired-listener")
        .expect("exported");
    assert_eq!(e.not_after, 1_609_459_200);
    assert!(rampart_tls::expiry::prometheus_lines()
        .contains("rampart_tls_cert_not_after_seconds{listener=\"expired-listener\""));
    let alarms = rampart_tls::alarms::active_alarms();
    assert!(
        alarms.iter().any(|a| a.listener == "expired-listener"
            && a.kind == rampart_tls::alarms::AlarmKind::CertExpiring),
        "{alarms:?}"
    );
}
