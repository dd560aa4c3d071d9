//! Active TLS alarms (OCSP responder failing, server certificate expiring, CRL out of date),
//! for the broker to export ($SYS, metrics, doctor). Each alarm is also logged at error or
//! warning level when it is raised.

use parking_lot::Mutex;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlarmKind {
    /// The OCSP responder failed or does not vouch for the certificate; the last good
    /// response (if any) is still stapled until it expires.
    OcspFailing,
    /// A server certificate expires within 30 days or has expired.
    CertExpiring,
    /// A configured CRL is past its nextUpdate.
    CrlExpired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub listener: String,
    pub kind: AlarmKind,
    /// Which file or URL, and why.
    pub detail: String,
}

/// (listener, kind, subject) -> detail. A handful of entries per TLS listener at most.
type Registry = BTreeMap<(String, AlarmKind, String), String>;
static ACTIVE: Mutex<Registry> = Mutex::new(BTreeMap::new());

pub(crate) fn raise(listener: &str, kind: AlarmKind, subject: &str, detail: String) {
    ACTIVE
        .lock()
        .insert((listener.to_string(), kind, subject.to_string()), detail);
}

pub(crate) fn clear(listener: &str, kind: AlarmKind, subject: &str) {
    ACTIVE
        .lock()
        .remove(&(listener.to_string(), kind, subject.to_string()));
}

/// Clears every alarm of `kind` on `listener` (before re-evaluating them after a reload).
pub(crate) fn clear_kind(listener: &str, kind: AlarmKind) {
    ACTIVE
        .lock()
        .retain(|(l, k, _), _| !(l == listener && *k == kind));
}

/// Every alarm in force, ordered by listener and kind.
pub fn active_alarms() -> Vec<Alarm> {
    ACTIVE
        .lock()
        .iter()
        .map(|((listener, kind, _), detail)| Alarm {
            listener: listener.clone(),
            kind: *kind,
            detail: detail.clone(),
        })
        .collect()
}
