//! Reading PEM certificates, keys, CA bundles and CRLs from files, with errors that name the
//! file and say what is wrong with it.

use crate::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::Path;
use x509_parser::prelude::*;

/// Largest certificate, key, CA or CRL file read (a CRL of a big CA can be several MiB).
/// Worst case: one such buffer per file during a reload.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| TlsError::new(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(TlsError::new(format!(
            "{what} {}: {} bytes is more than the {MAX_FILE_BYTES} allowed",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| TlsError::new(format!("{what} {}: {e}", path.display())))
}

/// A PEM chain, leaf first. Every certificate must parse as X.509.
pub fn load_chain(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, what)?;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert =
            item.map_err(|e| TlsError::new(format!("{what} {}: bad PEM: {e}", path.display())))?;
        if let Err(e) = parse_x509_certificate(&cert) {
            return Err(TlsError::new(format!(
                "{what} {}: certificate {} does not parse: {e}",
                path.display(),
                out.len() + 1
            )));
        }
        out.push(cert);
    }
    if out.is_empty() {
        return Err(TlsError::new(format!(
            "{what} {}: no PEM CERTIFICATE block found",
            path.display()
        )));
    }
    Ok(out)
}

/// Where distributions keep the system's CA bundle, tried in order after `SSL_CERT_FILE`.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's trusted CA certificates (for https:// fetches) and the file they came from;
/// `None` when no bundle is found. Unparsable entries of the bundle are skipped.
pub fn system_roots() -> Option<(String, Vec<CertificateDer<'static>>)> {
    let env = std::env::var("SSL_CERT_FILE").ok();
    let paths = env
        .iter()
        .map(String::as_str)
        .chain(SYSTEM_BUNDLES.iter().copied());
    for p in paths {
        let Ok(bytes) = read(Path::new(p), "system CA bundle") else {
            continue;
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .collect();
        if !certs.is_empty() {
            return Some((p.to_string(), certs));
        }
    }
    None
}

/// A PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC). The key never reaches a log.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "key_file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsError::new(format!(
            "key_file {}: no usable PEM private key ({e})",
            path.display()
        ))
    })
}

/// A CRL file: PEM (one or more X509 CRL blocks) or DER.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path, "crl file")?;
    parse_crls(bytes).map_err(|e| TlsError::new(format!("crl file {}: {e}", path.display())))
}

/// CRLs from PEM (one or more X509 CRL blocks) or DER bytes, each checked to parse.
pub fn parse_crls(bytes: Vec<u8>) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err("no X509 CRL block found".to_string());
    }
    for crl in &crls {
        check_crl(crl)?;
    }
    Ok(crls)
}

/// The CRL parses; returns its nextUpdate in Unix seconds if it has one.
pub fn check_crl(crl: &[u8]) -> Result<Option<i64>, String> {
    let (_, parsed) =
        parse_x509_crl(crl).map_err(|e| format!("not a DER certificate revocation list: {e}"))?;
    Ok(parsed.next_update().map(|t| t.timestamp()))
}

/// What the broker needs to know about one of its server certificates.
#[derive(Debug, Clone, Default)]
pub struct CertFacts {
    pub subject: String,
    pub dns_names: Vec<String>,
    pub not_after: i64,
    pub ocsp_urls: Vec<String>,
    pub crl_urls: Vec<String>,
}

pub fn cert_facts(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) = parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut facts = CertFacts {
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        ..Default::default()
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    if let GeneralName::DNSName(d) = n {
                        facts.dns_names.push(d.to_ascii_lowercase());
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for ad in &aia.accessdescs {
                    if ad.access_method
                        == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    {
                        if let GeneralName::URI(u) = &ad.access_location {
                            facts.ocsp_urls.push(u.to_string());
                        }
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(dps) => {
                for dp in dps.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &dp.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                facts.crl_urls.push(u.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if facts.dns_names.is_empty() {
        // Old-style certificates name the host in the CN only.
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            facts.dns_names.push(cn.to_ascii_lowercase());
        }
    }
    Ok(facts)
}
