//! rampart-bench: an MQTT load generator and a same-run comparison of brokers.
//!
//! It owns its own lean MQTT client (see `mqtt`) and never links the broker's crates, so that the
//! measuring stick is independent of what it measures. Every scenario is bounded in time and in
//! count; `compare` starts each broker itself, alternates them, and reports medians and ratios.
#![forbid(unsafe_code)]

mod auth;
mod broker;
mod flood;
mod hist;
mod mqtt;
mod procstat;
mod report;
mod scenarios;
mod tls;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::broker::{Kind, LaunchOpts};
use crate::scenarios::{Params, Record, Target};

#[derive(Parser)]
#[command(
    name = "rampart-bench",
    version,
    about = "MQTT broker benchmark and peer comparison"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start each broker, run the scenarios against each in turn, print medians and ratios.
    Compare(Box<CompareArgs>),
    /// Run scenarios against a broker that is already running.
    Run(Box<RunArgs>),
}

#[derive(Args, Clone)]
struct Load {
    /// Seconds of warm-up before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of each measured window.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// MQTT protocol version spoken by the tool: 4 (3.1.1) or 5.
    #[arg(long, default_value = "4")]
    mqtt: String,
    /// Payload bytes per message (the first 8 carry the send timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Publishers in the fan-in scenarios.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Closed loop: messages the publishers may be ahead of the subscribers (per subscriber).
    #[arg(long, default_value_t = 1000)]
    window: u64,
    /// Fan-out: messages the publisher may always be ahead of the subscribers.
    #[arg(long, default_value_t = 32)]
    fanout_ahead: u64,
    /// Messages queued for the offline persistent session in persist-offline.
    #[arg(long, default_value_t = 50_000)]
    offline_msgs: u64,
    /// QoS 1: unacknowledged messages per publisher.
    #[arg(long, default_value_t = 100)]
    inflight: u64,
    /// Messages per write call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Connections for the connect-rate and first idle-memory measurement.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections for the second idle-memory measurement (below the 20,000 open-file cap).
    #[arg(long, default_value_t = 19_000)]
    idle_max: usize,
    /// Connection attempts in flight in the connect scenario.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Handshakes in flight in the TLS handshake scenario.
    #[arg(long, default_value_t = 16)]
    tls_concurrency: usize,
    /// Idle TLS connections held by the tls-idle scenario (below the 20,000 open-file cap).
    #[arg(long, default_value_t = 5_000)]
    tls_idle: usize,
    /// Read buffer per connection (bytes).
    #[arg(long, default_value_t = 64 * 1024)]
    read_buf: usize,
    /// Spread connections over this many source addresses 127.0.0.2.. (0: let the kernel pick).
    #[arg(long, default_value_t = 32)]
    source_addrs: u8,
    /// Worker threads of the tool's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Flood: seconds it lasts (after a quiet baseline as long as the warm-up).
    #[arg(long, default_value_t = 5.0)]
    flood_secs: f64,
    /// Flood: rapid connectors (connect, CONNECT, close, again) running at once.
    #[arg(long, default_value_t = 200)]
    flood_concurrency: usize,
    /// Flood: idle sockets (nothing sent) held open, reopened when the broker closes them.
    #[arg(long, default_value_t = 3000)]
    flood_idle: usize,
    /// Flood: half-open sockets (the first bytes of a CONNECT, then nothing) held open.
    #[arg(long, default_value_t = 1000)]
    flood_half: usize,
    /// Flood: at most this many rapid connection attempts in all.
    #[arg(long, default_value_t = 200_000)]
    flood_max_attempts: u64,
    /// Flood: milliseconds between the legitimate client's rounds.
    #[arg(long, default_value_t = 100)]
    legit_interval_ms: u64,
    /// Authentication rate scenarios: clients logging in at once.
    #[arg(long, default_value_t = 16)]
    auth_concurrency: usize,
    /// Clients of the reconnect storm.
    #[arg(long, default_value_t = 10_000)]
    storm_clients: usize,
    /// Seconds the reconnect storm may take before it counts as failed.
    #[arg(long, default_value_t = 120.0)]
    storm_limit: f64,
    /// A scenario fails at once when the broker's RSS passes this many MiB (the machine is
    /// shared; a broker bug must not take all of its memory).
    #[arg(long, default_value_t = 4096)]
    max_broker_rss_mb: u64,
    /// Seconds one storm client waits for its CONNACK before giving up and retrying.
    #[arg(long, default_value_t = 10.0)]
    storm_timeout: f64,
    /// Append every record as a JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Args)]
struct CompareArgs {
    /// Comma-separated: rampart, mosquitto, rumqttd. Ratios are the first over each other.
    #[arg(long, default_value = "rampart,mosquitto")]
    brokers: String,
    /// `all` or a comma-separated list of scenarios.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Repeats; the table shows medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Pin the broker to CPU 0 and the tool to CPU 1 (taskset).
    #[arg(long)]
    pin: bool,
    #[arg(long, default_value = "target/release/rampart")]
    rampart_bin: PathBuf,
    /// A complete Rampart config with placeholders {port} {tls_port} {data_dir} {storage} {cert}
    /// {key}; TLS scenarios run against Rampart only when it mentions {tls_port}.
    #[arg(long)]
    rampart_template: Option<PathBuf>,
    /// Rampart storage backend used by the persistence scenario.
    #[arg(long, default_value = "redb")]
    persist_storage: String,
    #[arg(long, default_value = "mosquitto")]
    mosquitto_bin: String,
    #[arg(long, default_value = "rumqttd")]
    rumqttd_bin: String,
    /// mosquitto_passwd, for the authentication scenarios' Mosquitto password file.
    #[arg(long, default_value = "mosquitto_passwd")]
    mosquitto_passwd_bin: String,
    /// PostgreSQL URL for the auth-postgres scenario (its table bench_mqtt_user is created
    /// with psql); without it the scenario is skipped. scripts/bench.sh starts a throwaway
    /// server on loopback and passes it.
    #[arg(long)]
    pg_url: Option<String>,
    /// Replace the generated block of this Markdown file (BENCHMARKS.md) with the results.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// The command line recorded in the document (defaults to this invocation).
    #[arg(long)]
    command_line: Option<String>,
    /// Free text added to the document's header, e.g. which commit the broker was built from.
    #[arg(long)]
    note: Option<String>,
    #[command(flatten)]
    load: Load,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Port of a TLS listener, for the tls-* scenarios.
    #[arg(long)]
    tls_port: Option<u16>,
    /// The broker's process id, to report its CPU time and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Name used for the broker in the output.
    #[arg(long, default_value = "external")]
    name: String,
    /// `all` or a comma-separated list of scenarios.
    #[arg(long, default_value = "fanin-q0")]
    scenario: String,
    #[command(flatten)]
    load: Load,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("rampart-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let load = match &cli.cmd {
        Cmd::Compare(c) => c.load.clone(),
        Cmd::Run(r) => r.load.clone(),
    };
    if let Cmd::Compare(c) = &cli.cmd {
        if c.pin {
            pin_self()?;
        }
    }
    // Threads inherit the affinity set above, so the runtime is built after pinning.
    // One thread: a current-thread runtime, so that no wake-up crosses threads (a futex and a
    // context switch per event would make the tool, not the broker, the bottleneck).
    let rt = if load.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(load.threads)
            .enable_all()
            .build()?
    };
    match cli.cmd {
        Cmd::Compare(c) => compare(&rt, *c),
        Cmd::Run(r) => run_external(&rt, *r),
    }
}

fn pin_self() -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores < 2 {
        bail!("--pin needs at least 2 CPUs, this machine has {cores}");
    }
    let st = std::process::Command::new("taskset")
        .args(["-a", "-c", "-p", "1", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset (util-linux)")?;
    if !st.success() {
        bail!("taskset failed to pin the tool to CPU 1");
    }
    Ok(())
}

fn params(l: &Load, tls: Option<Arc<mqtt::TlsClient>>) -> Result<Params> {
    let dur = |s: f64| -> Result<Duration> {
        if !(0.0..=600.0).contains(&s) {
            bail!("durations must be between 0 and 600 seconds");
        }
        Ok(Duration::from_secs_f64(s))
    };
    Ok(Params {
        version: mqtt::Version::parse(&l.mqtt)?,
        warmup: dur(l.warmup)?,
        duration: dur(l.duration)?,
        payload: l.payload.clamp(8, 256 * 1024),
        window: l.window.max(1),
        min_ahead: l.fanout_ahead.clamp(1, 10_000),
        offline_msgs: l.offline_msgs.clamp(1, 90_000),
        inflight: l.inflight.clamp(1, 60_000),
        batch: l.batch.clamp(1, 4096),
        publishers: l.publishers.clamp(1, 1000),
        connections: l.connections.clamp(1, 19_500),
        idle_max: l.idle_max.min(19_500),
        connect_concurrency: l.connect_concurrency.clamp(1, 4096),
        tls_concurrency: l.tls_concurrency.clamp(1, 1024),
        tls_idle: l.tls_idle.clamp(1, 19_500),
        tls,
        read_buf: l.read_buf.clamp(1024, 16 << 20),
        source_addrs: l.source_addrs.min(250),
        flood_secs: dur(l.flood_secs)?,
        flood_concurrency: l.flood_concurrency.clamp(1, 2000),
        // The flood's sockets count against the tool's and the broker's open-file limit.
        flood_idle: l.flood_idle.min(8000),
        flood_half: l.flood_half.min(4000),
        flood_max_attempts: l.flood_max_attempts.clamp(1, 1_000_000),
        legit_interval_ms: l.legit_interval_ms.clamp(10, 10_000),
        auth_concurrency: l.auth_concurrency.clamp(1, 1000),
        storm_clients: l.storm_clients.clamp(1, 15_000),
        storm_limit: dur(l.storm_limit)?,
        storm_timeout: dur(l.storm_timeout)?,
        max_broker_rss_mb: l.max_broker_rss_mb.max(64),
    })
}

/// A whole scenario may not take longer than this beyond its configured windows (a storm's
/// set-up logs every client in once, which may take as long as the storm itself).
fn scenario_limit(p: &Params) -> Duration {
    p.warmup + p.duration + p.flood_secs + 2 * p.storm_limit + Duration::from_secs(120)
}

struct Sink {
    file: Option<fs::File>,
}

impl Sink {
    fn new(path: &Option<PathBuf>) -> Result<Sink> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    fs::create_dir_all(dir).ok();
                }
                Some(
                    fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .with_context(|| format!("open {}", p.display()))?,
                )
            }
            None => None,
        };
        Ok(Sink { file })
    }

    fn emit(&mut self, r: &Record) {
        let line = serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        println!("{line}");
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn compare(rt: &tokio::runtime::Runtime, c: CompareArgs) -> Result<()> {
    let kinds: Vec<Kind> = c
        .brokers
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Kind::parse)
        .collect::<Result<_>>()?;
    if kinds.is_empty() {
        bail!("--brokers is empty");
    }
    let names: Vec<String> = kinds.iter().map(|k| k.name().to_string()).collect();
    let list = scenarios::parse_list(&c.scenarios)?;
    let any_tls = list.iter().any(|s| s.starts_with("tls"));
    let work = std::env::temp_dir().join(format!("rampart-bench-{}", std::process::id()));
    let cert = if any_tls {
        match broker::make_cert(&work) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("note: TLS scenarios will be skipped: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let tls = if any_tls {
        Some(Arc::new(tls::client()?))
    } else {
        None
    };
    let p = params(&c.load, tls)?;
    let rampart_template = match &c.rampart_template {
        Some(path) => {
            Some(fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?)
        }
        None => None,
    };
    // Brokers run in their own temporary directories, where a relative path would not resolve.
    let rampart_bin = if kinds.contains(&Kind::Rampart) {
        fs::canonicalize(&c.rampart_bin).with_context(|| {
            format!(
                "rampart binary {} (build it, or pass --rampart-bin)",
                c.rampart_bin.display()
            )
        })?
    } else {
        c.rampart_bin.clone()
    };
    let rampart_limits = kinds.contains(&Kind::Rampart)
        && c.rampart_template.is_none()
        && broker::rampart_knows_limits(&rampart_bin);
    if kinds.contains(&Kind::Rampart) && c.rampart_template.is_none() {
        eprintln!(
            "rampart config: {}",
            if rampart_limits {
                "permissive [limits] block added"
            } else {
                "this build has no [limits] section"
            }
        );
    }
    let any_auth = list.iter().any(|s| s.starts_with("auth"));
    let creds = if any_auth {
        match auth::Credentials::make(
            &work.join("auth"),
            p.storm_clients.max(p.auth_concurrency),
            &rampart_bin,
            &c.mosquitto_passwd_bin,
        ) {
            Ok(cr) => Some(cr),
            Err(e) => {
                eprintln!("note: authentication scenarios will fail: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let pg_url = match (&c.pg_url, list.iter().any(|s| s == "auth-postgres")) {
        (Some(url), true) => match auth::prepare_postgres(url, p.auth_concurrency) {
            Ok(()) => Some(url.clone()),
            Err(e) => {
                eprintln!("note: auth-postgres will be skipped: {e:#}");
                None
            }
        },
        _ => None,
    };
    let launch = LaunchOpts {
        creds,
        pg_url,
        rampart_limits,
        rampart_bin,
        rampart_template,
        mosquitto_bin: c.mosquitto_bin.clone(),
        rumqttd_bin: c.rumqttd_bin.clone(),
        pin: c.pin,
        persist_storage: c.persist_storage.clone(),
        cert,
        mqtt_v5: p.version == mqtt::Version::V5,
    };
    let mut sink = Sink::new(&c.load.json_out)?;
    let mut all: Vec<Record> = Vec::new();
    for rep in 0..c.repeat.max(1) {
        for sc in &list {
            // Alternate which broker goes first so that drift (thermal, neighbours) is shared.
            let mut order = kinds.clone();
            order.rotate_left(rep % kinds.len());
            for k in order {
                if scenarios::rampart_only(sc) && k != Kind::Rampart {
                    let mut r = Record::new(sc, k.name());
                    r.note = "skipped: a Rampart-only variant".into();
                    sink.emit(&r);
                    all.push(r);
                    continue;
                }
                eprintln!("[{}/{}] {sc} on {}", rep + 1, c.repeat.max(1), k.name());
                for r in run_one(rt, k, &launch, sc, &p) {
                    sink.emit(&r);
                    all.push(r);
                }
            }
        }
    }
    let _ = fs::remove_dir_all(&work);
    let sums = report::summarize(&all);
    println!("\n{}", report::console(&sums));
    let md = report::markdown(&sums, &names);
    println!("{md}");
    let extra = report::extrapolation(&sums, &names);
    if !extra.is_empty() {
        println!("{extra}");
    }
    if let Some(doc) = &c.doc {
        let cmd = c
            .command_line
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
        let when = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let note = c
            .note
            .as_deref()
            .map(|n| format!(" {n}."))
            .unwrap_or_default();
        let block = format!(
            "Generated {when} by `{cmd}`.{note}\n\nMachine: {}. Broker pinned: {}. Medians of {} \
             run(s) per scenario and broker; MQTT {}; {}-byte payloads; measured window {} s \
             after {} s of warm-up.\n\n{md}\n{}{}",
            procstat::machine(),
            if c.pin {
                "yes (broker on CPU 0, tool on CPU 1)"
            } else {
                "no"
            },
            c.repeat.max(1),
            if p.version == mqtt::Version::V5 {
                "5.0"
            } else {
                "3.1.1"
            },
            p.payload,
            c.load.duration,
            c.load.warmup,
            if extra.is_empty() {
                ""
            } else {
                "\nIdle memory extrapolated to one million connections (broker RSS only; kernel \
                 socket buffers and file-descriptor limits come on top):\n\n"
            },
            extra
        );
        let old = fs::read_to_string(doc).unwrap_or_default();
        fs::write(doc, report::update_doc(&old, &block))
            .with_context(|| format!("write {}", doc.display()))?;
        eprintln!("updated {}", doc.display());
    }
    Ok(())
}

fn run_one(
    rt: &tokio::runtime::Runtime,
    k: Kind,
    launch: &LaunchOpts,
    sc: &str,
    p: &Params,
) -> Vec<Record> {
    if let Some(why) = broker::unsupported(k, scenarios::needs(sc), launch) {
        let mut r = Record::new(sc, k.name());
        r.note = format!("skipped: {why}");
        return vec![r];
    }
    let mut b = match broker::start(k, launch, scenarios::needs(sc)) {
        Ok(b) => b,
        Err(e) => return vec![Record::failed(sc, k.name(), format!("start: {e:#}"))],
    };
    // Let the broker finish starting up before its baseline memory is read.
    std::thread::sleep(Duration::from_millis(300));
    let t = Target {
        broker: k.name().to_string(),
        addr: b.addr,
        tls_addr: b.tls_addr,
        tls_note: b.tls_note.clone(),
        pid: Some(b.pid),
    };
    let log_from = b.log_len();
    let res = run_scenario(rt, sc, &t, p);
    let mut out = match res {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => vec![Record::failed(sc, k.name(), format!("{e:#}"))],
        Err(_) => vec![Record::failed(
            sc,
            k.name(),
            format!("scenario timed out after {:?}", scenario_limit(p)),
        )],
    };
    if let Some(ex) = b.exited() {
        for r in &mut out {
            r.error.get_or_insert_with(|| ex.clone());
        }
    } else if out.iter().any(|r| r.error.is_some() || !r.note.is_empty()) {
        // What the broker said about it is the first thing a reader of a failure needs.
        let said = b.log_warnings(log_from, 5);
        if !said.is_empty() {
            for r in out
                .iter_mut()
                .filter(|r| r.error.is_some() || !r.note.is_empty())
            {
                if let Some(e) = &mut r.error {
                    e.push_str(&format!(" [broker log: {said}]"));
                } else if !r.note.starts_with("skipped")
                    && !r.note.starts_with("offered")
                    // Refusals are what these measure; the broker's log of them is noise.
                    && !sc.starts_with("flood")
                    && !sc.starts_with("auth-storm")
                {
                    r.note.push_str(&format!(" [broker log: {said}]"));
                }
            }
        }
    }
    if let Err(e) = b.stop() {
        eprintln!("stop {}: {e:#}", k.name());
    }
    out
}

/// Runs one scenario as a task (on a multi-thread runtime the orchestration then runs on the
/// workers, not on this thread), bounded by `scenario_limit`, and by the broker's memory: a
/// broker whose RSS passes `max_broker_rss_mb` fails the scenario at once, so that a broker
/// bug cannot take the shared machine's memory with it.
fn run_scenario(
    rt: &tokio::runtime::Runtime,
    sc: &str,
    t: &Target,
    p: &Params,
) -> std::result::Result<Result<Vec<Record>>, tokio::time::error::Elapsed> {
    let (sc, t, p) = (sc.to_string(), t.clone(), p.clone());
    let limit = scenario_limit(&p);
    let (pid, cap_kb) = (t.pid, p.max_broker_rss_mb.saturating_mul(1024));
    rt.block_on(async move {
        let task = tokio::spawn(async move { scenarios::run(&sc, &t, &p).await });
        let abort = task.abort_handle();
        let watch = async {
            let Some(pid) = pid.map(|p| p.to_string()) else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(kb) = procstat::rss_kb(&pid).filter(|kb| *kb > cap_kb) {
                    return Err(anyhow!(
                        "broker RSS {} MiB passed the cap of {} MiB (--max-broker-rss-mb); \
                         scenario stopped",
                        kb / 1024,
                        cap_kb / 1024
                    ));
                }
            }
        };
        let r = tokio::time::timeout(limit, async {
            tokio::select! {
                j = task => j.unwrap_or_else(|e| Err(anyhow!("scenario task failed: {e}"))),
                e = watch => e,
            }
        })
        .await;
        abort.abort();
        r
    })
}

fn run_external(rt: &tokio::runtime::Runtime, r: RunArgs) -> Result<()> {
    let list = scenarios::parse_list(&r.scenario)?;
    let resolve = |port: u16| -> Result<SocketAddr> {
        (r.host.as_str(), port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow!("cannot resolve {}", r.host))
    };
    let addr = resolve(r.port)?;
    let tls_addr = r.tls_port.map(resolve).transpose()?;
    let tls = if tls_addr.is_some() {
        Some(Arc::new(tls::client()?))
    } else {
        None
    };
    let mut p = params(&r.load, tls)?;
    if !addr.ip().is_loopback() {
        // Source-address spreading over 127.0.0.x only works towards loopback.
        p.source_addrs = 0;
    }
    let t = Target {
        broker: r.name.clone(),
        addr,
        tls_addr,
        tls_note: Some("no --tls-port given".into()),
        pid: r.pid,
    };
    let mut sink = Sink::new(&r.load.json_out)?;
    let mut all = Vec::new();
    for sc in &list {
        let res = run_scenario(rt, sc, &t, &p);
        let recs = match res {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => vec![Record::failed(sc, &r.name, format!("{e:#}"))],
            Err(_) => vec![Record::failed(sc, &r.name, "scenario timed out".into())],
        };
        for rec in recs {
            sink.emit(&rec);
            all.push(rec);
        }
    }
    println!("\n{}", report::console(&report::summarize(&all)));
    Ok(())
}
