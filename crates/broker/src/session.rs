//! Sessions: the part that outlives a connection.
//!
//! A session is split in two so that the publish path never waits for a connection task:
//! - [`SessionShared`] lives in the registry and in every subscription entry. Routers push
//!   deliveries into its bounded queue under a per-session lock and wake the owning task.
//! - [`SessionState`] (subscriptions, in-flight windows, packet ids) is owned by the connection
//!   task while a client is connected, and parked in the slot while it is not. It is plain data
//!   so that the store can persist it and a cluster can move it.

use crate::message::Delivery;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use rampart_codec::{ProtocolVersion, SubscriptionOptions};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Why a queue refused a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    Full,
}

/// The bounded queue of deliveries not yet written to the client.
#[derive(Debug, Default)]
pub struct Queue {
    pub items: VecDeque<Delivery>,
    /// Sum of `Message::cost` over `items`, checked against the byte cap.
    pub bytes: usize,
}

/// Commands to a connection task from the rest of the broker.
#[derive(Debug)]
pub enum Control {
    /// Another connection with the same client id arrived: park the session state in the slot,
    /// send DISCONNECT 0x8E (v5), close, then reply. `session_ends` tells whether the newcomer
    /// asked for a clean start (then the old session, and its will delay, end now).
    TakeOver {
        session_ends: bool,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// The connection currently attached to a session. Requests to it go through
/// `Slot::request` and the session's `Notify` (no channel per connection: an idle connection
/// should cost as little memory as possible).
/// Non-zero (connection ids start at 1), so that `Option<ConnHandle>` is 8 bytes of every
/// session's slot.
#[derive(Debug)]
pub struct ConnHandle {
    id: NonZeroU64,
}

impl ConnHandle {
    /// `None` for 0, which `Registry::alloc_conn_id` never hands out.
    pub fn new(id: u64) -> Option<Self> {
        NonZeroU64::new(id).map(|id| ConnHandle { id })
    }

    pub fn id(&self) -> u64 {
        self.id.get()
    }
}

/// Registry-side record of one client id.
#[derive(Debug, Default)]
pub struct Slot {
    pub conn: Option<ConnHandle>,
    /// The session while no connection owns it.
    pub parked: Option<Box<SessionState>>,
    /// Bumped at every attach, so timers (expiry, will delay) set for an older
    /// disconnection can tell that the client came back.
    pub generation: u64,
    /// Set when the session was removed from the registry: a connection that found this
    /// handle just before must look the client id up again.
    pub dead: bool,
    /// A request for the attached connection (by id), picked up when it next wakes, or
    /// answered when it finishes. Boxed: requests are rare and every session carries this.
    pub request: Option<Box<(u64, Control)>>,
}

#[derive(Debug)]
pub struct SessionShared {
    pub client_id: Arc<str>,
    pub queue: Mutex<Queue>,
    /// The attached connection's task, woken by `wake`. One waiter at most (the attached
    /// connection), so a waker slot and a flag do what a `Notify` would, and the connection
    /// keeps no `Notified` future while idle.
    waker: AtomicWaker,
    /// Set by `wake`, taken by `poll_woken`: a wake before the task parks is not lost.
    woken: AtomicBool,
    /// Set by the keep-alive wheel with a wake: the connection's keep-alive deadline passed.
    keepalive_due: AtomicBool,
    /// True while a connection is attached; offline sessions do not queue QoS 0.
    pub online: AtomicBool,
    /// Set with `Slot::request`, so the connection checks the slot only when needed.
    pub request_pending: AtomicBool,
    pub slot: Mutex<Slot>,
    /// Caps, copied from the config at creation so that the publish path reads no config.
    /// u32 like `mqtt.max_queued_messages`: every session pays for each byte here.
    pub max_queued_messages: u32,
    pub max_queued_bytes: usize,
    /// True while the session outlives its connection (expiry > 0) and a durable store is
    /// configured: its QoS 1/2 deliveries are written to the store.
    pub persistent: AtomicBool,
    /// Next stored-queue sequence number.
    pub next_seq: AtomicU64,
    /// Number of non-shared subscriptions. With at most one, a publish cannot match this
    /// session twice, so the router skips merging overlapping matches for it.
    pub plain_subscriptions: AtomicU32,
}

impl SessionShared {
    pub fn new(client_id: Arc<str>, max_queued_messages: usize, max_queued_bytes: usize) -> Self {
        SessionShared {
            client_id,
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            keepalive_due: AtomicBool::new(false),
            online: AtomicBool::new(false),
            request_pending: AtomicBool::new(false),
            slot: Mutex::new(Slot::default()),
            max_queued_messages: u32::try_from(max_queued_messages).unwrap_or(u32::MAX),
            max_queued_bytes,
            persistent: AtomicBool::new(false),
            next_seq: AtomicU64::new(1),
            plain_subscriptions: AtomicU32::new(0),
        }
    }

    /// Wake the attached connection's task (or the next one to poll, if none is parked).
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once `wake` has been called since the last time this returned ready. The flag is
    /// checked again after registering, so a wake racing with the registration is seen.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The keep-alive wheel's wake: the connection should check its keep alive.
    pub fn keepalive_due(&self) {
        self.keepalive_due.store(true, Ordering::Release);
        self.wake();
    }

    /// True once after each `keepalive_due`.
    pub fn take_keepalive_due(&self) -> bool {
        self.keepalive_due.load(Ordering::Relaxed)
            && self.keepalive_due.swap(false, Ordering::AcqRel)
    }

    /// Post a request to the attached connection `conn_id` and wake it.
    pub fn post(&self, slot: &mut Slot, conn_id: u64, c: Control) {
        slot.request = Some(Box::new((conn_id, c)));
        self.request_pending.store(true, Ordering::Release);
        self.wake();
    }

    /// The request posted for connection `conn_id`, if any.
    pub fn take_request(&self, conn_id: u64) -> Option<Control> {
        if !self.request_pending.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.slot.lock();
        match slot.request.take() {
            Some(r) if r.0 == conn_id => {
                self.request_pending.store(false, Ordering::Release);
                Some(r.1)
            }
            other => {
                slot.request = other;
                None
            }
        }
    }

    pub fn set_plain_subscriptions(&self, state: &SessionState) {
        let n = state
            .subscriptions
            .keys()
            .filter(|(g, _)| g.is_none())
            .count();
        self.plain_subscriptions
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Restore a stored delivery at start-up: stored state is never refused.
    pub fn push_restored(&self, d: Delivery) {
        let mut q = self.queue.lock();
        q.bytes += d.msg.cost();
        q.items.push_back(d);
    }

    /// Queue one delivery and wake the owner. Overflow policy: the newest delivery is
    /// refused and counted (the queue keeps the oldest, which preserves order per topic).
    pub fn push(&self, d: Delivery) -> Result<(), QueueRefusal> {
        let cost = d.msg.cost();
        {
            let mut q = self.queue.lock();
            let full = q.items.len() >= self.max_queued_messages as usize;
            if full || q.bytes + cost > self.max_queued_bytes {
                return Err(QueueRefusal::Full);
            }
            q.bytes += cost;
            q.items.push_back(d);
        }
        self.wake();
        Ok(())
    }

    /// Push to the front, for deliveries handed back (shared-subscription redelivery).
    pub fn push_front(&self, d: Delivery) {
        {
            let mut q = self.queue.lock();
            q.bytes += d.msg.cost();
            q.items.push_front(d);
        }
        self.wake();
    }

    pub fn clear_queue(&self) -> Vec<Delivery> {
        let mut q = self.queue.lock();
        q.bytes = 0;
        q.items.drain(..).collect()
    }
}

/// One subscription as the session remembers it (the index holds the routing copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRecord {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// Outbound QoS 1/2 message waiting for the client.
#[derive(Debug, Clone)]
pub enum OutFlight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Delivery),
    /// PUBREC received, PUBREL sent, waiting for PUBCOMP. `seq` is the stored queue entry
    /// (0 if not persisted), removed at PUBCOMP.
    Released { seq: u64 },
}

/// The session state that survives disconnection: plain data, persisted by the store.
#[derive(Debug)]
pub struct SessionState {
    pub client_id: Arc<str>,
    pub protocol: ProtocolVersion,
    /// Seconds; 0 ends the session with the connection; u32::MAX never expires.
    pub expiry_interval: u32,
    /// Key: (share group, filter) as subscribed. Ordered maps here and below: they carry no
    /// per-session hasher state (16 bytes each, for every idle session) and are small.
    pub subscriptions: BTreeMap<(Option<Arc<str>>, Arc<str>), SubRecord>,
    /// QoS 1/2 messages in flight, boxed and created on first use: an idle session has none,
    /// and the three empty collections would cost it 80 bytes (see [`SessionState::flight`]).
    flight: Option<Box<InFlight>>,
    pub next_packet_id: u16,
    /// The identity that owns the session (`rampart_auth::Identity::owner_key`): while the
    /// session is offline, another identity may not take it over. `None`: created in open
    /// development mode or restored from a record that names no owner; the next
    /// authenticated client adopts it.
    pub owner: Option<Arc<str>>,
}

impl SessionState {
    pub fn new(client_id: Arc<str>, protocol: ProtocolVersion, expiry_interval: u32) -> Self {
        SessionState {
            client_id,
            protocol,
            expiry_interval,
            subscriptions: BTreeMap::new(),
            flight: None,
            next_packet_id: 1,
            owner: None,
        }
    }

    /// Next free outbound packet id, skipping ids still in flight. `None` if all 65535 are
    /// in use (cannot happen while the in-flight window is capped below that).
    pub fn alloc_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.flight().outbound.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    pub fn forget_outbound(&mut self, id: u16) {
        let Some(f) = self.flight.as_mut() else {
            return;
        };
        f.outbound.remove(&id);
        if f.outbound_order.front() == Some(&id) {
            f.outbound_order.pop_front();
        } else if let Some(pos) = f.outbound_order.iter().position(|x| *x == id) {
            f.outbound_order.remove(pos);
        }
    }

    /// True if `id` was an inbound QoS 2 packet id awaiting its PUBREL.
    pub fn forget_inbound_qos2(&mut self, id: u16) -> bool {
        self.flight
            .as_mut()
            .is_some_and(|f| f.inbound_qos2.remove(&id))
    }

    /// What is in flight (empty collections while nothing is).
    pub fn flight(&self) -> &InFlight {
        self.flight.as_deref().unwrap_or(&NO_FLIGHT)
    }

    /// What is in flight, for a change: allocated here if nothing was.
    pub fn flight_mut(&mut self) -> &mut InFlight {
        self.flight.get_or_insert_with(Default::default)
    }

    /// Frees the in-flight collections once nothing is in flight (after a burst).
    pub fn shrink(&mut self) {
        if self.flight.as_ref().is_some_and(|f| f.is_empty()) {
            self.flight = None;
        }
    }
}

/// The QoS 1/2 state of a session's messages in flight (part of [`SessionState`]).
#[derive(Debug, Default)]
pub struct InFlight {
    /// Ordered by packet id allocation order is not needed: resend order is by insertion,
    /// tracked with `outbound_order`.
    pub outbound: BTreeMap<u16, OutFlight>,
    /// Packet ids in the order they were sent, for in-order resend ([MQTT-4.6.0-1]).
    pub outbound_order: VecDeque<u16>,
    /// Inbound QoS 2 packet ids whose PUBREC was sent and whose PUBREL has not arrived: a
    /// re-sent PUBLISH with one of these ids is not routed again (exactly once).
    pub inbound_qos2: BTreeSet<u16>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.outbound.is_empty() && self.outbound_order.is_empty() && self.inbound_qos2.is_empty()
    }
}

/// What [`SessionState::flight`] shows for a session with nothing in flight.
static NO_FLIGHT: InFlight = InFlight {
    outbound: BTreeMap::new(),
    outbound_order: VecDeque::new(),
    inbound_qos2: BTreeSet::new(),
};

/// All sessions by client id, sharded so that connects on different cores rarely contend.
pub struct Registry {
    /// Each shard's map has its own random aHash keys: independent of the shard choice (keys
    /// that share a shard would otherwise share their low hash bits and crowd the same
    /// buckets), and far cheaper than SipHash on the CONNECT path, where it re-hashed every
    /// client id whenever a shard grew.
    shards: Vec<Mutex<ShardMap>>,
    /// Randomly seeded per process, so that chosen client ids cannot pile into one shard.
    hasher: ahash::RandomState,
    pub next_conn_id: AtomicU64,
    /// Set at shutdown: connections check it whenever they wake, and `close` wakes them all
    /// through their sessions (a shutdown future per connection would cost every idle
    /// connection its size).
    closing: AtomicBool,
}

const REGISTRY_SHARDS: usize = 64;

/// The sessions of one shard as a set keyed by their own client ids: a slot is the 8-byte
/// `Arc`, not a copy of the 16-byte `Arc<str>` key beside it (every session pays for its
/// slot, at the table's load factor).
type ShardMap = HashSet<Registered, ahash::RandomState>;

/// A registered session: hashes and compares as its client id, so that the set is looked
/// up by `&str`.
struct Registered(Arc<SessionShared>);

impl std::borrow::Borrow<str> for Registered {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl std::hash::Hash for Registered {
    // As `str` hashes, which `Borrow<str>` requires.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (*self.0.client_id).hash(h);
    }
}

impl PartialEq for Registered {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Registered {}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(ShardMap::with_hasher(ahash::RandomState::new())))
                .collect(),
            hasher: ahash::RandomState::new(),
            next_conn_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
        }
    }
}

impl Registry {
    fn shard(&self, id: &str) -> &Mutex<ShardMap> {
        let h = self.hasher.hash_one(id);
        &self.shards[(h as usize) % REGISTRY_SHARDS]
    }

    pub fn get_or_create(
        &self,
        id: &str,
        make: impl FnOnce() -> SessionShared,
    ) -> Arc<SessionShared> {
        let mut m = self.shard(id).lock();
        if let Some(s) = m.get(id) {
            return s.0.clone();
        }
        let s = Arc::new(make());
        m.insert(Registered(s.clone()));
        s
    }

    pub fn get(&self, id: &str) -> Option<Arc<SessionShared>> {
        self.shard(id).lock().get(id).map(|s| s.0.clone())
    }

    /// Remove `s` only if it is still the registered session for its client id.
    pub fn remove_if_same(&self, s: &Arc<SessionShared>) -> bool {
        let mut m = self.shard(&s.client_id).lock();
        match m.get(&*s.client_id) {
            Some(cur) if Arc::ptr_eq(&cur.0, s) => {
                m.remove(&*s.client_id);
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn alloc_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Ask every connection to close (shutdown). A connection attaches its session here
    /// before it first checks `closing`, and the flag is set before the shards are walked,
    /// so each connection either sees the flag or is woken here. Costs one pass over the
    /// sessions, under each shard's lock in turn.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for shard in &self.shards {
            for s in shard.lock().iter() {
                s.0.wake();
            }
        }
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle session carries no in-flight collections; they come with the first message
    /// in flight and go once it has been acknowledged and the state is shrunk.
    #[test]
    fn in_flight_state_is_allocated_only_while_used() {
        let mut s = SessionState::new(Arc::from("c"), ProtocolVersion::V311, 0);
        assert!(s.flight.is_none());
        assert!(!s.forget_inbound_qos2(7));
        s.forget_outbound(3);
        assert_eq!(s.alloc_packet_id(), Some(1));
        assert!(s.flight.is_none());
        let f = s.flight_mut();
        f.outbound.insert(2, OutFlight::Released { seq: 0 });
        f.outbound_order.push_back(2);
        f.inbound_qos2.insert(7);
        // Packet id 2 is in flight: it is skipped.
        assert_eq!(s.alloc_packet_id(), Some(3));
        s.shrink();
        assert!(s.flight.is_some());
        s.forget_outbound(2);
        assert!(s.forget_inbound_qos2(7));
        assert!(s.flight().outbound_order.is_empty());
        s.shrink();
        assert!(s.flight.is_none());
    }

    /// The registry finds a session by its client id and removes only the session it holds.
    #[test]
    fn registry_keys_sessions_by_their_client_id() {
        let r = Registry::default();
        fn make(id: &'static str) -> impl FnOnce() -> SessionShared {
            move || SessionShared::new(Arc::from(id), 10, 1000)
        }
        let a = r.get_or_create("a", make("a"));
        assert!(Arc::ptr_eq(&r.get_or_create("a", make("a")), &a));
        let b = r.get_or_create("b", make("b"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&r.get("b").unwrap(), &b));
        assert!(r.get("c").is_none());
        assert_eq!(r.len(), 2);
        let stale = Arc::new(SessionShared::new(Arc::from("a"), 10, 1000));
        assert!(!r.remove_if_same(&stale));
        assert!(r.remove_if_same(&a));
        assert!(r.get("a").is_none());
        assert_eq!(r.len(), 1);
    }
}
