//! Session expiry and will delay timers, the sweep that purges expired messages from the
//! queues of offline sessions, and the keep-alive wheel of connected clients. Each expiry
//! or will-delay timer is a sleeping task that acts only if the session is still
//! disconnected in the same generation it was armed for.

use crate::router::Router;
use crate::session::SessionShared;
use rampart_store::WriteBatch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
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

/// Granularity of the keep-alive wheel: a keep-alive timeout is noticed up to this late.
pub const KEEPALIVE_TICK: Duration = Duration::from_millis(250);
/// Slots of the wheel: one lap is 64 s. A deadline further ahead waits in its slot and is
/// put back each lap until due (a 65535 s keep alive is seen about 1,500 times).
const KEEPALIVE_SLOTS: u64 = 256;

/// Entries (session, tick at which it is due) of one slot of the wheel.
type WheelSlot = parking_lot::Mutex<Vec<(Weak<SessionShared>, u64)>>;

/// Keep-alive deadlines of the connected clients, on a wheel of coarse ticks turned by one
/// task ([`run_keepalive`]). A tokio timer per connection would add about 112 bytes to every
/// idle connection's task; an entry here is 16 bytes (24 to 32 with the slack of the slot's
/// vector). A connection arms one deadline at a time and re-arms only when woken past it,
/// so the wheel holds about one entry per connection, plus the entries of connections that
/// ended since their deadline was armed (gone when their slot comes round).
pub struct KeepAliveWheel {
    epoch: Instant,
    /// (session, tick) entries by tick modulo the slot count.
    slots: Vec<WheelSlot>,
    /// The last tick whose slot was turned; written under that slot's lock, so that `arm`
    /// never puts an entry into a slot that has just been turned for its tick.
    turned: AtomicU64,
}

impl KeepAliveWheel {
    pub fn new(now: Instant) -> Self {
        KeepAliveWheel {
            epoch: now,
            slots: (0..KEEPALIVE_SLOTS)
                .map(|_| parking_lot::Mutex::new(Vec::new()))
                .collect(),
            turned: AtomicU64::new(0),
        }
    }

    fn slot(&self, tick: u64) -> &WheelSlot {
        &self.slots[(tick % KEEPALIVE_SLOTS) as usize]
    }

    /// Wake `session`'s connection with `keepalive_due` set at `at` or up to one tick later.
    /// Returns the tick armed (see [`KeepAliveWheel::passed`]): 4 bytes for the connection
    /// to keep instead of a 16-byte `Instant` (a `u32` of 250 ms ticks lasts 34 years).
    pub fn arm(&self, session: &Arc<SessionShared>, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.epoch);
        let tick_nanos = KEEPALIVE_TICK.as_nanos();
        // Rounded up: never early.
        let mut tick = u64::try_from(since.as_nanos().div_ceil(tick_nanos)).unwrap_or(u64::MAX);
        loop {
            let mut slot = self.slot(tick).lock();
            let turned = self.turned.load(Ordering::Acquire);
            if tick > turned {
                slot.push((Arc::downgrade(session), tick));
                return u32::try_from(tick).unwrap_or(u32::MAX);
            }
            // Due already: the next slot to turn.
            drop(slot);
            tick = turned + 1;
        }
    }

    /// Whether `now` is at or past `tick` (as returned by `arm`): a wake for that entry has
    /// been or is being delivered.
    pub fn passed(&self, tick: u32, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.epoch);
        since.as_nanos() / KEEPALIVE_TICK.as_nanos() >= u128::from(tick)
    }

    /// Turn the slots of every tick up to `now`; returns the connections woken.
    pub fn turn(&self, now: Instant) -> usize {
        let since = now.saturating_duration_since(self.epoch);
        let target = u64::try_from(since.as_nanos() / KEEPALIVE_TICK.as_nanos()).unwrap_or(0);
        let mut woken = 0;
        let mut tick = self.turned.load(Ordering::Acquire);
        while tick < target {
            tick += 1;
            let mut due = {
                let mut slot = self.slot(tick).lock();
                self.turned.store(tick, Ordering::Release);
                std::mem::take(&mut *slot)
            };
            due.retain(|(session, at)| {
                if *at > tick {
                    // A lap or more ahead: stays.
                    return true;
                }
                if let Some(s) = session.upgrade() {
                    s.keepalive_due();
                    woken += 1;
                }
                false
            });
            if !due.is_empty() {
                self.slot(tick).lock().append(&mut due);
            }
        }
        woken
    }
}

/// Turn the keep-alive wheel every [`KEEPALIVE_TICK`] until shutdown.
pub async fn run_keepalive(router: Arc<Router>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(KEEPALIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                router.keepalive.turn(Instant::now());
            }
            _ = shutdown.changed() => return,
        }
    }
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
                dup: false,
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
        back.slot.lock().conn = ConnHandle::new(7);
        let ended = offline_session(&r, "ended", 4, now);
        ended.slot.lock().dead = true;
        let again = offline_session(&r, "again", 4, now);
        again.slot.lock().generation = 2; // reconnected and left again: a newer entry exists
        assert_eq!(sweep_once(&r, SWEEP_BUDGET, now), 0);
        assert!(r.offline.lock().is_empty());
        assert_eq!(back.queue.lock().items.len(), 4);
    }

    #[test]
    fn keepalive_wheel_wakes_at_the_deadline_not_before() {
        let t0 = Instant::now();
        let wheel = KeepAliveWheel::new(t0);
        let s = Arc::new(SessionShared::new(Arc::from("ka"), 10, 1000));
        let tick = wheel.arm(&s, t0 + Duration::from_millis(1100));
        assert!(!wheel.passed(tick, t0 + Duration::from_millis(1249)));
        assert!(wheel.passed(tick, t0 + Duration::from_millis(1250)));
        assert_eq!(wheel.turn(t0 + Duration::from_millis(1000)), 0);
        assert!(!s.take_keepalive_due());
        // Rounded up to the next tick, never early.
        assert_eq!(wheel.turn(t0 + Duration::from_millis(1249)), 0);
        assert_eq!(wheel.turn(t0 + Duration::from_millis(1250)), 1);
        assert!(s.take_keepalive_due());
        assert!(!s.take_keepalive_due(), "due once per wake");
        // Nothing left on the wheel.
        assert_eq!(wheel.turn(t0 + Duration::from_secs(200)), 0);
    }

    #[test]
    fn keepalive_wheel_keeps_deadlines_beyond_one_lap() {
        let t0 = Instant::now();
        let wheel = KeepAliveWheel::new(t0);
        let s = Arc::new(SessionShared::new(Arc::from("far"), 10, 1000));
        // 100 s is more than one 64 s lap: the slot comes round once before it is due.
        wheel.arm(&s, t0 + Duration::from_secs(100));
        assert_eq!(wheel.turn(t0 + Duration::from_millis(99_900)), 0);
        assert_eq!(wheel.turn(t0 + Duration::from_secs(100)), 1);
        assert!(s.take_keepalive_due());
    }

    #[test]
    fn keepalive_wheel_past_deadline_fires_at_the_next_tick_and_forgets_ended_sessions() {
        let t0 = Instant::now();
        let wheel = KeepAliveWheel::new(t0);
        assert_eq!(wheel.turn(t0 + Duration::from_secs(10)), 0);
        let s = Arc::new(SessionShared::new(Arc::from("late"), 10, 1000));
        // Armed for a tick already turned: goes into the next one, not a lap later.
        wheel.arm(&s, t0 + Duration::from_secs(5));
        assert_eq!(wheel.turn(t0 + Duration::from_millis(10_250)), 1);
        let gone = Arc::new(SessionShared::new(Arc::from("gone"), 10, 1000));
        wheel.arm(&gone, t0 + Duration::from_secs(11));
        drop(gone);
        assert_eq!(wheel.turn(t0 + Duration::from_secs(12)), 0);
    }
}
