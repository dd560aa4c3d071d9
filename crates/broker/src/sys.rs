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
    for (topic, value) in items.into_iter().chain(more) {
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

/// The broker's own retained $SYS values, left out of the retained count.
fn sys_retained(r: &Router) -> usize {
    let mut n = 0;
    if let Ok(f) = rampart_core::topic::TopicFilter::try_from("$SYS/#") {
        r.retained.for_each_match(&f, |_, _| n += 1);
    }
    n
}
