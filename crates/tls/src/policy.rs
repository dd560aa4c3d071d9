//! The crypto policy: which protocol versions, cipher suites and key-exchange groups a
//! listener offers. Everything outside TLS 1.2/1.3 with AEAD and ECDHE is absent from the
//! provider itself (rustls implements no CBC, RC4 or static-RSA suite), so no configuration
//! can reach it; the config crate refuses such names with an explanation first.

use crate::TlsError;
use rampart_config::{TlsListenerConfig, TlsVersion};
use rustls::crypto::ring as provider;
use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use std::sync::Arc;

/// IANA name -> suite, in the provider's default order of preference.
fn suite_by_name(name: &str) -> Option<SupportedCipherSuite> {
    use provider::cipher_suite::*;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

fn group_by_name(name: &str) -> Option<&'static dyn rustls::crypto::SupportedKxGroup> {
    use provider::kx_group::*;
    Some(match name {
        "X25519" => X25519,
        "secp256r1" => SECP256R1,
        "secp384r1" => SECP384R1,
        _ => return None,
    })
}

/// The provider restricted to the configured suites and groups, in the configured order.
pub fn crypto_provider(cfg: &TlsListenerConfig) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut p = provider::default_provider();
    if !cfg.ciphers.is_empty() {
        let mut suites = Vec::new();
        for name in &cfg.ciphers {
            let s = suite_by_name(name).ok_or_else(|| {
                TlsError::new(format!("cipher suite {name} is not AEAD with ECDHE (T2)"))
            })?;
            suites.push(s);
        }
        p.cipher_suites = suites;
    }
    if !cfg.groups.is_empty() {
        let mut groups = Vec::new();
        for name in &cfg.groups {
            groups.push(group_by_name(name).ok_or_else(|| {
                TlsError::new(format!("key-exchange group {name} is not supported"))
            })?);
        }
        p.kx_groups = groups;
    }
    // Defence in depth: whatever the provider offers, keep AEAD suites only. All ring suites
    // are AEAD today; this keeps a future provider change from widening the policy silently.
    p.cipher_suites.retain(|s| {
        let name = format!("{:?}", s.suite());
        name.contains("_GCM_") || name.contains("CHACHA20_POLY1305")
    });
    Ok(Arc::new(p))
}

/// TLS 1.3 always; TLS 1.2 unless `min_version = "1.3"`. Nothing older exists in rustls.
pub fn protocol_versions(cfg: &TlsListenerConfig) -> Vec<&'static SupportedProtocolVersion> {
    match cfg.min_version {
        TlsVersion::V1_3 => vec![&rustls::version::TLS13],
        TlsVersion::V1_2 => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    }
}
