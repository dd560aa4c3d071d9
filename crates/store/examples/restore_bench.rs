//! Measures how fast a store restores, and the write rate of small batches with group commit.
//!
//! `cargo run -p rampart-store --release --example restore_bench [SESSIONS] [PER_SESSION] [PAYLOAD_BYTES]`
//! (defaults 100000 10 100). Uses a fresh directory under the system temp dir, removed at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_store::{
    MessageRecord, QueuedRecord, QueuedState, RedbStore, SessionRecord, Store, StoreOptions,
    SubscriptionRecord, SyncMode, WriteBatch,
};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn session(cid: String) -> SessionRecord {
    SessionRecord {
        client_id: cid,
        protocol: 5,
        expiry_interval_secs: 86_400,
        // Disconnected just now, so that a broker restoring this store keeps the sessions.
        disconnected_at_ms: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        ),
        subscriptions: vec![SubscriptionRecord {
            filter: "sensors/+/temperature".to_string(),
            share_group: None,
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: Some(1),
        }],
        will: None,
        will_delay_secs: 0,
        identity: Some("device".to_string()),
        next_packet_id: 1,
    }
}

fn queued(seq: u64, payload: &Bytes) -> QueuedRecord {
    QueuedRecord {
        seq,
        message: MessageRecord {
            topic: "sensors/abc123/temperature".to_string(),
            payload: payload.clone(),
            qos: 1,
            retain: false,
            properties: Bytes::new(),
            expiry_at_ms: None,
            publisher: Some("publisher-1".to_string()),
            received_at_ms: 1_700_000_000_000 + seq,
        },
        state: QueuedState::Queued,
        subscription_ids: vec![1],
        granted_qos: 1,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Child mode: open, commit one batch, and die without closing the store (as kill -9
    // would), leaving a store that needs crash recovery.
    if std::env::args().nth(1).as_deref() == Some("--die-after-write") {
        let dir = std::env::args().nth(2).ok_or("missing dir")?;
        let store = RedbStore::open(
            dir.as_ref(),
            StoreOptions {
                verify_on_open: false,
                ..StoreOptions::default()
            },
        )?;
        let mut b = WriteBatch::new();
        b.put_kv("bench", &b"crashed"[..], &b"yes"[..]);
        store.write(b).wait_blocking()?;
        std::process::exit(0);
    }
    let sessions = arg(1, 100_000);
    let per = arg(2, 10);
    let payload_len = arg(3, 100) as usize;
    let payload = Bytes::from(vec![0xa5u8; payload_len]);
    // RESTORE_BENCH_DIR keeps the populated store there (not removed), so that the broker's
    // own restore can be timed on it: `rampart serve` logs "restored state ... elapsed_ms".
    let keep = std::env::var_os("RESTORE_BENCH_DIR");
    let dir = match &keep {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("rampart-restore-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);

    // Populate in large batches.
    let t = Instant::now();
    {
        let store = RedbStore::open(&dir, StoreOptions::default())?;
        let chunk = 1_000u64;
        let mut s = 0;
        while s < sessions {
            let mut b = WriteBatch::new();
            for i in s..(s + chunk).min(sessions) {
                let cid = format!("client-{i:08}");
                b.put_session(session(cid.clone()));
                for seq in 0..per {
                    b.append_queued(cid.clone(), queued(seq, &payload));
                }
            }
            store.write(b).wait_blocking()?;
            s += chunk;
        }
        println!(
            "populate: {sessions} sessions, {} queued ({payload_len} B payload) in {:.2?}; file {:.1} MB",
            sessions * per,
            t.elapsed(),
            store.stats().file_bytes as f64 / 1e6
        );
    }

    for verify in [true, false] {
        let t = Instant::now();
        let store = RedbStore::open(
            &dir,
            StoreOptions {
                verify_on_open: verify,
                ..StoreOptions::default()
            },
        )?;
        let opened = t.elapsed();
        let t2 = Instant::now();
        let snap = store.load_all()?;
        let loaded = t2.elapsed();
        let queued: usize = snap.sessions.iter().map(|s| s.queue.len()).sum();
        assert_eq!(snap.sessions.len() as u64, sessions);
        assert_eq!(queued as u64, sessions * per);
        println!(
            "restore (verify_on_open={verify}): open {opened:.2?} + load_all {loaded:.2?} = {:.2?} for {} sessions / {queued} queued",
            t.elapsed(),
            snap.sessions.len()
        );
    }

    // Restore after a crash: the engine must rebuild its allocator state.
    for verify in [true, false] {
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg("--die-after-write")
            .arg(&dir)
            .status()?;
        assert!(status.success());
        let t = Instant::now();
        let store = RedbStore::open(
            &dir,
            StoreOptions {
                verify_on_open: verify,
                ..StoreOptions::default()
            },
        )?;
        let opened = t.elapsed();
        assert!(store.open_info().recovered_from_crash);
        let snap = store.load_all()?;
        println!(
            "restore after crash (verify_on_open={verify}): open+recover {opened:.2?} + load_all = {:.2?} for {} sessions",
            t.elapsed(),
            snap.sessions.len()
        );
    }

    // Small batches (one message to one session, as a QoS 1 PUBLISH to one persistent
    // subscriber) from many concurrent writers: group commit amortises the fsync.
    for (label, sync) in [
        ("always", SyncMode::Always),
        ("periodic 100ms", SyncMode::Periodic { interval_ms: 100 }),
    ] {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(
            &dir,
            StoreOptions {
                sync,
                verify_on_open: false,
                ..StoreOptions::default()
            },
        )?);
        let writers = 64u64;
        let budget = Duration::from_secs(3);
        let t = Instant::now();
        let before = store.stats();
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                let payload = payload.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let cid = format!("client-{w:08}");
                    while t.elapsed() < budget && n < 1_000_000 {
                        let mut b = WriteBatch::new();
                        b.append_queued(cid.clone(), queued(1_000_000 + n, &payload));
                        if store.write(b).wait_blocking().is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        let secs = t.elapsed().as_secs_f64();
        let after = store.stats();
        println!(
            "write ({label}, {writers} writers, 1-op batches): {:.0} batches/s, {} transactions, {} syncs, max group {}",
            total as f64 / secs,
            after.transactions - before.transactions,
            after.syncs - before.syncs,
            after.max_group_batches
        );
    }
    if keep.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
