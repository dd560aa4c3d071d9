//! The binary's error path for a store it must not use: one written by another format
//! version, or damaged. `rampart serve` stops with a clear error naming the problem, the file
//! is left byte-for-byte as it was, and `rampart store check` reports the same problem.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rampart_store::{RedbStore, SessionRecord, Store, StoreOptions, WriteBatch};

/// A broker that starts when it should have refused is stopped after this long.
const START_LIMIT: Duration = Duration::from_secs(20);

fn command(args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
    cmd.args(args).stdin(Stdio::null());
    // RAMPART_* variables are config overrides; the caller's must not leak in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RAMPART_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A store in `<dir>/data` holding one persistent session; returns the file's path.
fn populated(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let store = RedbStore::open(&data, StoreOptions::default()).expect("open store");
    let mut b = WriteBatch::new();
    b.put_session(SessionRecord {
        client_id: "client-under-test".to_string(),
        protocol: 5,
        expiry_interval_secs: 300,
        disconnected_at_ms: Some(1),
        subscriptions: Vec::new(),
        will: None,
        will_delay_secs: 0,
        identity: None,
        next_packet_id: 1,
    });
    store.write(b).wait_blocking().expect("write");
    drop(store);
    data.join(rampart_store::FILE_NAME)
}

/// Runs `rampart serve` on `dir/data` and returns its output once it exits; fails the test if
/// it is still running after [`START_LIMIT`] (it started on a store it should refuse).
fn serve(dir: &Path) -> Output {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = dir.join("rampart.toml");
    let mut f = std::fs::File::create(&config).expect("config file");
    write!(
        f,
        "[node]\ndata_dir = {data:?}\n\n[[listeners]]\nname = \"test\"\nkind = \"tcp\"\n\
         bind = \"127.0.0.1:{port}\"\n\n[storage]\nbackend = \"redb\"\n",
        data = dir.join("data").display().to_string(),
    )
    .expect("write config");
    let mut child = command(&["serve".as_ref(), "--config".as_ref(), config.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rampart");
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "rampart serve started on a store it must refuse:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20)); // polling the child, bounded above
    }
}

fn store_check(dir: &Path) -> Output {
    let data = dir.join("data");
    command(&[
        "store".as_ref(),
        "check".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ])
    .output()
    .expect("run store check")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn store_of_another_format_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = populated(dir.path());
    {
        // What a future release would leave behind: the same tables, another version.
        const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("begin");
        txn.open_table(META)
            .expect("meta")
            .insert("format_version", &99u32.to_le_bytes()[..])
            .expect("insert");
        txn.commit().expect("commit");
    }
    let before = std::fs::read(&path).expect("read store");

    let out = serve(dir.path());
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("store format version 99 is not supported")
            && err.contains(&format!("reads version {}", rampart_store::FORMAT_VERSION))
            && err.contains("not modified"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read store"), before);

    let out = store_check(dir.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("format version 99"), "{}", text(&out));
    assert_eq!(std::fs::read(&path).expect("read store"), before);
}

#[test]
fn damaged_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = populated(dir.path());
    let mut bytes = std::fs::read(&path).expect("read store");
    let needle = b"client-under-test";
    let hits: Vec<usize> = (0..bytes.len().saturating_sub(needle.len()))
        .filter(|&i| bytes[i..].starts_with(needle))
        .collect();
    assert!(!hits.is_empty(), "the session record is not in the file");
    for i in hits {
        bytes[i..i + needle.len()].fill(0xA5);
    }
    std::fs::write(&path, &bytes).expect("write store");

    let out = serve(dir.path());
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("store is damaged") && err.contains("not modified"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read store"), bytes);

    let out = store_check(dir.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("damaged"), "{}", text(&out));
    assert_eq!(std::fs::read(&path).expect("read store"), bytes);
}
