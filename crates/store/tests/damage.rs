//! Damaged, truncated, foreign and wrong-version stores are refused with a typed error and
//! left byte-for-byte as they were.

mod common;

use std::path::{Path, PathBuf};

use common::{queued, session};
use rampart_store::{RedbStore, Store, StoreError, StoreOptions, WriteBatch, FILE_NAME};

const MARKER: &[u8] = b"MARKER-4f1c-payload-that-is-unique";

/// A cleanly closed store with a few thousand records and one recognisable payload.
fn populated(dir: &Path) -> PathBuf {
    let store = RedbStore::open(dir, StoreOptions::default()).unwrap();
    let mut b = WriteBatch::new();
    b.put_session(session("c1"));
    for seq in 0..2000u64 {
        b.append_queued("c1", queued(seq, &[b'x'; 200]));
    }
    b.append_queued("c1", queued(5000, MARKER));
    store.write(b).wait_blocking().unwrap();
    drop(store);
    dir.join(FILE_NAME)
}

fn open_err(dir: &Path, verify: bool) -> StoreError {
    let opts = StoreOptions {
        verify_on_open: verify,
        ..StoreOptions::default()
    };
    match RedbStore::open(dir, opts) {
        Ok(s) => match s.load_all() {
            Ok(_) => panic!("a damaged store opened and loaded"),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn overwritten_record_bytes_are_reported_not_panicked_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let hits = find_all(&bytes, MARKER);
    assert!(!hits.is_empty(), "marker not found in the file");
    // Every copy (live page and stale copy-on-write copies) so the live one is hit.
    for at in hits {
        bytes[at..at + MARKER.len()].fill(b'Z');
    }
    std::fs::write(&path, &bytes).unwrap();

    let e = open_err(dir.path(), true);
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file was modified"
    );
}

#[test]
fn overwritten_middle_of_file_is_reported_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    let end = (mid + 64 * 1024).min(bytes.len());
    for (i, b) in bytes[mid..end].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&path, &bytes).unwrap();
    // The damaged range may hold only free pages; then the store is fine. Otherwise the
    // error must be typed, and in either case the file unchanged by the attempt.
    match RedbStore::open(dir.path(), StoreOptions::default()) {
        Ok(s) => {
            s.load_all().unwrap();
            drop(s);
        }
        Err(e) => {
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "the file was modified"
            );
        }
    }
}

#[test]
fn damage_without_verify_on_open_never_panics_and_offline_check_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    for at in find_all(&bytes, MARKER) {
        bytes[at..at + 8].copy_from_slice(&[0xff; 8]);
    }
    std::fs::write(&path, &bytes).unwrap();
    // Unverified reads do not check page checksums: payload damage may go unnoticed, but
    // whatever happens is a value or a typed error, not a panic.
    let opts = StoreOptions {
        verify_on_open: false,
        ..StoreOptions::default()
    };
    if let Ok(s) = RedbStore::open(dir.path(), opts) {
        if let Err(e) = s.load_all() {
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
        }
    }
    let e = RedbStore::check_offline(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
}

#[test]
fn truncated_file_is_reported_and_untouched() {
    for keep in [100usize, 4096, 0] {
        let dir = tempfile::tempdir().unwrap();
        let path = populated(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let keep = if keep == 0 { bytes.len() / 2 } else { keep };
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let e = open_err(dir.path(), true);
        assert!(
            matches!(e, StoreError::Corrupt { .. }),
            "truncated to {keep}: {e:?}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            &bytes[..keep],
            "truncated to {keep}: modified"
        );
    }
}

#[test]
fn garbage_file_is_reported_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &junk).unwrap();
    let e = open_err(dir.path(), true);
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

#[test]
fn wrong_format_version_is_incompatible_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", &99u32.to_le_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let e = RedbStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert_eq!(
        e,
        StoreError::IncompatibleVersion {
            found: 99,
            expected: rampart_store::FORMAT_VERSION
        }
    );
    assert!(e.to_string().contains("not modified"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_foreign_redb_file_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("someone-else");
        txn.open_table(t).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let e = RedbStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn offline_check_of_a_clean_store_does_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let r = RedbStore::check_offline(dir.path()).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.queued, 2001);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // And a running store holds the lock.
    let _s = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
    let e = RedbStore::check_offline(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
}

#[test]
fn check_reports_a_clean_store() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
    let r = store.check().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.format_version, rampart_store::FORMAT_VERSION);
    assert_eq!(r.sessions, 1);
    assert_eq!(r.queued, 2001);
}
