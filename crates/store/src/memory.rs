//! The in-memory backend: same semantics as [`crate::RedbStore`], nothing on disk.
//!
//! Everything is lost when the process ends. Meant for `storage = "memory"` deployments that
//! accept that, and for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bytes::Bytes;

use crate::{
    CheckReport, Commit, KvEntry, MessageRecord, Op, QueuedRecord, SessionRecord, SessionSnapshot,
    Snapshot, Store, StoreError, StoreStats, WriteBatch, FORMAT_VERSION,
};

#[derive(Default)]
struct State {
    sessions: BTreeMap<String, SessionRecord>,
    queue: BTreeMap<(String, u64), QueuedRecord>,
    inbound: BTreeSet<(String, u16)>,
    retained: BTreeMap<String, MessageRecord>,
    kv: BTreeMap<(String, Bytes), Bytes>,
    stats: StoreStats,
}

/// A [`Store`] held in process memory. Writes resolve immediately. Loses everything on
/// restart. Memory cost: the sum of all records stored, plus B-tree overhead.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied batch visible in a way
        // that matters more than stopping the broker, and the state is plain data: go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn client_range(cid: &str) -> std::ops::RangeInclusive<(String, u64)> {
    (cid.to_string(), 0)..=(cid.to_string(), u64::MAX)
}

impl State {
    fn apply(&mut self, op: Op) {
        match op {
            Op::PutSession(s) => {
                self.sessions.insert(s.client_id.clone(), s);
            }
            Op::DeleteSession { client_id } => {
                self.sessions.remove(&client_id);
                let keys: Vec<_> = self
                    .queue
                    .range(client_range(&client_id))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    self.queue.remove(&k);
                }
                let ids: Vec<_> = self
                    .inbound
                    .range((client_id.clone(), 0)..=(client_id.clone(), u16::MAX))
                    .cloned()
                    .collect();
                for k in ids {
                    self.inbound.remove(&k);
                }
            }
            Op::AppendQueued { client_id, record } => {
                self.queue.insert((client_id, record.seq), record);
            }
            Op::SetQueuedState {
                client_id,
                seq,
                state,
            } => {
                if let Some(r) = self.queue.get_mut(&(client_id, seq)) {
                    r.state = state;
                }
            }
            Op::RemoveQueued { client_id, seq } => {
                self.queue.remove(&(client_id, seq));
            }
            Op::PutRetained(m) => {
                self.retained.insert(m.topic.clone(), m);
            }
            Op::DeleteRetained { topic } => {
                self.retained.remove(&topic);
            }
            Op::PutInboundQos2 {
                client_id,
                packet_id,
            } => {
                self.inbound.insert((client_id, packet_id));
            }
            Op::DeleteInboundQos2 {
                client_id,
                packet_id,
            } => {
                self.inbound.remove(&(client_id, packet_id));
            }
            Op::PutKv { ns, key, value } => {
                self.kv.insert((ns, key), value);
            }
            Op::DeleteKv { ns, key } => {
                self.kv.remove(&(ns, key));
            }
        }
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: WriteBatch) -> Commit {
        let mut st = self.lock();
        let n = batch.ops.len() as u64;
        for op in batch.ops {
            st.apply(op);
        }
        st.stats.batches_committed += 1;
        st.stats.ops_committed += n;
        st.stats.transactions += 1;
        st.stats.max_group_batches = 1;
        Commit::ready(Ok(()))
    }

    fn flush(&self) -> Commit {
        Commit::ready(Ok(()))
    }

    fn load_all(&self) -> Result<Snapshot, StoreError> {
        let st = self.lock();
        let mut snap = Snapshot::default();
        let mut by_id: BTreeMap<&str, SessionSnapshot> = st
            .sessions
            .iter()
            .map(|(k, s)| {
                (
                    k.as_str(),
                    SessionSnapshot {
                        session: s.clone(),
                        queue: Vec::new(),
                        inbound_qos2: Vec::new(),
                    },
                )
            })
            .collect();
        for ((cid, _), r) in &st.queue {
            match by_id.get_mut(cid.as_str()) {
                Some(s) => s.queue.push(r.clone()),
                None => {
                    snap.orphan_queue_entries += 1;
                    snap.orphan_clients.push(cid.clone());
                }
            }
        }
        for (cid, id) in &st.inbound {
            match by_id.get_mut(cid.as_str()) {
                Some(s) => s.inbound_qos2.push(*id),
                None => {
                    snap.orphan_inbound_qos2 += 1;
                    snap.orphan_clients.push(cid.clone());
                }
            }
        }
        snap.orphan_clients.sort_unstable();
        snap.orphan_clients.dedup();
        snap.sessions = by_id.into_values().collect();
        snap.retained = st.retained.values().cloned().collect();
        snap.kv = st
            .kv
            .iter()
            .map(|((ns, key), value)| KvEntry {
                ns: ns.clone(),
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        Ok(snap)
    }

    fn check(&self) -> Result<CheckReport, StoreError> {
        let snap = self.load_all()?;
        let st = self.lock();
        Ok(CheckReport {
            format_version: FORMAT_VERSION,
            sessions: st.sessions.len() as u64,
            queued: st.queue.len() as u64,
            queue_states: 0,
            inbound_qos2: st.inbound.len() as u64,
            retained: st.retained.len() as u64,
            kv: st.kv.len() as u64,
            orphan_queue_entries: snap.orphan_queue_entries,
            orphan_queue_states: 0,
            orphan_inbound_qos2: snap.orphan_inbound_qos2,
            problems: Vec::new(),
            problem_count: 0,
        })
    }

    fn stats(&self) -> StoreStats {
        self.lock().stats.clone()
    }

    fn get_kv(&self, ns: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .lock()
            .kv
            .get(&(ns.to_string(), Bytes::copy_from_slice(key)))
            .cloned())
    }

    fn scan_kv(&self, ns: &str) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        Ok(self
            .lock()
            .kv
            .range((ns.to_string(), Bytes::new())..)
            .take_while(|((n, _), _)| n == ns)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
