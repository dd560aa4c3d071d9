//! The load scenarios. Each is bounded in time and in count, and returns one or more records.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::hist::Hist;
use crate::mqtt::{
    self, Conn, ConnectOpts, ConnectTemplate, Dial, PublishTemplate, SharedTls, Version,
};
use crate::procstat::{rss_kb, CpuMeter, WaitMeter};

/// Every scenario name `--scenarios all` expands to, in run order.
pub const ALL: &[&str] = &[
    "fanin-q0",
    "fanin-q1",
    "fanout-100",
    "fanout-1000",
    "latency-5k",
    "latency-20k",
    "connect",
    "persist-q1",
    "persist-offline",
    "tls-handshake",
    "tls-fanin-q0",
    "tls-idle",
    "flood",
    "auth-argon2",
    "auth-argon2-cached",
    "auth-postgres",
    "auth-storm",
    "auth-storm-cached",
];

/// Scenarios run only when named: too long for every run.
pub const EXTRA: &[&str] = &[
    // The reconnect storm through argon2id at Rampart's defaults (no verified cache): 10,000
    // logins of tens of milliseconds each, set-up and storm, several minutes of one core. Run
    // it with patient clients (`--storm-timeout`, `--storm-limit`), or they give up and retry
    // while the broker still verifies their abandoned logins.
    "auth-storm-argon2",
];

/// One measured result. Fields that do not apply to a scenario are NaN (null in JSON) or 0.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub scenario: String,
    pub broker: String,
    /// Deliveries per second at the subscribers (connections or handshakes per second for the
    /// connect and TLS handshake scenarios).
    pub msgs_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub broker_cpu_s: f64,
    pub tool_cpu_s: f64,
    /// The user-space part of `tool_cpu_s` (connect scenarios; NaN elsewhere).
    pub tool_user_cpu_s: f64,
    /// Work per broker CPU-second (rate x window / broker CPU): on a shared, noisy machine this
    /// is steadier than the rate, which also depends on how much CPU the broker was given.
    pub per_broker_cpu_s: f64,
    pub rss_kb: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// Connection attempts that failed (flood: the legitimate client's; auth: refused logins
    /// and retried storm attempts).
    pub failures: u64,
    pub duration_s: f64,
    pub connections: u64,
    pub bytes_per_conn: f64,
    /// Fixed-rate latency: milliseconds the broker's and the tool's threads were runnable but
    /// waiting for a CPU over the window (schedstat), i.e. what other processes cost the tail.
    pub broker_wait_ms: f64,
    pub tool_wait_ms: f64,
    pub note: String,
    pub error: Option<String>,
}

impl Record {
    pub fn new(scenario: &str, broker: &str) -> Self {
        Record {
            scenario: scenario.into(),
            broker: broker.into(),
            msgs_per_sec: f64::NAN,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            p999_us: f64::NAN,
            max_us: f64::NAN,
            broker_cpu_s: f64::NAN,
            tool_cpu_s: f64::NAN,
            tool_user_cpu_s: f64::NAN,
            per_broker_cpu_s: f64::NAN,
            rss_kb: 0,
            sent: 0,
            received: 0,
            lost: 0,
            failures: 0,
            duration_s: 0.0,
            connections: 0,
            bytes_per_conn: f64::NAN,
            broker_wait_ms: f64::NAN,
            tool_wait_ms: f64::NAN,
            note: String::new(),
            error: None,
        }
    }

    pub fn failed(scenario: &str, broker: &str, err: String) -> Self {
        let mut r = Record::new(scenario, broker);
        r.error = Some(err);
        r
    }

    /// Derives the per-CPU-second figure once rate, window and CPU are known.
    pub fn finish(mut self) -> Self {
        if self.broker_cpu_s > 0.0 && self.duration_s > 0.0 && self.msgs_per_sec.is_finite() {
            self.per_broker_cpu_s = self.msgs_per_sec * self.duration_s / self.broker_cpu_s;
        }
        self
    }

    pub(crate) fn set_latency(&mut self, h: &Hist) {
        if h.count() == 0 {
            return;
        }
        self.p50_us = h.quantile(0.5) as f64 / 1000.0;
        self.p99_us = h.quantile(0.99) as f64 / 1000.0;
        self.p999_us = h.quantile(0.999) as f64 / 1000.0;
        self.max_us = h.max() as f64 / 1000.0;
    }
}

/// Where and how to reach the broker under test.
#[derive(Clone)]
pub struct Target {
    pub broker: String,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub tls_note: Option<String>,
    pub pid: Option<u32>,
}

/// Knobs shared by all scenarios.
#[derive(Clone)]
pub struct Params {
    pub version: Version,
    pub warmup: Duration,
    pub duration: Duration,
    pub payload: usize,
    /// Closed loop: how many messages (per publisher message, counted at the subscribers) the
    /// publishers may be ahead of what the subscribers have received.
    pub window: u64,
    /// Fan-out: whole messages the publisher may always be ahead, whatever `window` says.
    pub min_ahead: u64,
    /// Messages queued for the offline persistent session (below every broker's queue cap).
    pub offline_msgs: u64,
    /// QoS 1: unacknowledged messages each publisher keeps in flight.
    pub inflight: u64,
    /// Messages built into one write.
    pub batch: usize,
    pub publishers: usize,
    pub connections: usize,
    pub idle_max: usize,
    pub connect_concurrency: usize,
    pub tls_concurrency: usize,
    /// Idle TLS connections held by the tls-idle scenario.
    pub tls_idle: usize,
    pub tls: Option<SharedTls>,
    pub read_buf: usize,
    /// How many 127.0.0.x source addresses connections are spread over.
    pub source_addrs: u8,
    /// Flood: how long it lasts, its rapid connectors, idle and half-open sockets held, and
    /// its cap on attempts; the legitimate client's pause between rounds.
    pub flood_secs: Duration,
    pub flood_concurrency: usize,
    pub flood_idle: usize,
    pub flood_half: usize,
    pub flood_max_attempts: u64,
    pub legit_interval_ms: u64,
    /// Authentication: clients logging in at once in the rate scenarios; clients of the
    /// reconnect storm and its time limit.
    pub auth_concurrency: usize,
    pub storm_clients: usize,
    pub storm_limit: Duration,
    /// How long one storm client waits for its CONNACK before it gives up and retries.
    pub storm_timeout: Duration,
    /// The broker's RSS above which a scenario is stopped (MiB).
    pub max_broker_rss_mb: u64,
}

/// Nanoseconds since the tool started; the payload carries this as the send timestamp (publisher
/// and subscriber are in the same process, so one clock serves both).
pub(crate) fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub(crate) fn source_ip(i: usize, n: u8) -> Option<IpAddr> {
    if n == 0 {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (i % n as usize) as u8,
    )))
}

/// Counters shared by the tasks of one scenario.
#[derive(Default)]
struct Shared {
    /// Messages published (each counts once, whatever the fan-out).
    sent: AtomicU64,
    /// Deliveries counted at the subscribers.
    received: AtomicU64,
    /// Deliveries given up as lost by the pacing (so that a dropping broker cannot stall it).
    forgiven: AtomicU64,
    measuring: AtomicBool,
    stop_pub: AtomicBool,
    stop_sub: AtomicBool,
    progress: Notify,
    /// PUBACKs received by all publishers.
    acked: AtomicU64,
    /// Publishers stop once this many messages are sent (0: no cap).
    pub_cap: u64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut g) = self.first_error.lock() {
            if g.is_none() {
                *g = Some(e.to_string());
            }
        }
    }
    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|g| g.clone())
    }
}

const POLL: Duration = Duration::from_millis(100);
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

async fn subscriber(mut c: Conn, sh: Arc<Shared>) -> Hist {
    let mut hist = Hist::new();
    let mut acks = Vec::with_capacity(4096);
    let version = c.version;
    while !sh.stop_sub.load(Relaxed) {
        match tokio::time::timeout(POLL, c.rd.fill()).await {
            Err(_) => continue,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                sh.error("subscriber: broker closed the connection");
                break;
            }
            Ok(Err(e)) => {
                sh.error(format!("subscriber read: {e}"));
                break;
            }
        }
        let now = now_ns();
        let measuring = sh.measuring.load(Relaxed);
        let mut n = 0u64;
        let r = c.rd.drain(|t, flags, body| {
            if t != mqtt::PUBLISH {
                return;
            }
            if let Some(p) = mqtt::parse_publish(flags, body, version) {
                n += 1;
                if measuring {
                    if let Some(s) = p.stamp {
                        hist.record(now.saturating_sub(s));
                    }
                }
                if p.qos == 1 {
                    mqtt::encode_puback(&mut acks, p.pkid);
                }
            }
        });
        if let Err(e) = r {
            sh.error(format!("subscriber parse: {e}"));
            break;
        }
        if n > 0 {
            sh.received.fetch_add(n, Relaxed);
            sh.progress.notify_waiters();
        }
        if !acks.is_empty() {
            if let Err(e) = c.wr.write_all(&acks).await {
                sh.error(format!("subscriber write: {e}"));
                break;
            }
            acks.clear();
        }
    }
    let _ = c.wr.write_all(&mqtt::DISCONNECT).await;
    hist
}

/// A publisher: closed loop against the subscribers' progress, plus (QoS 1) its own window of
/// unacknowledged messages.
async fn publisher(
    c: Conn,
    sh: Arc<Shared>,
    tmpl: PublishTemplate,
    fanout: u64,
    p: Params,
    qos1: bool,
) {
    let Conn { mut rd, mut wr, .. } = c;
    let acked = Arc::new(AtomicU64::new(0));
    let ack_notify = Arc::new(Notify::new());
    let ack_task: Option<JoinHandle<()>> = if qos1 {
        let (acked, ack_notify, sh) = (acked.clone(), ack_notify.clone(), sh.clone());
        Some(tokio::spawn(async move {
            while !sh.stop_sub.load(Relaxed) {
                match tokio::time::timeout(POLL, rd.fill()).await {
                    Err(_) => continue,
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        sh.error("publisher: broker closed the connection");
                        break;
                    }
                    Ok(Err(e)) => {
                        sh.error(format!("publisher read: {e}"));
                        break;
                    }
                }
                let mut n = 0;
                if rd
                    .drain(|t, _, _| {
                        if t == mqtt::PUBACK {
                            n += 1
                        }
                    })
                    .is_err()
                {
                    break;
                }
                if n > 0 {
                    acked.fetch_add(n, Relaxed);
                    sh.acked.fetch_add(n, Relaxed);
                    ack_notify.notify_one();
                }
            }
        }))
    } else {
        None
    };
    let mut buf = Vec::with_capacity(p.batch * (tmpl.bytes.len() + 1));
    let mut sent = 0u64;
    let mut pkid: u16 = 0;
    // The window counts deliveries (messages times subscribers), so that a large fan-out does not
    // let each subscriber's queue grow by the whole window; `min_ahead` whole messages are always
    // allowed so that each subscriber's reads carry several messages (one read per delivery would
    // make the tool, not the broker, the bottleneck of a large fan-out).
    let window = p.window.max(p.min_ahead * fanout);
    // Send only when a whole batch fits: topping up a few messages at a time would cost the tool
    // one small write per wake-up.
    // fanout 0: no subscriber online (persistent-session queueing): no closed loop.
    let pacing = fanout > 0;
    let batch = if pacing {
        (p.batch as u64).min(window / fanout / 2).max(1)
    } else {
        p.batch as u64
    };
    while !sh.stop_pub.load(Relaxed) {
        if sh.pub_cap > 0 && sh.sent.load(Relaxed) >= sh.pub_cap {
            break;
        }
        // Closed loop: wait while the subscribers are too far behind.
        let progress = sh.progress.notified();
        tokio::pin!(progress);
        progress.as_mut().enable();
        let total_sent = sh.sent.load(Relaxed) * fanout;
        let done = sh.received.load(Relaxed) + sh.forgiven.load(Relaxed);
        let ahead = total_sent.saturating_sub(done);
        if pacing && ahead + batch * fanout > window {
            if tokio::time::timeout(Duration::from_millis(250), progress)
                .await
                .is_err()
                && sh.received.load(Relaxed) + sh.forgiven.load(Relaxed) == done
            {
                // No delivery for a quarter second: the broker dropped what was ahead (or
                // stalled). Forgive it so that the run goes on; `lost` reports it at the end.
                sh.forgiven.fetch_add(ahead, Relaxed);
            }
            continue;
        }
        let mut n = batch;
        if sh.pub_cap > 0 {
            n = n
                .min(sh.pub_cap.saturating_sub(sh.sent.load(Relaxed)))
                .max(1);
        }
        if qos1 {
            let notified = ack_notify.notified();
            let inflight = sent.saturating_sub(acked.load(Relaxed));
            if inflight + n.min(p.inflight) > p.inflight {
                if tokio::time::timeout(Duration::from_secs(1), notified)
                    .await
                    .is_err()
                    && sent.saturating_sub(acked.load(Relaxed)) == inflight
                {
                    sh.error("publisher: no PUBACK for 1 s with a full window");
                }
                continue;
            }
            n = n.min(p.inflight.saturating_sub(inflight)).max(1);
        }
        buf.clear();
        let stamp = now_ns();
        for _ in 0..n {
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            tmpl.push(&mut buf, pkid, stamp);
        }
        if let Err(e) = wr.write_all(&buf).await {
            sh.error(format!("publisher write: {e}"));
            break;
        }
        sent += n;
        sh.sent.fetch_add(n, Relaxed);
    }
    // Wait (bounded) for the last acknowledgements so that the broker sees a tidy end.
    if qos1 {
        let t0 = Instant::now();
        while acked.load(Relaxed) < sent && t0.elapsed() < Duration::from_secs(2) {
            let _ = tokio::time::timeout(POLL, ack_notify.notified()).await;
        }
    }
    let _ = wr.write_all(&mqtt::DISCONNECT).await;
    if let Some(t) = ack_task {
        t.abort();
    }
}

fn dial<'a>(p: &'a Params, addr: SocketAddr, tls: bool, i: usize) -> Dial<'a> {
    Dial {
        addr,
        local: source_ip(i, p.source_addrs),
        tls: if tls { p.tls.as_deref() } else { None },
        read_buf: p.read_buf,
        timeout: IO_TIMEOUT,
    }
}

struct FlowSpec {
    publishers: usize,
    subscribers: usize,
    qos: u8,
    tls: bool,
    persistent_sub: bool,
    /// Publisher i's topic and the subscribers' filter.
    topic: fn(usize) -> String,
    filter: &'static str,
}

/// Throughput scenarios: publishers -> subscribers, measured over a window after a warm-up.
async fn flow(name: &str, t: &Target, p: &Params, f: FlowSpec) -> Result<Record> {
    let addr = if f.tls {
        t.tls_addr.ok_or_else(|| anyhow!("no TLS listener"))?
    } else {
        t.addr
    };
    let sh = Arc::new(Shared::default());
    let run = format!("{}", now_ns() % 1_000_000);
    let mut subs = Vec::with_capacity(f.subscribers);
    // Subscribers connect a few at a time so that a large fan-out is set up quickly but politely.
    let sem = Arc::new(Semaphore::new(64));
    let mut setups = Vec::with_capacity(f.subscribers);
    for i in 0..f.subscribers {
        let (p2, sem) = (p.clone(), sem.clone());
        let mut o = ConnectOpts::new(format!("bench-sub-{run}-{i}"), p.version);
        if f.persistent_sub {
            o.client_id = format!("bench-persist-sub-{i}");
            o.clean = false;
            o.session_expiry = 3600;
        }
        let (filter, qos) = (f.filter, f.qos);
        let read_buf = if f.subscribers > 100 {
            16 * 1024
        } else {
            p.read_buf
        };
        setups.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let mut d = dial(&p2, addr, f.tls, i);
            d.read_buf = read_buf;
            let mut c = Conn::connect(&d, &o).await?;
            c.subscribe(filter, qos, IO_TIMEOUT).await?;
            Ok::<_, anyhow::Error>(c)
        }));
    }
    for s in setups {
        let c = s.await??;
        subs.push(tokio::spawn(subscriber(c, sh.clone())));
    }
    let mut pubs = Vec::with_capacity(f.publishers);
    for i in 0..f.publishers {
        let o = ConnectOpts::new(format!("bench-pub-{run}-{i}"), p.version);
        let c = Conn::connect(&dial(p, addr, f.tls, i + f.subscribers), &o).await?;
        let tmpl = PublishTemplate::new(p.version, &(f.topic)(i), f.qos, p.payload);
        pubs.push(tokio::spawn(publisher(
            c,
            sh.clone(),
            tmpl,
            f.subscribers as u64,
            p.clone(),
            f.qos == 1,
        )));
    }
    tokio::time::sleep(p.warmup).await;
    let meter = CpuMeter::start(t.pid);
    let r0 = sh.received.load(Relaxed);
    let t0 = Instant::now();
    sh.measuring.store(true, Relaxed);
    tokio::time::sleep(p.duration).await;
    sh.measuring.store(false, Relaxed);
    let r1 = sh.received.load(Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.finish();
    let rss = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    sh.stop_pub.store(true, Relaxed);
    for h in pubs {
        let _ = h.await;
    }
    // Drain what is in flight (bounded) so that `lost` means lost, not late.
    let expect = sh.sent.load(Relaxed) * f.subscribers as u64;
    let mut last = sh.received.load(Relaxed);
    let mut still = Instant::now();
    while sh.received.load(Relaxed) < expect && still.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sh.received.load(Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    sh.stop_sub.store(true, Relaxed);
    let mut hist = Hist::new();
    for h in subs {
        if let Ok(hh) = h.await {
            hist.merge(&hh);
        }
    }
    let mut rec = Record::new(name, &t.broker);
    rec.msgs_per_sec = (r1 - r0) as f64 / elapsed;
    rec.set_latency(&hist);
    rec.broker_cpu_s = bcpu;
    rec.tool_cpu_s = tcpu;
    rec.rss_kb = rss;
    rec.sent = sh.sent.load(Relaxed);
    rec.received = sh.received.load(Relaxed);
    rec.lost = expect.saturating_sub(rec.received);
    rec.duration_s = elapsed;
    rec.connections = (f.publishers + f.subscribers) as u64;
    if let Some(e) = sh.first_error() {
        rec.note = format!("{} error(s), first: {e}", sh.errors.load(Relaxed));
    }
    Ok(rec)
}

/// Queueing for an offline persistent session: QoS 1 publishers send `offline_msgs` messages
/// while the session's client is away (each acknowledged message is then the broker's to keep),
/// then the client comes back and the queue is drained. Yields `persist-queue` (acknowledged
/// publishes per second) and `persist-drain` (deliveries per second on return).
async fn persist_offline(t: &Target, p: &Params) -> Result<Vec<Record>> {
    let mut so = ConnectOpts::new("bench-offline-sub", p.version);
    so.clean = false;
    so.session_expiry = 3600;
    let mut c = Conn::connect(&dial(p, t.addr, false, 0), &so).await?;
    c.subscribe("bench/+/data", 1, IO_TIMEOUT).await?;
    c.wr.write_all(&mqtt::DISCONNECT).await?;
    c.wr.flush().await?;
    // The broker closes after DISCONNECT; waiting for that EOF means the session is offline.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(true) = c.rd.fill().await {}
    })
    .await;
    drop(c);

    let sh = Arc::new(Shared {
        pub_cap: p.offline_msgs,
        ..Shared::default()
    });
    let mut pubs = Vec::new();
    for i in 0..p.publishers {
        let o = ConnectOpts::new(format!("bench-offline-pub-{i}"), p.version);
        let c = Conn::connect(&dial(p, t.addr, false, i + 1), &o).await?;
        let tmpl = PublishTemplate::new(p.version, &fanin_topic(i), 1, p.payload);
        pubs.push(tokio::spawn(publisher(
            c,
            sh.clone(),
            tmpl,
            0,
            p.clone(),
            true,
        )));
    }
    let limit = Duration::from_secs(60);
    let meter = CpuMeter::start(t.pid);
    let t0 = Instant::now();
    while sh.acked.load(Relaxed) < p.offline_msgs && t0.elapsed() < limit {
        if sh.errors.load(Relaxed) > 0 && pubs.iter().all(|h| h.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.finish();
    let acked = sh.acked.load(Relaxed);
    sh.stop_pub.store(true, Relaxed);
    for h in pubs {
        let _ = h.await;
    }
    sh.stop_sub.store(true, Relaxed);
    let mut q = Record::new("persist-queue", &t.broker);
    q.msgs_per_sec = acked as f64 / el;
    q.broker_cpu_s = bcpu;
    q.tool_cpu_s = tcpu;
    q.duration_s = el;
    q.sent = sh.sent.load(Relaxed);
    q.received = acked;
    q.rss_kb = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    q.note = format!("{acked} acknowledged into an offline session");
    if let Some(e) = sh.first_error() {
        q.note.push_str(&format!(
            "; {} error(s), first: {e}",
            sh.errors.load(Relaxed)
        ));
    }

    let sh2 = Arc::new(Shared::default());
    let meter = CpuMeter::start(t.pid);
    let t1 = Instant::now();
    let c = Conn::connect(&dial(p, t.addr, false, 0), &so).await?;
    let sub = tokio::spawn(subscriber(c, sh2.clone()));
    let mut last = 0;
    let mut still = Instant::now();
    while sh2.received.load(Relaxed) < acked
        && still.elapsed() < Duration::from_secs(2)
        && t1.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = sh2.received.load(Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let received = sh2.received.load(Relaxed);
    // The time to the last delivery, not including the final wait for more.
    let el = if received >= acked {
        t1.elapsed().as_secs_f64()
    } else {
        (t1.elapsed() - still.elapsed()).as_secs_f64()
    };
    let (bcpu, tcpu) = meter.finish();
    sh2.stop_sub.store(true, Relaxed);
    let _ = sub.await;
    let mut d = Record::new("persist-drain", &t.broker);
    d.msgs_per_sec = received as f64 / el.max(1e-6);
    d.broker_cpu_s = bcpu;
    d.tool_cpu_s = tcpu;
    d.duration_s = el;
    d.sent = acked;
    d.received = received;
    d.lost = acked.saturating_sub(received);
    if let Some(e) = sh2.first_error() {
        d.note = format!("{} error(s), first: {e}", sh2.errors.load(Relaxed));
    }
    Ok(vec![q, d])
}

fn fanin_topic(i: usize) -> String {
    format!("bench/{i}/data")
}

fn fanout_topic(_: usize) -> String {
    "bench/fanout".into()
}

fn lat_topic(_: usize) -> String {
    "bench/latency".into()
}

/// A fixed offered rate, one publisher to one subscriber at QoS 0. Messages leave in bursts of
/// rate/1000 on each 1 ms tick (the timer's resolution), each stamped at its write.
async fn latency(name: &str, t: &Target, p: &Params, rate: u64) -> Result<Record> {
    let sh = Arc::new(Shared::default());
    let mut sc = Conn::connect(
        &dial(p, t.addr, false, 0),
        &ConnectOpts::new(format!("bench-lat-sub-{}", now_ns() % 1_000_000), p.version),
    )
    .await?;
    sc.subscribe("bench/latency", 0, IO_TIMEOUT).await?;
    let sub = tokio::spawn(subscriber(sc, sh.clone()));
    let mut pc = Conn::connect(
        &dial(p, t.addr, false, 1),
        &ConnectOpts::new(format!("bench-lat-pub-{}", now_ns() % 1_000_000), p.version),
    )
    .await?;
    let tmpl = PublishTemplate::new(p.version, &lat_topic(0), 0, p.payload);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let total = p.warmup + p.duration;
    let mut sent = 0u64;
    let mut meter = None;
    let mut waits = None;
    let mut r0 = 0;
    let mut t0 = start;
    let mut window_sent = 0u64;
    while start.elapsed() < total {
        tick.tick().await;
        let el = start.elapsed();
        if meter.is_none() && el >= p.warmup {
            meter = Some(CpuMeter::start(t.pid));
            waits = Some(WaitMeter::start(t.pid));
            r0 = sh.received.load(Relaxed);
            t0 = Instant::now();
            window_sent = sent;
            sh.measuring.store(true, Relaxed);
        }
        let due = (el.as_secs_f64() * rate as f64) as u64;
        if due <= sent {
            continue;
        }
        // Bound one burst so that a stalled timer does not become a flood.
        let n = (due - sent).min(rate / 100 + 1);
        buf.clear();
        let stamp = now_ns();
        for _ in 0..n {
            tmpl.push(&mut buf, 0, stamp);
        }
        pc.wr.write_all(&buf).await?;
        sent += n;
        sh.sent.fetch_add(n, Relaxed);
    }
    sh.measuring.store(false, Relaxed);
    let r1 = sh.received.load(Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.map(|m| m.finish()).unwrap_or((f64::NAN, f64::NAN));
    let (bwait, twait) = waits.map(|w| w.finish()).unwrap_or((None, None));
    let rss = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    let t1 = Instant::now();
    while sh.received.load(Relaxed) < sent && t1.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sh.stop_sub.store(true, Relaxed);
    let hist = sub.await.unwrap_or_default();
    let _ = pc.wr.write_all(&mqtt::DISCONNECT).await;
    let mut rec = Record::new(name, &t.broker);
    rec.msgs_per_sec = (r1 - r0) as f64 / elapsed;
    rec.set_latency(&hist);
    rec.broker_cpu_s = bcpu;
    rec.tool_cpu_s = tcpu;
    rec.rss_kb = rss;
    rec.sent = sent;
    rec.received = sh.received.load(Relaxed);
    rec.lost = sent.saturating_sub(rec.received);
    rec.duration_s = elapsed;
    rec.connections = 2;
    let offered = (sent - window_sent) as f64 / elapsed;
    if offered < rate as f64 * 0.98 {
        rec.note = format!("offered only {offered:.0} msg/s (the tool fell behind)");
    }
    rec.broker_wait_ms = bwait.unwrap_or(f64::NAN);
    rec.tool_wait_ms = twait.unwrap_or(f64::NAN);
    if let (Some(b), Some(w)) = (bwait, twait) {
        // Both processes sleep between ticks: time spent runnable but off a CPU is other
        // processes' doing, and it lands in the tail percentiles.
        let waited = format!("waited for a CPU: broker {b:.1} ms, tool {w:.1} ms");
        rec.note = if rec.note.is_empty() {
            waited
        } else {
            format!("{}; {waited}", rec.note)
        };
    }
    if let Some(e) = sh.first_error() {
        rec.error = Some(e);
    }
    Ok(rec)
}

/// Runs the connection attempts numbered `first..first + count` on `workers` tasks that take
/// numbers from a shared counter. Each worker owns a copy of `state` (a pre-encoded CONNECT),
/// which `connect` is given and hands back, so that no attempt spawns, allocates or encodes
/// and the tool's share of the CPU goes to the sockets. Returns the connections made, the
/// number of failures and the first failure.
async fn connect_pool<T, S, F, Fut>(
    first: usize,
    count: usize,
    workers: usize,
    state: S,
    connect: F,
) -> (Vec<T>, u64, Option<String>)
where
    T: Send + 'static,
    S: Clone + Send + 'static,
    F: Fn(usize, S) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (S, Result<T>)> + Send,
{
    let next = Arc::new(AtomicU64::new(first as u64));
    let end = (first + count) as u64;
    let workers = workers.clamp(1, count.max(1));
    let mut hs = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (next, mut state, connect) = (next.clone(), state.clone(), connect.clone());
        hs.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut errors = 0u64;
            let mut first_err = None;
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= end {
                    break;
                }
                let (back, r) = connect(i as usize, state).await;
                state = back;
                match r {
                    Ok(c) => got.push(c),
                    Err(e) => {
                        errors += 1;
                        first_err.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (got, errors, first_err)
        }));
    }
    let mut all = Vec::with_capacity(count);
    let mut first_err = None;
    let mut errors = 0;
    for h in hs {
        match h.await {
            Ok((got, n, e)) => {
                all.extend(got);
                errors += n;
                if first_err.is_none() {
                    first_err = e;
                }
            }
            Err(e) => {
                errors += 1;
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    (all, errors, first_err)
}

/// Opens `count` MQTT connections (CONNECT..CONNACK) with `connect_concurrency` attempts in
/// flight and keeps them.
async fn open_many(
    t: &Target,
    p: &Params,
    first: usize,
    count: usize,
    keep: &mut Vec<TcpStream>,
) -> Result<()> {
    let run = now_ns() % 1_000_000;
    let tmpl = ConnectTemplate::new(&ConnectOpts::new(format!("bench-idle-{run}-"), p.version));
    let (addr, nsrc) = (t.addr, p.source_addrs);
    let (got, errors, first_err) = connect_pool(
        first,
        count,
        p.connect_concurrency,
        tmpl,
        move |i, mut tmpl: ConnectTemplate| async move {
            tmpl.set_number(i);
            let r = mqtt::connect_bare(addr, source_ip(i, nsrc), &tmpl.bytes, IO_TIMEOUT).await;
            (tmpl, r)
        },
    )
    .await;
    keep.extend(got);
    match first_err {
        Some(e) => bail!(
            "{errors} of {count} connections failed (holding {}); first: {e}",
            keep.len()
        ),
        None => Ok(()),
    }
}

/// Connection rate for `connections`, then idle broker memory per connection at `connections`
/// and at `idle_max`.
async fn connect(t: &Target, p: &Params) -> Result<Vec<Record>> {
    let pid = t.pid.map(|x| x.to_string());
    let settle = Duration::from_millis(1500);
    let base = pid.as_deref().and_then(rss_kb).unwrap_or(0);
    let mut keep = Vec::with_capacity(p.idle_max.max(p.connections));
    let meter = CpuMeter::start(t.pid);
    let t0 = Instant::now();
    let r = open_many(t, p, 0, p.connections, &mut keep).await;
    let el = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.finish();
    let tuser = meter.tool_user();
    let mut out = Vec::new();
    let mut rec = Record::new(&format!("connect-{}", short(p.connections)), &t.broker);
    rec.msgs_per_sec = keep.len() as f64 / el;
    rec.broker_cpu_s = bcpu;
    rec.tool_cpu_s = tcpu;
    rec.tool_user_cpu_s = tuser;
    rec.duration_s = el;
    rec.connections = keep.len() as u64;
    if let Err(e) = r {
        rec.error = Some(format!("{e:#}"));
        out.push(rec);
        return Ok(out);
    }
    out.push(rec);
    for (target, name) in [
        (p.connections, format!("idle-{}", short(p.connections))),
        (p.idle_max, format!("idle-{}", short(p.idle_max))),
    ] {
        if target > keep.len() {
            let have = keep.len();
            if let Err(e) = open_many(t, p, have, target - have, &mut keep).await {
                out.push(Record::failed(&name, &t.broker, format!("{e:#}")));
                break;
            }
        }
        tokio::time::sleep(settle).await;
        let rss = pid.as_deref().and_then(rss_kb).unwrap_or(0);
        let mut rec = Record::new(&name, &t.broker);
        rec.rss_kb = rss;
        rec.connections = keep.len() as u64;
        rec.bytes_per_conn = (rss.saturating_sub(base) as f64 * 1024.0) / keep.len() as f64;
        out.push(rec);
    }
    // Close quickly and without waiting on the broker.
    drop(keep);
    Ok(out)
}

fn short(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Full TLS 1.3 handshakes per second (no resumption) with a few handshakes in flight.
async fn tls_handshakes(t: &Target, p: &Params) -> Result<Record> {
    let addr = t.tls_addr.ok_or_else(|| anyhow!("no TLS listener"))?;
    let tls = p
        .tls
        .clone()
        .ok_or_else(|| anyhow!("TLS client not set up"))?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errs = Arc::new(Shared::default());
    let mut hs = Vec::new();
    for w in 0..p.tls_concurrency.max(1) {
        let (tls, done, stop, errs) = (tls.clone(), done.clone(), stop.clone(), errs.clone());
        let nsrc = p.source_addrs;
        hs.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Relaxed) {
                i += 64;
                let r = async {
                    let tcp = mqtt::tcp_connect(addr, source_ip(i, nsrc)).await?;
                    let mut s = tls.connector.connect(tls.server_name.clone(), tcp).await?;
                    let _ = s.shutdown().await;
                    Ok::<_, anyhow::Error>(())
                };
                match tokio::time::timeout(IO_TIMEOUT, r).await {
                    Ok(Ok(())) => {
                        done.fetch_add(1, Relaxed);
                    }
                    Ok(Err(e)) => {
                        errs.error(format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => errs.error("handshake timed out"),
                }
            }
        }));
    }
    tokio::time::sleep(p.warmup).await;
    let meter = CpuMeter::start(t.pid);
    let d0 = done.load(Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(p.duration).await;
    let d1 = done.load(Relaxed);
    let el = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.finish();
    stop.store(true, Relaxed);
    for h in hs {
        let _ = h.await;
    }
    let mut rec = Record::new("tls-handshake", &t.broker);
    rec.msgs_per_sec = (d1 - d0) as f64 / el;
    rec.broker_cpu_s = bcpu;
    rec.tool_cpu_s = tcpu;
    rec.duration_s = el;
    rec.rss_kb = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    if let Some(e) = errs.first_error() {
        rec.note = format!("{} error(s), first: {e}", errs.errors.load(Relaxed));
    }
    Ok(rec)
}

/// Idle broker memory per TLS connection: `tls_idle` connections, each a full TLS handshake
/// then CONNECT/CONNACK, held open; broker RSS above its baseline divided by the connections.
/// Long-lived TLS connections are what an IoT fleet holds, and TLS state (record buffers, keys)
/// is most of what each one costs.
async fn tls_idle(t: &Target, p: &Params) -> Result<Record> {
    let addr = t.tls_addr.ok_or_else(|| anyhow!("no TLS listener"))?;
    let tls = p
        .tls
        .clone()
        .ok_or_else(|| anyhow!("TLS client not set up"))?;
    let pid = t.pid.map(|x| x.to_string());
    let base = pid.as_deref().and_then(rss_kb).unwrap_or(0);
    let count = p.tls_idle.max(1);
    let run = now_ns() % 1_000_000;
    let tmpl = ConnectTemplate::new(&ConnectOpts::new(
        format!("bench-tls-idle-{run}-"),
        p.version,
    ));
    let nsrc = p.source_addrs;
    let (keep, _, first_err) = connect_pool(
        0,
        count,
        p.tls_concurrency,
        tmpl,
        move |i, mut tmpl: ConnectTemplate| {
            let tls = tls.clone();
            async move {
                tmpl.set_number(i);
                let r = async {
                    let tcp = mqtt::tcp_connect(addr, source_ip(i, nsrc)).await?;
                    let mut s = tls.connector.connect(tls.server_name.clone(), tcp).await?;
                    s.write_all(&tmpl.bytes).await?;
                    mqtt::read_connack(&mut s).await?;
                    Ok::<_, anyhow::Error>(s)
                };
                let r = tokio::time::timeout(IO_TIMEOUT, r)
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("TLS connection timed out")));
                (tmpl, r)
            }
        },
    )
    .await;
    let name = format!("tls-idle-{}", short(count));
    if let Some(e) = first_err {
        return Ok(Record::failed(
            &name,
            &t.broker,
            format!(
                "{} of {count} TLS connections failed; first: {e}",
                count - keep.len()
            ),
        ));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = pid.as_deref().and_then(rss_kb).unwrap_or(0);
    let mut rec = Record::new(&name, &t.broker);
    rec.rss_kb = rss;
    rec.connections = keep.len() as u64;
    rec.bytes_per_conn = (rss.saturating_sub(base) as f64 * 1024.0) / keep.len() as f64;
    drop(keep);
    Ok(rec)
}

/// What the broker must offer for a scenario.
pub fn needs(name: &str) -> crate::broker::Needs {
    use crate::broker::Auth;
    crate::broker::Needs {
        persistence: name.starts_with("persist"),
        tls: name.starts_with("tls"),
        // What the flood measures is the production admission control.
        production_limits: name == "flood",
        auth: match name {
            "auth-argon2" | "auth-storm-argon2" => Some(Auth::Argon2 { cache_secs: 0 }),
            "auth-argon2-cached" | "auth-storm-cached" => Some(Auth::Argon2 { cache_secs: 300 }),
            "auth-postgres" => Some(Auth::Postgres),
            "auth-storm" => Some(Auth::MosquittoHashes),
            _ => None,
        },
    }
}

/// Scenarios that are a Rampart-only variant of another (a non-default Rampart setting); the
/// other brokers are not run again for them.
pub fn rampart_only(name: &str) -> bool {
    name.ends_with("-cached") || name == "auth-storm-argon2"
}

/// Runs one scenario (it may yield several records, e.g. `connect`).
pub async fn run(name: &str, t: &Target, p: &Params) -> Result<Vec<Record>> {
    if name.starts_with("tls") && t.tls_addr.is_none() {
        // Named like the record the scenario yields when it runs, so that the tables put the
        // skipped broker in the same row as the others.
        let record = match name {
            "tls-idle" => format!("tls-idle-{}", short(p.tls_idle.max(1))),
            _ => name.to_string(),
        };
        let mut r = Record::new(&record, &t.broker);
        r.note = format!(
            "skipped: {}",
            t.tls_note
                .clone()
                .unwrap_or_else(|| "no TLS listener".into())
        );
        return Ok(vec![r]);
    }
    let fanin = |qos, tls, persistent_sub| FlowSpec {
        publishers: p.publishers,
        subscribers: 1,
        qos,
        tls,
        persistent_sub,
        topic: fanin_topic,
        filter: "bench/+/data",
    };
    let fanout = |n| FlowSpec {
        publishers: 1,
        subscribers: n,
        qos: 0,
        tls: false,
        persistent_sub: false,
        topic: fanout_topic,
        filter: "bench/fanout",
    };
    let out = match name {
        "fanin-q0" => vec![flow(name, t, p, fanin(0, false, false)).await?],
        "fanin-q1" => vec![flow(name, t, p, fanin(1, false, false)).await?],
        "persist-q1" => vec![flow(name, t, p, fanin(1, false, true)).await?],
        "tls-fanin-q0" => vec![flow(name, t, p, fanin(0, true, false)).await?],
        "fanout-100" => vec![flow(name, t, p, fanout(100)).await?],
        "fanout-1000" => vec![flow(name, t, p, fanout(1000)).await?],
        "latency-5k" => vec![latency(name, t, p, 5_000).await?],
        "latency-20k" => vec![latency(name, t, p, 20_000).await?],
        "connect" => connect(t, p).await?,
        "persist-offline" => persist_offline(t, p).await?,
        "tls-handshake" => vec![tls_handshakes(t, p).await?],
        "tls-idle" => vec![tls_idle(t, p).await?],
        "flood" => crate::flood::flood(t, p).await?,
        "auth-argon2" | "auth-argon2-cached" | "auth-postgres" => {
            vec![crate::auth::rate(name, t, p).await?]
        }
        "auth-storm" | "auth-storm-cached" | "auth-storm-argon2" => {
            vec![crate::auth::storm(name, t, p).await?]
        }
        other => bail!("unknown scenario {other:?}; known: {}", ALL.join(", ")),
    };
    Ok(out.into_iter().map(Record::finish).collect())
}

/// Expands `all` and validates names.
pub fn parse_list(s: &str) -> Result<Vec<String>> {
    if s == "all" {
        return Ok(ALL.iter().map(|s| s.to_string()).collect());
    }
    let mut v = Vec::new();
    for n in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !ALL.contains(&n) && !EXTRA.contains(&n) {
            bail!(
                "unknown scenario {n:?}; known: all, {}, {}",
                ALL.join(", "),
                EXTRA.join(", ")
            );
        }
        v.push(n.to_string());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    type Subs = Arc<std::sync::Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>>;

    /// A toy broker for the harness's own tests: every subscriber gets every PUBLISH, QoS 1
    /// publishes are acknowledged at once. Just enough to exercise the scenarios end to end.
    async fn toy_broker() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let subs: Subs = Arc::default();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(toy_conn(s, subs.clone()));
            }
        });
        addr
    }

    async fn toy_conn(s: tokio::net::TcpStream, subs: Subs) {
        let (mut rd, mut wr) = s.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while let Some((len, hl)) = buf.get(at + 1..).and_then(read_len) {
                let total = 1 + hl + len;
                if buf.len() < at + total {
                    break;
                }
                let pkt = &buf[at..at + total];
                let body = &pkt[1 + hl..];
                match pkt[0] >> 4 {
                    mqtt::CONNECT => {
                        let _ = tx.send(vec![0x20, 2, 0, 0]);
                    }
                    8 => {
                        let _ = tx.send(vec![0x90, 3, body[0], body[1], 1]);
                        if let Ok(mut g) = subs.lock() {
                            g.push(tx.clone());
                        }
                    }
                    mqtt::PUBLISH => {
                        if (pkt[0] >> 1) & 3 == 1 {
                            let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                            let id = &body[2 + tl..4 + tl];
                            let _ = tx.send(vec![0x40, 2, id[0], id[1]]);
                        }
                        if let Ok(g) = subs.lock() {
                            for s in g.iter() {
                                let _ = s.send(pkt.to_vec());
                            }
                        }
                    }
                    14 => return,
                    _ => {}
                }
                at += total;
            }
            buf.drain(..at);
        }
    }

    fn read_len(b: &[u8]) -> Option<(usize, usize)> {
        let mut v = 0usize;
        for (i, byte) in b.iter().take(4).enumerate() {
            v |= ((byte & 0x7f) as usize) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((v, i + 1));
            }
        }
        None
    }

    fn params() -> Params {
        Params {
            version: Version::V4,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            payload: 64,
            window: 1000,
            min_ahead: 32,
            offline_msgs: 1000,
            inflight: 100,
            batch: 64,
            publishers: 2,
            connections: 50,
            idle_max: 60,
            connect_concurrency: 8,
            tls_concurrency: 2,
            tls_idle: 20,
            tls: None,
            read_buf: 64 * 1024,
            // The toy broker listens on 127.0.0.1 only, like the real runs; keep the default
            // source address so that the test does not depend on 127.0.0.x being routable.
            source_addrs: 0,
            flood_secs: Duration::from_millis(500),
            flood_concurrency: 4,
            flood_idle: 10,
            flood_half: 10,
            flood_max_attempts: 2000,
            legit_interval_ms: 50,
            auth_concurrency: 2,
            storm_clients: 50,
            storm_limit: Duration::from_secs(10),
            storm_timeout: Duration::from_secs(10),
            max_broker_rss_mb: 4096,
        }
    }

    async fn target() -> Target {
        Target {
            broker: "toy".into(),
            addr: toy_broker().await,
            tls_addr: None,
            tls_note: None,
            pid: None,
        }
    }

    #[tokio::test]
    async fn fan_in_delivers_everything_at_qos_0_and_1() {
        for name in ["fanin-q0", "fanin-q1"] {
            let t = target().await;
            let recs = tokio::time::timeout(Duration::from_secs(30), run(name, &t, &params()))
                .await
                .expect("bounded")
                .expect("runs");
            let r = &recs[0];
            assert!(r.error.is_none(), "{r:?}");
            assert!(r.msgs_per_sec > 0.0, "{r:?}");
            assert_eq!(r.lost, 0, "{r:?}");
            assert_eq!(r.sent, r.received, "{r:?}");
            assert!(r.p50_us.is_finite() && r.p50_us <= r.p99_us, "{r:?}");
        }
    }

    #[tokio::test]
    async fn fixed_rate_latency_sends_the_offered_rate() {
        let t = target().await;
        let recs = tokio::time::timeout(Duration::from_secs(30), run("latency-5k", &t, &params()))
            .await
            .expect("bounded")
            .expect("runs");
        let r = &recs[0];
        assert!(r.error.is_none(), "{r:?}");
        // 5,000 msg/s for 0.4 s in all, give or take a timer tick.
        assert!((1500..=2100).contains(&r.sent), "{r:?}");
        assert_eq!(r.lost, 0, "{r:?}");
        // The tool's wait for a CPU is known wherever the kernel keeps schedstat; the broker's
        // only with its pid.
        if std::path::Path::new("/proc/self/schedstat").exists() {
            assert!(r.tool_wait_ms >= 0.0, "{r:?}");
        }
        assert!(r.broker_wait_ms.is_nan(), "{r:?}");
    }

    #[tokio::test]
    async fn connect_scenario_holds_the_connections() {
        let t = target().await;
        let recs = tokio::time::timeout(Duration::from_secs(30), run("connect", &t, &params()))
            .await
            .expect("bounded")
            .expect("runs");
        let names: Vec<&str> = recs.iter().map(|r| r.scenario.as_str()).collect();
        assert_eq!(names, ["connect-50", "idle-50", "idle-60"]);
        assert_eq!(recs[0].connections, 50);
        assert_eq!(recs[2].connections, 60);
    }

    #[tokio::test]
    async fn auth_rate_and_storm_log_in_and_count() {
        let t = target().await;
        let p = params();
        let recs = tokio::time::timeout(Duration::from_secs(30), run("auth-argon2", &t, &p))
            .await
            .expect("bounded")
            .expect("runs");
        assert!(
            recs[0].error.is_none() && recs[0].msgs_per_sec > 0.0,
            "{:?}",
            recs[0]
        );
        let recs = tokio::time::timeout(Duration::from_secs(30), run("auth-storm", &t, &p))
            .await
            .expect("bounded")
            .expect("runs");
        let r = &recs[0];
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.received, p.storm_clients as u64, "{r:?}");
        assert!(r.duration_s > 0.0 && r.max_us.is_finite(), "{r:?}");
    }

    #[tokio::test]
    async fn flood_measures_both_legitimate_clients() {
        let t = target().await;
        let recs = tokio::time::timeout(Duration::from_secs(30), run("flood", &t, &params()))
            .await
            .expect("bounded")
            .expect("runs");
        let names: Vec<&str> = recs.iter().map(|r| r.scenario.as_str()).collect();
        assert_eq!(names, ["flood", "flood-neighbour"]);
        for r in &recs {
            // The toy broker refuses nothing: every round of the legitimate client succeeds.
            assert!(r.sent > 0 && r.failures == 0, "{r:?}");
            assert!(r.p50_us.is_finite(), "{r:?}");
            assert!(r.msgs_per_sec > 0.0, "{r:?}");
        }
    }

    #[tokio::test]
    async fn tls_scenarios_skip_without_a_tls_listener() {
        let t = target().await;
        for (name, record) in [
            ("tls-handshake", "tls-handshake"),
            ("tls-idle", "tls-idle-20"),
        ] {
            let recs = run(name, &t, &params()).await.expect("runs");
            assert!(recs[0].note.starts_with("skipped"), "{:?}", recs[0]);
            assert_eq!(recs[0].scenario, record);
        }
    }

    /// A TLS listener that answers every CONNECT with a CONNACK and then holds the connection.
    async fn toy_tls_broker() -> SocketAddr {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = [0u8; 256];
                    if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                        let _ = s.write_all(&[0x20, 2, 0, 0]).await;
                        let _ = s.flush().await;
                    }
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn tls_idle_holds_every_connection() {
        let mut t = target().await;
        t.tls_addr = Some(toy_tls_broker().await);
        let mut p = params();
        p.tls = Some(Arc::new(crate::tls::client().expect("client")));
        let recs = tokio::time::timeout(Duration::from_secs(30), run("tls-idle", &t, &p))
            .await
            .expect("bounded")
            .expect("runs");
        let r = &recs[0];
        assert_eq!(r.scenario, "tls-idle-20");
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.connections, 20, "{r:?}");
    }

    #[test]
    fn scenario_lists_are_validated() {
        assert_eq!(parse_list("all").expect("all").len(), ALL.len());
        assert!(parse_list("fanin-q0,nope").is_err());
    }
}
