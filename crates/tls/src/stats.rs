//! Process-wide transport counters, bumped by the listeners and exported by the broker
//! (`$SYS`, metrics). Relaxed atomics: one increment per handshake, never on the data path.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct TransportStats {
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes refused or failed (protocol, suite, certificate, revocation).
    pub tls_failures: AtomicU64,
    /// PROXY, TLS or WebSocket handshakes that did not finish within their timeout.
    pub handshake_timeouts: AtomicU64,
    /// PROXY headers refused (from an untrusted peer, malformed, or missing from a trusted one).
    pub proxy_refused: AtomicU64,
    /// WebSocket upgrades refused (path, subprotocol, Origin, malformed request).
    pub ws_refused: AtomicU64,
}

pub static STATS: TransportStats = TransportStats {
    tls_handshakes: AtomicU64::new(0),
    tls_failures: AtomicU64::new(0),
    handshake_timeouts: AtomicU64::new(0),
    proxy_refused: AtomicU64::new(0),
    ws_refused: AtomicU64::new(0),
};

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// (metric name, value) pairs, e.g. for `$SYS/broker/tls/...` or Prometheus.
pub fn snapshot() -> Vec<(&'static str, u64)> {
    let s = &STATS;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    vec![
        ("tls_handshakes", get(&s.tls_handshakes)),
        ("tls_handshake_failures", get(&s.tls_failures)),
        ("handshake_timeouts", get(&s.handshake_timeouts)),
        ("proxy_headers_refused", get(&s.proxy_refused)),
        ("websocket_upgrades_refused", get(&s.ws_refused)),
    ]
}
