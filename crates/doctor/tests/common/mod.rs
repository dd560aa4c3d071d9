//! Shared fixtures: host roots, configs, and certificate chains made at test time.
#![allow(dead_code)] // each test file uses a different part

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_config::Config;
use rampart_doctor::{Finding, Host, Options, Report, Role, Status};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// 2026-01-01T00:00:00Z: the clock of every fixture.
pub const NOW: i64 = 1_767_225_600;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn config(toml: &str) -> Config {
    match Config::from_str(toml, "fixture.toml", &[]) {
        Ok(c) => c,
        Err(e) => panic!("fixture config rejected:\n{e}"),
    }
}

/// Writes `toml` to `dir/rampart.toml` with `mode` and loads it from there (so that the
/// config file itself is checked and keys have line numbers).
pub fn config_file(dir: &Path, toml: &str, mode: u32) -> Config {
    let p = dir.join("rampart.toml");
    std::fs::write(&p, toml).unwrap();
    chmod(&p, mode);
    match Config::load(&p, &[]) {
        Ok(c) => c,
        Err(e) => panic!("fixture config rejected:\n{e}"),
    }
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn opts(host: &str, role: Role) -> Options {
    Options {
        host: Host::at(fixture(host)),
        role,
        probe: false,
        probe_timeout: Duration::from_secs(2),
        now: NOW,
    }
}

pub fn find<'a>(r: &'a Report, check: &str, subject: Option<&str>) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.check == check && f.subject.as_deref() == subject)
        .unwrap_or_else(|| {
            panic!(
                "no finding {check} {subject:?} in:\n{}",
                rampart_doctor::render::text(r)
            )
        })
}

pub fn status(r: &Report, check: &str, subject: Option<&str>) -> Status {
    find(r, check, subject).status
}

/// A CA hierarchy: root -> intermediate -> server leaf (127.0.0.1), plus a client CA.
pub struct Pki {
    pub root: rcgen::Certificate,
    pub root_key: KeyPair,
    pub inter: rcgen::Certificate,
    pub inter_key: KeyPair,
    pub leaf: rcgen::Certificate,
    pub leaf_key: KeyPair,
    pub client_ca: rcgen::Certificate,
    pub client_ca_key: KeyPair,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p
}

impl Pki {
    /// `leaf_not_after`: (year, month, day) of the server certificate's expiry. The leaf
    /// names an OCSP responder in its AIA extension.
    pub fn new(leaf_not_after: (i32, u8, u8)) -> Pki {
        Pki::build(leaf_not_after, true)
    }

    pub fn build(leaf_not_after: (i32, u8, u8), ocsp_aia: bool) -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params("Fixture Root CA").self_signed(&root_key).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let inter = ca_params("Fixture Intermediate CA")
            .signed_by(&inter_key, &root, &root_key)
            .unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut lp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        lp.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        lp.distinguished_name
            .push(DnType::CommonName, "broker.fixture");
        lp.not_before = rcgen::date_time_ymd(2020, 1, 1);
        let (y, m, d) = leaf_not_after;
        lp.not_after = rcgen::date_time_ymd(y, m, d);
        if ocsp_aia {
            // AuthorityInfoAccess: SEQUENCE { SEQUENCE { id-ad-ocsp, [6] "http://ocsp.fixture/" } }
            let url = b"http://ocsp.fixture/";
            let mut ad = vec![
                0x06,
                0x08,
                0x2b,
                0x06,
                0x01,
                0x05,
                0x05,
                0x07,
                0x30,
                0x01,
                0x86,
                url.len() as u8,
            ];
            ad.extend_from_slice(url);
            let mut inner = vec![0x30, ad.len() as u8];
            inner.extend(ad);
            let mut aia = vec![0x30, inner.len() as u8];
            aia.extend(inner);
            lp.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    aia,
                ));
        }
        let leaf = lp.signed_by(&leaf_key, &inter, &inter_key).unwrap();
        let client_ca_key = KeyPair::generate().unwrap();
        let client_ca = ca_params("Fixture Client CA")
            .self_signed(&client_ca_key)
            .unwrap();
        Pki {
            root,
            root_key,
            inter,
            inter_key,
            leaf,
            leaf_key,
            client_ca,
            client_ca_key,
        }
    }

    /// Writes server.pem (leaf + intermediate), server.key (0600), clients-ca.pem and a
    /// CRL of the client CA with the given dates into `dir`.
    pub fn write(&self, dir: &Path, crl_this: (i32, u8, u8), crl_next: (i32, u8, u8)) {
        std::fs::write(
            dir.join("server.pem"),
            format!("{}{}", self.leaf.pem(), self.inter.pem()),
        )
        .unwrap();
        std::fs::write(dir.join("server.key"), self.leaf_key.serialize_pem()).unwrap();
        chmod(&dir.join("server.key"), 0o600);
        std::fs::write(dir.join("clients-ca.pem"), self.client_ca.pem()).unwrap();
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(crl_this.0, crl_this.1, crl_this.2),
            next_update: rcgen::date_time_ymd(crl_next.0, crl_next.1, crl_next.2),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.client_ca, &self.client_ca_key)
        .unwrap();
        std::fs::write(dir.join("clients-ca.crl"), crl.pem().unwrap()).unwrap();
        for f in ["server.pem", "clients-ca.pem", "clients-ca.crl"] {
            chmod(&dir.join(f), 0o644);
        }
    }
}
