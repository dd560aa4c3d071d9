//! What the transport knows about a connection, handed to the session layer, authentication
//! and ACL rules. Filled by the listener (TCP, TLS, WebSocket, PROXY protocol).

use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address: the socket peer, or the address a trusted PROXY header gave.
    pub peer: SocketAddr,
    /// The listener's configured name.
    pub listener: Arc<str>,
    /// Listener kind as configured: "tcp", "tls", "ws", "wss".
    pub transport: &'static str,
    /// Present on TLS and WSS connections.
    pub tls: Option<TlsInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// "TLSv1.2" / "TLSv1.3".
    pub protocol: Option<String>,
    pub cipher_suite: Option<String>,
    /// SNI server name sent by the client.
    pub server_name: Option<String>,
    /// The verified client certificate, when the client presented one.
    pub client_cert: Option<CertIdentity>,
}

/// Fields of a verified client certificate that can serve as username or client id and that
/// ACL rules can refer to (`${cert_common_name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_name: Option<String>,
    /// RFC 4514 subject distinguished name.
    pub subject_dn: String,
    /// DNS names, e-mail addresses and URIs from the subjectAltName extension.
    pub sans: Vec<String>,
    /// Hex SHA-256 of the DER certificate.
    pub fingerprint_sha256: String,
}
