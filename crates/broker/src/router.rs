//! Shared broker state and the publish path: match subscribers in the read-mostly index and
//! push one shared `Arc<Message>` into each matching session's bounded queue.

use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::session::{Registry, SessionShared};
use rampart_codec::{QoS, SubscriptionOptions};
use rampart_config::Config;
use rampart_config::SharedStrategy as CfgStrategy;
use rampart_core::index::{SharedStrategy, SubscriptionIndex};
use rampart_core::retained::RetainedIndex;
use rampart_core::topic::TopicFilter;
use rampart_store::{QueuedState, Store, WriteBatch};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// What the index stores per subscription: the session handle itself, so that routing a
/// message never looks a client id up in the registry.
#[derive(Debug, Clone)]
pub struct SubEntry {
    pub session: Arc<SessionShared>,
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

pub type SubKey = Arc<str>;

pub struct Router {
    pub cfg: Arc<Config>,
    pub registry: Registry,
    pub subs: SubscriptionIndex<SubKey, SubEntry>,
    pub retained: RetainedIndex<Arc<Message>>,
    pub metrics: Metrics,
    pub started: Instant,
    strategy: SharedStrategy,
    /// The durable store; `None` with `storage.backend = "memory"`, where nothing is written.
    pub store: Option<Arc<dyn Store>>,
    /// Authentication chain and authorization sources.
    pub auth: Arc<rampart_auth::AuthService>,
    /// Admission, bans, overload and publish rates.
    pub limits: Arc<crate::limits::Limits>,
    /// Session queue and durable-state counters, in $SYS.
    pub queue_metrics: QueueMetrics,
    /// Sessions that went offline with an expiry, with the slot generation they left in:
    /// visited by the expired-message sweep (`timers::sweep_once`). An entry whose session
    /// came back, ended or left again since is dropped when visited. Worst case: one entry
    /// (24 bytes) per disconnection of a session with expiry since the entry was last visited.
    pub(crate) offline: parking_lot::Mutex<VecDeque<(Weak<SessionShared>, u64)>>,
    /// Keep-alive deadlines of the connected clients (`timers::run_keepalive` turns it).
    pub keepalive: crate::timers::KeepAliveWheel,
}

/// Counters of the session queues and their durable copies.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    /// Deliveries refused because the session's queue was at its message or byte cap
    /// (also counted in `publish_dropped`).
    pub refused_full: AtomicU64,
    /// Expired messages removed from queues (and the store) before anyone came to take them:
    /// by the sweep over offline sessions and at restore.
    pub expired_purged: AtomicU64,
    /// Sessions ended because their expiry interval elapsed while disconnected.
    pub sessions_expired: AtomicU64,
}

/// Store writes gathered while routing one message; committed as one batch.
#[derive(Default)]
pub struct PersistCtx {
    pub batch: WriteBatch,
    /// The message as a store record, built once for all persistent targets.
    record: Option<rampart_store::MessageRecord>,
    /// When set, deliveries are collected here instead of queued, to be released with
    /// [`Router::release`] once the batch is durable: no subscriber sees a message before
    /// the publisher could be told it is safe.
    pub deferred: Option<Vec<(Arc<SessionShared>, Delivery)>>,
}

impl PersistCtx {
    pub fn deferring() -> Self {
        PersistCtx {
            deferred: Some(Vec::new()),
            ..Default::default()
        }
    }
}

/// One matched session while merging overlapping subscriptions of a publish.
struct Target {
    session: Arc<SessionShared>,
    qos: QoS,
    retain: bool,
    subscription_ids: Vec<u32>,
}

thread_local! {
    // Reused per worker thread so that a publish does not allocate its match list.
    static TARGETS: RefCell<Vec<Target>> = const { RefCell::new(Vec::new()) };
}

impl Router {
    pub fn new(
        cfg: Arc<Config>,
        store: Option<Arc<dyn Store>>,
        auth: Arc<rampart_auth::AuthService>,
        limits: Arc<crate::limits::Limits>,
    ) -> Self {
        Router {
            registry: Registry::default(),
            subs: SubscriptionIndex::new(),
            retained: RetainedIndex::new(),
            metrics: Metrics::default(),
            started: Instant::now(),
            strategy: match cfg.mqtt.shared_subscription_strategy {
                CfgStrategy::RoundRobin => SharedStrategy::RoundRobin,
                CfgStrategy::Random => SharedStrategy::Random,
                CfgStrategy::HashClientId => SharedStrategy::HashClientId,
                CfgStrategy::HashTopic => SharedStrategy::HashTopic,
                CfgStrategy::Sticky => SharedStrategy::Sticky,
            },
            cfg,
            store,
            auth,
            limits,
            queue_metrics: QueueMetrics::default(),
            offline: parking_lot::Mutex::new(VecDeque::new()),
            keepalive: crate::timers::KeepAliveWheel::new(Instant::now()),
        }
    }

    /// A delivery was refused because the session's queue is full.
    fn note_refused(&self) {
        self.metrics.publish_dropped.fetch_add(1, Ordering::Relaxed);
        self.queue_metrics
            .refused_full
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Route a message whose store writes nobody waits for (wills, $SYS). Returns the number
    /// of sessions it was queued for.
    pub fn publish(&self, msg: &Arc<Message>) -> usize {
        let mut ctx = PersistCtx::deferring();
        let n = self.publish_with(msg, &mut ctx);
        self.commit_detached_then_release(ctx);
        n
    }

    /// Submit the batch, then queue the deliveries: the stored copies are ahead of any
    /// removal a subscriber's acknowledgement causes (the writer commits in order), so an
    /// acknowledged copy never reappears after a restart.
    fn commit_detached_then_release(&self, mut ctx: PersistCtx) {
        self.commit_detached(std::mem::take(&mut ctx.batch));
        self.release(ctx.deferred.take().unwrap_or_default());
    }

    /// Write a batch without waiting for it (its loss in a crash is acceptable).
    pub fn commit_detached(&self, batch: WriteBatch) {
        if let (Some(store), false) = (&self.store, batch.is_empty()) {
            drop(store.write(batch));
        }
    }

    /// Write a batch; `None` when there is nothing to wait for.
    pub fn commit(&self, batch: WriteBatch) -> Option<rampart_store::Commit> {
        match (&self.store, batch.is_empty()) {
            (Some(store), false) => Some(store.write(batch)),
            _ => None,
        }
    }

    /// Route a message, adding the store writes it needs to `ctx`.
    pub fn publish_with(&self, msg: &Arc<Message>, ctx: &mut PersistCtx) -> usize {
        if msg.expires_at.is_some() && msg.is_expired(Instant::now()) {
            return 0;
        }
        let strategy = self.strategy;
        let publisher = msg.publisher.as_deref().unwrap_or("");
        let mut delivered = 0;
        TARGETS.with(|cell| {
            let mut targets = match cell.try_borrow_mut() {
                Ok(t) => t,
                // Re-entrant publish (cannot happen today); nothing sensible to do.
                Err(_) => return,
            };
            targets.clear();
            // Both callbacks deliver; they run one at a time under the index's read lock.
            let ctx_cell = RefCell::new(&mut *ctx);
            let delivered_cell = std::cell::Cell::new(0usize);
            self.subs.for_each_match_all(
                &msg.topic,
                |client, entry| {
                    if entry.options.no_local && msg.publisher.as_deref() == Some(&**client) {
                        return;
                    }
                    if entry.session.plain_subscriptions.load(Ordering::Relaxed) <= 1 {
                        // Cannot match twice: deliver now, no merge.
                        if self.deliver(
                            &entry.session,
                            msg,
                            msg.qos.min(entry.options.qos),
                            entry.options.retain_as_published && msg.retain,
                            entry.subscription_id.into_iter().collect(),
                            None,
                            &mut ctx_cell.borrow_mut(),
                        ) {
                            delivered_cell.set(delivered_cell.get() + 1);
                        }
                        return;
                    }
                    targets.push(Target {
                        session: entry.session.clone(),
                        qos: msg.qos.min(entry.options.qos),
                        retain: entry.options.retain_as_published && msg.retain,
                        subscription_ids: entry.subscription_id.into_iter().collect(),
                    });
                },
                |group| {
                    // One member per shared subscription, preferring connected members
                    // ([MQTT-4.8.2-?]); delivered at once, outside the merge below.
                    let chosen = group.choose(strategy, publisher, |_, e: &SubEntry| {
                        e.session.online.load(Ordering::Relaxed)
                    });
                    if let Some((_, entry)) = chosen {
                        if self.deliver(
                            &entry.session,
                            msg,
                            msg.qos.min(entry.options.qos),
                            entry.options.retain_as_published && msg.retain,
                            entry.subscription_id.into_iter().collect(),
                            Some(group.group_arc().clone()),
                            &mut ctx_cell.borrow_mut(),
                        ) {
                            delivered_cell.set(delivered_cell.get() + 1);
                        }
                    }
                },
            );
            delivered += delivered_cell.get();
            // Overlapping subscriptions of one session become one delivery at the highest
            // granted QoS carrying every subscription identifier ([MQTT-3.3.4-2], [MQTT-3.3.4-3]).
            if targets.len() > 1 {
                targets.sort_unstable_by_key(|t| Arc::as_ptr(&t.session) as usize);
            }
            let mut i = 0;
            while i < targets.len() {
                let mut j = i + 1;
                while j < targets.len() && Arc::ptr_eq(&targets[j].session, &targets[i].session) {
                    j += 1;
                }
                if j - i > 1 {
                    let (head, tail) = targets.split_at_mut(i + 1);
                    let t = &mut head[i];
                    for other in &tail[..j - i - 1] {
                        t.qos = t.qos.max(other.qos);
                        t.retain |= other.retain;
                        t.subscription_ids
                            .extend_from_slice(&other.subscription_ids);
                    }
                }
                let t = &mut targets[i];
                if self.deliver(
                    &t.session,
                    msg,
                    t.qos,
                    t.retain,
                    std::mem::take(&mut t.subscription_ids),
                    None,
                    ctx,
                ) {
                    delivered += 1;
                }
                i = j;
            }
            targets.clear();
        });
        delivered
    }

    /// Queue deliveries collected by a deferring [`PersistCtx`].
    pub fn release(&self, deferred: Vec<(Arc<SessionShared>, Delivery)>) {
        for (session, d) in deferred {
            let seq = d.seq;
            if session.push(d).is_err() {
                self.note_refused();
                if seq != 0 {
                    let mut b = WriteBatch::new();
                    b.remove_queued(&*session.client_id, seq);
                    self.commit_detached(b);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        session: &Arc<SessionShared>,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<u32>,
        shared_group: Option<Arc<str>>,
        ctx: &mut PersistCtx,
    ) -> bool {
        // Offline sessions keep QoS 1 and 2 only; QoS 0 is for whoever is listening now.
        if qos == QoS::AtMostOnce && !session.online.load(Ordering::Relaxed) {
            return false;
        }
        // Overload protection: QoS 0 is shed for subscribers that are already behind.
        if qos == QoS::AtMostOnce
            && self.limits.shed_qos0()
            && !session.queue.lock().items.is_empty()
        {
            self.metrics.publish_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let persist = qos != QoS::AtMostOnce
            && self.store.is_some()
            && session.persistent.load(Ordering::Relaxed);
        if persist && ctx.deferred.is_some() {
            // The queue is checked again when the delivery is released; refusing a message
            // for a queue that is already full now saves writing and then removing its copy.
            let q = session.queue.lock();
            if q.items.len() >= session.max_queued_messages as usize
                || q.bytes + msg.cost() > session.max_queued_bytes
            {
                drop(q);
                self.note_refused();
                return false;
            }
        }
        let seq = if persist {
            session.next_seq.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let d = Delivery {
            msg: msg.clone(),
            qos,
            retain,
            subscription_ids,
            shared_group,
            seq,
            dup: false,
        };
        let record = persist.then(|| {
            let mut message = ctx
                .record
                .get_or_insert_with(|| crate::persist::message_record(msg))
                .clone();
            // The RETAIN flag this subscriber gets (retain as published, or a retained
            // message sent at subscribe time), restored as such after a restart.
            message.retain = retain;
            rampart_store::QueuedRecord {
                seq,
                message,
                state: QueuedState::Queued,
                subscription_ids: d.subscription_ids.clone(),
                granted_qos: qos as u8,
            }
        });
        if let Some(deferred) = &mut ctx.deferred {
            if let Some(r) = record {
                ctx.batch.append_queued(&*session.client_id, r);
            }
            deferred.push((session.clone(), d));
            return true;
        }
        match session.push(d) {
            Ok(()) => {
                if let Some(r) = record {
                    ctx.batch.append_queued(&*session.client_id, r);
                }
                true
            }
            Err(_) => {
                self.note_refused();
                false
            }
        }
    }

    /// Queue `msg` for one session outside the routing walk (a retained message at subscribe
    /// time) with the durability of a routed publish: a persistent session's QoS 1/2 copy
    /// goes into `ctx.batch`, and with a deferring `ctx` the delivery waits in
    /// `ctx.deferred` until [`Router::release`]. Returns false if it was not queued.
    pub fn deliver_to(
        &self,
        session: &Arc<SessionShared>,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<u32>,
        ctx: &mut PersistCtx,
    ) -> bool {
        // The cached record belongs to the previous message.
        ctx.record = None;
        self.deliver(session, msg, qos, retain, subscription_ids, None, ctx)
    }

    /// Store, replace or delete (empty payload) a retained message ([MQTT-3.3.1-5..7]).
    /// Returns false when the retained store is full.
    pub fn retain(&self, msg: &Arc<Message>, batch: &mut WriteBatch) -> bool {
        // $SYS values are regenerated at every interval: not worth a disk write.
        let durable = self.store.is_some() && !msg.topic.starts_with("$SYS");
        if msg.payload.is_empty() {
            if self.retained.remove(&msg.topic).is_some() && durable {
                batch.delete_retained(msg.topic.to_string());
            }
            return true;
        }
        if self.retained.len() as u64 >= self.cfg.mqtt.retained_max_count
            && self.retained.get(&msg.topic).is_none()
        {
            return false;
        }
        self.retained.insert(&msg.topic, msg.clone());
        if durable {
            batch.put_retained(crate::persist::message_record(msg));
        }
        true
    }

    /// Retained messages matching `filter`, unexpired, for delivery at subscribe time.
    pub fn retained_for(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.retained.for_each_match(filter, |_, m| {
            if !m.is_expired(now) {
                out.push(m.clone());
            }
        });
        out
    }
}

impl Router {
    /// End a session (clean start, expiry 0, expiry timer): remove its subscriptions from the
    /// index, empty its queue and hand the QoS 1/2 messages that reached it through a shared
    /// subscription, unacknowledged, to another member of the group ([MQTT-4.8.2-?]: the
    /// Server SHOULD). Its stored state is deleted in the same batch that stores the
    /// redelivered copies, so a crash keeps one or the other, never neither; the new member
    /// gets them once that batch is durable.
    pub fn drop_session_state(
        self: &Arc<Self>,
        session: &SessionShared,
        state: &crate::session::SessionState,
    ) {
        let mut ctx = PersistCtx::deferring();
        if session.persistent.swap(false, Ordering::Relaxed) {
            ctx.batch.delete_session(&*session.client_id);
        }
        for (group, filter) in state.subscriptions.keys() {
            if let Ok(parsed) = rampart_core::topic::parse_subscription(filter) {
                self.subs
                    .unsubscribe(&parsed.filter, group.as_deref(), &session.client_id);
            }
        }
        session
            .plain_subscriptions
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let queued = session.clear_queue();
        self.redeliver_shared(session, queued, state, &mut ctx);
        let deferred = ctx.deferred.take().unwrap_or_default();
        let commit = self.commit(ctx.batch);
        match (commit, tokio::runtime::Handle::try_current()) {
            (Some(commit), Ok(rt)) if !deferred.is_empty() => {
                let router = self.clone();
                rt.spawn(async move {
                    // Released even if the write failed: delivering beats losing.
                    let _ = commit.await;
                    router.release(deferred);
                });
            }
            _ => self.release(deferred),
        }
    }

    /// Choose another member for each shared delivery of a departing session (queued QoS 1/2
    /// and unacknowledged QoS 1): a connected one if possible, else any other member (a
    /// persistent one queues it while offline).
    fn redeliver_shared(
        &self,
        session: &SessionShared,
        queued: Vec<Delivery>,
        state: &crate::session::SessionState,
        ctx: &mut PersistCtx,
    ) {
        let mut pending: Vec<Delivery> = queued
            .into_iter()
            .filter(|d| d.shared_group.is_some() && d.qos != QoS::AtMostOnce)
            .collect();
        let flight = state.flight();
        for id in &flight.outbound_order {
            if let Some(crate::session::OutFlight::Publish(d)) = flight.outbound.get(id) {
                // A QoS 2 message already sent to this member is never handed to another,
                // even though this member's session ends first ([MQTT-4.8.2-5]): the
                // member may have delivered it, and QoS 2 promises once at most.
                if d.shared_group.is_some() && d.qos != QoS::ExactlyOnce {
                    pending.push(d.clone());
                }
            }
        }
        let other = |e: &SubEntry| e.session.client_id != session.client_id;
        for d in pending {
            let Some(group) = d.shared_group.clone() else {
                continue;
            };
            let mut target: Option<SubEntry> = None;
            self.subs.for_each_shared_match(&d.msg.topic, |m| {
                if target.is_some() || m.group() != &*group {
                    return;
                }
                let online = |e: &SubEntry| other(e) && e.session.online.load(Ordering::Relaxed);
                target = m
                    .choose(self.strategy, "", |_, e: &SubEntry| online(e))
                    .map(|(_, e)| e)
                    .filter(|e| online(e))
                    .or_else(|| m.members().iter().map(|(_, e)| e).find(|e| other(e)))
                    .cloned();
            });
            if let Some(entry) = target {
                ctx.record = None;
                self.deliver(
                    &entry.session,
                    &d.msg,
                    d.msg.qos.min(entry.options.qos),
                    d.retain,
                    entry.subscription_id.into_iter().collect(),
                    Some(group),
                    ctx,
                );
            }
        }
    }

    /// Publish a will message (and retain it if asked).
    pub fn publish_will(&self, client_id: &Arc<str>, w: rampart_codec::Will) {
        let now = Instant::now();
        let msg = Arc::new(Message {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            expires_at: w
                .properties
                .message_expiry_interval
                .map(|s| now + std::time::Duration::from_secs(u64::from(s))),
            properties: Message::forwarded_properties(&w.properties),
            publisher: Some(client_id.clone()),
            encoded: Default::default(),
        });
        let mut ctx = PersistCtx::deferring();
        if msg.retain {
            self.retain(&msg, &mut ctx.batch);
        }
        self.publish_with(&msg, &mut ctx);
        self.commit_detached_then_release(ctx);
    }
}
