//! Every op through both backends, reopen, and group commit.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{message, queued, session};
use rampart_store::{
    KvEntry, MemoryStore, QueuedState, RedbStore, Store, StoreOptions, SyncMode, WriteBatch,
};

fn commit(store: &dyn Store, f: impl FnOnce(&mut WriteBatch)) {
    let mut b = WriteBatch::new();
    f(&mut b);
    store.write(b).wait_blocking().expect("commit");
}

/// Runs every op and checks `load_all` after each step. Returns the final snapshot's
/// expectations so reopen tests can compare.
fn exercise(store: &dyn Store) {
    commit(store, |b| {
        b.put_session(session("c1"))
            .put_session(session("c2"))
            .append_queued("c1", queued(1, b"one"))
            .append_queued("c1", queued(2, b"two"))
            .append_queued("c1", queued(3, b"three"))
            .append_queued("c2", queued(10, b"ten"))
            .put_inbound_qos2("c1", 300)
            .put_inbound_qos2("c1", 5)
            .put_retained(message("r/1", b"ret1"))
            .put_retained(message("r/2", b"ret2"))
            .put_kv("banned", &b"10.0.0.1"[..], &b"until-x"[..])
            .put_kv("users", &b"bob"[..], &b"hash"[..]);
    });
    let s = store.load_all().unwrap();
    assert_eq!(s.sessions.len(), 2);
    assert_eq!(s.sessions[0].session, session("c1"));
    let seqs: Vec<u64> = s.sessions[0].queue.iter().map(|q| q.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(s.sessions[0].queue[1], queued(2, b"two"));
    assert_eq!(s.sessions[0].inbound_qos2, vec![5, 300]);
    assert_eq!(s.sessions[1].queue, vec![queued(10, b"ten")]);
    assert_eq!(
        s.retained,
        vec![message("r/1", b"ret1"), message("r/2", b"ret2")]
    );
    assert_eq!(s.kv.len(), 2);
    assert_eq!(
        s.kv[0],
        KvEntry {
            ns: "banned".into(),
            key: Bytes::from_static(b"10.0.0.1"),
            value: Bytes::from_static(b"until-x")
        }
    );

    // State transitions, removal, replacement, deletes.
    commit(store, |b| {
        b.set_queued_state("c1", 1, QueuedState::Inflight { packet_id: 11 })
            .set_queued_state("c1", 2, QueuedState::PubrelPending { packet_id: 12 })
            .set_queued_state("c1", 99, QueuedState::Inflight { packet_id: 1 }) // absent: no-op
            .remove_queued("c1", 3)
            .delete_inbound_qos2("c1", 300)
            .delete_retained("r/1")
            .put_retained(message("r/2", b"ret2-new"))
            .delete_kv("users", &b"bob"[..]);
    });
    let s = store.load_all().unwrap();
    let q = &s.sessions[0].queue;
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].state, QueuedState::Inflight { packet_id: 11 });
    assert_eq!(q[1].state, QueuedState::PubrelPending { packet_id: 12 });
    assert_eq!(s.sessions[0].inbound_qos2, vec![5]);
    assert_eq!(s.retained, vec![message("r/2", b"ret2-new")]);
    assert_eq!(store.get_kv("users", b"bob").unwrap(), None);
    assert_eq!(
        store.get_kv("banned", b"10.0.0.1").unwrap(),
        Some(Bytes::from_static(b"until-x"))
    );
    assert_eq!(store.scan_kv("users").unwrap(), vec![]);

    // Re-appending a seq replaces the entry and forgets its old state.
    commit(store, |b| {
        b.append_queued("c1", queued(1, b"one-again"));
    });
    let s = store.load_all().unwrap();
    assert_eq!(s.sessions[0].queue[0], queued(1, b"one-again"));

    // Deleting a session takes its queue and inbound ids, and leaves others alone.
    commit(store, |b| {
        b.delete_session("c1");
    });
    let s = store.load_all().unwrap();
    assert_eq!(s.sessions.len(), 1);
    assert_eq!(s.sessions[0].session.client_id, "c2");
    assert_eq!(s.sessions[0].queue, vec![queued(10, b"ten")]);
    assert_eq!(s.orphan_queue_entries, 0);
    assert_eq!(s.orphan_inbound_qos2, 0);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.sessions, 1);
    assert_eq!(report.queued, 1);

    // Entries for a session that does not exist are counted, not returned.
    commit(store, |b| {
        b.append_queued("ghost", queued(1, b"x"))
            .put_inbound_qos2("ghost", 9);
    });
    let s = store.load_all().unwrap();
    assert_eq!(s.orphan_queue_entries, 1);
    assert_eq!(s.orphan_inbound_qos2, 1);
    assert_eq!(s.orphan_clients, vec!["ghost".to_string()]);
    assert_eq!(s.sessions.len(), 1);
    // Deleting the absent session purges them (what the broker does at start-up).
    commit(store, |b| {
        b.delete_session("ghost");
    });
    let s = store.load_all().unwrap();
    assert_eq!((s.orphan_queue_entries, s.orphan_inbound_qos2), (0, 0));
    assert!(s.orphan_clients.is_empty());
    commit(store, |b| {
        b.append_queued("ghost", queued(1, b"x"))
            .put_inbound_qos2("ghost", 9);
    });

    // scan_kv keeps namespaces apart even when one is a prefix of another.
    commit(store, |b| {
        b.put_kv("ban", &b"z"[..], &b"1"[..])
            .put_kv("bann", &b"a"[..], &b"2"[..]);
    });
    assert_eq!(
        store.scan_kv("ban").unwrap(),
        vec![(Bytes::from_static(b"z"), Bytes::from_static(b"1"))]
    );
}

#[test]
fn memory_round_trip() {
    exercise(&MemoryStore::new());
}

#[test]
fn redb_round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        exercise(&store);
        before = store.load_all().unwrap();
    }
    let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.load_all().unwrap(), before);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn both_backends_agree() {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
    let mem = MemoryStore::new();
    exercise(&redb);
    exercise(&mem);
    assert_eq!(redb.load_all().unwrap(), mem.load_all().unwrap());
}

#[test]
fn periodic_mode_round_trip_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        sync: SyncMode::Periodic { interval_ms: 50 },
        ..StoreOptions::default()
    };
    {
        let store = RedbStore::open(dir.path(), opts.clone()).unwrap();
        exercise(&store);
        store.flush().wait_blocking().unwrap();
        assert!(store.stats().syncs >= 1);
    }
    let store = RedbStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.load_all().unwrap().sessions.len(), 1);
}

#[test]
fn overloaded_writer_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(
        dir.path(),
        StoreOptions {
            max_pending_batches: 0,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let r = store.write(WriteBatch::new()).wait_blocking();
    assert!(
        matches!(r, Err(rampart_store::StoreError::Overloaded { .. })),
        "{r:?}"
    );
}

#[test]
fn second_open_of_same_dir_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _a = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
    let b = RedbStore::open(dir.path(), StoreOptions::default());
    assert!(
        matches!(b, Err(rampart_store::StoreError::Locked { .. })),
        "{b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_many_concurrent_writers() {
    const WRITERS: u64 = 32;
    const PER_WRITER: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(dir.path(), StoreOptions::default()).unwrap());
    let mut setup = WriteBatch::new();
    for w in 0..WRITERS {
        setup.put_session(session(&format!("w{w}")));
    }
    store.write(setup).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_WRITER {
                let mut b = WriteBatch::new();
                b.append_queued(format!("w{w}"), queued(seq, b"payload"));
                tokio::time::timeout(std::time::Duration::from_secs(30), store.write(b))
                    .await
                    .expect("commit resolves")
                    .expect("commit ok");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats();
    let batches = WRITERS * PER_WRITER + 1;
    assert_eq!(stats.batches_committed, batches);
    assert_eq!(stats.pending_batches, 0);
    assert!(
        stats.transactions < batches,
        "group commit should share transactions: {stats:?}"
    );
    assert!(stats.max_group_batches > 1, "{stats:?}");
    let snap = store.load_all().unwrap();
    assert_eq!(snap.sessions.len() as u64, WRITERS);
    for s in &snap.sessions {
        let seqs: Vec<u64> = s.queue.iter().map(|q| q.seq).collect();
        assert_eq!(seqs, (0..PER_WRITER).collect::<Vec<_>>());
    }
}

#[test]
fn periodic_mode_resolves_before_syncing_and_syncs_on_flush_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    // An interval no test run reaches: every sync below is caused by flush or drop.
    let opts = StoreOptions {
        sync: SyncMode::Periodic {
            interval_ms: 3_600_000,
        },
        ..StoreOptions::default()
    };
    {
        let store = RedbStore::open(dir.path(), opts.clone()).unwrap();
        for seq in 0..10 {
            commit(&store, |b| {
                b.put_session(session("p"))
                    .append_queued("p", queued(seq, b"x"));
            });
        }
        let st = store.stats();
        assert_eq!(st.syncs, 0, "{st:?}");
        assert_eq!(st.batches_committed, 10);
        // Unsynced commits are visible to reads at once.
        assert_eq!(store.load_all().unwrap().sessions[0].queue.len(), 10);
        store.flush().wait_blocking().unwrap();
        assert_eq!(store.stats().syncs, 1);
        store.flush().wait_blocking().unwrap();
        assert_eq!(store.stats().syncs, 1, "nothing new to sync");
        commit(&store, |b| {
            b.append_queued("p", queued(10, b"x"));
        });
    }
    // Dropping the store synced the last batch.
    let store = RedbStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.load_all().unwrap().sessions[0].queue.len(), 11);
}
