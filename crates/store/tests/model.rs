//! Random op sequences: the redb backend, reopened between batches, always agrees with the
//! memory backend (the model).

mod common;

use bytes::Bytes;
use common::{message, queued, session};
use proptest::prelude::*;
use rampart_store::{MemoryStore, Op, QueuedState, RedbStore, Store, StoreOptions, WriteBatch};

fn client() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("ab"), Just("b"), Just("")].prop_map(str::to_string)
}

fn state() -> impl Strategy<Value = QueuedState> {
    prop_oneof![
        Just(QueuedState::Queued),
        any::<u16>().prop_map(|packet_id| QueuedState::Inflight { packet_id }),
        any::<u16>().prop_map(|packet_id| QueuedState::PubrelPending { packet_id }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let seq = 0u64..6;
    prop_oneof![
        client().prop_map(|c| Op::PutSession(session(&c))),
        client().prop_map(|client_id| Op::DeleteSession { client_id }),
        (
            client(),
            seq.clone(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(client_id, s, p)| Op::AppendQueued {
                client_id,
                record: queued(s, &p)
            }),
        (client(), seq.clone(), state()).prop_map(|(client_id, seq, state)| Op::SetQueuedState {
            client_id,
            seq,
            state
        }),
        (client(), seq).prop_map(|(client_id, seq)| Op::RemoveQueued { client_id, seq }),
        client().prop_map(|t| Op::PutRetained(message(&format!("t/{t}"), t.as_bytes()))),
        client().prop_map(|t| Op::DeleteRetained {
            topic: format!("t/{t}")
        }),
        (client(), 0u16..4).prop_map(|(client_id, packet_id)| Op::PutInboundQos2 {
            client_id,
            packet_id
        }),
        (client(), 0u16..4).prop_map(|(client_id, packet_id)| Op::DeleteInboundQos2 {
            client_id,
            packet_id
        }),
        (client(), client(), client()).prop_map(|(ns, k, v)| Op::PutKv {
            ns,
            key: Bytes::from(k),
            value: Bytes::from(v)
        }),
        (client(), client()).prop_map(|(ns, k)| Op::DeleteKv {
            ns,
            key: Bytes::from(k)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redb_matches_the_memory_model(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 0..8), 1..8)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let model = MemoryStore::new();
        for (i, ops) in batches.into_iter().enumerate() {
            // Reopened for every batch, so that what is compared is what was on disk.
            let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
            let batch = WriteBatch { ops };
            model.write(batch.clone()).wait_blocking().unwrap();
            store.write(batch).wait_blocking().unwrap();
            prop_assert_eq!(store.load_all().unwrap(), model.load_all().unwrap(), "after batch {}", i);
            for ns in ["a", "ab", "b", ""] {
                prop_assert_eq!(store.scan_kv(ns).unwrap(), model.scan_kv(ns).unwrap());
            }
            let report = store.check().unwrap();
            prop_assert!(report.is_ok(), "{:?}", report);
        }
    }
}
