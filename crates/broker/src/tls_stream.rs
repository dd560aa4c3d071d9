//! TLS for `tls` and `wss` listeners, driven through rustls's unbuffered API so that an idle
//! connection keeps no buffer: rustls's buffered `ServerConnection` holds a deframing buffer
//! of at least 4 KB for the connection's life once it has read anything (4.1 KB of the 9.5 KB
//! an idle TLS connection cost; BENCHMARKS.md, idle memory per TLS connection).
//!
//! Ciphertext is read into a per-thread scratch buffer and decrypted from there; only what
//! rustls cannot use yet (the start of a record, or of a handshake message split across
//! records) is copied to the heap, sized to what is pending and freed once consumed.
//! Plaintext the reader has no room for, and records the socket does not take at once, are
//! kept the same way. Everything else (the handshake, alerts, close_notify, TLS 1.3 key
//! updates and tickets, record sizes) is rustls's own state machine; the `ServerConfig`
//! (certificates, SNI, client certificates, CRLs, OCSP, live reload) is used unchanged.

use rampart_core::conn_info::TlsInfo;
use rampart_tls::hello::{client_hello_sni, Sni};
use rampart_tls::rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rampart_tls::rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rampart_tls::rustls::{self, ServerConfig};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest TLS record on the wire: header, 2^14 bytes of plaintext and the most expansion
/// RFC 8446 allows. A read asks for at least this much, so that one read completes a record.
const MAX_RECORD: usize = 5 + (1 << 14) + 256;
/// Most plaintext encrypted by one `poll_write` (four full records, one socket write).
const MAX_WRITE: usize = 4 << 14;
/// Generous per-record expansion when sizing an encryption buffer (header, nonce, tag and
/// TLS 1.3 content type take at most 29 bytes with the AEAD suites of the policy).
const RECORD_OVERHEAD: usize = 64;
/// The per-thread scratch buffer: the most ciphertext read at once, and the records of one
/// write. One per runtime worker thread, never per connection.
const SCRATCH_LEN: usize = MAX_WRITE + 4 * RECORD_OVERHEAD + MAX_RECORD;
/// Bytes buffered while waiting for the whole ClientHello (to read its SNI name): rustls
/// refuses larger handshake messages. Worst case per handshaking connection, until the
/// handshake deadline.
const MAX_HELLO_BYTES: usize = 0xffff + 4 + 16 * 5 + MAX_RECORD;

thread_local! {
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Lends the thread's scratch buffer to `f`. Taken out of the cell, not borrowed: a nested
/// use (there is none) would get a fresh buffer instead of a panic.
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut s = SCRATCH.take();
    if s.len() < SCRATCH_LEN {
        s.resize(SCRATCH_LEN, 0);
    }
    let r = f(&mut s);
    SCRATCH.set(s);
    r
}

/// A server-side TLS stream over `io`.
pub struct TlsStream<IO> {
    io: IO,
    /// Boxed: the connection task carries the stream for its whole life, and rustls's state
    /// is large; the task then grows by one pointer over plain TCP.
    tls: Box<Tls>,
}

struct Tls {
    conn: UnbufferedServerConnection,
    /// Ciphertext rustls has not consumed yet; empty (no allocation) between records.
    incoming: Vec<u8>,
    /// Plaintext decrypted beyond the reader's room, from `plain_at`; freed once read.
    plain: Vec<u8>,
    plain_at: usize,
    /// Records not yet taken by the socket, from `out_at`; freed once written.
    out: Vec<u8>,
    out_at: usize,
    /// The peer's close_notify arrived: reads end once `plain` is drained.
    peer_closed: bool,
    /// Our close_notify is queued: no more application data.
    closing: bool,
    /// A TLS error ends the connection: every later read and write fails with it (the
    /// alert rustls queued for the peer is in `out`). Boxed: 56 bytes of every connection.
    failed: Option<Box<rustls::Error>>,
}

/// What `Tls::process` is to do once rustls may send application data.
enum Goal<'a> {
    /// Nothing: stop there (the caller reads more, or is done).
    Input,
    /// Encrypt the data, into the scratch buffer when nothing is queued before it.
    Encrypt(&'a [u8], &'a mut [u8]),
    /// Queue a close_notify alert.
    CloseNotify,
}

/// Where `Tls::process` stopped.
enum Stop {
    /// rustls needs more input (or nothing more is to be done).
    Input,
    /// The data was encrypted: `n` bytes of records, in the scratch buffer or appended to
    /// `out`.
    Encrypted { n: usize, in_scratch: bool },
}

fn tls_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.clone())
}

fn internal(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("TLS buffer: {what}"))
}

/// Copies `payload` to the reader's buffer, the rest (what does not fit) to `plain`.
fn deliver(payload: &[u8], dst: Option<&mut ReadBuf<'_>>, plain: &mut Vec<u8>) {
    let mut rest = payload;
    if let Some(b) = dst {
        let n = rest.len().min(b.remaining());
        b.put_slice(&rest[..n]);
        rest = &rest[n..];
    }
    plain.extend_from_slice(rest);
}

/// Appends a handshake or alert record rustls has ready to `out`.
fn encode(e: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) -> io::Result<()> {
    let need = match e.encode(&mut []) {
        Ok(_) | Err(EncodeError::AlreadyEncoded) => return Ok(()),
        Err(EncodeError::InsufficientSize(s)) => s.required_size,
    };
    let at = out.len();
    out.resize(at + need, 0);
    match e.encode(&mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(err) => {
            out.truncate(at);
            Err(internal(err))
        }
    }
}

/// Appends records written by `f` to `out`: first into `guess` bytes, then, if rustls says
/// they need more, into as much as it asks for.
fn append_records(
    out: &mut Vec<u8>,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<usize> {
    let at = out.len();
    out.resize(at + guess, 0);
    let mut r = f(&mut out[at..]);
    if let Err(EncryptError::InsufficientSize(s)) = r {
        out.resize(at + s.required_size, 0);
        r = f(&mut out[at..]);
    }
    match r {
        Ok(n) => {
            out.truncate(at + n);
            Ok(n)
        }
        Err(e) => {
            out.truncate(at);
            Err(internal(e))
        }
    }
}

/// Encrypts `data` at the end of `out`.
fn encrypt_append(
    w: &mut WriteTraffic<'_, ServerConnectionData>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let guess = data.len() + data.len().div_ceil(1 << 14) * RECORD_OVERHEAD + RECORD_OVERHEAD;
    append_records(out, guess, |dst| w.encrypt(data, dst))
}

/// After a TLS error, moves the alert rustls queued for the peer to `out`. rustls is not given
/// the input again: it would fail on the same bytes and queue a second fatal alert, which it
/// refuses with a panic. With no input, it hands over what it has queued first.
fn send_alert(conn: &mut UnbufferedServerConnection, out: &mut Vec<u8>) {
    // A fatal alert is one record; the bound only guards against a changed rustls.
    for _ in 0..4 {
        if !conn.wants_write() {
            break;
        }
        let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                if encode(&mut e, out).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
}

impl Tls {
    /// Runs rustls over `input` (ciphertext; rustls may have used its front already) until it
    /// needs more or has done `goal`: decrypted data goes to `dst` (then `plain`), records to
    /// send to `out`. Returns how many bytes of `input` are consumed (to drop from its front)
    /// with the outcome; a TLS error is also kept in `failed`.
    fn process(
        &mut self,
        input: &mut [u8],
        mut dst: Option<&mut ReadBuf<'_>>,
        goal: Goal<'_>,
    ) -> (usize, io::Result<Stop>) {
        let Tls {
            conn,
            plain,
            out,
            peer_closed,
            closing,
            failed,
            ..
        } = self;
        let mut goal = Some(goal);
        let mut used = 0;
        let outcome = loop {
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut input[used..]);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    used += discard;
                    *failed = Some(Box::new(e));
                    break Ok(Stop::Input);
                }
            };
            let stop: Option<io::Result<Stop>> = match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        match rec {
                            Ok(rec) => {
                                discard += rec.discard;
                                deliver(rec.payload, dst.as_deref_mut(), plain);
                            }
                            Err(e) => {
                                *failed = Some(Box::new(e));
                                break;
                            }
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut e) => match encode(&mut e, out) {
                    Ok(()) => None,
                    Err(e) => Some(Err(e)),
                },
                // `out` keeps the records until the socket has taken them.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    None
                }
                ConnectionState::BlockedHandshake => match goal {
                    Some(Goal::Input) => Some(Ok(Stop::Input)),
                    _ => Some(Err(internal("handshake not complete"))),
                },
                ConnectionState::Closed => {
                    *peer_closed = true;
                    match goal {
                        Some(Goal::Encrypt(..)) => Some(Err(io::ErrorKind::BrokenPipe.into())),
                        _ => Some(Ok(Stop::Input)),
                    }
                }
                ConnectionState::WriteTraffic(mut w) => match goal.take() {
                    None | Some(Goal::Input) => Some(Ok(Stop::Input)),
                    Some(Goal::CloseNotify) => {
                        *closing = true;
                        Some(
                            append_records(out, RECORD_OVERHEAD, |dst| w.queue_close_notify(dst))
                                .map(|_| Stop::Input),
                        )
                    }
                    // Straight into the scratch buffer, unless records queued earlier must go
                    // first or queued records (a key update) make it too small: then the heap.
                    Some(Goal::Encrypt(data, scratch)) => {
                        let direct = out.is_empty().then(|| w.encrypt(data, scratch));
                        Some(match direct {
                            Some(Ok(n)) => Ok(Stop::Encrypted {
                                n,
                                in_scratch: true,
                            }),
                            None | Some(Err(EncryptError::InsufficientSize(_))) => {
                                encrypt_append(&mut w, data, out).map(|n| Stop::Encrypted {
                                    n,
                                    in_scratch: false,
                                })
                            }
                            Some(Err(e)) => Err(io::Error::other(e)),
                        })
                    }
                },
                // Early data is off in the policy (`max_early_data_size` 0), and any state
                // a later rustls adds is not understood here.
                _ => {
                    *failed = Some(Box::new(rustls::Error::General(
                        "unexpected TLS state".into(),
                    )));
                    None
                }
            };
            used += discard;
            if let Some(s) = stop {
                break s;
            }
            if failed.is_some() {
                break Ok(Stop::Input);
            }
        };
        match failed {
            Some(e) => {
                send_alert(conn, out);
                (used, Err(tls_error(e)))
            }
            None => (used, outcome),
        }
    }

    /// `process` over the pending ciphertext in `incoming`, which keeps what is not consumed.
    fn process_incoming(
        &mut self,
        dst: Option<&mut ReadBuf<'_>>,
        goal: Goal<'_>,
    ) -> io::Result<Stop> {
        let mut inc = std::mem::take(&mut self.incoming);
        let (used, r) = self.process(&mut inc, dst, goal);
        self.keep_incoming(inc, used);
        r
    }

    /// Keeps `inc[used..]` as the pending ciphertext, at its size (nothing when empty).
    fn keep_incoming(&mut self, mut inc: Vec<u8>, used: usize) {
        inc.drain(..used.min(inc.len()));
        if inc.is_empty() {
            inc = Vec::new();
        } else {
            inc.shrink_to_fit();
        }
        self.incoming = inc;
    }

    /// Moves decrypted data kept earlier to `buf`; false when there is none.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain_at >= self.plain.len() {
            return false;
        }
        let n = (self.plain.len() - self.plain_at).min(buf.remaining());
        buf.put_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        true
    }
}

/// Runs the TLS handshake on `io`; the stream and what the handshake established (version,
/// suite, SNI name, client certificate) once it is complete.
pub async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<(TlsStream<IO>, TlsInfo)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(|e| tls_error(&e))?;
    let mut s = TlsStream {
        io,
        tls: Box::new(Tls {
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            peer_closed: false,
            closing: false,
            failed: None,
        }),
    };
    let mut sni = None;
    std::future::poll_fn(|cx| s.poll_handshake(cx, &mut sni)).await?;
    let info = rampart_tls::tls_info_common(&s.tls.conn, sni.flatten());
    Ok((s, info))
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Writes the queued records; Pending (with a wake-up registered) while the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tls = &mut *self.tls;
        while tls.out_at < tls.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &tls.out[tls.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            tls.out_at += n;
        }
        if tls.out.capacity() > 0 {
            tls.out = Vec::new();
            tls.out_at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and processes records until the handshake is complete. `sni` is the ClientHello's
    /// name once read (the ClientHello is read whole before rustls sees it).
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        sni: &mut Option<Option<String>>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if let Some(e) = &self.tls.failed {
                return Poll::Ready(Err(tls_error(e)));
            }
            if !self.tls.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.tls.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let (io, tls) = (&mut self.io, &mut *self.tls);
            ready!(with_scratch(|scratch| {
                let mut rb = ReadBuf::new(&mut scratch[..MAX_RECORD]);
                ready!(Pin::new(io).poll_read(cx, &mut rb))?;
                if rb.filled().is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection during the TLS handshake",
                    )));
                }
                tls.incoming.extend_from_slice(rb.filled());
                Poll::Ready(Ok(()))
            }))?;
            if sni.is_none() {
                match client_hello_sni(&tls.incoming) {
                    Sni::Incomplete if tls.incoming.len() < MAX_HELLO_BYTES => continue,
                    Sni::Incomplete => *sni = Some(None),
                    Sni::Done(name) => *sni = Some(name),
                }
            }
            // A failure is kept in `failed` and reported once its alert is sent.
            let _ = tls.process_incoming(None, Goal::Input);
        }
    }

    /// One read from the socket, processed: decrypted data to `buf` (then `plain`).
    fn read_records(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().clamp(MAX_RECORD, scratch.len());
        let mut rb = ReadBuf::new(&mut scratch[..want]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection without a TLS close_notify",
            )));
        }
        let tls = &mut *self.tls;
        let r = if tls.incoming.is_empty() {
            // The common case: decrypt from the scratch buffer, keep only a partial record.
            let input = &mut scratch[..n];
            let (used, r) = tls.process(input, Some(buf), Goal::Input);
            if used < n {
                tls.incoming = input[used..].to_vec();
            }
            r
        } else {
            tls.incoming.extend_from_slice(&scratch[..n]);
            tls.process_incoming(Some(buf), Goal::Input)
        };
        Poll::Ready(r.map(drop))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Records queued while reading (an alert, a key update answer) go out first; a full
        // socket does not hold up reading.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if this.tls.take_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.tls.failed {
                return Poll::Ready(Err(tls_error(e)));
            }
            // End of stream: the peer's close_notify.
            if this.tls.peer_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let r = with_scratch(|scratch| this.read_records(cx, scratch, buf));
            let sent = this.poll_send(cx);
            ready!(r)?;
            if let Poll::Ready(Err(e)) = sent {
                return Poll::Ready(Err(e));
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    /// Encrypts up to `MAX_WRITE` bytes of `buf` and writes the records; what the socket does
    /// not take is kept (and counted as written). While earlier records are still waiting,
    /// nothing more is taken: Pending until the socket has room.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if let Some(e) = &this.tls.failed {
            return Poll::Ready(Err(tls_error(e)));
        }
        if this.tls.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &buf[..buf.len().min(MAX_WRITE)];
        let (io, tls) = (&mut this.io, &mut *this.tls);
        let had_plain = tls.plain.len();
        let r = with_scratch(|scratch| -> io::Result<()> {
            let Stop::Encrypted { n, in_scratch } =
                tls.process_incoming(None, Goal::Encrypt(data, &mut *scratch))?
            else {
                return Err(internal("no records"));
            };
            if !in_scratch {
                return Ok(());
            }
            // Straight from the scratch buffer; the socket's leftover is kept.
            let mut at = 0;
            while at < n {
                match Pin::new(&mut *io).poll_write(cx, &scratch[at..n]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(k)) => at += k,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            if at < n {
                tls.out = scratch[at..n].to_vec();
                tls.out_at = 0;
            }
            Ok(())
        });
        r?;
        if tls.plain.len() > had_plain {
            // Data decrypted here waits in `plain`: make sure a read comes for it.
            cx.waker().wake_by_ref();
        }
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends close_notify, then shuts the socket's write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.tls.closing && this.tls.failed.is_none() {
            this.tls.closing = true;
            // A failure here leaves nothing to say to the peer: just close the socket.
            let _ = this.tls.process_incoming(None, Goal::CloseNotify);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rampart_tls::rustls::{ClientConfig, RootCertStore};
    use rampart_tls::tokio_rustls::TlsConnector;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const WAIT: Duration = Duration::from_secs(20);

    fn pair() -> (Arc<ServerConfig>, CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        (Arc::new(server), cert)
    }

    fn client(root: &CertificateDer<'static>, tls12_only: bool) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(cfg))
    }

    /// Hands the server at most one byte per read: every record arrives split.
    struct OneByte(TcpStream);
    impl AsyncRead for OneByte {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut one = [0u8; 1];
            let mut rb = ReadBuf::new(&mut one);
            ready!(Pin::new(&mut self.0).poll_read(cx, &mut rb))?;
            buf.put_slice(rb.filled());
            Poll::Ready(Ok(()))
        }
    }
    impl AsyncWrite for OneByte {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A loopback socket pair: (server side, client side).
    async fn sockets() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (s.expect("accept").0, c.expect("connect"))
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(WAIT, f)
            .await
            .expect("within the time limit")
    }

    /// The client's side of a handshake with the test server's certificate (TLS 1.3, or 1.2
    /// only), within the time limit.
    async fn handshake(
        root: &CertificateDer<'static>,
        tls12_only: bool,
        c: TcpStream,
    ) -> rampart_tls::tokio_rustls::client::TlsStream<TcpStream> {
        let name = ServerName::try_from("localhost").expect("name");
        within(client(root, tls12_only).connect(name, c))
            .await
            .expect("client handshake")
    }

    #[tokio::test]
    async fn records_split_byte_by_byte() {
        let (cfg, root) = pair();
        let (s, c) = sockets().await;
        let server = tokio::spawn(async move {
            let (mut tls, info) = accept(OneByte(s), cfg).await.expect("handshake");
            assert_eq!(info.server_name.as_deref(), Some("localhost"));
            assert_eq!(info.protocol.as_deref(), Some("TLSv1.3"));
            let mut got = vec![0u8; 3000];
            tls.read_exact(&mut got).await.expect("read");
            assert_eq!(got, pattern(3000));
            // Nothing is kept between records.
            assert!(tls.tls.incoming.capacity() == 0 && tls.tls.plain.capacity() == 0);
            tls.write_all(b"ok").await.expect("write");
            tls.flush().await.expect("flush");
            tls
        });
        let mut tls = handshake(&root, false, c).await;
        for chunk in pattern(3000).chunks(700) {
            tls.write_all(chunk).await.expect("write");
            tls.flush().await.expect("flush");
        }
        let mut ok = [0u8; 2];
        within(tls.read_exact(&mut ok)).await.expect("read");
        assert_eq!(&ok, b"ok");
        within(server).await.expect("server");
    }

    #[tokio::test]
    async fn many_records_in_one_read_into_a_small_buffer() {
        let (cfg, root) = pair();
        let (s, c) = sockets().await;
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut tls, _) = accept(s, cfg).await.expect("handshake");
            // Every record is on the socket before the first read.
            sent_rx.await.expect("sent");
            let mut got = Vec::new();
            let mut small = [0u8; 7];
            while got.len() < 200 * 50 {
                let n = tls.read(&mut small).await.expect("read");
                assert!(n > 0);
                got.extend_from_slice(&small[..n]);
            }
            assert_eq!(got, pattern(200 * 50));
            assert!(tls.tls.plain.capacity() == 0 && tls.tls.incoming.capacity() == 0);
        });
        let mut tls = handshake(&root, false, c).await;
        for chunk in pattern(200 * 50).chunks(50) {
            tls.write_all(chunk).await.expect("write");
        }
        tls.flush().await.expect("flush");
        sent_tx.send(()).expect("signal");
        within(server).await.expect("server");
    }

    #[tokio::test]
    async fn a_megabyte_each_way() {
        const N: usize = 1 << 20;
        let (cfg, root) = pair();
        let (s, c) = sockets().await;
        let server = tokio::spawn(async move {
            let (tls, _) = accept(s, cfg).await.expect("handshake");
            let (mut r, mut w) = tokio::io::split(tls);
            let writer = tokio::spawn(async move {
                // Larger than the socket buffers: poll_write must wait for room.
                w.write_all(&pattern(N)).await.expect("write");
                w.flush().await.expect("flush");
                w
            });
            let mut got = vec![0u8; N];
            r.read_exact(&mut got).await.expect("read");
            assert!(got == pattern(N), "server received other bytes");
            let w = writer.await.expect("writer");
            let mut tls = r.unsplit(w);
            tls.shutdown().await.expect("shutdown");
        });
        let tls = handshake(&root, false, c).await;
        let (mut r, mut w) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            w.write_all(&pattern(N)).await.expect("write");
            w.flush().await.expect("flush");
            w
        });
        let mut got = Vec::new();
        // Ends with the server's close_notify (a clean end of stream, not an error).
        within(r.read_to_end(&mut got)).await.expect("read");
        assert!(got == pattern(N), "client received other bytes");
        within(writer).await.expect("writer");
        within(server).await.expect("server");
    }

    #[tokio::test]
    async fn close_notify_both_ways() {
        let (cfg, root) = pair();
        let (s, c) = sockets().await;
        let server = tokio::spawn(async move {
            let (mut tls, _) = accept(s, cfg).await.expect("handshake");
            let mut got = Vec::new();
            // The client's close_notify ends the stream cleanly.
            tls.read_to_end(&mut got).await.expect("clean end");
            assert_eq!(got, b"bye");
            // Writing is still allowed after the peer closed its side.
            tls.write_all(b"after").await.expect("write");
            tls.shutdown().await.expect("shutdown");
            assert!(
                tls.write_all(b"x").await.is_err(),
                "no data after close_notify"
            );
        });
        let mut tls = handshake(&root, false, c).await;
        tls.write_all(b"bye").await.expect("write");
        tls.get_mut().1.send_close_notify();
        tls.flush().await.expect("flush");
        let mut got = Vec::new();
        within(tls.read_to_end(&mut got)).await.expect("clean end");
        assert_eq!(got, b"after");
        within(server).await.expect("server");
    }

    #[tokio::test]
    async fn tls12_session() {
        let (cfg, root) = pair();
        let (s, c) = sockets().await;
        let server = tokio::spawn(async move {
            let (mut tls, info) = accept(s, cfg).await.expect("handshake");
            assert_eq!(info.protocol.as_deref(), Some("TLSv1.2"));
            assert_eq!(info.server_name.as_deref(), Some("localhost"));
            let mut got = vec![0u8; 40000];
            tls.read_exact(&mut got).await.expect("read");
            tls.write_all(&got).await.expect("echo");
            tls.flush().await.expect("flush");
        });
        let mut tls = handshake(&root, true, c).await;
        tls.write_all(&pattern(40000)).await.expect("write");
        tls.flush().await.expect("flush");
        let mut got = vec![0u8; 40000];
        within(tls.read_exact(&mut got)).await.expect("read");
        assert!(got == pattern(40000));
        within(server).await.expect("server");
    }

    #[tokio::test]
    async fn key_update_requested_by_the_client() {
        let (cfg, root) = pair();
        let (s, c) = sockets().await;
        let server = tokio::spawn(async move {
            let (mut tls, _) = accept(s, cfg).await.expect("handshake");
            let mut got = [0u8; 6];
            tls.read_exact(&mut got)
                .await
                .expect("read across the key update");
            assert_eq!(&got, b"before");
            let mut rest = [0u8; 5];
            tls.read_exact(&mut rest).await.expect("read");
            assert_eq!(&rest, b"after");
            // Our answering key update goes out ahead of this record.
            tls.write_all(b"reply").await.expect("write");
            tls.flush().await.expect("flush");
        });
        let mut tls = handshake(&root, false, c).await;
        tls.write_all(b"before").await.expect("write");
        tls.get_mut()
            .1
            .refresh_traffic_keys()
            .expect("key update requested");
        tls.write_all(b"after").await.expect("write");
        tls.flush().await.expect("flush");
        let mut reply = [0u8; 5];
        within(tls.read_exact(&mut reply)).await.expect("read");
        assert_eq!(&reply, b"reply");
        within(server).await.expect("server");
    }

    /// The connection task carries the stream for its whole life: it costs one pointer more
    /// than the plain TCP stream (the TLS state is on the heap, without buffers when idle).
    #[test]
    fn stream_is_a_pointer_over_the_socket() {
        use crate::transport::Prefixed;
        let tls = std::mem::size_of::<TlsStream<Prefixed<TcpStream>>>();
        let tcp = std::mem::size_of::<Prefixed<TcpStream>>();
        assert!(tls <= tcp + 8, "TlsStream is {tls} bytes over {tcp}");
        // And the boxed state is rustls's connection plus our buffers' handles: 104 bytes
        // (the error was inline once, 56 bytes more).
        let state = std::mem::size_of::<Tls>();
        let rustls = std::mem::size_of::<UnbufferedServerConnection>();
        assert!(
            state <= rustls + 104,
            "Tls is {state} bytes over rustls's {rustls}"
        );
    }

    #[tokio::test]
    async fn failed_handshakes() {
        // A client that does not trust the certificate: it aborts with an alert.
        let (cfg, _) = pair();
        let (_, other_root) = pair();
        let (s, c) = sockets().await;
        let server = tokio::spawn(accept(s, cfg.clone()));
        let name = ServerName::try_from("localhost").expect("name");
        assert!(within(client(&other_root, false).connect(name, c))
            .await
            .is_err());
        let r = within(server).await.expect("join");
        assert!(r.is_err(), "handshake with an untrusting client succeeded");

        // Not TLS at all: refused with an alert, and the server says why.
        let (s, mut c) = sockets().await;
        let server = tokio::spawn(accept(s, cfg.clone()));
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let r = within(server).await.expect("join");
        assert!(r.is_err(), "plain HTTP passed as a TLS handshake");
        let mut alert = Vec::new();
        within(c.read_to_end(&mut alert)).await.expect("read");
        assert_eq!(alert.first(), Some(&21), "an alert record: {alert:?}");

        // The peer goes away mid-handshake.
        let (s, c) = sockets().await;
        let server = tokio::spawn(accept(s, cfg));
        drop(c);
        let r = within(server).await.expect("join");
        assert!(r.is_err());
    }
}
