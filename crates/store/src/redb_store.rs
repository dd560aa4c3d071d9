//! The embedded backend: one redb file, one writer thread doing group commit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{
    Builder, Database, DatabaseError, Durability, ReadOnlyDatabase, ReadTransaction,
    ReadableDatabase, ReadableTable, Table, TableDefinition, TableError, WriteTransaction,
};
use tokio::sync::oneshot;

use crate::record::{decode, encode, QueueValue, QueuedState};
use crate::{
    CheckReport, Commit, KvEntry, MessageRecord, Op, QueuedRecord, SessionRecord, SessionSnapshot,
    Snapshot, Store, StoreError, StoreOptions, StoreStats, SyncMode, WriteBatch,
};

/// Store-wide format version, kept in the meta table. Bump on any incompatible change of
/// tables or keys; records carry their own schema byte.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the store file inside the data directory.
pub const FILE_NAME: &str = "rampart.redb";

const META_FORMAT_KEY: &str = "format_version";
const META_WRITER_KEY: &str = "written_by";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// Delivery state updates live apart from the message so that a PUBACK or PUBREC rewrites
/// a few bytes, not the whole payload. Present only once the state changed after append.
const QUEUE_STATE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue_state");
const INBOUND_QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("inbound_qos2");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const KV: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("kv");

pub(crate) fn map_db_error(e: DatabaseError, what: &str) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: what.to_string(),
        },
        DatabaseError::Storage(s) => map_storage(s, what),
        DatabaseError::UpgradeRequired(v) => StoreError::Corrupt {
            what: format!("the storage engine's file format {v} is not the one this build writes"),
        },
        other => StoreError::backend(what, other),
    }
}

fn map_storage(e: redb::StorageError, what: &str) -> StoreError {
    match e {
        redb::StorageError::Corrupted(m) => StoreError::Corrupt {
            what: format!("{what}: {m}"),
        },
        // The engine reports a bad header or a short file as these I/O kinds; a failing
        // disk shows up as other kinds (EIO and friends).
        redb::StorageError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Corrupt {
                what: format!("{what}: {io}"),
            }
        }
        redb::StorageError::Io(io) => StoreError::io(what, &io),
        other => StoreError::backend(what, other),
    }
}

trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

macro_rules! impl_ctx {
    ($($t:ty => $f:expr),* $(,)?) => {$(
        impl<T> Ctx<T> for Result<T, $t> {
            fn ctx(self, what: &str) -> Result<T, StoreError> {
                #[allow(clippy::redundant_closure_call)]
                self.map_err(|e| ($f)(e, what))
            }
        }
    )*};
}

impl_ctx!(
    redb::StorageError => map_storage,
    DatabaseError => map_db_error,
    redb::TransactionError => |e: redb::TransactionError, w: &str| match e {
        redb::TransactionError::Storage(s) => map_storage(s, w),
        o => StoreError::backend(w, o),
    },
    redb::CommitError => |e: redb::CommitError, w: &str| match e {
        redb::CommitError::Storage(s) => map_storage(s, w),
        o => StoreError::backend(w, o),
    },
    TableError => |e: TableError, w: &str| match e {
        TableError::Storage(s) => map_storage(s, w),
        TableError::TableDoesNotExist(t) => StoreError::Corrupt { what: format!("table {t} is missing") },
        TableError::TableTypeMismatch { table, .. } => StoreError::Corrupt { what: format!("table {table} has the wrong key or value type") },
        o => StoreError::backend(w, o),
    },
    redb::SetDurabilityError => |e, w: &str| StoreError::backend(w, e),
);

/// Runs `f`, turning a panic inside the storage engine (which a damaged file can cause)
/// into a typed error instead of taking the broker down.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(StoreError::Corrupt {
            what: format!("the storage engine failed while {what}"),
        })
    })
}

enum Msg {
    Write(WriteBatch, oneshot::Sender<Result<(), StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Shutdown,
}

#[derive(Default)]
struct Counters {
    batches_committed: AtomicU64,
    batches_failed: AtomicU64,
    ops_committed: AtomicU64,
    transactions: AtomicU64,
    syncs: AtomicU64,
    pending: AtomicU64,
    max_group_batches: AtomicU64,
}

struct Shared {
    db: Database,
    counters: Counters,
    path: PathBuf,
}

/// A [`Store`] in `<dir>/rampart.redb`. Dropping it stops the writer after it has committed
/// (and, in periodic mode, synced) everything submitted before.
pub struct RedbStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    opts: StoreOptions,
    info: OpenInfo,
}

/// What happened while opening, for the broker to log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenInfo {
    /// The store was not closed cleanly (crash, kill -9, power loss) and was recovered.
    pub recovered_from_crash: bool,
    /// Recovery found the newest commit torn (the process died or power failed before its
    /// fsync returned) and used the previous one. That commit was never acknowledged in
    /// `SyncMode::Always`; in periodic mode this is the documented loss window. Only
    /// detected when `verify_on_open` is set.
    pub rolled_back_torn_commit: bool,
    /// Every page checksum was verified before use.
    pub verified: bool,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// Reads and checks the format version, if the meta table exists.
fn read_format(txn: &ReadTransaction) -> Result<Option<u32>, StoreError> {
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e).ctx("opening the meta table"),
    };
    let v = meta
        .get(META_FORMAT_KEY)
        .ctx("reading the format version")?;
    let Some(v) = v else {
        return Err(StoreError::Corrupt {
            what: "the meta table has no format version".to_string(),
        });
    };
    let bytes: [u8; 4] = v.value().try_into().map_err(|_| StoreError::Corrupt {
        what: "the format version is not 4 bytes".to_string(),
    })?;
    Ok(Some(u32::from_le_bytes(bytes)))
}

fn expect_format(found: Option<u32>, has_tables: bool) -> Result<bool, StoreError> {
    match found {
        Some(FORMAT_VERSION) => Ok(true),
        Some(found) => Err(StoreError::IncompatibleVersion {
            found,
            expected: FORMAT_VERSION,
        }),
        None if has_tables => Err(StoreError::Corrupt {
            what: "the meta table is missing (not a rampart store, or damaged)".to_string(),
        }),
        None => Ok(false),
    }
}

fn has_tables(txn: &ReadTransaction) -> Result<bool, StoreError> {
    Ok(txn.list_tables().ctx("listing tables")?.next().is_some())
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// A store written by another format version fails with
    /// [`StoreError::IncompatibleVersion`], a damaged one with [`StoreError::Corrupt`], in
    /// both cases without writing a byte. A store left by a crash is recovered by the engine
    /// (it rebuilds its allocator state from checksummed trees; this writes the file).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<RedbStore, StoreError> {
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io("creating the data directory", &e))?;
        // The store holds sessions, messages and (later) password hashes: owner only (C2).
        // An existing directory keeps the operator's choice; doctor reports it.
        if created_dir {
            set_mode(dir, 0o700)?;
        }
        let path = dir.join(FILE_NAME);
        let display = path.display().to_string();
        let existing = match std::fs::metadata(&path) {
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::io("reading the store file metadata", &e)),
        };
        let mut info = OpenInfo::default();
        if existing {
            // Look before writing: a read-only open never modifies the file, and refuses
            // (RepairAborted) a file left by a crash, which needs the engine's recovery.
            let ro = guarded("opening the store read-only", || {
                Ok(Builder::new()
                    .set_cache_size(16 * 1024 * 1024)
                    .open_read_only(&path))
            })?;
            match ro {
                Ok(ro) => {
                    Self::check_format_ro(&ro)?;
                    if opts.verify_on_open {
                        crate::probe::verify_file(&path, false, &Self::check_format_db)?;
                        info.verified = true;
                    }
                    ro.close().ctx("closing the read-only handle")?;
                }
                Err(DatabaseError::RepairAborted) => {
                    info.recovered_from_crash = true;
                    if opts.verify_on_open {
                        // Rehearse the recovery in memory first, so that a store that cannot
                        // be recovered, or has the wrong version, is reported untouched.
                        let p = crate::probe::verify_file(&path, true, &Self::check_format_db)?;
                        info.rolled_back_torn_commit = p.rolled_back;
                        info.verified = true;
                    }
                }
                Err(e) => return Err(map_db_error(e, &display)),
            }
        }
        let db = guarded("opening the store", || {
            Builder::new()
                .set_cache_size(opts.cache_bytes)
                .create(&path)
                .map_err(|e| map_db_error(e, &display))
        })?;
        if !existing {
            set_mode(&path, 0o600)?;
        }
        Self::init_or_check_format(&db)?;
        let shared = Arc::new(Shared {
            db,
            counters: Counters::default(),
            path,
        });
        let (tx, rx) = mpsc::channel();
        let w = Writer {
            shared: shared.clone(),
            rx,
            sync: opts.sync,
            max_group_ops: opts.max_group_ops.max(1),
            dirty: false,
            last_sync: Instant::now(),
        };
        let writer = std::thread::Builder::new()
            .name("rampart-store-writer".to_string())
            .spawn(move || w.run())
            .map_err(|e| StoreError::io("starting the writer thread", &e))?;
        Ok(RedbStore {
            shared,
            tx,
            writer: Mutex::new(Some(writer)),
            opts,
            info,
        })
    }

    fn check_format_db(db: &Database) -> Result<(), StoreError> {
        guarded("reading the store header", || {
            let txn = db.begin_read().ctx("beginning a read")?;
            let found = read_format(&txn)?;
            expect_format(found, has_tables(&txn)?)?;
            Ok(())
        })
    }

    fn check_format_ro(ro: &ReadOnlyDatabase) -> Result<(), StoreError> {
        guarded("reading the store header", || {
            let txn = ro.begin_read().ctx("beginning a read")?;
            let found = read_format(&txn)?;
            expect_format(found, has_tables(&txn)?)?;
            Ok(())
        })
    }

    fn init_or_check_format(db: &Database) -> Result<(), StoreError> {
        let initialised = guarded("reading the store header", || {
            let txn = db.begin_read().ctx("beginning a read")?;
            let found = read_format(&txn)?;
            expect_format(found, has_tables(&txn)?)
        })?;
        if initialised {
            return Ok(());
        }
        let txn = db.begin_write().ctx("initialising the store")?;
        {
            let mut meta = txn.open_table(META).ctx("creating the meta table")?;
            meta.insert(META_FORMAT_KEY, &FORMAT_VERSION.to_le_bytes()[..])
                .ctx("writing the format version")?;
            meta.insert(META_WRITER_KEY, env!("CARGO_PKG_VERSION").as_bytes())
                .ctx("writing the meta table")?;
            txn.open_table(SESSIONS).ctx("creating tables")?;
            txn.open_table(QUEUE).ctx("creating tables")?;
            txn.open_table(QUEUE_STATE).ctx("creating tables")?;
            txn.open_table(INBOUND_QOS2).ctx("creating tables")?;
            txn.open_table(RETAINED).ctx("creating tables")?;
            txn.open_table(KV).ctx("creating tables")?;
        }
        txn.commit().ctx("initialising the store")
    }

    /// Verifies the store in `dir` without writing to it, for `rampart store check`:
    /// format version, every page checksum, every record decoded, cross references. Fails
    /// with [`StoreError::Locked`] while a broker has the store open, and with the open
    /// errors for a store that is damaged at the page level or needs crash recovery.
    pub fn check_offline(dir: &Path) -> Result<CheckReport, StoreError> {
        let path = dir.join(FILE_NAME);
        let display = path.display().to_string();
        if !path.exists() {
            return Err(StoreError::Io {
                what: display,
                kind: std::io::ErrorKind::NotFound,
                message: "no store file".to_string(),
            });
        }
        let ro = guarded("opening the store read-only", || {
            Builder::new()
                .set_cache_size(16 * 1024 * 1024)
                .open_read_only(&path)
                .map_err(|e| match e {
                    DatabaseError::RepairAborted => StoreError::Corrupt {
                        what: "the store was not closed cleanly; open it once to recover it, then check"
                            .to_string(),
                    },
                    e => map_db_error(e, &display),
                })
        })?;
        Self::check_format_ro(&ro)?;
        crate::probe::verify_file(&path, false, &Self::check_format_db)?;
        guarded("checking the store", || {
            let txn = ro.begin_read().ctx("beginning a read")?;
            let mut report = CheckReport::default();
            Walk {
                report: &mut report,
                strict: false,
            }
            .run(&txn, &mut Snapshot::default())?;
            Ok(report)
        })
    }

    pub fn open_info(&self) -> OpenInfo {
        self.info
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    fn send(&self, msg: Msg) {
        // If the writer is gone the message (and its sender) drops: the Commit then
        // resolves to Closed.
        let _ = self.tx.send(msg);
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.send(Msg::Shutdown);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            // A panicked writer has already failed its commits with Closed.
            let _ = h.join();
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    sync: SyncMode,
    max_group_ops: usize,
    /// Periodic mode: commits exist that are not yet synced.
    dirty: bool,
    last_sync: Instant,
}

struct Tables<'t> {
    sessions: Table<'t, &'static str, &'static [u8]>,
    queue: Table<'t, (&'static str, u64), &'static [u8]>,
    queue_state: Table<'t, (&'static str, u64), &'static [u8]>,
    inbound: Table<'t, (&'static str, u16), ()>,
    retained: Table<'t, &'static str, &'static [u8]>,
    kv: Table<'t, (&'static str, &'static [u8]), &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS).ctx("opening sessions")?,
            queue: txn.open_table(QUEUE).ctx("opening queue")?,
            queue_state: txn.open_table(QUEUE_STATE).ctx("opening queue_state")?,
            inbound: txn.open_table(INBOUND_QOS2).ctx("opening inbound_qos2")?,
            retained: txn.open_table(RETAINED).ctx("opening retained")?,
            kv: txn.open_table(KV).ctx("opening kv")?,
        })
    }

    fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        const W: &str = "writing a batch";
        match op {
            Op::PutSession(s) => {
                self.sessions
                    .insert(s.client_id.as_str(), encode(s)?.as_slice())
                    .ctx(W)?;
            }
            Op::DeleteSession { client_id } => {
                let c = client_id.as_str();
                self.sessions.remove(c).ctx(W)?;
                self.queue
                    .retain_in((c, 0u64)..=(c, u64::MAX), |_, _| false)
                    .ctx(W)?;
                self.queue_state
                    .retain_in((c, 0u64)..=(c, u64::MAX), |_, _| false)
                    .ctx(W)?;
                self.inbound
                    .retain_in((c, 0u16)..=(c, u16::MAX), |_, _| false)
                    .ctx(W)?;
            }
            Op::AppendQueued { client_id, record } => {
                let key = (client_id.as_str(), record.seq);
                self.queue
                    .insert(key, encode(&record.value_ref())?.as_slice())
                    .ctx(W)?;
                // A replaced entry must not inherit the state of the one it replaces.
                self.queue_state.remove(key).ctx(W)?;
            }
            Op::SetQueuedState {
                client_id,
                seq,
                state,
            } => {
                let key = (client_id.as_str(), *seq);
                if self.queue.get(key).ctx(W)?.is_some() {
                    self.queue_state
                        .insert(key, encode(state)?.as_slice())
                        .ctx(W)?;
                }
            }
            Op::RemoveQueued { client_id, seq } => {
                let key = (client_id.as_str(), *seq);
                self.queue.remove(key).ctx(W)?;
                self.queue_state.remove(key).ctx(W)?;
            }
            Op::PutRetained(m) => {
                self.retained
                    .insert(m.topic.as_str(), encode(m)?.as_slice())
                    .ctx(W)?;
            }
            Op::DeleteRetained { topic } => {
                self.retained.remove(topic.as_str()).ctx(W)?;
            }
            Op::PutInboundQos2 {
                client_id,
                packet_id,
            } => {
                self.inbound
                    .insert((client_id.as_str(), *packet_id), ())
                    .ctx(W)?;
            }
            Op::DeleteInboundQos2 {
                client_id,
                packet_id,
            } => {
                self.inbound
                    .remove((client_id.as_str(), *packet_id))
                    .ctx(W)?;
            }
            Op::PutKv { ns, key, value } => {
                self.kv
                    .insert((ns.as_str(), key.as_ref()), value.as_ref())
                    .ctx(W)?;
            }
            Op::DeleteKv { ns, key } => {
                self.kv.remove((ns.as_str(), key.as_ref())).ctx(W)?;
            }
        }
        Ok(())
    }
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.next_timeout() {
                None => self.rx.recv().ok(),
                Some(t) => match self.rx.recv_timeout(t) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.periodic_sync();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(first) = first else { break };
            let mut writes: Vec<(WriteBatch, Reply)> = Vec::new();
            let mut flushes: Vec<Reply> = Vec::new();
            let mut shutdown = false;
            let mut ops = 0usize;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Write(b, r) => {
                        ops += b.ops.len().max(1);
                        writes.push((b, r));
                    }
                    Msg::Flush(r) => flushes.push(r),
                    Msg::Shutdown => {
                        shutdown = true;
                        break;
                    }
                }
                if ops >= self.max_group_ops {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            let durable = match self.sync {
                SyncMode::Always => true,
                SyncMode::Periodic { interval_ms } => {
                    !flushes.is_empty()
                        || shutdown
                        || self.last_sync.elapsed() >= Duration::from_millis(interval_ms)
                }
            };
            self.commit_group(writes, durable);
            if !flushes.is_empty() {
                // A durable group commit already cleared `dirty`; otherwise (no writes in
                // the group, or a failed one) sync what earlier groups left unsynced.
                let flush_result = if self.dirty { self.sync_now() } else { Ok(()) };
                for r in flushes {
                    let _ = r.send(flush_result.clone());
                }
            }
            if shutdown {
                break;
            }
        }
        if self.dirty {
            let _ = self.sync_now();
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        match self.sync {
            SyncMode::Periodic { interval_ms } if self.dirty => {
                Some(Duration::from_millis(interval_ms).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    fn periodic_sync(&mut self) {
        // A failed sync leaves `dirty` set, so it is retried at the next interval.
        let _ = self.sync_now();
    }

    /// Makes all earlier unsynced commits durable with an empty immediate commit.
    fn sync_now(&mut self) -> Result<(), StoreError> {
        let r = guarded("syncing", || {
            let txn = self.shared.db.begin_write().ctx("syncing")?;
            txn.commit().ctx("syncing")
        });
        if r.is_ok() {
            self.dirty = false;
            self.last_sync = Instant::now();
            self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
            self.shared
                .counters
                .transactions
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn try_commit(&self, batches: &[&WriteBatch], durable: bool) -> Result<(), StoreError> {
        guarded("committing", || {
            let mut txn = self.shared.db.begin_write().ctx("beginning a write")?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })
            .ctx("setting durability")?;
            {
                let mut t = Tables::open(&txn)?;
                for b in batches {
                    for op in &b.ops {
                        t.apply(op)?;
                    }
                }
            }
            txn.commit().ctx("committing")
        })
    }

    fn commit_group(&mut self, writes: Vec<(WriteBatch, Reply)>, durable: bool) {
        if writes.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let c = &shared.counters;
        let all: Vec<&WriteBatch> = writes.iter().map(|(b, _)| b).collect();
        let outcome = self.try_commit(&all, durable);
        let results: Vec<Result<(), StoreError>> = match outcome {
            Ok(()) => {
                self.note_commit(durable, writes.len());
                vec![Ok(()); writes.len()]
            }
            // One bad batch must not fail its neighbours: retry each in its own transaction
            // so that each waiter gets its own outcome (the failed group left no trace: an
            // uncommitted redb transaction is rolled back when dropped).
            Err(_) if writes.len() > 1 => {
                let mut rs = Vec::with_capacity(writes.len());
                for (b, _) in &writes {
                    let r = self.try_commit(&[b], durable);
                    if r.is_ok() {
                        self.note_commit(durable, 1);
                    }
                    rs.push(r);
                }
                rs
            }
            Err(e) => vec![Err(e)],
        };
        for ((b, reply), r) in writes.into_iter().zip(results) {
            match &r {
                Ok(()) => {
                    c.batches_committed.fetch_add(1, Ordering::Relaxed);
                    c.ops_committed
                        .fetch_add(b.ops.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    c.batches_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            c.pending.fetch_sub(1, Ordering::Relaxed);
            let _ = reply.send(r);
        }
    }

    fn note_commit(&mut self, durable: bool, batches: usize) {
        let c = &self.shared.counters;
        c.transactions.fetch_add(1, Ordering::Relaxed);
        c.max_group_batches
            .fetch_max(batches as u64, Ordering::Relaxed);
        if durable {
            c.syncs.fetch_add(1, Ordering::Relaxed);
            self.dirty = false;
            self.last_sync = Instant::now();
        } else {
            self.dirty = true;
        }
    }
}

/// Walks every table in one read transaction. `strict` fails on the first bad record
/// (load); otherwise problems are collected into the report (check).
struct Walk<'r> {
    report: &'r mut CheckReport,
    strict: bool,
}

impl Walk<'_> {
    fn bad(&mut self, e: StoreError) -> Result<(), StoreError> {
        if self.strict {
            return Err(e);
        }
        self.report.problem(e.to_string());
        Ok(())
    }

    fn run(&mut self, txn: &ReadTransaction, snap: &mut Snapshot) -> Result<(), StoreError> {
        const R: &str = "reading the store";
        self.report.format_version = read_format(txn)?.unwrap_or(0);

        let sessions = txn.open_table(SESSIONS).ctx(R)?;
        for item in sessions.iter().ctx(R)? {
            let (k, v) = item.ctx(R)?;
            let key = k.value();
            self.report.sessions += 1;
            match decode::<SessionRecord>(v.value(), &|| format!("session {key:?}")) {
                Ok(s) if s.client_id == key => snap.sessions.push(SessionSnapshot {
                    session: s,
                    queue: Vec::new(),
                    inbound_qos2: Vec::new(),
                }),
                Ok(_) => self.bad(StoreError::Corrupt {
                    what: format!("session {key:?}: record names another client id"),
                })?,
                Err(e) => self.bad(e)?,
            }
        }

        // Both tables are ordered by (client id, seq), like `snap.sessions` by client id:
        // a merge join attaches entries without a hash lookup per message.
        let queue = txn.open_table(QUEUE).ctx(R)?;
        let states = txn.open_table(QUEUE_STATE).ctx(R)?;
        let mut state_iter = states.iter().ctx(R)?.peekable();
        let mut si = 0usize;
        for item in queue.iter().ctx(R)? {
            let (k, v) = item.ctx(R)?;
            let (cid, seq) = k.value();
            self.report.queued += 1;
            let mut state_override: Option<QueuedState> = None;
            while let Some(next) = state_iter.peek() {
                let (sk, _) = match next {
                    Ok(kv) => kv,
                    Err(_) => {
                        // Surface the engine error through the owned item.
                        if let Some(Err(e)) = state_iter.next() {
                            return Err(e).ctx(R);
                        }
                        continue;
                    }
                };
                let (scid, sseq) = sk.value();
                match (scid, sseq).cmp(&(cid, seq)) {
                    std::cmp::Ordering::Less => {
                        self.report.queue_states += 1;
                        self.report.orphan_queue_states += 1;
                        state_iter.next();
                    }
                    std::cmp::Ordering::Equal => {
                        self.report.queue_states += 1;
                        if let Some(Ok((_, sv))) = state_iter.next() {
                            match decode::<QueuedState>(sv.value(), &|| {
                                format!("queue state {cid:?}/{seq}")
                            }) {
                                Ok(s) => state_override = Some(s),
                                Err(e) => self.bad(e)?,
                            }
                        }
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            while si < snap.sessions.len() && snap.sessions[si].session.client_id.as_str() < cid {
                si += 1;
            }
            let owner = snap
                .sessions
                .get_mut(si)
                .filter(|s| s.session.client_id == cid);
            let Some(owner) = owner else {
                self.report.orphan_queue_entries += 1;
                if snap.orphan_clients.last().map(String::as_str) != Some(cid) {
                    snap.orphan_clients.push(cid.to_string());
                }
                continue;
            };
            match decode::<QueueValue>(v.value(), &|| format!("queue entry {cid:?}/{seq}")) {
                Ok(qv) => {
                    let mut rec = QueuedRecord::from_value(seq, qv);
                    if let Some(s) = state_override {
                        rec.state = s;
                    }
                    owner.queue.push(rec);
                }
                Err(e) => self.bad(e)?,
            }
        }
        for rest in state_iter {
            rest.ctx(R)?;
            self.report.queue_states += 1;
            self.report.orphan_queue_states += 1;
        }

        let inbound = txn.open_table(INBOUND_QOS2).ctx(R)?;
        let mut si = 0usize;
        for item in inbound.iter().ctx(R)? {
            let (k, _) = item.ctx(R)?;
            let (cid, id) = k.value();
            self.report.inbound_qos2 += 1;
            while si < snap.sessions.len() && snap.sessions[si].session.client_id.as_str() < cid {
                si += 1;
            }
            match snap
                .sessions
                .get_mut(si)
                .filter(|s| s.session.client_id == cid)
            {
                Some(s) => s.inbound_qos2.push(id),
                None => {
                    self.report.orphan_inbound_qos2 += 1;
                    if snap.orphan_clients.last().map(String::as_str) != Some(cid) {
                        snap.orphan_clients.push(cid.to_string());
                    }
                }
            }
        }
        // Each table listed its orphans in order; the two lists interleave.
        snap.orphan_clients.sort_unstable();
        snap.orphan_clients.dedup();

        let retained = txn.open_table(RETAINED).ctx(R)?;
        for item in retained.iter().ctx(R)? {
            let (k, v) = item.ctx(R)?;
            let topic = k.value();
            self.report.retained += 1;
            match decode::<MessageRecord>(v.value(), &|| format!("retained {topic:?}")) {
                Ok(m) if m.topic == topic => snap.retained.push(m),
                Ok(_) => self.bad(StoreError::Corrupt {
                    what: format!("retained {topic:?}: record names another topic"),
                })?,
                Err(e) => self.bad(e)?,
            }
        }

        let kv = txn.open_table(KV).ctx(R)?;
        for item in kv.iter().ctx(R)? {
            let (k, v) = item.ctx(R)?;
            let (ns, key) = k.value();
            self.report.kv += 1;
            snap.kv.push(KvEntry {
                ns: ns.to_string(),
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(v.value()),
            });
        }
        snap.orphan_queue_entries = self.report.orphan_queue_entries;
        snap.orphan_inbound_qos2 = self.report.orphan_inbound_qos2;
        Ok(())
    }
}

impl Store for RedbStore {
    fn write(&self, batch: WriteBatch) -> Commit {
        let limit = self.opts.max_pending_batches as u64;
        let pending = self.shared.counters.pending.fetch_add(1, Ordering::Relaxed);
        if pending >= limit {
            self.shared.counters.pending.fetch_sub(1, Ordering::Relaxed);
            return Commit::ready(Err(StoreError::Overloaded {
                pending: pending as usize,
                limit: limit as usize,
            }));
        }
        let (reply, commit) = Commit::channel();
        if let Err(mpsc::SendError(_)) = self.tx.send(Msg::Write(batch, reply)) {
            self.shared.counters.pending.fetch_sub(1, Ordering::Relaxed);
        }
        commit
    }

    fn flush(&self) -> Commit {
        let (reply, commit) = Commit::channel();
        self.send(Msg::Flush(reply));
        commit
    }

    fn load_all(&self) -> Result<Snapshot, StoreError> {
        guarded("loading the store", || {
            let txn = self.shared.db.begin_read().ctx("beginning a read")?;
            let mut report = CheckReport::default();
            let mut snap = Snapshot::default();
            Walk {
                report: &mut report,
                strict: true,
            }
            .run(&txn, &mut snap)?;
            Ok(snap)
        })
    }

    fn check(&self) -> Result<CheckReport, StoreError> {
        guarded("checking the store", || {
            let txn = self.shared.db.begin_read().ctx("beginning a read")?;
            let mut report = CheckReport::default();
            let mut snap = Snapshot::default();
            Walk {
                report: &mut report,
                strict: false,
            }
            .run(&txn, &mut snap)?;
            Ok(report)
        })
    }

    fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            batches_committed: c.batches_committed.load(Ordering::Relaxed),
            batches_failed: c.batches_failed.load(Ordering::Relaxed),
            ops_committed: c.ops_committed.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            pending_batches: c.pending.load(Ordering::Relaxed),
            max_group_batches: c.max_group_batches.load(Ordering::Relaxed),
            file_bytes: std::fs::metadata(&self.shared.path)
                .map(|m| m.len())
                .unwrap_or(0),
        }
    }

    fn get_kv(&self, ns: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        guarded("reading kv", || {
            let txn = self.shared.db.begin_read().ctx("beginning a read")?;
            let kv = txn.open_table(KV).ctx("reading kv")?;
            let v = kv.get((ns, key)).ctx("reading kv")?;
            Ok(v.map(|v| Bytes::copy_from_slice(v.value())))
        })
    }

    fn scan_kv(&self, ns: &str) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        guarded("reading kv", || {
            let txn = self.shared.db.begin_read().ctx("beginning a read")?;
            let kv = txn.open_table(KV).ctx("reading kv")?;
            let mut out = Vec::new();
            let empty: &[u8] = &[];
            for item in kv.range((ns, empty)..).ctx("reading kv")? {
                let (k, v) = item.ctx("reading kv")?;
                let (n, key) = k.value();
                if n != ns {
                    break;
                }
                out.push((
                    Bytes::copy_from_slice(key),
                    Bytes::copy_from_slice(v.value()),
                ));
            }
            Ok(out)
        })
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io("restricting permissions of the store", &e))
}
