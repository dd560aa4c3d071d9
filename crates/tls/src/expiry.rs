//! Server-certificate expiry: the dates of every certificate in use, for a metric, and a
//! warning from 30 days before a certificate expires.

use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Warn this long before a server certificate expires.
pub const WARN_BEFORE_SECS: i64 = 30 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    pub listener: String,
    pub file: String,
    pub subject: String,
    /// notAfter in Unix seconds.
    pub not_after: i64,
}

impl CertExpiry {
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }
}

/// Listener name -> its certificates. One entry per served certificate; small (a few per
/// listener).
static REGISTRY: Mutex<BTreeMap<String, Vec<CertExpiry>>> = Mutex::new(BTreeMap::new());

pub(crate) fn publish(listener: &str, certs: Vec<CertExpiry>) {
    REGISTRY.lock().insert(listener.to_string(), certs);
}

/// Every server certificate in use by every TLS listener, for export as a metric
/// (`rampart_tls_cert_not_after_seconds{listener,file}`).
pub fn cert_expiries() -> Vec<CertExpiry> {
    REGISTRY.lock().values().flatten().cloned().collect()
}

/// Logs a warning for each certificate that expires within [`WARN_BEFORE_SECS`] (or has
/// expired) and returns how many did.
pub fn warn_expiring(certs: &[CertExpiry], now: i64) -> usize {
    use crate::alarms::{self, AlarmKind};
    let mut n = 0;
    for c in certs {
        alarms::clear_kind(&c.listener, AlarmKind::CertExpiring);
    }
    for c in certs {
        let left = c.seconds_left(now);
        if left < WARN_BEFORE_SECS {
            alarms::raise(
                &c.listener,
                AlarmKind::CertExpiring,
                &c.file,
                format!(
                    "{} ({}): {} days left",
                    c.file,
                    c.subject,
                    left.max(0) / 86_400
                ),
            );
        }
        if left <= 0 {
            n += 1;
            tracing::error!(listener = %c.listener, file = %c.file, subject = %c.subject,
                "server certificate has EXPIRED; clients will refuse it: replace the file (it is reloaded automatically)");
        } else if left < WARN_BEFORE_SECS {
            n += 1;
            tracing::warn!(listener = %c.listener, file = %c.file, subject = %c.subject,
                days_left = left / 86_400,
                "server certificate expires soon: replace the file (it is reloaded automatically)");
        }
    }
    n
}

/// Prometheus text lines for every served certificate:
/// `rampart_tls_cert_not_after_seconds{listener="...",file="..."} <unix seconds>`.
pub fn prometheus_lines() -> String {
    let mut out = String::new();
    for c in cert_expiries() {
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str(&format!(
            "rampart_tls_cert_not_after_seconds{{listener=\"{}\",file=\"{}\"}} {}\n",
            esc(&c.listener),
            esc(&c.file),
            c.not_after
        ));
    }
    out
}
