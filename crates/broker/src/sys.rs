//! $SYS topics, published as retained messages every `sys.interval_secs`.

use crate::message::Message;
use crate::metrics::Metrics;
use crate::router::Router;
use bytes::Bytes;
use rampart_codec::{Properties, QoS};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn run(router: Arc<Router>, mut shutdown: watch::Receiver<bool>) {
    if !router.cfg.sys.enabled {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(router.cfg.sys.interval_secs.max(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => publish_all(&router),
            _ = shutdown.changed() => return,
        }
    }
}

fn publish_all(r: &Router) {
    let m = &r.metrics;
    let connected = m.clients_connected.load(Ordering::Relaxed).max(0) as u64;
    let sessions = r.registry.len() as u64;
    let items: [(&str, String); 14] = [
        ("$SYS/broker/version", format!("rampart {VERSION}")),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", r.started.elapsed().as_secs()),
        ),
        ("$SYS/broker/clients/connected", connected.to_string()),
        (
            "$SYS/broker/clients/total",
            sessions.max(connected).to_string(),
        ),
        (
            "$SYS/broker/clients/disconnected",
            sessions.saturating_sub(connected).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            Metrics::get(&m.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            Metrics::get(&m.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/received",
            Metrics::get(&m.publish_received).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            Metrics::get(&m.publish_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            Metrics::get(&m.publish_dropped).to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            Metrics::get(&m.bytes_received).to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            Metrics::get(&m.bytes_sent).to_string(),
        ),
        ("$SYS/broker/subscriptions/count", r.subs.len().to_string()),
        (
            "$SYS/broker/retained messages/count",
            r.retained.len().saturating_sub(sys_retained(r)).to_string(),
        ),
    ];
    let lm = &r.limits.metrics;
    let am = r.auth.metrics();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
    // Abuse protection (issue 6) and authentication (issue 5) counters.
    let more: [(&str, String); 14] = [
        (
            "$SYS/broker/limits/connections/refused",
            lm.refused_total().to_string(),
        ),
        (
            "$SYS/broker/limits/connections/over_cap",
            Metrics::get(&m.connections_refused).to_string(),
        ),
        (
            "$SYS/broker/limits/connects/banned",
            get(&lm.banned_connects),
        ),
        ("$SYS/broker/limits/connects/busy", get(&lm.busy_connects)),
        ("$SYS/broker/limits/flapping/bans", get(&lm.flapping_bans)),
        (
            "$SYS/broker/limits/publish/delayed",
            get(&lm.publish_delayed),
        ),
        (
            "$SYS/broker/limits/publish/disconnects",
            get(&lm.publish_disconnects),
        ),
        (
            "$SYS/broker/limits/overloaded",
            u8::from(r.limits.is_overloaded()).to_string(),
        ),
        ("$SYS/broker/auth/allowed", get(&am.allowed)),
        (
            "$SYS/broker/auth/denied/credentials",
            get(&am.denied_credentials),
        ),
        ("$SYS/broker/auth/denied/banned", get(&am.denied_banned)),
        ("$SYS/broker/auth/backend/errors", get(&am.backend_errors)),
        (
            "$SYS/broker/auth/backend/timeouts",
            get(&am.backend_timeouts),
        ),
        ("$SYS/broker/auth/acl/denied", get(&am.authz_denied)),
    ];
    // Session queues and the durable store (issue 3).
    let qm = &r.queue_metrics;
    let store = r.store.as_ref().map(|s| s.stats()).unwrap_or_default();
    let durable: [(&str, String); 7] = [
        ("$SYS/broker/queue/refused", get(&qm.refused_full)),
        ("$SYS/broker/queue/expired", get(&qm.expired_purged)),
        ("$SYS/broker/sessions/expired", get(&qm.sessions_expired)),
        (
            "$SYS/broker/store/batches",
            store.batches_committed.to_string(),
        ),
        (
            "$SYS/broker/store/failures",
            store.batches_failed.to_string(),
        ),
        ("$SYS/broker/store/syncs", store.syncs.to_string()),
        ("$SYS/broker/store/bytes", store.file_bytes.to_string()),
    ];
    let tls = tls_items();
    let static_items = items
        .into_iter()
        .chain(more)
        .chain(durable)
        .map(|(t, v)| (t.to_string(), v));
    for (topic, value) in static_items.chain(tls) {
        let msg = Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
            expires_at: None,
            publisher: None,
            encoded: Default::default(),
        });
        r.retain(&msg, &mut rampart_store::WriteBatch::new());
        r.publish(&msg);
    }
}

/// Transport security (issue 4): handshake counters, each TLS listener's soonest certificate
/// expiry and its active alarms (OCSP responder failing, certificate expiring, CRL out of
/// date). A handful of topics per TLS listener; listener names are plain topic levels.
fn tls_items() -> Vec<(String, String)> {
    use rampart_tls::alarms::AlarmKind;
    use std::collections::BTreeMap;
    let mut out: Vec<(String, String)> = rampart_tls::stats::snapshot()
        .into_iter()
        .map(|(name, v)| (format!("$SYS/broker/transport/{name}"), v.to_string()))
        .collect();
    let now = rampart_tls::unix_now();
    let mut soonest: BTreeMap<String, i64> = BTreeMap::new();
    for c in rampart_tls::expiry::cert_expiries() {
        let e = soonest.entry(c.listener).or_insert(c.not_after);
        *e = (*e).min(c.not_after);
    }
    let alarms = rampart_tls::alarms::active_alarms();
    out.push((
        "$SYS/broker/tls/alarms/count".to_string(),
        alarms.len().to_string(),
    ));
    for (listener, not_after) in &soonest {
        let base = format!("$SYS/broker/tls/listeners/{listener}");
        out.push((
            format!("{base}/certificate/not_after"),
            not_after.to_string(),
        ));
        // Whole days left, negative once expired (floor, so an expired one never shows 0).
        out.push((
            format!("{base}/certificate/days_left"),
            (not_after - now).div_euclid(86_400).to_string(),
        ));
        let mine: Vec<String> = alarms
            .iter()
            .filter(|a| &a.listener == listener)
            .map(|a| {
                let kind = match a.kind {
                    AlarmKind::OcspFailing => "ocsp_failing",
                    AlarmKind::CertExpiring => "certificate_expiring",
                    AlarmKind::CrlExpired => "crl_expired",
                };
                format!("{kind}: {}", a.detail)
            })
            .collect();
        // "none" rather than an empty payload, which would delete the retained value.
        let text = if mine.is_empty() {
            "none".to_string()
        } else {
            mine.join("\n")
        };
        out.push((format!("{base}/alarms"), text));
    }
    out
}

/// The broker's own retained $SYS values, left out of the retained count.
fn sys_retained(r: &Router) -> usize {
    let mut n = 0;
    if let Ok(f) = rampart_core::topic::TopicFilter::try_from("$SYS/#") {
        r.retained.for_each_match(&f, |_, _| n += 1);
    }
    n
}
