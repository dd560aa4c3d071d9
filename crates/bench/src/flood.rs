//! The flood scenario (issue 6): while thousands of rapid connections, idle sockets and
//! half-sent CONNECTs come from many 127.0.0.x addresses, a legitimate client keeps connecting,
//! publishing one message to itself and receiving it. Its connect latency and failures are the
//! figure. Everything is bounded: the flood's duration, its attempts, and the sockets it holds
//! (well under the 20,000 open files a process may have, for the tool and the broker alike).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hist::Hist;
use crate::mqtt::{self, Conn, ConnectOpts, ConnectTemplate, Dial, PublishTemplate, Version};
use crate::procstat::{rss_kb, CpuMeter};
use crate::scenarios::{now_ns, Params, Record, Target};

/// Flood sources: 127.0.0.2 ..= 127.0.0.199, one /24 (the default per-network grouping).
const FLOOD_SOURCES: u8 = 198;

fn flood_ip(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (i % FLOOD_SOURCES as u64) as u8,
    ))
}

/// The legitimate clients: one in a network of its own, one among the flood's addresses.
const LEGIT: [(&str, [u8; 4]); 2] = [
    ("flood", [127, 0, 1, 200]),
    ("flood-neighbour", [127, 0, 0, 200]),
];

/// What the legitimate client saw in one phase.
#[derive(Default)]
struct LegitStats {
    connect: Hist,
    round: Hist,
    attempts: u64,
    failures: u64,
    first_error: Option<String>,
}

/// One legitimate round: CONNECT/CONNACK (timed), SUBSCRIBE to its own topic, PUBLISH QoS 1 to
/// it, receive it back (timed as the whole round), DISCONNECT.
async fn legit_round(
    addr: SocketAddr,
    ip: IpAddr,
    id: &str,
    version: Version,
    timeout: Duration,
) -> Result<(u64, u64)> {
    let t0 = Instant::now();
    let d = Dial {
        addr,
        local: Some(ip),
        tls: None,
        read_buf: 4096,
        timeout,
    };
    let mut c = Conn::connect(&d, &ConnectOpts::new(id, version)).await?;
    let connect_ns = t0.elapsed().as_nanos() as u64;
    let topic = format!("bench/legit/{id}");
    c.subscribe(&topic, 1, timeout).await?;
    let tmpl = PublishTemplate::new(version, &topic, 1, 16);
    let mut buf = Vec::with_capacity(64);
    tmpl.push(&mut buf, 2, now_ns());
    c.wr.write_all(&buf).await?;
    c.rd.expect(mqtt::PUBLISH, timeout).await?;
    let round_ns = t0.elapsed().as_nanos() as u64;
    let _ = c.wr.write_all(&mqtt::DISCONNECT).await;
    Ok((connect_ns, round_ns))
}

/// Runs the legitimate client on its own thread and runtime (so that the flood's thousands of
/// tasks on the main runtime do not delay it: its latency is the broker's, not the tool's
/// queue), one round every `interval`, until `stop`. Returns the stats of the quiet phase
/// (before `flood_on`) and of the flood.
fn spawn_legit(
    addr: SocketAddr,
    ip: IpAddr,
    id: String,
    version: Version,
    interval: Duration,
    flood_on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(LegitStats, LegitStats)>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (mut quiet, mut flood) = (LegitStats::default(), LegitStats::default());
            let mut next = Instant::now();
            while !stop.load(Relaxed) {
                let now = Instant::now();
                if next > now {
                    tokio::time::sleep(next - now).await;
                }
                next += interval;
                let during = flood_on.load(Relaxed);
                let r = legit_round(addr, ip, &id, version, Duration::from_secs(5)).await;
                // A round that straddles the end of the flood belongs to it.
                let st = if during || flood_on.load(Relaxed) {
                    &mut flood
                } else {
                    &mut quiet
                };
                st.attempts += 1;
                match r {
                    Ok((c, r)) => {
                        st.connect.record(c);
                        st.round.record(r);
                    }
                    Err(e) => {
                        st.failures += 1;
                        st.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            Ok((quiet, flood))
        })
    })
}

/// Counters of the flood itself.
#[derive(Default)]
struct FloodStats {
    attempts: AtomicU64,
    /// Rapid connections that got a successful CONNACK.
    accepted: AtomicU64,
    /// Idle and half-open sockets opened (each held until the broker closes it).
    held_opened: AtomicU64,
    held_closed_by_broker: AtomicU64,
    held_now: AtomicU64,
    held_max: AtomicU64,
}

/// A rapid connector: connect, CONNECT, wait (briefly) for the answer, close; again.
async fn rapid(addr: SocketAddr, w: u64, p: Params, st: Arc<FloodStats>, stop: Arc<AtomicBool>) {
    let mut tmpl = ConnectTemplate::new(&ConnectOpts::new(
        format!("flood-{}-{w}-", now_ns() % 1_000_000),
        p.version,
    ));
    let mut n = 0usize;
    while !stop.load(Relaxed) {
        let k = st.attempts.fetch_add(1, Relaxed);
        if k >= p.flood_max_attempts {
            break;
        }
        n += 1;
        tmpl.set_number(n);
        let r =
            mqtt::connect_bare(addr, Some(flood_ip(k)), &tmpl.bytes, Duration::from_secs(1)).await;
        if r.is_ok() {
            st.accepted.fetch_add(1, Relaxed);
        }
    }
}

/// An idle socket (nothing sent) or a slowloris (the first bytes of a CONNECT, then nothing),
/// reopened whenever the broker closes it, until `stop`.
async fn holder(addr: SocketAddr, w: u64, half: bool, st: Arc<FloodStats>, stop: Arc<AtomicBool>) {
    let mut k = w;
    while !stop.load(Relaxed) {
        k += 7919;
        let Ok(mut s) = mqtt::tcp_connect(addr, Some(flood_ip(k))).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if half && s.write_all(&[0x10, 0x20, 0x00]).await.is_err() {
            continue;
        }
        st.held_opened.fetch_add(1, Relaxed);
        let now = st.held_now.fetch_add(1, Relaxed) + 1;
        st.held_max.fetch_max(now, Relaxed);
        let mut b = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
                Err(_) if stop.load(Relaxed) => break,
                Err(_) => continue,
                Ok(Ok(n)) if n > 0 => continue,
                Ok(_) => {
                    st.held_closed_by_broker.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
        st.held_now.fetch_sub(1, Relaxed);
        if !stop.load(Relaxed) {
            // A refused socket is retried at once by a real attacker; a short pause keeps the
            // tool's own CPU for the rapid connectors.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn legit_record(name: &str, t: &Target, quiet: &LegitStats, flood: &LegitStats) -> Record {
    let mut r = Record::new(name, &t.broker);
    r.set_latency(&flood.connect);
    r.sent = flood.attempts;
    r.received = flood.attempts - flood.failures;
    r.failures = flood.failures;
    let us = |h: &Hist, q: f64| {
        if h.count() == 0 {
            "-".to_string()
        } else {
            format!("{:.0}", h.quantile(q) as f64 / 1000.0)
        }
    };
    r.note = format!(
        "{} of {} rounds failed; round trip (connect+subscribe+publish+receive) p50/p99 {}/{} us; \
         quiet baseline: connect p50/p99 {}/{} us, {} of {} failed",
        flood.failures,
        flood.attempts,
        us(&flood.round, 0.5),
        us(&flood.round, 0.99),
        us(&quiet.connect, 0.5),
        us(&quiet.connect, 0.99),
        quiet.failures,
        quiet.attempts
    );
    if let Some(e) = &flood.first_error {
        r.note.push_str(&format!("; first failure: {e}"));
    }
    r
}

/// The flood scenario; yields `flood` (legitimate client in its own /24) and `flood-neighbour`
/// (legitimate client inside the flooding /24).
pub async fn flood(t: &Target, p: &Params) -> Result<Vec<Record>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flood_on = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_millis(p.legit_interval_ms.max(10));
    let legit: Vec<_> = LEGIT
        .iter()
        .map(|(name, ip)| {
            (
                *name,
                spawn_legit(
                    t.addr,
                    IpAddr::V4(Ipv4Addr::from(*ip)),
                    format!("bench-legit-{}", ip[2]),
                    p.version,
                    interval,
                    flood_on.clone(),
                    stop.clone(),
                ),
            )
        })
        .collect();
    // Quiet baseline: the legitimate clients alone.
    tokio::time::sleep(p.warmup.max(Duration::from_secs(1))).await;

    let st = Arc::new(FloodStats::default());
    let fstop = Arc::new(AtomicBool::new(false));
    let meter = CpuMeter::start(t.pid);
    let t0 = Instant::now();
    flood_on.store(true, Relaxed);
    let mut tasks = Vec::new();
    for w in 0..p.flood_idle as u64 {
        tasks.push(tokio::spawn(holder(
            t.addr,
            w,
            false,
            st.clone(),
            fstop.clone(),
        )));
    }
    for w in 0..p.flood_half as u64 {
        tasks.push(tokio::spawn(holder(
            t.addr,
            w + 1_000_000,
            true,
            st.clone(),
            fstop.clone(),
        )));
    }
    for w in 0..p.flood_concurrency as u64 {
        tasks.push(tokio::spawn(rapid(
            t.addr,
            w,
            p.clone(),
            st.clone(),
            fstop.clone(),
        )));
    }
    tokio::time::sleep(p.flood_secs).await;
    let el = t0.elapsed().as_secs_f64();
    let (bcpu, tcpu) = meter.finish();
    let rss = t.pid.and_then(|pid| rss_kb(&pid.to_string())).unwrap_or(0);
    // The legitimate clients stop with the flood, so that no round is counted in calm water.
    stop.store(true, Relaxed);
    fstop.store(true, Relaxed);
    let mut out = Vec::new();
    for (name, h) in legit {
        let res = tokio::task::spawn_blocking(move || h.join())
            .await
            .map_err(|e| anyhow!("legit client: {e}"))?
            .map_err(|_| anyhow!("legit client thread panicked"))??;
        let (quiet, during) = res;
        let mut r = legit_record(name, t, &quiet, &during);
        r.broker_cpu_s = bcpu;
        r.tool_cpu_s = tcpu;
        r.rss_kb = rss;
        r.duration_s = el;
        out.push(r);
    }
    flood_on.store(false, Relaxed);
    for h in tasks {
        let _ = h.await;
    }
    let attempts = st.attempts.load(Relaxed).min(p.flood_max_attempts);
    let held = st.held_opened.load(Relaxed);
    let summary = format!(
        "flood: {attempts} rapid connects ({} answered CONNACK 0) and {held} idle/half-open \
         sockets opened ({} closed by the broker, at most {} held at once) in {el:.1} s: {:.0} \
         connections/s",
        st.accepted.load(Relaxed),
        st.held_closed_by_broker.load(Relaxed),
        st.held_max.load(Relaxed),
        (attempts + held) as f64 / el,
    );
    for r in &mut out {
        r.msgs_per_sec = (attempts + held) as f64 / el;
        r.connections = st.held_max.load(Relaxed);
        r.note = format!("{}; {summary}", r.note);
    }
    Ok(out)
}
