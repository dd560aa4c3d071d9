//! rampart-store: the persistence trait and its backends.
//!
//! Owns the durable state of the broker: persistent sessions (with subscriptions and will),
//! their queued and in-flight QoS 1/2 messages, inbound QoS 2 packet ids awaiting PUBREL,
//! retained messages and a namespaced key-value space for the broker's other state.
//!
//! It must never: depend on other rampart crates (the broker converts to [`record`] types),
//! wipe or "repair away" a store it cannot read (a damaged or incompatible store is refused
//! with [`StoreError::Corrupt`] / [`StoreError::IncompatibleVersion`] and left byte-for-byte
//! as it was), or acknowledge a batch in [`SyncMode::Always`] before it is on disk.
//!
//! # Durability contract
//! [`Store::write`] returns a [`Commit`]. With [`SyncMode::Always`] (the default) the commit
//! resolves `Ok` only after the batch is in a committed, fsynced redb transaction: it
//! survives `kill -9` and power loss (as far as the disk honours fsync). Batches submitted
//! concurrently share one transaction and one fsync (group commit). With
//! [`SyncMode::Periodic`] the commit resolves once the batch is committed without fsync
//! (visible to reads, not yet synced); a crash loses what was committed in at most the
//! last `interval_ms` plus the duration of one sync. [`MemoryStore`] loses everything when
//! the process ends.
//!
//! Batches commit in submission order. See README.md for the measured restart times.
//!
//! ```
//! use std::sync::Arc;
//! use rampart_store::{RedbStore, Store, StoreOptions, WriteBatch};
//!
//! # fn main() -> Result<(), rampart_store::StoreError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path(), StoreOptions::default())?);
//! let mut batch = WriteBatch::new();
//! batch.put_kv("banned", &b"client-x"[..], &b"until 2030"[..]);
//! // In async code: `store.write(batch).await?`.
//! store.write(batch).wait_blocking()?;
//! let snapshot = store.load_all()?;
//! assert_eq!(snapshot.kv.len(), 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

mod batch;
mod error;
mod memory;
mod probe;
pub mod record;
mod redb_store;

pub use batch::{Op, WriteBatch};
pub use error::StoreError;
pub use memory::MemoryStore;
pub use record::{MessageRecord, QueuedRecord, QueuedState, SessionRecord, SubscriptionRecord};
pub use redb_store::{OpenInfo, RedbStore, FILE_NAME, FORMAT_VERSION};

/// The persistence interface. Object safe: the broker holds an `Arc<dyn Store>`.
///
/// Reads (`load_all`, `check`, `get_kv`, `scan_kv`) block the calling thread on disk I/O;
/// call them at start-up or from `spawn_blocking`. `write` never blocks.
pub trait Store: Send + Sync {
    /// Queues `batch` for the writer and returns at once; the [`Commit`] resolves when the
    /// batch is durable per the store's [`SyncMode`], or with the error that prevented it
    /// (in which case none of the batch was applied).
    fn write(&self, batch: WriteBatch) -> Commit;

    /// Resolves once everything written before it is on disk (an fsync in
    /// [`SyncMode::Periodic`]; in `Always` mode it just orders behind earlier batches).
    fn flush(&self) -> Commit;

    /// Everything needed at start-up, read in one consistent snapshot.
    fn load_all(&self) -> Result<Snapshot, StoreError>;

    /// Decodes every record and checks cross references, reporting instead of failing on
    /// the first problem. Never modifies the store.
    fn check(&self) -> Result<CheckReport, StoreError>;

    fn stats(&self) -> StoreStats;

    fn get_kv(&self, ns: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError>;

    /// All `(key, value)` pairs of a namespace in key order.
    fn scan_kv(&self, ns: &str) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
}

/// When a [`Commit`] resolves relative to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Resolve after the group's transaction is committed with fsync. The default.
    #[default]
    Always,
    /// Resolve after an unsynced commit; fsync every `interval_ms`. A crash (or power loss)
    /// loses at most the batches committed during the last `interval_ms` plus one sync.
    Periodic { interval_ms: u64 },
}

/// Options of [`RedbStore::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub sync: SyncMode,
    /// Batches waiting for the writer before `write` fails fast with
    /// [`StoreError::Overloaded`]. Worst case memory: this many batches as built by the
    /// caller (each bounded by the broker's packet size and fan-out caps).
    pub max_pending_batches: usize,
    /// Upper bound on the ops applied in one group transaction, so that one commit's latency
    /// and its dirty pages stay bounded (about this many records held by redb before fsync).
    pub max_group_ops: usize,
    /// Verify every page checksum of a cleanly closed store when opening it (a full read
    /// of the file, about a second per GB). A store left by a crash is always verified by
    /// the engine's recovery, whatever this says.
    pub verify_on_open: bool,
    /// Page cache of the engine, in bytes.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncMode::Always,
            max_pending_batches: 65_536,
            max_group_ops: 65_536,
            verify_on_open: true,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Awaitable outcome of one [`Store::write`].
#[must_use = "a write is only known durable once its Commit resolves Ok"]
#[derive(Debug)]
pub struct Commit {
    rx: oneshot::Receiver<Result<(), StoreError>>,
}

impl Commit {
    pub(crate) fn channel() -> (oneshot::Sender<Result<(), StoreError>>, Commit) {
        let (tx, rx) = oneshot::channel();
        (tx, Commit { rx })
    }

    pub(crate) fn ready(result: Result<(), StoreError>) -> Commit {
        let (tx, c) = Commit::channel();
        // The receiver is alive in `c`, so this send cannot fail.
        let _ = tx.send(result);
        c
    }

    /// Waits from a thread that is not running async code (tools, tests, the crash child).
    /// Panics if called inside an async runtime, like `oneshot::Receiver::blocking_recv`.
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        self.rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// The result if the commit has already resolved, without waiting.
    pub fn try_result(&mut self) -> Option<Result<(), StoreError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
        }
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            // The writer dropped the sender without answering: it stopped.
            Poll::Ready(Err(_)) => Poll::Ready(Err(StoreError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One session as restored: the record, its queue in `seq` order and its inbound QoS 2 ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub session: SessionRecord,
    pub queue: Vec<QueuedRecord>,
    /// Ascending.
    pub inbound_qos2: Vec<u16>,
}

/// `Debug` never shows the value (password hashes, key digests...).
#[derive(Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub ns: String,
    pub key: Bytes,
    pub value: Bytes,
}

impl std::fmt::Debug for KvEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvEntry")
            .field("ns", &self.ns)
            .field("key", &self.key)
            .field(
                "value",
                &format_args!("<{} bytes redacted>", self.value.len()),
            )
            .finish()
    }
}

/// Everything in the store, as [`Store::load_all`] returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Sorted by client id.
    pub sessions: Vec<SessionSnapshot>,
    /// Sorted by topic.
    pub retained: Vec<MessageRecord>,
    /// Sorted by (ns, key).
    pub kv: Vec<KvEntry>,
    /// Queue entries and inbound ids whose session does not exist; skipped, counted so the
    /// broker can report (and a later purge can remove) them.
    pub orphan_queue_entries: u64,
    pub orphan_inbound_qos2: u64,
    /// The client ids those orphans belong to, sorted, each once: the broker deletes them
    /// (`Op::DeleteSession` removes queue entries and inbound ids with or without a session).
    pub orphan_clients: Vec<String>,
}

/// Result of [`Store::check`]: counts, and every problem found (bounded, see `problems`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub format_version: u32,
    pub sessions: u64,
    pub queued: u64,
    pub queue_states: u64,
    pub inbound_qos2: u64,
    pub retained: u64,
    pub kv: u64,
    pub orphan_queue_entries: u64,
    pub orphan_queue_states: u64,
    pub orphan_inbound_qos2: u64,
    /// Records that failed to decode or disagree with their key: at most
    /// [`CheckReport::MAX_PROBLEMS`] listed; `problem_count` has the full count.
    pub problems: Vec<String>,
    pub problem_count: u64,
}

impl CheckReport {
    pub const MAX_PROBLEMS: usize = 100;

    /// True when nothing is damaged (orphans are not damage: the broker purges them).
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    pub(crate) fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < Self::MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

/// Counters of the writer since open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches whose commit resolved Ok.
    pub batches_committed: u64,
    pub batches_failed: u64,
    pub ops_committed: u64,
    /// Write transactions committed (group commits); lower than `batches_committed` under load.
    pub transactions: u64,
    /// Durable (fsynced) commits.
    pub syncs: u64,
    /// Batches accepted by `write` and not yet resolved.
    pub pending_batches: u64,
    /// Largest number of batches in one transaction.
    pub max_group_batches: u64,
    /// Size of the store file in bytes (0 for memory).
    pub file_bytes: u64,
}
