//! Listeners: accept under the connection caps (before any TLS or WebSocket work), then run
//! the transport's handshake under a timeout and hand the stream to a connection task.
//!
//! Kinds: `tcp`, `tls`, `ws`, `wss`. Any of them may expect a PROXY protocol header from its
//! trusted proxies; a header from any other peer is refused.

use crate::connection::{serve_connection, ConnInfo};
use crate::proxy;
use crate::router::Router;
use crate::transport::{accept_ws, Prefixed};
use rampart_config::{ListenerConfig, ListenerKind};
use rampart_tls::stats::{self, STATS};
use rampart_tls::TlsSource;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Counts live connections; the guard gives the slot back when the task ends.
pub struct ConnGuard(pub Arc<AtomicUsize>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A bound socket plus, for tls/wss, the listener's live TLS configuration.
pub struct Bound {
    pub socket: TcpListener,
    pub tls: Option<TlsSource>,
}

/// Binds the socket and, for TLS kinds, loads the certificates (a bad file fails start-up)
/// and starts their reload task.
pub async fn bind(cfg: &ListenerConfig) -> anyhow::Result<Bound> {
    let tls = match (&cfg.tls, cfg.kind.is_tls()) {
        (Some(t), true) => {
            Some(rampart_tls::start(&cfg.name, t).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        (None, true) => anyhow::bail!("listener {}: kind {} needs a tls table", cfg.name, cfg.kind),
        _ => None,
    };
    let sock = match cfg.bind {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which saves a
    // setsockopt per connection; `run` checks the first accepted socket and sets it on each
    // one itself where the option is not inherited.
    sock.set_nodelay(true)?;
    // Woken by the client's first bytes, not its handshake (sockopt.rs has the measurements).
    // Not fatal: without it the broker is only slower to accept.
    if let Err(e) = crate::sockopt::set_defer_accept(&sock, crate::sockopt::DEFER_ACCEPT_SECS) {
        warn!(listener = %cfg.name, error = %e, "TCP_DEFER_ACCEPT not set");
    }
    sock.bind(cfg.bind)
        .map_err(|e| anyhow::anyhow!("listener {}: cannot bind {}: {e}", cfg.name, cfg.bind))?;
    Ok(Bound {
        socket: sock.listen(4096)?,
        tls,
    })
}

/// What a connection task needs from its listener.
struct Shared {
    cfg: ListenerConfig,
    name: Arc<str>,
    tls: Option<TlsSource>,
    router: Arc<Router>,
    limits: Arc<crate::limits::Limits>,
    /// Bound on the PROXY header, TLS and WebSocket handshakes together.
    handshake_timeout: Duration,
}

pub async fn run(
    cfg: ListenerConfig,
    bound: Bound,
    router: Arc<Router>,
    live: Arc<AtomicUsize>,
    max_total: usize,
    limits: Arc<crate::limits::Limits>,
    shutdown: watch::Receiver<bool>,
) {
    let Bound {
        socket: listener,
        tls,
    } = bound;
    info!(listener = %cfg.name, bind = %cfg.bind, kind = %cfg.kind,
        proxy_protocol = cfg.proxy_protocol, "listening");
    let per_listener = Arc::new(AtomicUsize::new(0));
    let listener_cap = cfg
        .max_connections
        .map(|m| m as usize)
        .unwrap_or(usize::MAX);
    let handshake_timeout = tls
        .as_ref()
        .map(|t| t.handshake_timeout)
        .unwrap_or_else(|| Duration::from_secs(u64::from(router.cfg.mqtt.connect_timeout_secs)));
    let shared = Arc::new(Shared {
        name: Arc::from(cfg.name.as_str()),
        cfg,
        tls,
        router: router.clone(),
        limits: limits.clone(),
        handshake_timeout,
    });
    let mut stop = shutdown.clone();
    // One shutdown future for the listener's life, not one built per accepted socket.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    // Whether accepted sockets come with TCP_NODELAY (inherited from the listening socket):
    // learnt from the first one, then trusted.
    let mut nodelay_inherited = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut stopped => {
                // Connections past CONNECT learn of the shutdown through their sessions.
                router.registry.close();
                return;
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(listener = %shared.cfg.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Admission first: a refused connection costs no handshake work. Rates, per-source
        // caps, address bans and overload (counted and logged by `limits`) come before the
        // global caps so that a flood from one source cannot use up the global slots.
        let now = std::time::Instant::now();
        let proxied = shared.cfg.proxy_protocol
            && shared
                .cfg
                .trusted_proxies
                .iter()
                .any(|n| n.contains(peer.ip()));
        let admission = if proxied {
            limits.admit_proxied(&shared.name, peer.ip(), now)
        } else {
            limits.admit(&shared.name, peer.ip(), now)
        };
        let admitted = match admission {
            Ok(g) => g,
            Err(_) => {
                router
                    .metrics
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
        };
        // Both counters are taken before either is checked, so that both are given back on
        // refusal (a short-circuit here once made the per-listener count wrap below zero).
        let over_total = live.fetch_add(1, Ordering::AcqRel) >= max_total;
        let over_listener = per_listener.fetch_add(1, Ordering::AcqRel) >= listener_cap;
        if over_total || over_listener {
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
        let inherited = *nodelay_inherited.get_or_insert_with(|| stream.nodelay().unwrap_or(false));
        if !inherited {
            let _ = stream.set_nodelay(true);
        }
        let guard = (
            ConnGuard(live.clone()),
            ConnGuard(per_listener.clone()),
            admitted,
        );
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(connection(shared, stream, peer, shutdown, guard));
    }
}

/// The PROXY header of a trusted proxy (the client it names, the bytes read past it and the
/// client's admission slots), or the refusal of a header from anyone else. `None`: the
/// connection is to be closed (already counted and logged).
async fn proxy_preamble(
    shared: &Shared,
    stream: &mut TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<(SocketAddr, Vec<u8>, Option<crate::limits::AdmitGuard>)> {
    let cfg = &shared.cfg;
    let mut client = peer;
    let mut prefix = Vec::new();
    let mut client_slots = None;
    let trusted = cfg.trusted_proxies.iter().any(|n| n.contains(peer.ip()));
    if trusted {
        match tokio::time::timeout_at(deadline, proxy::read_header(stream)).await {
            Ok(Ok((addr, rest))) => {
                if let Some(a) = addr {
                    // The per-source caps were not applied to the proxy at accept: they
                    // apply to the client it names, held for the connection's life.
                    let now = std::time::Instant::now();
                    match shared.limits.admit_client(&shared.name, a.ip(), now) {
                        Ok(g) => client_slots = Some(g),
                        Err(_) => {
                            shared
                                .router
                                .metrics
                                .connections_refused
                                .fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                    }
                    client = a;
                }
                prefix = rest;
            }
            Ok(Err(e)) => {
                stats::bump(&STATS.proxy_refused);
                warn!(listener = %cfg.name, %peer, error = %e, "PROXY header refused");
                return None;
            }
            Err(_) => {
                stats::bump(&STATS.handshake_timeouts);
                debug!(listener = %cfg.name, %peer, "no PROXY header within the handshake timeout");
                return None;
            }
        }
    } else {
        // Only the first byte is needed: no MQTT, TLS or HTTP stream starts like a header.
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1)) if proxy::looks_like_proxy(first[0]) => {
                stats::bump(&STATS.proxy_refused);
                warn!(listener = %cfg.name, %peer,
                    "PROXY header from a peer not in trusted_proxies: connection refused");
                return None;
            }
            Ok(Ok(1)) => {}
            _ => return None,
        }
    }
    Some((client, prefix, client_slots))
}

/// Handshakes (PROXY, TLS, WebSocket) and CONNECT run in this task; `serve_connection` moves
/// the accepted connection, with `hold`, to a task of its own.
async fn connection<G: Send + Unpin + 'static>(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    hold: G,
) {
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    let cfg = &shared.cfg;
    let (client, prefix, client_slots) = if cfg.proxy_protocol {
        // Boxed: the PROXY read (a 512-byte chunk, a timer) must not size every task.
        match Box::pin(proxy_preamble(&shared, &mut stream, peer, deadline)).await {
            Some(p) => p,
            None => return,
        }
    } else {
        (peer, Vec::new(), None)
    };
    // The client's slots go with the connection to its own task; boxed, since most
    // connections have none and the task carries `hold` for its whole life.
    let hold = (hold, client_slots.map(Box::new));
    let stream = Prefixed::new(prefix, stream);
    let info = ConnInfo {
        peer: client,
        listener: shared.name.clone(),
        transport: cfg.kind.as_str(),
        tls: None,
    };
    // Both paths are boxed: a task's future is as large as its largest state, and this task
    // is spawned (its future moved into a fresh allocation) for every accepted socket, so it
    // must not carry the TLS stream or the CONNECT handling inline (2.5 KB when it did).
    match cfg.kind {
        ListenerKind::Tls | ListenerKind::Wss if shared.tls.is_some() => {
            Box::pin(tls_connection(
                shared.clone(),
                stream,
                info,
                deadline,
                shutdown,
                hold,
            ))
            .await
        }
        _ => {
            Box::pin(finish(
                shared.clone(),
                stream,
                info,
                deadline,
                shutdown,
                hold,
            ))
            .await
        }
    }
}

/// The TLS handshake within the handshake deadline, then the rest of the connection.
async fn tls_connection<G: Send + Unpin + 'static>(
    shared: Arc<Shared>,
    stream: Prefixed<TcpStream>,
    mut info: ConnInfo,
    deadline: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
    hold: G,
) {
    let Some(tls) = &shared.tls else { return };
    let cfg = &shared.cfg;
    let client = info.peer;
    // Boxed, like every transport-specific future: a plain TCP connection must not carry
    // the size of a TLS handshake or a WebSocket stream for its whole life.
    let accepted = tokio::time::timeout_at(
        deadline,
        Box::pin(crate::tls_stream::accept(stream, tls.current())),
    )
    .await;
    let tls_stream = match accepted {
        Ok(Ok((s, tls_info))) => {
            info.tls = Some(tls_info);
            s
        }
        Ok(Err(e)) => {
            stats::bump(&STATS.tls_failures);
            debug!(listener = %cfg.name, peer = %client, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            stats::bump(&STATS.handshake_timeouts);
            debug!(listener = %cfg.name, peer = %client, "TLS handshake timed out");
            return;
        }
    };
    stats::bump(&STATS.tls_handshakes);
    if let Some(id) = info.tls.as_ref().and_then(|t| t.client_cert.as_ref()) {
        debug!(listener = %cfg.name, peer = %client, subject = %id.subject_dn, "client certificate verified");
    }
    Box::pin(finish(
        shared.clone(),
        tls_stream,
        info,
        deadline,
        shutdown,
        hold,
    ))
    .await;
}

/// The WebSocket upgrade when the listener is ws/wss, then the MQTT connection.
async fn finish<S, G>(
    shared: Arc<Shared>,
    stream: S,
    info: ConnInfo,
    deadline: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
    hold: G,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    G: Send + Unpin + 'static,
{
    let cfg = &shared.cfg;
    if cfg.kind.is_websocket() {
        // One WebSocket message may carry a whole MQTT packet plus framing slack.
        let max_message = (shared.router.cfg.mqtt.max_packet_size as usize).saturating_add(16);
        let upgraded = tokio::time::timeout_at(
            deadline,
            Box::pin(accept_ws(
                stream,
                &cfg.ws_path,
                &cfg.ws_allowed_origins,
                max_message,
            )),
        )
        .await;
        match upgraded {
            Ok(Ok(ws)) => {
                Box::pin(serve_connection(
                    ws,
                    info,
                    shared.router.clone(),
                    shutdown,
                    hold,
                ))
                .await
            }
            Ok(Err(e)) => {
                stats::bump(&STATS.ws_refused);
                debug!(listener = %cfg.name, peer = %info.peer, error = %e, "WebSocket upgrade refused")
            }
            Err(_) => {
                stats::bump(&STATS.handshake_timeouts);
                debug!(listener = %cfg.name, peer = %info.peer, "WebSocket upgrade timed out")
            }
        }
    } else {
        serve_connection(stream, info, shared.router.clone(), shutdown, hold).await;
    }
}

#[cfg(test)]
mod size_tests {
    /// The accept task is spawned for every accepted socket: its future is moved into a fresh
    /// allocation each time, so PROXY, TLS and CONNECT handling stay boxed out of it (it was
    /// 2.5 KB with them inline).
    #[test]
    fn accept_task_stays_small() {
        fn returned_size<A, B, C, D, E, F: std::future::Future>(
            _: impl Fn(A, B, C, D, E) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let size = returned_size(super::connection::<()>);
        assert!(size <= 256, "accept task future is {size} bytes");
    }
}
