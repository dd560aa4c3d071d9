//! The connection driver: one tokio task per client connection.
//!
//! It owns the session state while connected, reads and decodes packets in large batches,
//! applies the protocol rules, routes publishes, drains the session's delivery queue into one
//! coalesced write buffer and writes it with as few syscalls as possible.

use crate::admission::{AuthExt, Done, Pending, Then};
use crate::message::{Delivery, Message};
use crate::metrics::LocalCounts;
use crate::router::{Router, SubEntry};
use crate::session::{ConnHandle, Control, OutFlight, SessionShared, SessionState, SubRecord};
use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use rampart_codec::{
    decode, encode, encoded_len, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion,
    PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
};
pub use rampart_core::conn_info::{CertIdentity, ConnInfo, TlsInfo};
use rampart_core::topic::parse_subscription;
use rampart_store::{Commit, QueuedState, WriteBatch};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Stop pulling from the session queue once this much encoded output is waiting for the
/// socket: the queue (with its caps) is the place where a slow subscriber's backlog lives,
/// not an unbounded write buffer.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Bytes requested per read adapt up to MAX_READ: a read that fills the buffer doubles the
/// next one (large reads amortise syscalls under load), a mostly empty one halves it, and
/// below STACK_READ no buffer is kept at all. MIN_READ is the least room asked for.
const MIN_READ: usize = 256;
const MAX_READ: usize = 64 * 1024;
/// Bytes read into a stack buffer while a connection keeps no read buffer (idle, or between
/// small packets); a read that fills it switches to reads straight into a grown buffer.
const STACK_READ: usize = 2048;
/// Room asked for while reading what a client sent before a takeover.
const READ_CHUNK: usize = 8 * 1024;
/// Deliveries taken from the queue per lock acquisition.
const DRAIN_BATCH: usize = 256;
/// Output segments waiting for store commits; past this the queue keeps the backlog.
const MAX_GATED: usize = 64;

thread_local! {
    /// Deliveries taken from a session queue by `Conn::drain_queue`, reused per worker thread.
    static DRAIN_BUF: std::cell::Cell<Vec<Delivery>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Why a connection ends, and what to tell the client.
#[derive(Debug)]
enum Close {
    /// Client sent DISCONNECT; `with_will` for reason 0x04.
    ClientDisconnect {
        with_will: bool,
    },
    /// The peer closed the socket or an I/O error occurred.
    Io,
    /// The server ends the connection; v5 clients get DISCONNECT with this reason.
    Server(ReasonCode, &'static str),
    /// Session taken over by another connection.
    TakenOver {
        session_ends: bool,
    },
    Shutdown,
}

/// Entry point for an accepted stream of any transport. `hold` (the listener's connection
/// slots) is kept until the connection ends.
///
/// Reads CONNECT and accepts it in the caller's task, then hands the connection to a task of
/// its own: a task's allocation is as large as the largest state of its future, and an idle
/// connection must not carry the CONNECT, authentication or handshake states for its life.
pub async fn serve_connection<S, G>(
    stream: S,
    info: ConnInfo,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
    hold: G,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    G: Send + Unpin + 'static,
{
    let peer = info.peer;
    // One stream, not split halves: CONNECT handling reads and writes in turn, and halves
    // would cost every connection an Arc and a lock taken on each read and write.
    let mut io = stream;
    let cfg = router.cfg.clone();
    let mut rbuf = BytesMut::with_capacity(512);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::from(cfg.mqtt.connect_timeout_secs));
    // [MQTT-3.1.0-1]: the first packet must be CONNECT, within the connect timeout.
    let connect = loop {
        match decode(&mut rbuf, ProtocolVersion::V5, cfg.mqtt.max_packet_size) {
            Ok(Some(Packet::Connect(c))) => break c,
            Ok(Some(other)) => {
                debug!(%peer, packet = other.packet_type(), "[MQTT-3.1.0-1] first packet is not CONNECT");
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let level = peek_connect_level(&rbuf);
                debug!(%peer, rule = e.rule(), error = %e, "bad CONNECT");
                let code = e.reason_code();
                let version = match level {
                    Some(5) => Some(ProtocolVersion::V5),
                    Some(3) | Some(4) => Some(ProtocolVersion::V311),
                    _ => None,
                };
                // An unsupported level is answered in the 3.1.1 format ([MQTT-3.1.2-2]) unless
                // the client spoke 5; other errors are answered only to v5 clients.
                let reply = match (version, code) {
                    (Some(v), _) if v.is_v5() => Some((v, code)),
                    (_, ReasonCode::UnsupportedProtocolVersion) => {
                        Some((ProtocolVersion::V311, code))
                    }
                    _ => None,
                };
                if let Some((v, code)) = reply {
                    let _ = write_packet(&mut io, v, &connack(false, code, Properties::default()))
                        .await;
                }
                router
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if rbuf.capacity() - rbuf.len() < 256 {
            rbuf.reserve(1024);
        }
        tokio::select! {
            r = tokio::time::timeout_at(deadline, io.read_buf(&mut rbuf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    debug!(%peer, "connect timeout");
                    return;
                }
            },
            _ = shutdown.changed() => return,
        }
    };

    // Boxed: CONNECT handling (authentication backends included) has large futures that an
    // idle connection's task must not carry for its whole life.
    // Unboxed in a call of its own, so the CONNECT's box is freed now, not when the
    // connection ends.
    let connect = unbox(connect);
    let conn = match Box::pin(Conn::accept(&router, connect, &info, &mut io, &mut rbuf)).await {
        Some(c) => c,
        None => return,
    };
    // From here on, shutdown reaches the connection through its session (`Registry::close`).
    drop(shutdown);
    tokio::spawn(run_connection(Running {
        conn: Box::new(conn),
        io,
        rbuf,
        hold,
    }));
}

/// What the connection's own task owns while it runs.
struct Running<S, G> {
    /// Boxed: tokio allocates the task 128-byte aligned, which glibc serves with about 160
    /// bytes of leading and trailing pieces that small allocations fill; `Conn` fits in
    /// them, while inline it kept the task a size class (128 B) larger (BENCHMARKS.md, idle
    /// memory per connection).
    conn: Box<Conn>,
    io: S,
    rbuf: BytesMut,
    /// The listener's connection slots, held until the connection ends.
    hold: G,
}

/// The connection's task from CONNACK on: the whole life of an idle connection is spent here,
/// so this future is kept small (see `size_tests`). Written by hand, not as an `async` block:
/// the block kept references to the parts of `Running` and the event loop's locals besides
/// the parts themselves (about 110 bytes), which took the task from tokio's 256 B size class
/// to 384 B.
enum ConnTask<S, G> {
    Run(Running<S, G>, LoopState),
    /// The end of the connection (DISCONNECT to the client, will, detach), boxed: it owns the
    /// stream and the listener's slots, and no idle connection carries its state.
    Finish(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

/// The event loop's state between polls (see `Conn::poll_run`), packed: every idle
/// connection's task carries it.
struct LoopState {
    /// The keep-alive wheel's tick armed last (`KeepAliveWheel::arm`); 0 before the first poll.
    idle_tick: u32,
    /// Read size in KiB; 0: no read buffer is kept between reads (see `read_some`).
    read_kib: u8,
    /// TLS and WebSocket layers may hold the tail of a burst until flushed.
    needs_flush: bool,
}

fn run_connection<S, G>(r: Running<S, G>) -> ConnTask<S, G> {
    ConnTask::Run(
        r,
        LoopState {
            idle_tick: 0,
            read_kib: 0,
            needs_flush: false,
        },
    )
}

impl<S, G> Future for ConnTask<S, G>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    G: Send + Unpin + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let ConnTask::Run(r, ls) = this {
            if ls.idle_tick == 0 {
                let metrics = &r.conn.router.metrics;
                metrics.clients_connected.fetch_add(1, Ordering::Relaxed);
            }
            let close = match r.conn.poll_run(&mut r.io, &mut r.rbuf, ls, cx) {
                Poll::Ready(close) => close,
                Poll::Pending => return Poll::Pending,
            };
            let ConnTask::Run(r, _) = std::mem::replace(this, ConnTask::Done) else {
                return Poll::Ready(());
            };
            let metrics = &r.conn.router.metrics;
            metrics.clients_connected.fetch_sub(1, Ordering::Relaxed);
            let Running {
                conn, mut io, hold, ..
            } = r;
            *this = ConnTask::Finish(Box::pin(async move {
                conn.finish(close, &mut io).await;
                // The listener's connection slots are given back only now.
                drop(hold);
            }));
        }
        if let ConnTask::Finish(f) = this {
            if f.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this = ConnTask::Done;
        }
        Poll::Ready(())
    }
}

#[allow(clippy::boxed_local)] // the point is to free the box on return
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// Protocol level of a (possibly malformed) CONNECT at the front of `buf`, if readable.
fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    let mut i = 1;
    // Skip the remaining-length varint.
    loop {
        let b = *buf.get(i)?;
        i += 1;
        if b & 0x80 == 0 || i > 5 {
            break;
        }
    }
    let name_len = u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]) as usize;
    buf.get(i + 2 + name_len).copied()
}

fn connack(session_present: bool, reason: ReasonCode, properties: Properties) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        reason,
        properties,
    })
}

async fn write_packet<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: ProtocolVersion,
    p: &Packet,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    if encode(p, version, &mut out).is_ok() {
        wr.write_all(&out).await?;
        wr.flush().await?;
    }
    Ok(())
}

struct Conn {
    router: Arc<Router>,
    version: ProtocolVersion,
    /// The client's Receive Maximum: our outbound in-flight window, capped by config.
    send_window: u16,
    conn_id: u64,
    session: Arc<SessionShared>,
    state: Box<SessionState>,
    out: BytesMut,
    /// Idle limit after which the connection is closed, in milliseconds: 1.5x the keep alive
    /// ([MQTT-3.1.2-24]), or `max_idle_v3_secs` (at most 7 days, so it fits).
    idle_limit_ms: u32,
    last_rx: Instant,
    /// The client's Maximum Packet Size: larger messages are dropped for it ([MQTT-3.1.2-25]).
    client_max_packet: u32,
    counts: LocalCounts,
    /// Authorization with its decision cache, and the claim of the client id; `None` in open
    /// development mode. Boxed: idle connections of that mode do not pay for it.
    authz: Option<Box<Authorized>>,
    /// Publish message and byte rates (issue 6), created full at the first PUBLISH: a bucket
    /// created full at CONNECT would be full by then too, and connections that never
    /// publish (most idle ones) do not carry it.
    limiter: Option<Box<crate::limits::PublishLimiter>>,
    /// What most connections never use, created on first use: every byte of `Conn` is paid
    /// by every idle connection (see `size_tests`).
    rare: Option<Box<Rare>>,
    /// Re-authentication state and awaited authorization decisions; `None` for most
    /// connections.
    auth_ext: Option<Box<AuthExt>>,
}

/// Authorization state of a connection outside open development mode (see `Conn::authz`).
struct Authorized {
    authz: rampart_auth::ClientAuthz,
    /// The client id belongs to this identity while the connection lives.
    _claim: Option<rampart_auth::ClientIdClaim>,
}

impl std::ops::Deref for Authorized {
    type Target = rampart_auth::ClientAuthz;
    fn deref(&self) -> &Self::Target {
        &self.authz
    }
}

impl std::ops::DerefMut for Authorized {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.authz
    }
}

/// The parts of a connection that most connections never need (see `Conn::rare`).
#[derive(Default)]
struct Rare {
    /// Inbound topic aliases; at most `topic_alias_maximum` entries ([MQTT-3.3.2-9]).
    aliases: HashMap<u16, ByteString>,
    /// Boxed: a will with its properties is large, and a connection may need `Rare` without one.
    will: Option<Box<Will>>,
    will_delay: u32,
    /// Output that must wait for a store commit (acknowledgements of persisted messages,
    /// PUBLISH of QoS 2 messages whose packet id is being persisted), in order. An entry
    /// without a commit is ready as soon as everything before it is.
    gated: VecDeque<(Option<Commit>, Gated)>,
    /// A newcomer with our client id waits on this until we have detached.
    takeover_done: Option<tokio::sync::oneshot::Sender<()>>,
    /// When the credential (a JWT's `exp`) runs out: the client is disconnected then.
    credential_expiry: Option<Instant>,
    /// Back-pressure: no reads from this client before this instant.
    read_paused_until: Option<Instant>,
    /// Packet ids of unacknowledged PUBLISHes of a resumed session not re-sent yet, in their
    /// order: they go out as acknowledgements open the client's Receive Maximum window
    /// ([MQTT-3.3.4-9]). At most the session's in-flight limit, 2 bytes each.
    resend: VecDeque<u16>,
    /// The timer of `credential_expiry` and `read_paused_until` (keep alive is on the
    /// router's wheel), allocated only while armed.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Rare {
    /// (Re-)arm the timer for the earlier of the credential expiry and the read pause.
    fn arm_timer(&mut self) {
        let want = [self.credential_expiry, self.read_paused_until]
            .into_iter()
            .flatten()
            .min();
        let armed = self.timer.as_ref().map(|s| s.deadline().into_std());
        if want == armed {
            return;
        }
        match (want, self.timer.as_mut()) {
            (Some(t), Some(s)) => s.as_mut().reset(tokio::time::Instant::from_std(t)),
            (Some(t), None) => {
                let at = tokio::time::Instant::from_std(t);
                self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
            }
            (None, _) => self.timer = None,
        }
    }
}

/// Work held until a store commit resolves.
enum Gated {
    /// Encoded output.
    Out(BytesMut),
    /// Deliveries of a received PUBLISH, then its acknowledgement.
    Route {
        deferred: Vec<(Arc<SessionShared>, Delivery)>,
        ack: Option<BytesMut>,
    },
}

impl Conn {
    /// Validate CONNECT, attach (or create, or take over) the session and send CONNACK.
    async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        router: &Arc<Router>,
        mut c: Connect,
        info: &ConnInfo,
        io: &mut S,
        rbuf: &mut BytesMut,
    ) -> Option<Conn> {
        let cfg = &router.cfg;
        let v = c.protocol;
        let peer = info.peer;
        let refuse = |code: ReasonCode| connack(false, code, Properties::default());

        // A listener with `client_id_from` takes the id from the verified certificate (T4);
        // without a certificate (or that field) there is no id the client may claim there.
        let mut assigned = None;
        if let Some(field) = listener_client_id_from(cfg, &info.listener) {
            let from_cert = info
                .tls
                .as_ref()
                .and_then(|t| t.client_cert.as_ref())
                .and_then(|cert| rampart_auth::cert_username(cert, field));
            let Some(id) = from_cert.filter(|id| !id.is_empty()) else {
                info!(%peer, "connection refused: no client certificate field to take the client id from");
                let _ = write_packet(io, v, &refuse(ReasonCode::ClientIdentifierNotValid)).await;
                return None;
            };
            if *id != *c.client_id && v == ProtocolVersion::V5 {
                assigned = Some(ByteString::from(id.clone()));
            }
            c.client_id = ByteString::from(id);
        }
        // Client identifier rules ([MQTT-3.1.3-5..8]).
        let client_id: Arc<str> = if c.client_id.is_empty() {
            match v {
                ProtocolVersion::V5 => {
                    let id = format!("rampart-{:016x}", rand::random::<u64>());
                    assigned = Some(ByteString::from(id.clone()));
                    Arc::from(id)
                }
                ProtocolVersion::V311 if c.clean_start => {
                    Arc::from(format!("rampart-{:016x}", rand::random::<u64>()))
                }
                _ => {
                    let _ =
                        write_packet(io, v, &refuse(ReasonCode::ClientIdentifierNotValid)).await;
                    return None;
                }
            }
        } else {
            Arc::from(&*c.client_id)
        };
        if client_id.len() > usize::from(cfg.mqtt.max_client_id_length) {
            let _ = write_packet(io, v, &refuse(ReasonCode::ClientIdentifierNotValid)).await;
            return None;
        }

        // Authentication (M1): the chain decides; errors and timeouts deny.
        let mut admitted =
            match crate::admission::admit(router, &c, &client_id, info, io, rbuf).await {
                Ok(a) => a,
                Err(code) => {
                    info!(%peer, client_id = %client_id, reason = %code, "connection refused");
                    let _ = write_packet(io, v, &refuse(code)).await;
                    return None;
                }
            };
        // Overload (0x89), the banned list and flapping (0x8A), after authentication so that
        // username bans apply (issue 6).
        if let Err(code) = router.limits.check_connect(
            &client_id,
            admitted.identity.username.as_deref(),
            peer.ip(),
            Instant::now(),
        ) {
            info!(%peer, client_id = %client_id, reason = %code, "connection refused");
            let _ = write_packet(io, v, &refuse(code)).await;
            return None;
        }
        // The will is a publish like any other: it needs the right to publish there (M2).
        if let (Some(w), Some(authz)) = (&c.will, admitted.authz.as_mut()) {
            let req = publish_request(&w.topic, w.qos, w.retain);
            let d = match authz.try_authorize(&req, Instant::now()) {
                Some(d) => d,
                None => authz.authorize_async(&req, Instant::now()).await,
            };
            if d != rampart_auth::Decision::Allow {
                info!(%peer, client_id = %client_id, "connection refused: will topic not authorized");
                let _ = write_packet(io, v, &refuse(ReasonCode::NotAuthorized)).await;
                return None;
            }
        }

        if let Some(w) = &c.will {
            let bad_topic = !topic_within_limits(&w.topic, cfg) || w.topic.starts_with('$');
            let code = if bad_topic {
                Some(ReasonCode::TopicNameInvalid)
            } else if (w.qos as u8) > cfg.mqtt.max_qos {
                Some(ReasonCode::QoSNotSupported)
            } else if w.retain && !cfg.mqtt.retain_available {
                Some(ReasonCode::RetainNotSupported)
            } else if w.payload.len() > cfg.mqtt.max_packet_size as usize {
                Some(ReasonCode::PacketTooLarge)
            } else {
                None
            };
            if let Some(code) = code {
                let _ = write_packet(io, v, &refuse(code)).await;
                return None;
            }
        }

        let requested_expiry = match v {
            ProtocolVersion::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            _ if c.clean_start => 0,
            // 3.1.1 persistent sessions have no expiry of their own: the configured maximum.
            _ => u32::MAX,
        };
        let expiry = requested_expiry.min(cfg.mqtt.max_session_expiry);

        // The session's owner: the identity whose client id this is (none in open development
        // mode, where no identity is checked).
        let owner: Option<Arc<str>> = admitted
            .claim
            .as_ref()
            .map(|_| Arc::from(admitted.identity.owner_key()));
        let mut refused = None;

        // Attach the session.
        let conn_id = router.registry.alloc_conn_id();
        let mut session = router.registry.get_or_create(&client_id, || {
            SessionShared::new(
                client_id.clone(),
                cfg.mqtt.max_queued_messages as usize,
                usize::try_from(cfg.mqtt.max_queued_bytes).unwrap_or(usize::MAX),
            )
        });
        // Take over an existing connection: ask it to park the session and wait, bounded.
        for _ in 0..4 {
            let old = {
                let mut slot = session.slot.lock();
                if slot.dead {
                    drop(slot);
                    session = router.registry.get_or_create(&client_id, || {
                        SessionShared::new(
                            client_id.clone(),
                            cfg.mqtt.max_queued_messages as usize,
                            usize::try_from(cfg.mqtt.max_queued_bytes).unwrap_or(usize::MAX),
                        )
                    });
                    continue;
                }
                match &slot.conn {
                    Some(old) => {
                        let old_id = old.id();
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        session.post(
                            &mut slot,
                            old_id,
                            Control::TakeOver {
                                session_ends: c.clean_start,
                                done: tx,
                            },
                        );
                        Some((old_id, rx))
                    }
                    None => {
                        // An offline session is owned like a connected client id (issue 5).
                        let stored = slot.parked.as_ref().and_then(|s| s.owner.as_deref());
                        match owner
                            .as_ref()
                            .map(|_| router.auth.check_session_owner(stored, &admitted.identity))
                        {
                            Some(Err(d)) => refused = Some(d.reason),
                            _ => {
                                slot.conn = ConnHandle::new(conn_id);
                                slot.generation += 1;
                            }
                        }
                        None
                    }
                }
            };
            match old {
                None => break,
                Some((old_id, rx)) => {
                    // Ok when it parked the session for us or finished on its own (it answers
                    // or drops the request after detaching); a timeout means it is stuck.
                    let answered = tokio::time::timeout(Duration::from_secs(5), rx)
                        .await
                        .is_ok();
                    if !answered {
                        // The old task is gone or stuck: detach it by force.
                        let mut slot = session.slot.lock();
                        if slot.conn.as_ref().map(ConnHandle::id) == Some(old_id) {
                            slot.conn = None;
                        }
                    }
                }
            }
        }
        if let Some(code) = refused {
            info!(%peer, client_id = %client_id, reason = %code, "connection refused: the session belongs to another identity");
            let _ = write_packet(io, v, &refuse(code)).await;
            return None;
        }
        let attached = session.slot.lock().conn.as_ref().map(ConnHandle::id) == Some(conn_id);
        if !attached {
            warn!(%client_id, "could not take over the session; refusing");
            let _ = write_packet(io, v, &refuse(ReasonCode::ServerBusy)).await;
            return None;
        }
        let parked = session.slot.lock().parked.take();
        let (mut state, session_present) = match parked {
            Some(old) if !c.clean_start => (old, true),
            Some(old) => {
                router.drop_session_state(&session, &old);
                (
                    Box::new(SessionState::new(client_id.clone(), v, expiry)),
                    false,
                )
            }
            None => (
                Box::new(SessionState::new(client_id.clone(), v, expiry)),
                false,
            ),
        };
        if c.clean_start {
            session.clear_queue();
        }
        if owner.is_some() {
            state.owner = owner;
        }
        state.protocol = v;
        state.expiry_interval = expiry;
        session.online.store(true, Ordering::Relaxed);
        let persistent = router.store.is_some() && expiry > 0;
        if session.persistent.swap(persistent, Ordering::Relaxed) && !persistent {
            // A stored session resumed without expiry ends with this connection.
            let mut b = WriteBatch::new();
            b.delete_session(&*client_id);
            router.commit_detached(b);
        }

        // Keep alive: honour the client's value up to the configured maximum; v5 clients asking
        // for none (or too much) are told the Server Keep Alive; 3.1.1 ones get an idle limit.
        let mut server_keep_alive = None;
        let keep_alive = if c.keep_alive == 0 {
            if v.is_v5() {
                server_keep_alive = Some(cfg.mqtt.server_keep_alive_when_zero);
                cfg.mqtt.server_keep_alive_when_zero
            } else {
                0
            }
        } else if c.keep_alive > cfg.mqtt.max_keep_alive && v.is_v5() {
            server_keep_alive = Some(cfg.mqtt.max_keep_alive);
            cfg.mqtt.max_keep_alive
        } else {
            c.keep_alive
        };
        let idle_limit_ms = if keep_alive == 0 {
            cfg.mqtt.max_idle_v3_secs.max(1).saturating_mul(1000)
        } else {
            u32::from(keep_alive) * 1500
        };

        let mut props = Properties::default();
        if v.is_v5() {
            if expiry != requested_expiry {
                props.session_expiry_interval = Some(expiry);
            }
            props.receive_maximum = Some(cfg.mqtt.receive_maximum);
            if cfg.mqtt.max_qos < 2 {
                props.maximum_qos = Some(cfg.mqtt.max_qos);
            }
            if !cfg.mqtt.retain_available {
                props.retain_available = Some(0);
            }
            props.maximum_packet_size = Some(cfg.mqtt.max_packet_size);
            props.assigned_client_identifier = assigned;
            if cfg.mqtt.topic_alias_maximum > 0 {
                props.topic_alias_maximum = Some(cfg.mqtt.topic_alias_maximum);
            }
            if !cfg.mqtt.wildcard_subscriptions {
                props.wildcard_subscription_available = Some(0);
            }
            if !cfg.mqtt.subscription_identifiers {
                props.subscription_identifier_available = Some(0);
            }
            if !cfg.mqtt.shared_subscriptions {
                props.shared_subscription_available = Some(0);
            }
            props.server_keep_alive = server_keep_alive;
            if let Some(m) = admitted.auth_method.take() {
                props.authentication_method = Some(m.into());
                props.authentication_data = admitted.auth_data.take().map(Into::into);
            }
        }

        let will_delay = c
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        let mut conn = Conn {
            router: router.clone(),
            version: v,
            conn_id,
            session,
            state,
            out: BytesMut::new(),
            idle_limit_ms,
            last_rx: Instant::now(),
            send_window: c
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(cfg.mqtt.max_inflight)
                .max(1),
            client_max_packet: c.properties.maximum_packet_size.unwrap_or(u32::MAX),
            counts: Default::default(),
            rare: None,
            auth_ext: admitted.identity.auth_method.is_some().then(|| {
                Box::new(AuthExt {
                    info: Some(info.clone()),
                    ..AuthExt::default()
                })
            }),
            authz: admitted.authz.map(|authz| {
                Box::new(Authorized {
                    authz,
                    _claim: admitted.claim,
                })
            }),
            limiter: None,
        };
        let credential_expiry = expiry_instant(admitted.identity.expires_at);
        if c.will.is_some() || credential_expiry.is_some() {
            conn.rare = Some(Box::new(Rare {
                will: c.will.map(Box::new),
                will_delay,
                credential_expiry,
                ..Rare::default()
            }));
        }
        conn.router.commit_detached(conn.session_batch(false));
        conn.send(&connack(session_present, ReasonCode::Success, props));
        debug!(client_id = %conn.state.client_id, %peer, protocol = ?v, session_present, "connected");
        // Resend unacknowledged messages, in order, with DUP set ([MQTT-4.4.0-1]).
        if session_present {
            conn.resend_inflight();
        }
        Some(conn)
    }

    fn is_v5(&self) -> bool {
        self.version.is_v5()
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// True while output waits for a store commit.
    fn gating(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| !r.gated.is_empty())
    }

    fn will_delay(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.will_delay)
    }

    fn send(&mut self, p: &Packet) {
        if encode(p, self.version, &mut self.out).is_ok() {
            self.counts.messages_sent += 1;
        }
    }

    /// Queue `p` behind any gated output; `commit`, if any, must resolve first.
    fn emit(&mut self, p: &Packet, commit: Option<Commit>) {
        if commit.is_none() && !self.gating() {
            self.send(p);
            return;
        }
        let mut seg = BytesMut::new();
        if encode(p, self.version, &mut seg).is_ok() {
            self.counts.messages_sent += 1;
            self.rare().gated.push_back((commit, Gated::Out(seg)));
        }
    }

    /// Carry out a gated entry whose commit has resolved.
    fn release(&mut self, g: Gated) {
        match g {
            Gated::Out(seg) => self.out.extend_from_slice(&seg),
            Gated::Route { deferred, ack } => {
                self.router.release(deferred);
                if let Some(ack) = ack {
                    self.out.extend_from_slice(&ack);
                }
            }
        }
    }

    fn persistent(&self) -> bool {
        self.session.persistent.load(Ordering::Relaxed)
    }

    /// Store the session record (subscriptions, expiry, will) if the session is persistent.
    fn session_batch(&self, disconnected: bool) -> WriteBatch {
        let mut b = WriteBatch::new();
        if self.persistent() {
            b.put_session(crate::persist::session_record(
                &self.state,
                self.rare.as_ref().and_then(|r| r.will.as_deref()),
                self.will_delay(),
                disconnected,
            ));
        }
        b
    }

    fn forget_stored(&self, seq: u64) {
        if seq != 0 {
            let mut b = WriteBatch::new();
            b.remove_queued(&*self.state.client_id, seq);
            self.router.commit_detached(b);
        }
    }

    /// Re-send the session's unacknowledged packets in their order ([MQTT-4.4.0-1]): every
    /// PUBREL, and as many PUBLISHes as the client's Receive Maximum leaves room for (QoS 2
    /// messages awaiting PUBCOMP count); the rest follow from `resend_backlog`.
    fn resend_inflight(&mut self) {
        let ids: Vec<u16> = self.state.flight().outbound_order.iter().copied().collect();
        let released = self
            .state
            .flight()
            .outbound
            .values()
            .filter(|f| matches!(f, OutFlight::Released { .. }))
            .count();
        let mut room = usize::from(self.send_window).saturating_sub(released);
        for id in ids {
            match self.state.flight().outbound.get(&id).cloned() {
                Some(OutFlight::Publish(_)) if room == 0 => self.rare().resend.push_back(id),
                Some(OutFlight::Publish(d)) => {
                    room -= 1;
                    self.resend_publish(id, &d);
                }
                Some(OutFlight::Released { .. }) => {
                    self.send(&pubrel(id, ReasonCode::Success));
                }
                None => {}
            }
        }
    }

    /// Re-send held-back PUBLISHes while the client's window has room: the ones it
    /// acknowledged meanwhile (received on an earlier connection) are skipped.
    fn resend_backlog(&mut self) {
        let Some(r) = self.rare.as_mut() else {
            return;
        };
        if r.resend.is_empty() {
            return;
        }
        let outbound = &self.state.flight().outbound;
        r.resend.retain(|id| outbound.contains_key(id));
        loop {
            let held = self.rare.as_ref().map_or(0, |r| r.resend.len());
            let in_flight = self.state.flight().outbound.len();
            if held == 0 || in_flight - held >= usize::from(self.send_window) {
                return;
            }
            let Some(id) = self.rare.as_mut().and_then(|r| r.resend.pop_front()) else {
                return;
            };
            if let Some(OutFlight::Publish(d)) = self.state.flight().outbound.get(&id).cloned() {
                self.resend_publish(id, &d);
            }
        }
    }

    /// One re-sent PUBLISH, with DUP; a message now too large for the client is dropped as if
    /// delivered ([MQTT-3.1.2-25]) instead of occupying the window for ever.
    fn resend_publish(&mut self, id: u16, d: &Delivery) {
        if !self.write_publish(d, id, true, Some(Instant::now())) {
            self.state.forget_outbound(id);
            self.forget_stored(d.seq);
        }
    }

    /// Encode one outgoing PUBLISH; false if it is too large for the client and was dropped.
    fn write_publish(
        &mut self,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Option<Instant>,
    ) -> bool {
        // Fast path: the message's shared encoding, with flags and packet id patched in.
        // Worth it only when other deliveries of the message are still pending.
        if d.subscription_ids.is_empty()
            && d.msg.expires_at.is_none()
            && Arc::strong_count(&d.msg) > 1
        {
            let with_id = d.qos != QoS::AtMostOnce;
            if let Some(enc) = d.msg.encoded(self.is_v5(), with_id) {
                if self.is_v5() && enc.len() > self.client_max_packet as usize {
                    // [MQTT-3.1.2-25]: discard as if delivered.
                    self.counts.publish_dropped += 1;
                    return false;
                }
                let start = self.out.len();
                self.out.extend_from_slice(enc);
                self.out[start] =
                    0x30 | (u8::from(dup) << 3) | ((d.qos as u8) << 1) | u8::from(d.retain);
                if with_id {
                    let at = start + crate::message::packet_id_offset(enc);
                    self.out[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
                }
                self.counts.messages_sent += 1;
                self.counts.publish_sent += 1;
                return true;
            }
        }
        let properties = if self.is_v5() {
            let mut p = d.msg.properties.clone();
            p.message_expiry_interval = now.and_then(|t| d.msg.remaining_expiry(t));
            p.subscription_identifiers = d.subscription_ids.clone();
            p
        } else {
            Properties::default()
        };
        let p = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            packet_id,
            properties,
            payload: d.msg.payload.clone(),
        });
        if self.is_v5() && encoded_len(&p, self.version) > self.client_max_packet as usize {
            // [MQTT-3.1.2-25]: discard as if delivered.
            self.counts.publish_dropped += 1;
            return false;
        }
        if encode(&p, self.version, &mut self.out).is_ok() {
            self.counts.messages_sent += 1;
            self.counts.publish_sent += 1;
            true
        } else {
            false
        }
    }

    /// Move deliveries from the session queue to the write buffer, within the client's
    /// receive maximum for QoS 1/2 ([MQTT-3.3.4-9]) and the write high-water mark.
    fn drain_queue(&mut self) {
        // The batch vector is the worker thread's, not the connection's: every idle
        // connection would carry it. Nothing awaits in between, and a nested call (there is
        // none) would only find an empty vector.
        let mut batch = DRAIN_BUF.take();
        self.drain_queue_into(&mut batch);
        batch.clear();
        DRAIN_BUF.set(batch);
    }

    fn drain_queue_into(&mut self, batch: &mut Vec<Delivery>) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.gated.len() >= MAX_GATED)
        {
            return;
        }
        // Older than anything queued: they go first, and queued messages wait for room.
        self.resend_backlog();
        // The clock is read only if a message carries an expiry.
        let mut now: Option<Instant> = None;
        while self.out.len() < WRITE_HIGH_WATER {
            let mut room =
                usize::from(self.send_window).saturating_sub(self.state.flight().outbound.len());
            {
                let mut q = self.session.queue.lock();
                while batch.len() < DRAIN_BATCH {
                    match q.items.front() {
                        None => break,
                        Some(d) if d.qos != QoS::AtMostOnce => {
                            if room == 0 {
                                break;
                            }
                            room -= 1;
                        }
                        Some(_) => {}
                    }
                    if let Some(d) = q.items.pop_front() {
                        q.bytes = q.bytes.saturating_sub(d.msg.cost());
                        batch.push(d);
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            let start = self.out.len();
            let mut store_ops = WriteBatch::new();
            for d in batch.drain(..) {
                let now = match (d.msg.expires_at, now) {
                    (None, _) => None,
                    (Some(_), Some(t)) => Some(t),
                    (Some(_), None) => {
                        now = Some(Instant::now());
                        now
                    }
                };
                if now.is_some_and(|t| d.msg.is_expired(t)) {
                    // Expired messages are not sent ([MQTT-3.3.2-5]).
                    self.forget_stored(d.seq);
                    continue;
                }
                if d.qos == QoS::AtMostOnce {
                    self.write_publish(&d, 0, false, now);
                } else if let Some(id) = self.state.alloc_packet_id() {
                    if self.write_publish(&d, id, d.dup, now) {
                        if d.qos == QoS::ExactlyOnce && d.seq != 0 {
                            // The packet id must be on disk before the PUBLISH leaves, so
                            // that a restart resends it as a duplicate, never as new.
                            store_ops.set_queued_state(
                                &*self.state.client_id,
                                d.seq,
                                QueuedState::Inflight { packet_id: id },
                            );
                        }
                        let f = self.state.flight_mut();
                        f.outbound.insert(id, OutFlight::Publish(d));
                        f.outbound_order.push_back(id);
                    } else {
                        self.forget_stored(d.seq);
                    }
                }
            }
            let commit = self.router.commit(store_ops);
            if commit.is_some() || self.gating() {
                let seg = self.out.split_off(start);
                if !seg.is_empty() {
                    self.rare().gated.push_back((commit, Gated::Out(seg)));
                }
                // Later deliveries queue behind this segment: keep them in the session queue.
                return;
            }
        }
    }

    /// The connection's event loop. One hand-written poll stands for a `select!` so that an
    /// idle connection holds no per-branch futures: keep alive is on the router's wheel and
    /// deliveries, requests and that wheel wake the task through its session (no timer and
    /// no `Notified` future while idle), reads land in a stack buffer while no read buffer is
    /// kept, and the socket is polled directly (no read and write halves with a lock between
    /// them). The loop's state between polls is in `ls`; each poll runs the loop from its
    /// top (a wake is handled there anyway), until it ends with the reason to close.
    fn poll_run<S>(
        &mut self,
        io: &mut S,
        rbuf: &mut BytesMut,
        ls: &mut LoopState,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Close>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if ls.idle_tick == 0 {
            // Keep alive is watched by the router's wheel, which wakes us through the
            // session. Re-armed lazily: the deadline moves with every packet, but it is
            // armed again only when it has passed (an update per packet would cost more).
            let idle_at = self.last_rx + Duration::from_millis(self.idle_limit_ms.into());
            ls.idle_tick = self.router.keepalive.arm(&self.session, idle_at).max(1);
            // Packets the client pipelined behind CONNECT arrived with it: handle them
            // now, not only after the next read (which may never come).
            if !rbuf.is_empty() {
                if let Err(close) = self.on_readable(&mut *rbuf) {
                    return Poll::Ready(close);
                }
            }
        }
        loop {
            if self.router.registry.closing() {
                return Poll::Ready(Close::Shutdown);
            }
            if let Some(Control::TakeOver { session_ends, done }) =
                self.session.take_request(self.conn_id)
            {
                // What the client sent before the newcomer arrived (a DISCONNECT that ends
                // the session, say) is handled first: whatever the socket has now.
                loop {
                    match read_some(&mut *io, cx, &mut *rbuf, READ_CHUNK) {
                        Poll::Ready(Ok(n)) if n > 0 => {}
                        _ => break,
                    }
                    if let Err(close) = self.on_readable(&mut *rbuf) {
                        self.rare().takeover_done = Some(done);
                        return Poll::Ready(close);
                    }
                }
                self.park_for_takeover();
                // The new connection must not wait for our socket to drain: reply first.
                let _ = done.send(());
                return Poll::Ready(Close::TakenOver { session_ends });
            }
            self.drain_queue();
            if self.counts.is_dirty() {
                self.counts.flush(&self.router.metrics);
            }
            let read_size = usize::from(ls.read_kib) * 1024;
            if read_size == 0 && rbuf.is_empty() && rbuf.capacity() > 0 {
                // Give back the buffer of a burst, or of a packet that has been handled.
                *rbuf = BytesMut::new();
            }
            let writing = !self.out.is_empty();
            let gating = self.gating();
            let mut paused = false;
            let mut timing = false;
            if let Some(r) = self.rare.as_mut() {
                paused = r.read_paused_until.is_some_and(|t| t > Instant::now());
                if !paused {
                    r.read_paused_until = None;
                }
                r.arm_timer();
                timing = r.timer.is_some();
            }
            // TLS and WebSocket layers may hold the tail of a burst until flushed.
            let flushing = ls.needs_flush && !writing;
            // While a handler awaits a decision, later packets wait unread (packet order).
            let pending = self.is_pending();
            let reading = !paused && !pending;
            let (this, sock, buf) = (&mut *self, &mut *io, &mut *rbuf);
            // Branches in priority order, as a biased select: output first, then input.
            let wake = (|| {
                if writing {
                    if let Poll::Ready(r) = Pin::new(&mut *sock).poll_write(cx, &this.out) {
                        return Poll::Ready(Wake::Wrote(r));
                    }
                } else if flushing {
                    if let Poll::Ready(r) = Pin::new(&mut *sock).poll_flush(cx) {
                        return Poll::Ready(Wake::Flushed(r));
                    }
                }
                if reading {
                    if let Poll::Ready(r) = read_some(&mut *sock, cx, &mut *buf, read_size) {
                        return Poll::Ready(Wake::Read(r));
                    }
                }
                if let (true, Some(rare)) = (gating, this.rare.as_mut()) {
                    if let Poll::Ready(r) = poll_gate(&mut rare.gated, cx) {
                        return Poll::Ready(Wake::Gate(r));
                    }
                }
                if pending {
                    if let Poll::Ready(done) =
                        crate::admission::poll_pending_done(&mut this.auth_ext, cx)
                    {
                        return Poll::Ready(Wake::Decided(done));
                    }
                }
                if this.session.poll_woken(cx).is_ready() {
                    return Poll::Ready(Wake::Notified);
                }
                let alarm = this.rare.as_mut().and_then(|r| r.timer.as_mut());
                if let (true, Some(alarm)) = (timing, alarm) {
                    if alarm.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                }
                Poll::Pending
            })();
            let Poll::Ready(wake) = wake else {
                return Poll::Pending;
            };
            let timer_fired = matches!(wake, Wake::Timer);
            match wake {
                Wake::Wrote(Ok(0)) | Wake::Wrote(Err(_)) | Wake::Flushed(Err(_)) => {
                    return Poll::Ready(Close::Io)
                }
                Wake::Wrote(Ok(n)) => {
                    ls.needs_flush = true;
                    LocalCounts::add_bytes(&mut self.counts.bytes_sent, n);
                    self.out.advance(n);
                    if self.out.is_empty() {
                        // Small buffers are cheap to allocate again and large ones are
                        // bursts: only a working-size buffer is kept between writes.
                        let cap = self.out.capacity();
                        if cap <= 4096 || cap > WRITE_HIGH_WATER * 2 {
                            self.out = BytesMut::new();
                        }
                    }
                }
                Wake::Flushed(Ok(())) => ls.needs_flush = false,
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return Poll::Ready(Close::Io),
                Wake::Read(Ok(n)) => {
                    LocalCounts::add_bytes(&mut self.counts.bytes_received, n);
                    let asked = read_size.max(STACK_READ);
                    let mut read_size = read_size;
                    if n >= asked {
                        read_size = (asked * 2).min(MAX_READ);
                    } else if n < read_size / 4 {
                        // Below the stack buffer's size, no buffer is kept.
                        read_size /= 2;
                        if read_size < STACK_READ {
                            read_size = 0;
                        }
                    }
                    // At most 64 KiB: fits.
                    ls.read_kib = u8::try_from(read_size / 1024).unwrap_or(u8::MAX);
                    if let Err(close) = self.on_readable(&mut *rbuf) {
                        return Poll::Ready(close);
                    }
                }
                Wake::Gate(Ok(())) => {
                    // The front entry is ready (its commit resolved, or it had none);
                    // release it and the commit-free entries right behind it.
                    let mut first = true;
                    while let Some(rare) = self.rare.as_mut() {
                        if !first && !matches!(rare.gated.front(), Some((None, _))) {
                            break;
                        }
                        let Some((_, g)) = rare.gated.pop_front() else {
                            break;
                        };
                        first = false;
                        self.release(g);
                    }
                }
                Wake::Gate(Err(e)) => {
                    warn!(client_id = %self.state.client_id, error = %e, "store write failed; closing so the client resends");
                    return Poll::Ready(Close::Server(
                        ReasonCode::UnspecifiedError,
                        "store write failed",
                    ));
                }
                Wake::Decided(done) => {
                    if let Err(close) = self.on_pending_done(done) {
                        return Poll::Ready(close);
                    }
                    // A re-authentication may have changed when the credential expires:
                    // the timer is re-armed from `credential_expiry` at the top of the loop.
                    if let Err(close) = self.on_readable(&mut *rbuf) {
                        return Poll::Ready(close);
                    }
                }
                Wake::Notified | Wake::Timer => {
                    if let (true, Some(r)) = (timer_fired, self.rare.as_mut()) {
                        r.timer = None;
                        let expired = r.credential_expiry.is_some_and(|t| t <= Instant::now());
                        if expired {
                            info!(client_id = %self.state.client_id, "credential expired: disconnecting");
                            return Poll::Ready(Close::Server(
                                ReasonCode::NotAuthorized,
                                "credential expired",
                            ));
                        }
                    }
                    if !self.session.take_keepalive_due() {
                        continue;
                    }
                    let now = Instant::now();
                    // Not ours (a wake armed by an earlier connection of the session): our
                    // own deadline is still on the wheel.
                    if !self.router.keepalive.passed(ls.idle_tick, now) {
                        continue;
                    }
                    if self.is_pending() {
                        // Packets wait unread behind an awaited decision: the client is
                        // not idle; look again once it has been answered.
                        self.last_rx = now;
                    }
                    let idle_at = self.last_rx + Duration::from_millis(self.idle_limit_ms.into());
                    if idle_at <= now {
                        debug!(client_id = %self.state.client_id, "keep alive timeout");
                        return Poll::Ready(Close::Server(
                            ReasonCode::KeepAliveTimeout,
                            "[MQTT-3.1.2-24]",
                        ));
                    }
                    ls.idle_tick = self.router.keepalive.arm(&self.session, idle_at).max(1);
                    // A keep-alive period has passed: give back what bursts left behind.
                    if self.out.is_empty() {
                        self.out = BytesMut::new();
                    }
                    self.state.shrink();
                }
            }
        }
    }

    fn on_readable(&mut self, rbuf: &mut BytesMut) -> Result<(), Close> {
        let max = self.router.cfg.mqtt.max_packet_size;
        let mut got_packet = false;
        loop {
            if self.is_pending() {
                // The rest stays buffered until the awaited decision arrives.
                return Ok(());
            }
            match decode(rbuf, self.version, max) {
                Ok(Some(p)) => {
                    // Keep alive counts whole control packets, not bytes: a client trickling
                    // a packet byte by byte does not keep its connection alive ([MQTT-3.1.2-22]).
                    if !got_packet {
                        got_packet = true;
                        self.last_rx = Instant::now();
                    }
                    self.counts.messages_received += 1;
                    self.on_packet(p)?;
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    debug!(client_id = %self.state.client_id, rule = e.rule(), error = %e, "protocol violation");
                    self.router
                        .metrics
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Close::Server(e.reason_code(), e.rule()));
                }
            }
        }
    }

    fn on_packet(&mut self, p: Packet) -> Result<(), Close> {
        match p {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                if let Some(OutFlight::Publish(d)) = self.state.flight().outbound.get(&a.packet_id)
                {
                    if d.qos == QoS::AtLeastOnce {
                        let seq = d.seq;
                        self.state.forget_outbound(a.packet_id);
                        self.forget_stored(seq);
                    }
                }
                Ok(())
            }
            Packet::PubRec(a) => {
                let seq = match self.state.flight().outbound.get(&a.packet_id) {
                    Some(OutFlight::Publish(d)) if d.qos == QoS::ExactlyOnce => d.seq,
                    Some(OutFlight::Released { seq }) => *seq,
                    _ => {
                        self.emit(
                            &pubrel(a.packet_id, ReasonCode::PacketIdentifierNotFound),
                            None,
                        );
                        return Ok(());
                    }
                };
                if a.reason.is_error() {
                    // The client refused the message: the exchange ends here ([MQTT-4.3.3-4]).
                    self.state.forget_outbound(a.packet_id);
                    self.forget_stored(seq);
                    return Ok(());
                }
                self.state
                    .flight_mut()
                    .outbound
                    .insert(a.packet_id, OutFlight::Released { seq });
                // PUBREL only once "PUBREC received" is durable: after a restart the broker
                // then resends PUBREL, never the message.
                let mut b = WriteBatch::new();
                if seq != 0 {
                    b.set_queued_state(
                        &*self.state.client_id,
                        seq,
                        QueuedState::PubrelPending {
                            packet_id: a.packet_id,
                        },
                    );
                }
                let commit = self.router.commit(b);
                self.emit(&pubrel(a.packet_id, ReasonCode::Success), commit);
                Ok(())
            }
            Packet::PubRel(r) => {
                let known = self.state.forget_inbound_qos2(r.packet_id);
                if known && self.persistent() {
                    let mut b = WriteBatch::new();
                    b.delete_inbound_qos2(&*self.state.client_id, r.packet_id);
                    self.router.commit_detached(b);
                }
                let reason = if known || !self.is_v5() {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.emit(
                    &Packet::PubComp(PubResp {
                        packet_id: r.packet_id,
                        reason,
                        properties: Properties::default(),
                    }),
                    None,
                );
                Ok(())
            }
            Packet::PubComp(c) => {
                if let Some(OutFlight::Released { seq }) =
                    self.state.flight().outbound.get(&c.packet_id)
                {
                    let seq = *seq;
                    self.state.forget_outbound(c.packet_id);
                    self.forget_stored(seq);
                }
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Connect(_) => Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.1.0-2]")),
            Packet::Auth(a) => self.on_auth(a),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::Server(
                    ReasonCode::ProtocolError,
                    "[MQTT-4.8.0-1] server-to-client packet sent by a client",
                ))
            }
        }
    }

    fn ack_publish(&mut self, qos: QoS, packet_id: u16, reason: ReasonCode) {
        self.ack_publish_after(qos, packet_id, reason, None);
    }

    /// Acknowledge a PUBLISH once `commit` (its store writes) is durable.
    fn ack_publish_after(
        &mut self,
        qos: QoS,
        packet_id: u16,
        reason: ReasonCode,
        commit: Option<Commit>,
    ) {
        let resp = PubResp {
            packet_id,
            reason: if self.is_v5() {
                reason
            } else {
                ReasonCode::Success
            },
            properties: Properties::default(),
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.emit(&Packet::PubAck(resp), commit),
            QoS::ExactlyOnce => self.emit(&Packet::PubRec(resp), commit),
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Close> {
        let cfg = self.router.cfg.clone();
        let size = p.payload.len() + p.topic.len() + 8;
        let now = Instant::now();
        let limiter = self
            .limiter
            .get_or_insert_with(|| Box::new(self.router.limits.publish_limiter(now)));
        match limiter.on_publish(size, now) {
            crate::limits::RateVerdict::Allow => {}
            crate::limits::RateVerdict::Wait(d) => {
                // Back-pressure: this message goes through, further reads wait.
                self.rare().read_paused_until = Some(Instant::now() + d);
            }
            crate::limits::RateVerdict::Disconnect => {
                return Err(Close::Server(
                    ReasonCode::MessageRateTooHigh,
                    "publish rate limit",
                ));
            }
        }
        self.counts.publish_received += 1;
        if (p.qos as u8) > cfg.mqtt.max_qos {
            return Err(Close::Server(
                ReasonCode::QoSNotSupported,
                "[MQTT-3.2.2-11]",
            ));
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.3.4-6]"));
        }
        if p.retain && !cfg.mqtt.retain_available {
            return Err(Close::Server(
                ReasonCode::RetainNotSupported,
                "[MQTT-3.2.2-14]",
            ));
        }
        // Topic alias ([MQTT-3.3.2-7..12]).
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > cfg.mqtt.topic_alias_maximum {
                return Err(Close::Server(
                    ReasonCode::TopicAliasInvalid,
                    "[MQTT-3.3.2-9]",
                ));
            }
            if p.topic.is_empty() {
                match self.rare.as_ref().and_then(|r| r.aliases.get(&alias)) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(Close::Server(
                            ReasonCode::ProtocolError,
                            "[MQTT-3.3.4-?] unknown topic alias",
                        ))
                    }
                }
            } else {
                self.rare().aliases.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.3.2-1]"));
        }
        if !topic_within_limits(&p.topic, &cfg) {
            if self.is_v5() && p.qos != QoS::AtMostOnce {
                self.ack_publish(p.qos, p.packet_id, ReasonCode::TopicNameInvalid);
                return Ok(());
            }
            return Err(Close::Server(
                ReasonCode::TopicNameInvalid,
                "topic exceeds configured limits",
            ));
        }
        if p.dup
            && p.qos == QoS::ExactlyOnce
            && !self.state.flight().inbound_qos2.contains(&p.packet_id)
        {
            debug!(client_id = %self.state.client_id, packet_id = p.packet_id, "QoS 2 PUBLISH with DUP for an unknown packet id: routed as new");
        }
        if p.qos == QoS::ExactlyOnce && self.state.flight().inbound_qos2.contains(&p.packet_id) {
            // Re-sent PUBLISH before PUBREL: acknowledge again, never route twice ([MQTT-4.3.3-10]).
            self.ack_publish(p.qos, p.packet_id, ReasonCode::Success);
            return Ok(());
        }
        if p.qos == QoS::ExactlyOnce
            && self.state.flight().inbound_qos2.len() >= usize::from(cfg.mqtt.receive_maximum)
        {
            return Err(Close::Server(
                ReasonCode::ReceiveMaximumExceeded,
                "[MQTT-3.3.4-7]",
            ));
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            if p.qos != QoS::AtMostOnce {
                self.ack_publish(p.qos, p.packet_id, ReasonCode::PayloadFormatInvalid);
                return Ok(());
            }
            return Err(Close::Server(
                ReasonCode::PayloadFormatInvalid,
                "[MQTT-3.3.2-4]",
            ));
        }
        if let Some(authz) = self.authz.as_mut() {
            let req = publish_request(&p.topic, p.qos, p.retain);
            match authz.try_authorize(&req, Instant::now()) {
                Some(rampart_auth::Decision::Allow) => {}
                Some(rampart_auth::Decision::Deny) => return self.publish_denied(&p),
                None => {
                    // The "http" source must be asked: off the packet path, in order.
                    let asks = vec![(
                        0,
                        rampart_auth::Action::Publish,
                        p.topic.to_string(),
                        p.qos as u8,
                        p.retain,
                    )];
                    let identity = authz.identity().clone();
                    let fut =
                        crate::admission::authorize_async(self.router.auth.clone(), identity, asks);
                    self.set_pending(fut, Then::Publish(Box::new(p)));
                    return Ok(());
                }
            }
        }
        self.publish_authorized(p)
    }

    fn publish_denied(&mut self, p: &Publish) -> Result<(), Close> {
        debug!(client_id = %self.state.client_id, topic = %p.topic, "publish not authorized");
        if self.router.auth.disconnect_on_deny() {
            return Err(Close::Server(
                ReasonCode::NotAuthorized,
                "publish not authorized",
            ));
        }
        // v5: the reason code says so; 3.1.1 has no way to: acknowledged and dropped.
        self.ack_publish(p.qos, p.packet_id, ReasonCode::NotAuthorized);
        Ok(())
    }

    /// The rest of PUBLISH handling, once authorized.
    fn publish_authorized(&mut self, p: Publish) -> Result<(), Close> {
        if p.topic.starts_with("$SYS") {
            // $SYS belongs to the broker: clients cannot write into it. Accept and drop.
            self.ack_publish(p.qos, p.packet_id, ReasonCode::Success);
            return Ok(());
        }
        let msg = Arc::new(Message {
            expires_at: p
                .properties
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
            properties: if self.is_v5() {
                Message::forwarded_properties(&p.properties)
            } else {
                Properties::default()
            },
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            publisher: Some(self.state.client_id.clone()),
            encoded: Default::default(),
        });
        // With a durable store, deliveries wait for the commit (see PersistCtx::deferred).
        let mut ctx = if self.router.store.is_some() {
            crate::router::PersistCtx::deferring()
        } else {
            crate::router::PersistCtx::default()
        };
        let mut reason = ReasonCode::Success;
        if msg.retain && !self.router.retain(&msg, &mut ctx.batch) {
            reason = ReasonCode::QuotaExceeded;
        }
        self.router.publish_with(&msg, &mut ctx);
        if p.qos == QoS::ExactlyOnce {
            self.state.flight_mut().inbound_qos2.insert(p.packet_id);
            if self.persistent() {
                ctx.batch
                    .put_inbound_qos2(&*self.state.client_id, p.packet_id);
            }
        }
        // Durability contract: PUBACK/PUBREC, and the deliveries themselves, only once every
        // persistent copy is on disk.
        let commit = self.router.commit(ctx.batch);
        let deferred = ctx.deferred.take().unwrap_or_default();
        if commit.is_none() && !self.gating() {
            self.router.release(deferred);
            self.ack_publish(p.qos, p.packet_id, reason);
            return Ok(());
        }
        let ack = (p.qos != QoS::AtMostOnce).then(|| {
            let resp = PubResp {
                packet_id: p.packet_id,
                reason: if self.is_v5() {
                    reason
                } else {
                    ReasonCode::Success
                },
                properties: Properties::default(),
            };
            let pkt = if p.qos == QoS::AtLeastOnce {
                Packet::PubAck(resp)
            } else {
                Packet::PubRec(resp)
            };
            let mut b = BytesMut::new();
            let _ = encode(&pkt, self.version, &mut b);
            b
        });
        self.rare()
            .gated
            .push_back((commit, Gated::Route { deferred, ack }));
        Ok(())
    }

    /// Authorizes each filter, then subscribes; with an "http" source to ask, the SUBSCRIBE
    /// waits for its answers (packet order is kept).
    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let Some(authz) = self.authz.as_mut() else {
            return self.subscribe_decided(s, Vec::new());
        };
        let now = Instant::now();
        let mut known = Vec::with_capacity(s.filters.len());
        let mut asks = Vec::new();
        for (i, (raw, opts)) in s.filters.iter().enumerate() {
            // An invalid filter is refused as such; its authorization does not matter.
            let d = if parse_subscription(raw).is_err() {
                Some(rampart_auth::Decision::Deny)
            } else {
                authz.try_authorize(&subscribe_request(raw, opts.qos), now)
            };
            if d.is_none() {
                asks.push((
                    i,
                    rampart_auth::Action::Subscribe,
                    raw.to_string(),
                    opts.qos as u8,
                    false,
                ));
            }
            known.push(d);
        }
        if asks.is_empty() {
            let decisions = known
                .into_iter()
                .map(|d| d.unwrap_or(rampart_auth::Decision::Deny))
                .collect();
            return self.subscribe_decided(s, decisions);
        }
        let identity = authz.identity().clone();
        let fut = crate::admission::authorize_async(self.router.auth.clone(), identity, asks);
        self.set_pending(fut, Then::Subscribe(Box::new(s), known));
        Ok(())
    }

    /// `decisions`: one per filter when authorization applies (else empty).
    fn subscribe_decided(
        &mut self,
        s: Subscribe,
        decisions: Vec<rampart_auth::Decision>,
    ) -> Result<(), Close> {
        let cfg = self.router.cfg.clone();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        if sub_id.is_some() && !cfg.mqtt.subscription_identifiers {
            return Err(Close::Server(
                ReasonCode::SubscriptionIdentifiersNotSupported,
                "[MQTT-3.8.2-?] subscription identifiers are disabled",
            ));
        }
        let mut reasons = Vec::with_capacity(s.filters.len());
        // Retained messages wait for the SUBACK's commit, which stores a persistent
        // session's QoS 1/2 copies of them along with its subscriptions.
        let mut retained = crate::router::PersistCtx::deferring();
        for (i, (raw, mut opts)) in s.filters.into_iter().enumerate() {
            let parsed = match parse_subscription(&raw) {
                Ok(p) => p,
                Err(e) => {
                    debug!(client_id = %self.state.client_id, filter = %raw, error = %e, "invalid topic filter");
                    reasons.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            let group: Option<Arc<str>> = parsed.share_group.as_deref().map(Arc::from);
            if group.is_some() && opts.no_local {
                return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.8.3-4]"));
            }
            let filter_str: &str = parsed.filter.as_str();
            if group.is_some() && !cfg.mqtt.shared_subscriptions {
                reasons.push(ReasonCode::SharedSubscriptionsNotSupported);
                continue;
            }
            if !cfg.mqtt.wildcard_subscriptions
                && (filter_str.contains('+') || filter_str.contains('#'))
            {
                reasons.push(ReasonCode::WildcardSubscriptionsNotSupported);
                continue;
            }
            if levels(filter_str) > usize::from(cfg.mqtt.max_topic_levels)
                || filter_str.len() > usize::from(cfg.mqtt.max_topic_length)
            {
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            // Subscribing to `#` or `$SYS/#` needs an explicit allow like any other (M2).
            if self.authz.is_some() && decisions.get(i) != Some(&rampart_auth::Decision::Allow) {
                debug!(client_id = %self.state.client_id, filter = %raw, "subscription not authorized");
                reasons.push(ReasonCode::NotAuthorized);
                continue;
            }
            let key = (group.clone(), Arc::<str>::from(filter_str));
            let exists = self.state.subscriptions.contains_key(&key);
            if !exists
                && self.state.subscriptions.len() >= cfg.mqtt.max_subscriptions_per_client as usize
            {
                reasons.push(ReasonCode::QuotaExceeded);
                continue;
            }
            opts.qos = opts
                .qos
                .min(QoS::from_u8(cfg.mqtt.max_qos).unwrap_or(QoS::ExactlyOnce));
            self.state.subscriptions.insert(
                key,
                SubRecord {
                    options: opts,
                    subscription_id: sub_id,
                },
            );
            // Before the index sees it, so a racing publish merges rather than duplicates.
            self.session.set_plain_subscriptions(&self.state);
            self.router.subs.subscribe(
                &parsed.filter,
                group.as_deref(),
                self.state.client_id.clone(),
                SubEntry {
                    session: self.session.clone(),
                    options: opts,
                    subscription_id: sub_id,
                },
            );
            reasons.push(match opts.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages: not for shared subscriptions; per Retain Handling otherwise
            // ([MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
            let send_retained = group.is_none()
                && match opts.retain_handling {
                    0 => true,
                    1 => !exists,
                    _ => false,
                };
            if send_retained {
                for m in self.router.retained_for(&parsed.filter) {
                    // Retained messages sent because of a subscription carry RETAIN 1
                    // ([MQTT-3.3.1-8]).
                    self.router.deliver_to(
                        &self.session,
                        &m,
                        m.qos.min(opts.qos),
                        true,
                        sub_id.into_iter().collect(),
                        &mut retained,
                    );
                }
            }
        }
        // SUBACK only once a persistent session's new subscriptions are on disk.
        let mut batch = self.session_batch(false);
        batch.ops.append(&mut retained.batch.ops);
        let commit = self.router.commit(batch);
        self.emit(
            &Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties: Properties::default(),
                reasons,
            }),
            commit,
        );
        // Queued now, sent after the SUBACK (the gated output keeps the order).
        self.router
            .release(retained.deferred.take().unwrap_or_default());
        Ok(())
    }

    fn is_pending(&self) -> bool {
        self.auth_ext.as_ref().is_some_and(|e| e.pending.is_some())
    }

    fn set_pending(&mut self, fut: crate::admission::BoxFuture<Done>, then: Then) {
        self.auth_ext.get_or_insert_with(Default::default).pending = Some(Pending { fut, then });
    }

    /// Carries on with what waited for an awaited decision.
    fn on_pending_done(&mut self, done: Done) -> Result<(), Close> {
        let Some(p) = self.auth_ext.as_mut().and_then(|e| e.pending.take()) else {
            return Ok(());
        };
        if self.auth_ext.as_ref().is_some_and(|e| e.is_empty()) {
            self.auth_ext = None;
        }
        let now = Instant::now();
        match (p.then, done) {
            (Then::Publish(pb), Done::Decisions(ds)) => {
                // Fail closed: no answer is a deny.
                let d = ds.first().map_or(rampart_auth::Decision::Deny, |x| x.1);
                if let Some(authz) = self.authz.as_mut() {
                    authz.record(&publish_request(&pb.topic, pb.qos, pb.retain), d, now);
                }
                if d == rampart_auth::Decision::Allow {
                    self.publish_authorized(*pb)
                } else {
                    self.publish_denied(&pb)
                }
            }
            (Then::Subscribe(s, mut known), Done::Decisions(ds)) => {
                for (i, d) in ds {
                    if let (Some(k), Some((raw, opts))) = (known.get_mut(i), s.filters.get(i)) {
                        *k = Some(d);
                        if let Some(authz) = self.authz.as_mut() {
                            authz.record(&subscribe_request(raw, opts.qos), d, now);
                        }
                    }
                }
                let decisions = known
                    .into_iter()
                    .map(|d| d.unwrap_or(rampart_auth::Decision::Deny))
                    .collect();
                self.subscribe_decided(*s, decisions)
            }
            (Then::Auth, Done::Auth(r)) => self.on_reauth_result(r),
            _ => Err(Close::Server(
                ReasonCode::UnspecifiedError,
                "mismatched awaited work",
            )),
        }
    }

    /// MQTT 5 re-authentication ([MQTT-4.12.1]): the client's AUTH 0x19 starts it with the
    /// method used at CONNECT, AUTH 0x18 continues it; the connection keeps serving with the
    /// previous authentication meanwhile.
    fn on_auth(&mut self, a: rampart_codec::Auth) -> Result<(), Close> {
        let identity = self.authz.as_ref().map(|z| z.identity().clone());
        let Some((identity, method)) =
            identity.and_then(|id| id.auth_method.clone().map(|m| (id, m)))
        else {
            // No authentication method was agreed at CONNECT ([MQTT-4.12.0-1]).
            return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.15.0-1]"));
        };
        if a.properties.authentication_method.as_deref() != Some(method.as_str()) {
            return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-4.12.1-1]"));
        }
        let svc = self.router.auth.clone();
        let data = a.properties.authentication_data.map(|b| b.to_vec());
        let ext = self.auth_ext.get_or_insert_with(Default::default);
        let fut = match (a.reason, ext.reauth.take(), ext.info.clone()) {
            (ReasonCode::ReAuthenticate, None, Some(info)) => {
                crate::admission::reauth_start(svc, info, identity, method, data)
            }
            (ReasonCode::ContinueAuthentication, Some(state), _) => {
                crate::admission::reauth_continue(svc, state, method, data.unwrap_or_default())
            }
            _ => {
                return Err(Close::Server(
                    ReasonCode::ProtocolError,
                    "[MQTT-4.12.1] AUTH out of sequence",
                ))
            }
        };
        ext.pending = Some(Pending {
            fut,
            then: Then::Auth,
        });
        Ok(())
    }

    fn on_reauth_result(&mut self, r: rampart_auth::AuthResult) -> Result<(), Close> {
        let Some(authz) = self.authz.as_mut() else {
            return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.15.0-1]"));
        };
        let method = authz.identity().auth_method.clone().unwrap_or_default();
        match r {
            rampart_auth::AuthResult::Continue(ch) => {
                self.auth_ext.get_or_insert_with(Default::default).reauth = Some(ch.state);
                let p = crate::admission::auth_packet(
                    ReasonCode::ContinueAuthentication,
                    ch.method,
                    Some(ch.auth_data),
                );
                self.emit(&p, None);
                Ok(())
            }
            // Re-authentication renews the credential; it does not change who the client
            // is (the client id and the session belong to that identity).
            rampart_auth::AuthResult::Allow(a) if a.identity.same_principal(authz.identity()) => {
                let expiry = expiry_instant(a.identity.expires_at);
                if expiry.is_some() || self.rare.is_some() {
                    self.rare
                        .get_or_insert_with(Default::default)
                        .credential_expiry = expiry;
                }
                authz.set_identity(a.identity);
                let p = crate::admission::auth_packet(ReasonCode::Success, &method, a.auth_data);
                self.emit(&p, None);
                info!(client_id = %self.state.client_id, "re-authenticated");
                Ok(())
            }
            rampart_auth::AuthResult::Allow(_) => {
                info!(client_id = %self.state.client_id, "re-authentication as another identity: disconnecting");
                Err(Close::Server(
                    ReasonCode::NotAuthorized,
                    "re-authenticated as another identity",
                ))
            }
            rampart_auth::AuthResult::Deny(d) => {
                info!(client_id = %self.state.client_id, reason = %d.reason, "re-authentication failed: disconnecting");
                Err(Close::Server(
                    ReasonCode::NotAuthorized,
                    "re-authentication failed",
                ))
            }
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for raw in u.filters {
            match parse_subscription(&raw) {
                Ok(parsed) => {
                    let group: Option<Arc<str>> = parsed.share_group.as_deref().map(Arc::from);
                    let key = (group.clone(), Arc::<str>::from(parsed.filter.as_str()));
                    let existed = self.state.subscriptions.remove(&key).is_some();
                    if existed {
                        self.router.subs.unsubscribe(
                            &parsed.filter,
                            group.as_deref(),
                            &self.state.client_id,
                        );
                        self.session.set_plain_subscriptions(&self.state);
                    }
                    reasons.push(if existed {
                        ReasonCode::Success
                    } else {
                        ReasonCode::NoSubscriptionExisted
                    });
                }
                Err(_) => reasons.push(ReasonCode::TopicFilterInvalid),
            }
        }
        let commit = self.router.commit(self.session_batch(false));
        self.emit(
            &Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: Properties::default(),
                reasons,
            }),
            commit,
        );
        Ok(())
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Close> {
        if let Some(new_expiry) = d.properties.session_expiry_interval {
            if self.state.expiry_interval == 0 && new_expiry != 0 {
                return Err(Close::Server(ReasonCode::ProtocolError, "[MQTT-3.14.2-2]"));
            }
            self.state.expiry_interval = new_expiry.min(self.router.cfg.mqtt.max_session_expiry);
        }
        // Only a normal disconnection (0x00) discards the will ([MQTT-3.1.2-10]): 0x04 asks
        // for it and an error reason code means the client is not leaving cleanly.
        Err(Close::ClientDisconnect {
            with_will: d.reason != ReasonCode::Success,
        })
    }

    /// Hand the session state back to the slot for the connection that takes over.
    fn park_for_takeover(&mut self) {
        let fresh = Box::new(SessionState::new(
            self.state.client_id.clone(),
            self.version,
            0,
        ));
        let mut state = std::mem::replace(&mut self.state, fresh);
        state.shrink();
        let mut slot = self.session.slot.lock();
        slot.parked = Some(state);
        if slot.conn.as_ref().map(ConnHandle::id) == Some(self.conn_id) {
            slot.conn = None;
        }
    }

    /// Tell the client why (v5), flush, handle the will and detach the session.
    async fn finish<W: AsyncWrite + Unpin>(mut self, close: Close, wr: &mut W) {
        let done = self.rare.as_mut().and_then(|r| r.takeover_done.take());
        let session = self.session.clone();
        let conn_id = self.conn_id;
        self.finish_inner(close, wr).await;
        // Only now may a waiting newcomer look at the session: answer it, or one that asked
        // while we were finishing (dropping the request's sender answers it too).
        if let Some(done) = done {
            let _ = done.send(());
        }
        drop(session.take_request(conn_id));
    }

    async fn finish_inner<W: AsyncWrite + Unpin>(mut self, close: Close, wr: &mut W) {
        let v5 = self.is_v5();
        let (server_reason, publish_will_now, will_ok) = match &close {
            // Kept like an abnormal close: the Will Delay Interval applies (3.1.3.2.2).
            Close::ClientDisconnect { with_will } => (None, false, *with_will),
            Close::Io => (None, false, true),
            Close::Server(code, rule) => {
                // The peer's address is in the "connected" line: `Conn` does not keep it.
                debug!(client_id = %self.state.client_id, reason = %code, rule, "closing connection");
                (Some(*code), false, true)
            }
            Close::TakenOver { session_ends } => (
                Some(ReasonCode::SessionTakenOver),
                *session_ends || self.will_delay() == 0,
                true,
            ),
            // The server closes the connection, so the will stands ([MQTT-3.1.2-8]): published
            // now if the session ends or has no delay, else kept in the session's record and
            // published after the restart.
            Close::Shutdown => (Some(ReasonCode::ServerShuttingDown), false, true),
        };
        if let Some(code) = server_reason {
            if v5 {
                self.send(&Packet::Disconnect(Disconnect {
                    reason: code,
                    properties: Properties::default(),
                }));
            }
        }
        if !self.out.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = wr.write_all(&self.out).await;
                let _ = wr.flush().await;
            })
            .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
        self.counts.flush(&self.router.metrics);
        // Publishes received on this connection whose store commit was pending are routed
        // anyway: their copies are (or are about to be) on disk, and the publisher will learn
        // nothing either way; dropping them would lose them until the next restart.
        let gated = self.rare.as_mut().map(|r| std::mem::take(&mut r.gated));
        for (commit, g) in gated.into_iter().flatten() {
            if let Gated::Route { deferred, .. } = g {
                if let Some(c) = commit {
                    let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
                }
                self.router.release(deferred);
            }
        }

        let will = if will_ok {
            self.rare.as_mut().and_then(|r| r.will.take()).map(|w| *w)
        } else {
            None
        };
        if let Close::TakenOver { .. } = close {
            if let (Some(w), true) = (will, publish_will_now) {
                self.router.publish_will(&self.state.client_id, w);
            }
            return;
        }
        // Detach: park or drop the session.
        let session = self.session.clone();
        let expiry = self.state.expiry_interval;
        let mut slot = session.slot.lock();
        if slot.conn.as_ref().map(ConnHandle::id) != Some(self.conn_id) {
            return;
        }
        slot.conn = None;
        session.online.store(false, Ordering::Relaxed);
        let generation = slot.generation;
        let ends_now = expiry == 0;
        let will_now = publish_will_now || (will.is_some() && (ends_now || self.will_delay() == 0));
        if ends_now {
            let state = std::mem::replace(
                &mut self.state,
                Box::new(SessionState::new(
                    session.client_id.clone(),
                    self.version,
                    0,
                )),
            );
            // Under the slot lock, so that a connection racing for this client id either
            // attached before (and we returned above) or sees `dead` and starts afresh.
            slot.dead = true;
            self.router.drop_session_state(&session, &state);
            self.router.registry.remove_if_same(&session);
            drop(slot);
        } else {
            if self.persistent() {
                // Remember when the client left, so expiry survives a restart.
                let mut b = WriteBatch::new();
                b.put_session(crate::persist::session_record(
                    &self.state,
                    if will_now { None } else { will.as_ref() },
                    self.will_delay(),
                    true,
                ));
                self.router.commit_detached(b);
            }
            let mut state = std::mem::replace(
                &mut self.state,
                Box::new(SessionState::new(
                    session.client_id.clone(),
                    self.version,
                    0,
                )),
            );
            // An offline session keeps only what is still in flight.
            state.shrink();
            slot.parked = Some(state);
            drop(slot);
            crate::timers::schedule_expiry(&self.router, &session, generation, expiry);
        }
        if let Some(w) = will {
            if will_now {
                self.router.publish_will(&session.client_id, w);
            } else {
                let delay = self.will_delay().min(expiry);
                crate::timers::schedule_will(&self.router, &session, generation, delay, w);
            }
        }
    }
}

/// The authorization request for publishing to `topic` (wills and PUBLISH alike).
/// The listener's `client_id_from`, if it is a TLS listener that sets it. A linear look-up
/// over the few configured listeners, once per CONNECT.
fn listener_client_id_from(
    cfg: &rampart_config::Config,
    listener: &str,
) -> Option<rampart_config::CertField> {
    cfg.listeners
        .iter()
        .find(|l| l.name == listener)
        .and_then(|l| l.tls.as_ref())
        .and_then(|t| t.client_id_from)
}

fn publish_request(topic: &str, qos: QoS, retain: bool) -> rampart_auth::Request<'_> {
    rampart_auth::Request {
        action: rampart_auth::Action::Publish,
        topic,
        qos: qos as u8,
        retain,
    }
}

fn subscribe_request(filter: &str, qos: QoS) -> rampart_auth::Request<'_> {
    rampart_auth::Request {
        action: rampart_auth::Action::Subscribe,
        topic: filter,
        qos: qos as u8,
        retain: false,
    }
}

/// A credential's wall-clock expiry (a JWT's `exp`) as a monotonic deadline.
fn expiry_instant(t: Option<std::time::SystemTime>) -> Option<Instant> {
    t.map(|t| {
        let left = t
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Instant::now() + left
    })
}

fn pubrel(packet_id: u16, reason: ReasonCode) -> Packet {
    Packet::PubRel(PubResp {
        packet_id,
        reason,
        properties: Properties::default(),
    })
}

/// Ready when the first gated entry's commit is (at once if it has none).
fn poll_gate(
    gated: &mut VecDeque<(Option<Commit>, Gated)>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<(), rampart_store::StoreError>> {
    match gated.front_mut() {
        Some((Some(c), _)) => std::future::Future::poll(Pin::new(c), cx),
        Some((None, _)) => Poll::Ready(Ok(())),
        None => Poll::Pending,
    }
}

/// What woke the connection's event loop.
enum Wake {
    Wrote(std::io::Result<usize>),
    Flushed(std::io::Result<()>),
    Read(std::io::Result<usize>),
    Gate(Result<(), rampart_store::StoreError>),
    /// An awaited authorization or re-authentication step has its answer.
    Decided(Done),
    /// The session was woken: deliveries, a request, shutdown or the keep-alive wheel.
    Notified,
    /// The credential expiry or read pause timer.
    Timer,
}

/// Read what the socket has into `rbuf`. With `read_size` 0 and nothing buffered, the bytes
/// land in a stack buffer first and `rbuf` is allocated for them only when some arrived, so
/// an idle connection keeps no read buffer; otherwise `rbuf` gets room for `read_size`.
fn read_some<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut std::task::Context<'_>,
    rbuf: &mut BytesMut,
    read_size: usize,
) -> Poll<std::io::Result<usize>> {
    if read_size == 0 && rbuf.is_empty() {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut rb = tokio::io::ReadBuf::uninit(&mut stack);
        return match Pin::new(io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                rbuf.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
    }
    let want = read_size.max(MIN_READ);
    if rbuf.capacity() - rbuf.len() < want {
        rbuf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, rbuf)
}

/// Configured topic limits (M3): level count and byte length.
pub(crate) fn topic_within_limits(topic: &str, cfg: &rampart_config::Config) -> bool {
    topic.len() <= usize::from(cfg.mqtt.max_topic_length)
        && levels(topic) <= usize::from(cfg.mqtt.max_topic_levels)
}

/// Number of topic levels: separators + 1 (a byte count, cheaper than splitting).
pub(crate) fn levels(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

#[cfg(test)]
mod size_tests {
    /// An idle connection's cost is dominated by its task's future: CONNECT handling,
    /// authentication and handshakes run in another task, and the end of the connection is
    /// boxed, so that a million idle connections stay affordable (BENCHMARKS.md, idle RSS
    /// per connection).
    #[test]
    fn idle_connection_task_stays_small() {
        fn returned_size<A, F: std::future::Future>(_: impl Fn(A) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = returned_size(super::run_connection::<tokio::io::DuplexStream, ()>);
        assert!(size <= 64, "connection task future is {size} bytes");
        // The task of a plain TCP connection as the listener spawns it. tokio allocates the
        // future with 104 bytes of task header and trailer (tokio 1.54, x86_64), rounded up
        // to 128 bytes: up to 152 bytes of future, the task takes 256 (it took 1408 when
        // the keep-alive timer and the rare parts of `Conn` were in it, 768 before the
        // authorization state and the publish limiter were boxed, 512 before `Conn` was,
        // 384 while the future was an `async` block).
        type Hold = (
            (
                crate::listener::ConnGuard,
                crate::listener::ConnGuard,
                crate::limits::AdmitGuard,
            ),
            Option<Box<crate::limits::AdmitGuard>>,
        );
        let tcp = returned_size(
            super::run_connection::<crate::transport::Prefixed<tokio::net::TcpStream>, Hold>,
        );
        assert!(
            tcp <= 152,
            "plain TCP connection task future is {tcp} bytes"
        );
        let conn = std::mem::size_of::<super::Conn>();
        assert!(conn <= 152, "Conn is {conn} bytes");
    }

    /// Every session pays for these while idle (and offline sessions for `SessionState`).
    #[test]
    fn session_structs_stay_small() {
        let shared = std::mem::size_of::<crate::session::SessionShared>();
        // 168 B: its `Arc` (two counts more) takes a 192 B malloc chunk, not 208.
        assert!(shared <= 168, "SessionShared is {shared} bytes");
        let state = std::mem::size_of::<crate::session::SessionState>();
        // 144 before the in-flight collections were boxed (`SessionState::flight`).
        assert!(state <= 72, "SessionState is {state} bytes");
    }
}
