//! Session expiry and will delay timers, and the sweep that purges expired messages from the
//! queues of offline sessions. Each timer is a sleeping task that acts only if the session is
//! still disconnected in the same generation it was armed for.

use crate::router::Router;
use crate::session::SessionShared;
use rampart_store::WriteBatch;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// End the session `expiry_secs` after disconnection unless the client came back.
/// `u32::MAX` means the session does not expire ([MQTT-3.1.2-?] 0xFFFFFFFF).
/// The session is also put on the expired-message sweep's list while it is away.
pub fn schedule_expiry(
    router: &Arc<Router>,
    session: &Arc<SessionShared>,
    generation: u64,
    expiry_secs: u32,
) {
    router
        .offline
        .lock()
        .push_back((Arc::downgrade(session), generation));
    if expiry_secs == u32::MAX {
        return;
    }
    let router = Arc::downgrade(router);
    let session = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(expiry_secs))).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let mut slot = session.slot.lock();
        if slot.generation != generation || slot.conn.is_some() || slot.dead {
            return;
        }
        slot.dead = true;
        let state = slot.parked.take();
        if let Some(state) = &state {
            router.drop_session_state(&session, state);
        }
        router.registry.remove_if_same(&session);
        drop(slot);
        router
            .queue_metrics
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client_id = %session.client_id, "session expired");
    });
}

/// Publish the will after `delay_secs` unless the client reconnected first.
pub fn schedule_will(
    router: &Arc<Router>,
    session: &Arc<SessionShared>,
    generation: u64,
    delay_secs: u32,
    will: rampart_codec::Will,
) {
    let router = Arc::downgrade(router);
    let session = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(delay_secs))).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        {
            let slot = session.slot.lock();
            // A reconnection bumps the generation and cancels the will ([MQTT-3.1.3-9]).
            if slot.generation != generation || slot.conn.is_some() {
                return;
            }
        }
        router.publish_will(&session.client_id, will);
    });
}

/// How often the expired-message sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Work of one sweep tick: sessions visited plus queue entries examined. A tick stops
/// starting new sessions once it is spent, so its cost is at most this plus one session's
/// queue (`mqtt.max_queued_messages` entries, scanned under that queue's lock). An entry
/// costs a cache miss or two (tens of ns, not measured), so a busy sweep takes a few ms of
/// one core per second. A full pass over the offline sessions takes (sessions + their
/// queued messages) / budget ticks, so an expired message may outlive its expiry by that
/// many seconds (it is never delivered meanwhile: the connection drops it too).
pub const SWEEP_BUDGET: usize = 100_000;

/// Purge expired messages from offline sessions' queues every [`SWEEP_INTERVAL`] until
/// shutdown: without it an offline session's expired messages would hold memory and disk
/// until the client came back.
pub async fn run_sweep(router: Arc<Router>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sweep_once(&router, SWEEP_BUDGET, Instant::now());
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One sweep tick: visits the offline sessions in turn, from where the last tick stopped,
/// removes their expired queued messages (from the store too) and returns how many.
pub fn sweep_once(router: &Router, budget: usize, now: Instant) -> u64 {
    let mut work = 0usize;
    let mut purged = 0u64;
    let mut batch = WriteBatch::new();
    // Each entry at most once per tick: those put back go behind the ones not yet visited.
    let entries = router.offline.lock().len();
    for _ in 0..entries {
        if work >= budget {
            break;
        }
        let Some((weak, generation)) = router.offline.lock().pop_front() else {
            break;
        };
        work += 1;
        let Some(session) = weak.upgrade() else {
            continue;
        };
        {
            let slot = session.slot.lock();
            // Back online (its connection drops expired messages itself), ended, or away
            // again under a newer entry.
            if slot.dead || slot.conn.is_some() || slot.generation != generation {
                continue;
            }
        }
        {
            let mut q = session.queue.lock();
            work += q.items.len();
            let mut freed = 0usize;
            q.items.retain(|d| {
                if !d.msg.is_expired(now) {
                    return true;
                }
                freed += d.msg.cost();
                purged += 1;
                if d.seq != 0 {
                    batch.remove_queued(&*session.client_id, d.seq);
                }
                false
            });
            q.bytes = q.bytes.saturating_sub(freed);
        }
        router.offline.lock().push_back((weak, generation));
    }
    router.commit_detached(batch);
    if purged > 0 {
        router
            .queue_metrics
            .expired_purged
            .fetch_add(purged, Ordering::Relaxed);
    }
    purged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Delivery, Message};
    use crate::session::{ConnHandle, SessionState};
    use rampart_codec::{ProtocolVersion, QoS};
    use rampart_store::{MemoryStore, Store};
    use std::sync::Arc;

    fn router(store: Arc<dyn Store>) -> Arc<Router> {
        let cfg = Arc::new(rampart_config::Config::local_only());
        let auth =
            Arc::new(rampart_auth::AuthService::from_config(&cfg, None).expect("auth service"));
        let limits = crate::limits::Limits::new(&cfg.limits, None);
        Arc::new(Router::new(cfg, Some(store), auth, limits))
    }

    /// An offline persistent session holding `n` stored messages, every other one expired
    /// at `now`; registered for the sweep.
    fn offline_session(r: &Router, id: &str, n: u64, now: Instant) -> Arc<SessionShared> {
        let s = r
            .registry
            .get_or_create(id, || SessionShared::new(Arc::from(id), 1000, usize::MAX));
        s.persistent.store(true, Ordering::Relaxed);
        let mut slot = s.slot.lock();
        slot.parked = Some(Box::new(SessionState::new(
            Arc::from(id),
            ProtocolVersion::V5,
            300,
        )));
        slot.generation = 1;
        drop(slot);
        let mut batch = WriteBatch::new();
        batch.put_session(crate::persist::session_record(
            &SessionState::new(Arc::from(id), ProtocolVersion::V5, 300),
            None,
            0,
            true,
        ));
        for seq in 1..=n {
            let expired = seq % 2 == 0;
            let d = Delivery {
                msg: Arc::new(Message {
                    topic: "t".into(),
                    payload: bytes::Bytes::from(vec![0u8; 10]),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Default::default(),
                    expires_at: Some(if expired {
                        now - Duration::from_secs(1)
                    } else {
                        now + Duration::from_secs(3600)
                    }),
                    publisher: None,
                    encoded: Default::default(),
                }),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
                shared_group: None,
                seq,
            };
            batch.append_queued(
                id,
                crate::persist::queued_record(seq, &d, rampart_store::QueuedState::Queued),
            );
            s.push(d).expect("room");
        }
        r.store
            .as_ref()
            .expect("store")
            .write(batch)
            .try_result()
            .expect("memory store resolves at once")
            .expect("write");
        r.offline.lock().push_back((Arc::downgrade(&s), 1));
        s
    }

    fn stored_queue_len(r: &Router, id: &str) -> usize {
        let snap = r.store.as_ref().expect("store").load_all().expect("load");
        snap.sessions
            .iter()
            .find(|s| s.session.client_id == id)
            .map_or(0, |s| s.queue.len())
    }

    #[test]
    fn sweep_purges_expired_messages_from_queue_and_store() {
        let r = router(Arc::new(MemoryStore::new()));
        let now = Instant::now();
        let s = offline_session(&r, "a", 10, now);
        let bytes_before = s.queue.lock().bytes;
        assert_eq!(sweep_once(&r, SWEEP_BUDGET, now), 5);
        let q = s.queue.lock();
        assert_eq!(q.items.len(), 5);
        assert!(
            q.items.iter().all(|d| d.seq % 2 == 1),
            "only expired ones go"
        );
        assert_eq!(q.bytes, bytes_before / 2);
        drop(q);
        assert_eq!(stored_queue_len(&r, "a"), 5);
        assert_eq!(r.queue_metrics.expired_purged.load(Ordering::Relaxed), 5);
        // Still offline: it stays on the list for later ticks, which find nothing more.
        assert_eq!(r.offline.lock().len(), 1);
        assert_eq!(sweep_once(&r, SWEEP_BUDGET, now), 0);
    }

    #[test]
    fn sweep_work_per_tick_is_bounded_and_resumes_where_it_stopped() {
        let r = router(Arc::new(MemoryStore::new()));
        let now = Instant::now();
        let sessions: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| offline_session(&r, id, 10, now))
            .collect();
        // Budget 5: the first session (1 + 10 entries of work) spends it.
        let left = |s: &Arc<SessionShared>| s.queue.lock().items.len();
        assert_eq!(sweep_once(&r, 5, now), 5);
        assert_eq!(sessions.iter().map(left).collect::<Vec<_>>(), [5, 10, 10]);
        assert_eq!(sweep_once(&r, 5, now), 5);
        assert_eq!(sweep_once(&r, 5, now), 5);
        assert_eq!(sessions.iter().map(left).collect::<Vec<_>>(), [5, 5, 5]);
        for id in ["a", "b", "c"] {
            assert_eq!(stored_queue_len(&r, id), 5);
        }
    }

    #[test]
    fn sweep_drops_sessions_that_came_back_or_ended() {
        let r = router(Arc::new(MemoryStore::new()));
        let now = Instant::now();
        let back = offline_session(&r, "back", 4, now);
        back.slot.lock().conn = Some(ConnHandle { id: 7 });
        let ended = offline_session(&r, "ended", 4, now);
        ended.slot.lock().dead = true;
        let again = offline_session(&r, "again", 4, now);
        again.slot.lock().generation = 2; // reconnected and left again: a newer entry exists
        assert_eq!(sweep_once(&r, SWEEP_BUDGET, now), 0);
        assert!(r.offline.lock().is_empty());
        assert_eq!(back.queue.lock().items.len(), 4);
    }
}
