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
