//! The edge between the broker's live state and `rampart-store` records: conversions, and
//! the start-up restore.
//!
//! What is persisted, and when (the durability contract in README.md relies on this):
//! - a persistent session's record (subscriptions, expiry, will) when it is created, when its
//!   subscriptions change (SUBACK/UNSUBACK wait for the commit) and when it disconnects;
//! - each QoS 1/2 delivery to a persistent session, in the same batch as the publisher's
//!   inbound QoS 2 id and any retained change; the publisher's PUBACK/PUBREC waits for it;
//!   deliveries are queued only once their batch is submitted (the writer commits in order,
//!   so a removal caused by the subscriber's acknowledgement always comes after it);
//! - retained messages sent at subscribe time, as QoS 1/2 queued copies in the SUBACK's
//!   batch; shared-subscription messages handed to another member when a session ends, in
//!   the batch that deletes the ended session;
//! - the packet id of an outbound QoS 2 message before its PUBLISH is written, and the
//!   PUBREC-received state before PUBREL is written, so that a message acknowledged with
//!   PUBREC is never sent again as new after a crash;
//! - removals (PUBACK, PUBCOMP, expiry) lazily, without waiting; expired messages of offline
//!   sessions are removed by a sweep (`timers::sweep_once`) and at restore, with orphans.

use crate::message::{Delivery, Message};
use crate::router::{Router, SubEntry};
use crate::session::{OutFlight, SessionShared, SessionState, SubRecord};
use bytes::{Bytes, BytesMut};
use rampart_codec::{
    decode, encode, Packet, Properties, ProtocolVersion, Publish, QoS, SubscriptionOptions,
};
use rampart_store::{
    MessageRecord, QueuedRecord, QueuedState, SessionRecord, Snapshot, SubscriptionRecord,
    WriteBatch,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Forwarded v5 properties in their wire form (inside a throwaway PUBLISH), so that the
/// store needs no codec and the format is the one the spec fixes.
fn encode_properties(p: &Properties) -> Bytes {
    if *p == Properties::default() {
        return Bytes::new();
    }
    let pkt = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "p".into(),
        packet_id: 0,
        properties: p.clone(),
        payload: Bytes::new(),
    });
    let mut out = BytesMut::new();
    match encode(&pkt, ProtocolVersion::V5, &mut out) {
        Ok(()) => out.freeze(),
        Err(_) => Bytes::new(),
    }
}

fn decode_properties(b: &Bytes) -> Properties {
    if b.is_empty() {
        return Properties::default();
    }
    let mut buf = BytesMut::from(&b[..]);
    match decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Some(Packet::Publish(p))) => p.properties,
        _ => Properties::default(),
    }
}

/// Convert between wall-clock milliseconds (stored) and monotonic instants (live).
fn instant_to_ms(t: Instant) -> u64 {
    let now = Instant::now();
    let wall = now_ms();
    if t >= now {
        wall + (t - now).as_millis() as u64
    } else {
        wall.saturating_sub((now - t).as_millis() as u64)
    }
}

fn ms_to_instant(ms: u64) -> Instant {
    let wall = now_ms();
    let now = Instant::now();
    if ms >= wall {
        now + Duration::from_millis(ms - wall)
    } else {
        now.checked_sub(Duration::from_millis(wall - ms))
            .unwrap_or(now)
    }
}

pub fn message_record(m: &Message) -> MessageRecord {
    MessageRecord {
        topic: m.topic.to_string(),
        payload: m.payload.clone(),
        qos: m.qos as u8,
        retain: m.retain,
        properties: encode_properties(&m.properties),
        expiry_at_ms: m.expires_at.map(instant_to_ms),
        publisher: m.publisher.as_deref().map(str::to_string),
        received_at_ms: now_ms(),
    }
}

pub fn message_from_record(r: &MessageRecord) -> Message {
    Message {
        topic: r.topic.as_str().into(),
        payload: r.payload.clone(),
        qos: QoS::from_u8(r.qos).unwrap_or(QoS::AtLeastOnce),
        retain: r.retain,
        properties: decode_properties(&r.properties),
        expires_at: r.expiry_at_ms.map(ms_to_instant),
        publisher: r.publisher.as_deref().map(Arc::from),
        encoded: Default::default(),
    }
}

fn will_record(w: &rampart_codec::Will) -> MessageRecord {
    MessageRecord {
        topic: w.topic.to_string(),
        payload: w.payload.clone(),
        qos: w.qos as u8,
        retain: w.retain,
        properties: encode_properties(&w.properties),
        expiry_at_ms: None,
        publisher: None,
        received_at_ms: now_ms(),
    }
}

fn will_from_record(r: &MessageRecord) -> rampart_codec::Will {
    rampart_codec::Will {
        topic: r.topic.as_str().into(),
        payload: r.payload.clone(),
        qos: QoS::from_u8(r.qos).unwrap_or(QoS::AtMostOnce),
        retain: r.retain,
        properties: decode_properties(&r.properties),
    }
}

pub fn queued_record(seq: u64, d: &Delivery, state: QueuedState) -> QueuedRecord {
    let mut message = message_record(&d.msg);
    // The RETAIN flag as this subscriber gets it: restored into the delivery.
    message.retain = d.retain;
    QueuedRecord {
        seq,
        message,
        state,
        subscription_ids: d.subscription_ids.clone(),
        granted_qos: d.qos as u8,
    }
}

pub fn session_record(
    state: &SessionState,
    will: Option<&rampart_codec::Will>,
    will_delay: u32,
    disconnected: bool,
) -> SessionRecord {
    SessionRecord {
        client_id: state.client_id.to_string(),
        protocol: state.protocol.level(),
        expiry_interval_secs: state.expiry_interval,
        disconnected_at_ms: disconnected.then(now_ms),
        subscriptions: state
            .subscriptions
            .iter()
            .map(|((group, filter), rec)| SubscriptionRecord {
                filter: filter.to_string(),
                share_group: group.as_deref().map(str::to_string),
                qos: rec.options.qos as u8,
                no_local: rec.options.no_local,
                retain_as_published: rec.options.retain_as_published,
                retain_handling: rec.options.retain_handling,
                subscription_id: rec.subscription_id,
            })
            .collect(),
        will: will.map(will_record),
        will_delay_secs: will_delay,
        identity: state.owner.as_deref().map(str::to_string),
        next_packet_id: state.next_packet_id,
    }
}

fn protocol_from_level(l: u8) -> ProtocolVersion {
    match l {
        3 => ProtocolVersion::V31,
        4 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    }
}

/// Rebuild sessions, subscriptions, queues and retained messages from a snapshot. Returns
/// the number of sessions and queued messages restored. Queued messages that expired while
/// the broker was down, and entries left without a session (orphans), are deleted from the
/// store instead.
pub fn restore(router: &Arc<Router>, snap: Snapshot) -> (usize, usize) {
    let cfg = &router.cfg;
    let mut queued_total = 0;
    let now = now_ms();
    let mut purge = WriteBatch::new();
    for client_id in &snap.orphan_clients {
        purge.delete_session(client_id.as_str());
    }
    let mut expired = 0u64;
    for m in &snap.retained {
        let msg = Arc::new(message_from_record(m));
        if !msg.is_expired(Instant::now()) {
            router.retained.insert(&msg.topic, msg.clone());
        }
    }
    let sessions = snap.sessions.len();
    for s in snap.sessions {
        let rec = s.session;
        let client_id: Arc<str> = Arc::from(rec.client_id.as_str());
        let shared = router.registry.get_or_create(&client_id, || {
            SessionShared::new(
                client_id.clone(),
                cfg.mqtt.max_queued_messages as usize,
                usize::try_from(cfg.mqtt.max_queued_bytes).unwrap_or(usize::MAX),
            )
        });
        shared.persistent.store(true, Ordering::Relaxed);
        let mut state = SessionState::new(
            client_id.clone(),
            protocol_from_level(rec.protocol),
            rec.expiry_interval_secs,
        );
        state.next_packet_id = rec.next_packet_id.max(1);
        state.owner = rec.identity.as_deref().map(Arc::from);
        for sub in &rec.subscriptions {
            let Ok(parsed) = rampart_core::topic::parse_subscription(&sub.filter) else {
                continue;
            };
            let options = SubscriptionOptions {
                qos: QoS::from_u8(sub.qos).unwrap_or(QoS::AtMostOnce),
                no_local: sub.no_local,
                retain_as_published: sub.retain_as_published,
                retain_handling: sub.retain_handling,
            };
            let group: Option<Arc<str>> = sub.share_group.as_deref().map(Arc::from);
            state.subscriptions.insert(
                (group.clone(), Arc::from(sub.filter.as_str())),
                SubRecord {
                    options,
                    subscription_id: sub.subscription_id,
                },
            );
            router.subs.subscribe(
                &parsed.filter,
                group.as_deref(),
                client_id.clone(),
                SubEntry {
                    session: shared.clone(),
                    options,
                    subscription_id: sub.subscription_id,
                },
            );
        }
        shared.set_plain_subscriptions(&state);
        for id in &s.inbound_qos2 {
            state.flight_mut().inbound_qos2.insert(*id);
        }
        let mut max_seq = 0;
        for q in s.queue {
            max_seq = max_seq.max(q.seq);
            // An expired message is never sent; one already sent (in flight) is resent.
            if q.state == QueuedState::Queued && q.message.expiry_at_ms.is_some_and(|t| t <= now) {
                purge.remove_queued(&*client_id, q.seq);
                expired += 1;
                continue;
            }
            let qos = QoS::from_u8(q.granted_qos).unwrap_or(QoS::AtLeastOnce);
            let d = Delivery {
                msg: Arc::new(message_from_record(&q.message)),
                qos,
                retain: q.message.retain,
                subscription_ids: q.subscription_ids,
                shared_group: None,
                seq: q.seq,
                // A queued QoS 1 copy may have gone out before the restart (its sending is
                // not stored); a QoS 2 copy that went out is stored as in flight instead.
                dup: qos == QoS::AtLeastOnce && q.state == QueuedState::Queued,
            };
            queued_total += 1;
            match q.state {
                QueuedState::Queued => shared.push_restored(d),
                QueuedState::Inflight { packet_id } => {
                    let f = state.flight_mut();
                    f.outbound.insert(packet_id, OutFlight::Publish(d));
                    f.outbound_order.push_back(packet_id);
                }
                QueuedState::PubrelPending { packet_id } => {
                    let f = state.flight_mut();
                    f.outbound
                        .insert(packet_id, OutFlight::Released { seq: q.seq });
                    f.outbound_order.push_back(packet_id);
                }
            }
        }
        shared.next_seq.store(max_seq + 1, Ordering::Relaxed);
        let will = rec.will.as_ref().map(will_from_record);
        let mut slot = shared.slot.lock();
        slot.parked = Some(Box::new(state));
        slot.generation += 1;
        let generation = slot.generation;
        drop(slot);
        // Sessions were all disconnected by the restart: their expiry runs from the time
        // they were last seen (or from now, if the broker died while they were connected).
        let since = rec.disconnected_at_ms.unwrap_or(now);
        let elapsed = now.saturating_sub(since) / 1000;
        if rec.expiry_interval_secs != u32::MAX {
            let left = u64::from(rec.expiry_interval_secs).saturating_sub(elapsed);
            crate::timers::schedule_expiry(router, &shared, generation, left as u32);
        }
        if let Some(w) = will {
            let delay = u64::from(rec.will_delay_secs.min(rec.expiry_interval_secs));
            crate::timers::schedule_will(
                router,
                &shared,
                generation,
                delay.saturating_sub(elapsed) as u32,
                w,
            );
        }
    }
    router.commit_detached(purge);
    router
        .queue_metrics
        .expired_purged
        .fetch_add(expired, Ordering::Relaxed);
    (sessions, queued_total)
}
