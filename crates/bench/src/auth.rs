//! Authentication scenarios (issue 5): the connection rate through a password check, and a
//! storm of clients that all drop and reconnect at once.
//!
//! Every client logs in as `bench-user-<i>` with the same password, from credential files
//! made once per run (see `Credentials`): Rampart's users are imported into its data directory
//! with `rampart ctl users import`, Mosquitto reads a `mosquitto_passwd` file, rumqttd a
//! plain-text table in its config.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;

use crate::hist::Hist;
use crate::mqtt::{self, ConnectOpts, ConnectTemplate};
use crate::procstat::{rss_kb, CpuMeter};
use crate::scenarios::{now_ns, source_ip, Params, Record, Target, IO_TIMEOUT};

pub const PASSWORD: &str = "bench-password-1";

pub fn username(i: usize) -> String {
    format!("bench-user-{i}")
}

/// Password files shared by every broker of one run.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub users: usize,
    /// `user:argon2id-hash` lines, the hash made by `rampart passwd` with the default
    /// parameters (one hash shared by every user: the cost of a check is the same, and making
    /// 10,000 argon2 hashes would take minutes).
    pub argon2_file: PathBuf,
    /// `user:hash` lines from `mosquitto_passwd` (PBKDF2-SHA512), read by Mosquitto and
    /// imported into Rampart for the storm, so that both verify the very same hashes.
    pub mosquitto_file: PathBuf,
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Credentials {
    pub fn make(
        dir: &Path,
        users: usize,
        rampart_bin: &Path,
        mosquitto_passwd: &str,
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let argon2 = run_with_stdin(
            Command::new(rampart_bin).args(["passwd", "--password-stdin"]),
            &format!("{PASSWORD}\n"),
        )
        .context("rampart passwd")?;
        if !argon2.starts_with("$argon2id$") {
            bail!("rampart passwd printed {argon2:?}, not an argon2id hash");
        }
        let probe = dir.join("mosquitto-probe.passwd");
        let st = Command::new(mosquitto_passwd)
            .arg("-b")
            .arg("-c")
            .arg(&probe)
            .arg(username(0))
            .arg(PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("run {mosquitto_passwd}"))?;
        if !st.success() {
            bail!("{mosquitto_passwd} failed ({st})");
        }
        let line = fs::read_to_string(&probe)?;
        let mosq = line
            .trim()
            .split_once(':')
            .map(|(_, h)| h.to_string())
            .context("mosquitto_passwd wrote no user:hash line")?;
        let write = |name: &str, hash: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            let mut text = String::with_capacity(users * (hash.len() + 20));
            for i in 0..users {
                text.push_str(&format!("{}:{hash}\n", username(i)));
            }
            fs::write(&path, text)?;
            Ok(path)
        };
        Ok(Credentials {
            users,
            argon2_file: write("argon2.passwd", &argon2)?,
            mosquitto_file: write("mosquitto.passwd", &mosq)?,
        })
    }
}

/// The PostgreSQL table the `auth-postgres` scenario reads: `users` rows with a salted
/// SHA-256 (`password_hash = "sha256-salt"`), made with psql.
pub fn prepare_postgres(url: &str, users: usize) -> Result<()> {
    let sql = format!(
        "DROP TABLE IF EXISTS bench_mqtt_user;\n\
         CREATE TABLE bench_mqtt_user (username text PRIMARY KEY, password_hash text NOT NULL, \
         salt text NOT NULL);\n\
         INSERT INTO bench_mqtt_user SELECT 'bench-user-' || i, \
         encode(sha256(convert_to('{PASSWORD}' || md5(i::text), 'UTF8')), 'hex'), md5(i::text) \
         FROM generate_series(0, {}) AS i;\n",
        users.saturating_sub(1)
    );
    run_with_stdin(
        Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", url]),
        &sql,
    )
    .context("psql (creating the bench_mqtt_user table)")?;
    Ok(())
}

/// Connection rate through the password check: `auth_concurrency` clients each connect, log
/// in, wait for the CONNACK, disconnect and start again, for the warm-up and the window.
pub async fn rate(name: &str, t: &Target, p: &Params) -> Result<Record> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for w in 0..p.auth_concurrency.max(1) {
        let (stop, measuring, ok) = (stop.clone(), measuring.clone(), ok.clone());
        let (addr, nsrc, version) = (t.addr, p.source_addrs, p.version);
        hs.push(tokio::spawn(async move {
            let o = ConnectOpts::new(format!("bench-auth-{}-{w}-", now_ns() % 1_000_000), version)
                .with_login(&username(w), PASSWORD);
            let mut tmpl = ConnectTemplate::new(&o);
            let (mut hist, mut failures, mut first) = (Hist::new(), 0u64, None);
            let mut n = 0;
            while !stop.load(Relaxed) {
                n += 1;
                tmpl.set_number(n);
                let t0 = Instant::now();
                match mqtt::connect_bare(addr, source_ip(w, nsrc), &tmpl.bytes, IO_TIMEOUT).await {
                    Ok(mut s) => {
                        if measuring.load(Relaxed) {
                            hist.record(t0.elapsed().as_nanos() as u64);
                            ok.fetch_add(1, Relaxed);
                        }
                        let _ = s.write_all(&mqtt::DISCONNECT).await;
                    }
                    Err(e) => {
                        failures += 1;
                        first.get_or_insert(format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (hist, failures, first)
        }));
    }
    tokio::time::sleep(p.warmup).await;
    let meter = CpuMeter::start(t.pid);
    let t0 = Instant::now();
    measuring.store(true, Relaxed);
    tokio::time::sleep(p.duration).await;
    measuring.store(false, Relaxed);
    let done = ok.load(Relaxed);
    let el = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.finish();
    let rss = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    stop.store(true, Relaxed);
    let mut hist = Hist::new();
    let (mut failures, mut first) = (0, None);
    for h in hs {
        if let Ok((hh, f, e)) = h.await {
            hist.merge(&hh);
            failures += f;
            if first.is_none() {
                first = e;
            }
        }
    }
    let mut r = Record::new(name, &t.broker);
    r.msgs_per_sec = done as f64 / el;
    r.set_latency(&hist);
    r.broker_cpu_s = bcpu;
    r.tool_cpu_s = tcpu;
    r.rss_kb = rss;
    r.duration_s = el;
    r.received = done;
    r.failures = failures;
    r.connections = p.auth_concurrency as u64;
    if let Some(e) = first {
        r.note = format!("{failures} failed connect(s), first: {e}");
    }
    Ok(r)
}

/// Reconnect storm: `storm_clients` logged-in clients are connected, then all drop their
/// connections at once and all reconnect at once (each retrying after a short pause when
/// refused). The figure is the time until the last one has its CONNACK.
pub async fn storm(name: &str, t: &Target, p: &Params) -> Result<Record> {
    let n = p.storm_clients;
    let run = now_ns() % 1_000_000;
    let tmpls: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..n)
            .map(|i| {
                let mut out = Vec::with_capacity(80);
                mqtt::encode_connect(
                    &mut out,
                    &ConnectOpts::new(format!("bench-storm-{run}-{i}"), p.version)
                        .with_login(&username(i), PASSWORD),
                );
                out
            })
            .collect(),
    );
    // Set-up: every client connected once (not measured), a few at a time.
    let next = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for _ in 0..p.connect_concurrency.clamp(1, n.max(1)) {
        let (next, tmpls) = (next.clone(), tmpls.clone());
        let (addr, nsrc, timeout) = (t.addr, p.source_addrs, p.storm_timeout);
        hs.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut err = None;
            loop {
                let i = next.fetch_add(1, Relaxed) as usize;
                if i >= tmpls.len() {
                    break;
                }
                match mqtt::connect_bare(addr, source_ip(i, nsrc), &tmpls[i], timeout).await {
                    Ok(s) => got.push(s),
                    Err(e) => {
                        err.get_or_insert(format!("client {i}: {e:#}"));
                    }
                }
            }
            (got, err)
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for h in hs {
        let (got, err) = h.await?;
        conns.extend(got);
        if let Some(e) = err {
            bail!("storm set-up: {e} ({} connected)", conns.len());
        }
    }
    // The storm: everyone drops at once, then everyone reconnects at once.
    drop(conns);
    let meter = CpuMeter::start(t.pid);
    let t0 = Instant::now();
    let limit = p.storm_limit;
    let failed = Arc::new(AtomicU64::new(0));
    let first_err = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut hs = Vec::with_capacity(n);
    for i in 0..n {
        let (tmpls, failed, first_err) = (tmpls.clone(), failed.clone(), first_err.clone());
        let (addr, nsrc, timeout) = (t.addr, p.source_addrs, p.storm_timeout);
        hs.push(tokio::spawn(async move {
            let mut pause = Duration::from_millis(100 + (i % 100) as u64);
            while t0.elapsed() < limit {
                match mqtt::connect_bare(addr, source_ip(i, nsrc), &tmpls[i], timeout).await {
                    Ok(s) => return Some((t0.elapsed(), s)),
                    Err(e) => {
                        failed.fetch_add(1, Relaxed);
                        if let Ok(mut g) = first_err.lock() {
                            g.get_or_insert(format!("{e:#}"));
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
            None
        }));
    }
    let mut hist = Hist::new();
    let mut done = 0u64;
    let mut last = Duration::ZERO;
    let mut held = Vec::with_capacity(n);
    for h in hs {
        if let Ok(Some((d, s))) = h.await {
            hist.record(d.as_nanos() as u64);
            done += 1;
            last = last.max(d);
            held.push(s);
        }
    }
    let (bcpu, tcpu) = meter.finish();
    let rss = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    drop(held);
    let mut r = Record::new(name, &t.broker);
    let el = last.as_secs_f64();
    r.duration_s = el;
    r.msgs_per_sec = done as f64 / el.max(1e-6);
    r.set_latency(&hist);
    r.broker_cpu_s = bcpu;
    r.tool_cpu_s = tcpu;
    r.rss_kb = rss;
    r.sent = n as u64;
    r.received = done;
    r.failures = failed.load(Relaxed);
    r.connections = done;
    r.note = format!(
        "{done} of {n} clients reconnected in {el:.2} s ({} refused or failed attempts retried)",
        r.failures
    );
    if let Some(e) = first_err.lock().ok().and_then(|g| g.clone()) {
        r.note.push_str(&format!("; first failure: {e}"));
    }
    if (done as usize) < n {
        r.error = Some(format!(
            "only {done} of {n} clients reconnected within {limit:?}; {}",
            r.note
        ));
    }
    Ok(r)
}
