//! The identity a verified client certificate gives: CN, subject DN (RFC 4514), SANs and
//! fingerprint, for authentication (certificate as username or client id) and ACL rules.

use rampart_core::conn_info::{CertIdentity, TlsInfo};
use rustls::{CommonState, ServerConnection};
use std::fmt::Write as _;
use x509_parser::prelude::*;

/// Reads the identity fields of a DER certificate; `None` if it does not parse (which cannot
/// happen for a certificate the verifier accepted).
pub fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push((*s).to_string())
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        sans.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertIdentity {
        common_name,
        subject_dn: rfc4514(subject),
        sans,
        fingerprint_sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
    })
}

/// RFC 4514 string form: last RDN first, attributes by short name, special characters escaped.
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::oid_registry::OidRegistry::default().with_x509();
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type();
            let key = registry
                .get(oid)
                .map(|e| e.sn().to_string())
                .map(|sn| match sn.as_str() {
                    "commonName" => "CN".to_string(),
                    "countryName" => "C".to_string(),
                    "localityName" => "L".to_string(),
                    "stateOrProvinceName" => "ST".to_string(),
                    "organizationName" => "O".to_string(),
                    "organizationalUnitName" => "OU".to_string(),
                    "streetAddress" => "STREET".to_string(),
                    "domainComponent" => "DC".to_string(),
                    "userId" => "UID".to_string(),
                    _ => sn,
                })
                .unwrap_or_else(|| oid.to_id_string());
            out.push_str(&key);
            out.push('=');
            match attr.as_str() {
                Ok(v) => escape_value(v, &mut out),
                Err(_) => {
                    out.push('#');
                    out.push_str(&hex(attr.attr_value().data));
                }
            }
        }
    }
    out
}

fn escape_value(v: &str, out: &mut String) {
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What the handshake established, for `ConnInfo`.
pub fn tls_info(conn: &ServerConnection) -> TlsInfo {
    tls_info_common(conn, conn.server_name().map(str::to_string))
}

/// `tls_info` for a connection driven through rustls's unbuffered API, whose common state
/// holds everything but the SNI name (not exposed there): the caller passes the name it read
/// from the ClientHello ([`crate::hello::client_hello_sni`]).
pub fn tls_info_common(conn: &CommonState, server_name: Option<String>) -> TlsInfo {
    TlsInfo {
        protocol: conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        }),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite())),
        server_name,
        client_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| cert_identity(c)),
    }
}
