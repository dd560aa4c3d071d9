//! Listeners: accept under the connection cap, then hand the socket to a connection task.

use crate::connection::serve_connection;
use crate::router::Router;
use rampart_config::{ListenerConfig, ListenerKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// Counts live connections; the guard gives the slot back when the task ends.
pub struct ConnGuard(pub Arc<AtomicUsize>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn bind(cfg: &ListenerConfig) -> anyhow::Result<TcpListener> {
    let sock = match cfg.bind {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.bind(cfg.bind)
        .map_err(|e| anyhow::anyhow!("listener {}: cannot bind {}: {e}", cfg.name, cfg.bind))?;
    Ok(sock.listen(4096)?)
}

pub async fn run(
    cfg: ListenerConfig,
    listener: TcpListener,
    router: Arc<Router>,
    live: Arc<AtomicUsize>,
    max_total: usize,
    shutdown: watch::Receiver<bool>,
) {
    match cfg.kind {
        ListenerKind::Tcp => {}
        other => {
            warn!(listener = %cfg.name, kind = ?other, "listener kind not supported yet; skipped");
            return;
        }
    }
    info!(listener = %cfg.name, bind = %cfg.bind, "listening (mqtt over tcp)");
    let per_listener = Arc::new(AtomicUsize::new(0));
    let listener_cap = cfg
        .max_connections
        .map(|m| m as usize)
        .unwrap_or(usize::MAX);
    let mut stop = shutdown.clone();
    let listener_name: Arc<str> = Arc::from(cfg.name.as_str());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(listener = %cfg.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if live.fetch_add(1, Ordering::AcqRel) >= max_total
            || per_listener.fetch_add(1, Ordering::AcqRel) >= listener_cap
        {
            live.fetch_sub(1, Ordering::AcqRel);
            per_listener.fetch_sub(1, Ordering::AcqRel);
            router
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        router
            .metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let guard = (ConnGuard(live.clone()), ConnGuard(per_listener.clone()));
        let router = router.clone();
        let shutdown = shutdown.clone();
        let name = listener_name.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let info = crate::connection::ConnInfo {
                peer,
                listener: name,
                transport: "tcp",
                tls: None,
            };
            serve_connection(stream, info, router, shutdown).await;
        });
    }
}
