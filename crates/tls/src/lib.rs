//! rampart-tls: the TLS policy of every TLS and WSS listener (TLS 1.2/1.3, AEAD with ECDHE
//! only), server certificates with SNI, client-certificate verification with depth limit and
//! CRLs, OCSP stapling, live reload and the certificate identity handed to authentication.
//!
//! It owns no listening socket: the broker asks [`reload::start`] for a [`TlsSource`] per
//! listener and uses its current `Arc<ServerConfig>` for each new handshake. It never weakens
//! the policy at run time: a bad new file keeps the old material in use.
#![forbid(unsafe_code)]

pub mod alarms;
pub mod der;
pub mod expiry;
pub mod hello;
pub mod http;
pub mod identity;
pub mod material;
pub mod ocsp;
pub mod policy;
pub mod reload;
pub mod resolver;
pub mod stats;
pub mod verifier;

pub use identity::{cert_identity, tls_info, tls_info_common};
pub use reload::{start, TlsSource};
pub use rustls;
pub use tokio_rustls;

/// Every failure to load or apply TLS material, as a sentence naming the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl TlsError {
    pub fn new(msg: impl Into<String>) -> TlsError {
        TlsError(msg.into())
    }
}

/// Seconds since the Unix epoch, for certificate and CRL times.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
