//! rampart-broker: the tokio shell around the codec and the core: listeners, the connection
//! driver, the router, session timers and $SYS.
//!
//! It owns every socket and every timer; protocol data structures live in rampart-core and
//! the wire format in rampart-codec.
//!
//! No `unsafe` except the one `setsockopt` in `sockopt.rs` (TCP_DEFER_ACCEPT, which neither
//! std on stable nor socket2 offers; the measured reason is in that module).
#![deny(unsafe_code)]

pub mod admission;
pub mod connection;
pub mod fdtable;
pub mod limits;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod persist;
pub mod proxy;
pub mod router;
pub mod session;
pub mod sockopt;
pub mod sys;
pub mod timers;
pub mod tls_stream;
pub mod transport;

use rampart_config::Config;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

pub use router::Router;

/// Open the configured store: redb in the data directory, or none for `memory` (which keeps
/// nothing across restarts). A damaged or incompatible store is an error, never wiped.
pub fn open_store(cfg: &Config) -> anyhow::Result<Option<Arc<dyn rampart_store::Store>>> {
    use rampart_config::{StorageBackend, SyncMode};
    match cfg.storage.backend {
        StorageBackend::Memory => Ok(None),
        StorageBackend::Redb => {
            let opts = rampart_store::StoreOptions {
                sync: match cfg.storage.sync {
                    SyncMode::Always => rampart_store::SyncMode::Always,
                    SyncMode::Periodic { interval_ms } => {
                        rampart_store::SyncMode::Periodic { interval_ms }
                    }
                },
                ..Default::default()
            };
            let store = rampart_store::RedbStore::open(&cfg.node.data_dir, opts).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the store in {}: {e} (the store was left as it is; \
                     `rampart store check --data-dir {}` reports its state)",
                    cfg.node.data_dir.display(),
                    cfg.node.data_dir.display()
                )
            })?;
            Ok(Some(Arc::new(store)))
        }
    }
}

/// Descriptors kept for the store, listeners, logs and the like beyond client connections.
const FD_RESERVE: usize = 64;

/// Highest number of client connections this process can hold: the open-file limit minus a
/// reserve for the store, listeners and logs.
pub fn derived_max_connections() -> usize {
    fdtable::soft_nofile()
        .unwrap_or(1024)
        .saturating_sub(FD_RESERVE)
        .max(1)
}

/// The connection cap in force: `mqtt.max_connections`, or derived from the open-file limit
/// when it is 0.
pub fn max_connections(cfg: &Config) -> usize {
    if cfg.mqtt.max_connections == 0 {
        derived_max_connections()
    } else {
        cfg.mqtt.max_connections as usize
    }
}

/// Process set-up to do before the runtime starts its threads: the descriptor table is sized
/// for every connection allowed (see [`fdtable`] for why). Returns the slots reserved.
pub fn prepare_process(cfg: &Config) -> std::io::Result<usize> {
    fdtable::reserve(max_connections(cfg).saturating_add(FD_RESERVE))
}

/// Run the broker until `shutdown` turns true, then stop accepting, send DISCONNECT 0x8B to
/// v5 clients, flush and return.
pub async fn run(cfg: Arc<Config>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store = open_store(&cfg)?;
    let auth = Arc::new(
        rampart_auth::AuthService::from_config(&cfg, store.clone())
            .map_err(|e| anyhow::anyhow!("authentication setup: {e}"))?,
    );
    // ACL file changes are picked up without a restart.
    let _acl_watcher = auth.spawn_acl_watcher();
    // Admission, bans and overload state (issue 6); the banned list comes from the store.
    let limits = limits::Limits::new(&cfg.limits, store.clone());
    let router = Arc::new(Router::new(
        cfg.clone(),
        store.clone(),
        auth,
        limits.clone(),
    ));
    if let Some(store) = &store {
        let started = std::time::Instant::now();
        let snap = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.load_all()).await??
        };
        let orphans = snap.orphan_queue_entries + snap.orphan_inbound_qos2;
        let retained = snap.retained.len();
        let (sessions, queued) = persist::restore(&router, snap);
        info!(
            sessions,
            queued,
            retained,
            orphans,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "restored state from the store"
        );
    }
    let max_total = max_connections(&cfg);
    info!(max_connections = max_total, "starting");
    let live = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    tasks.push(limits.spawn_monitor(shutdown.clone()));
    // Bind everything first so that a bad address fails start-up, not a later accept.
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        match listener::bind(l).await {
            Ok(sock) => bound.push((l.clone(), sock)),
            // Zero-config mode also offers [::1]; a host without IPv6 still gets 127.0.0.1.
            Err(e) if cfg.local_only && l.bind.is_ipv6() => {
                warn!(error = %e, "skipping IPv6 loopback listener");
            }
            Err(e) => return Err(e),
        }
    }
    for (l, sock) in bound {
        tasks.push(tokio::spawn(listener::run(
            l,
            sock,
            router.clone(),
            live.clone(),
            max_total,
            limits.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(sys::run(router.clone(), shutdown.clone())));
    tasks.push(tokio::spawn(timers::run_sweep(
        router.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(timers::run_keepalive(
        router.clone(),
        shutdown.clone(),
    )));
    let _ = shutdown.wait_for(|s| *s).await;
    info!("shutting down");
    for t in tasks {
        let _ = t.await;
    }
    let flush_store = |router: &Arc<Router>| router.store.as_ref().map(|s| s.flush());
    // Connection tasks see the same signal; give them a bounded time to say goodbye.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while live.load(std::sync::atomic::Ordering::Acquire) > 0 {
        if tokio::time::Instant::now() > deadline {
            warn!("connections still open at shutdown deadline");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(flush) = flush_store(&router) {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(10), flush).await {
            warn!(error = %e, "store flush at shutdown timed out");
        }
    }
    Ok(())
}
