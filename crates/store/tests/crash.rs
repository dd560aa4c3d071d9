//! kill -9 at random moments: every batch whose Commit resolved is on disk after reopen.
//!
//! The test binary re-runs itself as the child (`crash_child`, ignored unless the
//! environment names a directory); the child prints `ACK <writer> <seq>` only after the
//! batch's Commit resolved Ok, so every line the parent reads is a durability promise.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{message, queued, session};
use rampart_store::{QueuedState, RedbStore, Store, StoreOptions, WriteBatch};

const DIR_ENV: &str = "RAMPART_STORE_CRASH_DIR";
const MARKER_ENV: &str = "RAMPART_STORE_CRASH_MARKER";
const WRITERS: u64 = 4;
const MARKER: &[u8] = b"MARKER-crash-9b1e-payload-that-is-unique";

#[test]
#[ignore = "child process of crash_kill_9_keeps_every_acknowledged_batch"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let store = Arc::new(RedbStore::open(dir.as_ref(), StoreOptions::default()).unwrap());
    let snap = store.load_all().unwrap();
    if std::env::var_os(MARKER_ENV).is_some() {
        let mut b = WriteBatch::new();
        b.put_session(session("marker"))
            .append_queued("marker", queued(0, MARKER));
        store.write(b).wait_blocking().unwrap();
    }
    let mut handles = Vec::new();
    for t in 0..WRITERS {
        let cid = format!("c{t}");
        let next = snap
            .sessions
            .iter()
            .find(|s| s.session.client_id == cid)
            .and_then(|s| s.queue.last())
            .map_or(0, |q| q.seq + 1);
        let store = store.clone();
        handles.push(std::thread::spawn(move || {
            // Bounded so a child whose parent died stops by itself.
            let deadline = Instant::now() + Duration::from_secs(60);
            for seq in next..next + 1_000_000 {
                if Instant::now() > deadline {
                    break;
                }
                let mut b = WriteBatch::new();
                if seq == 0 {
                    b.put_session(session(&cid));
                }
                b.append_queued(cid.as_str(), queued(seq, format!("{t}:{seq}").as_bytes()));
                if seq > 0 {
                    b.set_queued_state(
                        cid.as_str(),
                        seq - 1,
                        QueuedState::Inflight {
                            packet_id: seq as u16,
                        },
                    );
                }
                b.put_kv(
                    "acks",
                    format!("{t}/{seq}").into_bytes(),
                    seq.to_le_bytes().to_vec(),
                );
                b.put_retained(message(&format!("r/{t}"), &seq.to_le_bytes()));
                store.write(b).wait_blocking().unwrap();
                println!("ACK {t} {seq}");
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

/// A cheap varying number: the kill moment should differ from run to run.
fn jitter(round: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos ^ (round.wrapping_mul(0x9e37_79b9_7f4a_7c15))) % 400
}

#[test]
fn crash_kill_9_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut max_acked: HashMap<u64, u64> = HashMap::new();
    let mut total_acks = 0u64;
    let mut rollbacks = 0u64;
    for round in 0..4u64 {
        let target = 20 + jitter(round);
        let acks = run_child_and_kill(dir.path(), target, false);
        total_acks += acks.len() as u64;
        for (t, seq) in acks {
            let m = max_acked.entry(t).or_insert(0);
            *m = (*m).max(seq);
        }

        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let info = store.open_info();
        assert!(info.recovered_from_crash && info.verified, "{info:?}");
        // `rolled_back_torn_commit` may be set: the engine writes the new header before
        // flushing its write buffer, so a kill in between leaves the newest commit torn. Its
        // fsync had not returned, so it was not acknowledged: the checks below still hold.
        rollbacks += u64::from(info.rolled_back_torn_commit);
        let snap = store.load_all().unwrap();
        for (t, max) in &max_acked {
            let cid = format!("c{t}");
            let s = snap
                .sessions
                .iter()
                .find(|s| s.session.client_id == cid)
                .unwrap_or_else(|| panic!("round {round}: session {cid} lost"));
            // Batches of one writer commit in order: what survives is a prefix, and it
            // reaches at least the last acknowledged seq.
            let seqs: Vec<u64> = s.queue.iter().map(|q| q.seq).collect();
            let last = *seqs
                .last()
                .unwrap_or_else(|| panic!("round {round}: {cid} queue empty"));
            assert_eq!(
                seqs,
                (0..=last).collect::<Vec<_>>(),
                "round {round}: {cid} has gaps"
            );
            assert!(
                last >= *max,
                "round {round}: {cid} acked {max}, only {last} on disk"
            );
            for q in &s.queue[..s.queue.len() - 1] {
                assert_eq!(
                    q.state,
                    QueuedState::Inflight {
                        packet_id: (q.seq + 1) as u16
                    }
                );
            }
            assert_eq!(
                s.queue[0].message.payload.as_ref(),
                format!("{t}:0").as_bytes()
            );
            let kv = store
                .get_kv("acks", format!("{t}/{max}").as_bytes())
                .unwrap();
            assert_eq!(kv.as_deref(), Some(&max.to_le_bytes()[..]));
            let r = snap
                .retained
                .iter()
                .find(|m| m.topic == format!("r/{t}"))
                .unwrap();
            let seq = u64::from_le_bytes(r.payload.as_ref().try_into().unwrap());
            assert!(
                seq >= *max && seq == last,
                "round {round}: retained r/{t} at {seq}"
            );
        }
        let report = store.check().unwrap();
        assert!(report.is_ok(), "round {round}: {report:?}");
    }
    assert!(total_acks >= 80, "{total_acks}");
    eprintln!("{total_acks} acknowledged batches, {rollbacks} recoveries fell back to the previous commit");
}

/// Runs the child on `dir`, SIGKILLs it once it acknowledged `target` batches, and returns
/// every acknowledgement it printed.
fn run_child_and_kill(dir: &std::path::Path, target: u64, marker: bool) -> Vec<(u64, u64)> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "crash_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR_ENV, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if marker {
        cmd.env(MARKER_ENV, "1");
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.strip_prefix("ACK ").unwrap_or("").split(' ');
            if let (Some(Ok(t)), Some(Ok(seq))) =
                (parts.next().map(str::parse), parts.next().map(str::parse))
            {
                if tx.send((t, seq)).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acks = Vec::new();
    while (acks.len() as u64) < target {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(a) => acks.push(a),
            Err(e) => panic!("child stopped acknowledging after {} acks: {e}", acks.len()),
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already in the pipe were printed after their commit resolved: acked too.
    reader.join().unwrap();
    acks.extend(rx.try_iter());
    acks
}

#[test]
fn damage_found_while_recovering_from_a_crash_is_reported_untouched() {
    let dir = tempfile::tempdir().unwrap();
    run_child_and_kill(dir.path(), 20, true);
    let path = dir.path().join(rampart_store::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let hits: Vec<usize> = bytes
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty());
    for at in hits {
        bytes[at..at + MARKER.len()].fill(b'Z');
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = RedbStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(e, rampart_store::StoreError::Corrupt { .. }),
        "{e:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file was modified"
    );
}
