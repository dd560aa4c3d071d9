//! A lean MQTT 3.1.1 / 5.0 client: just enough to drive load.
//!
//! It is written here, not taken from the broker's codec, so that the tool stays independent of the
//! code it measures: a codec bug must not hide itself by being on both ends. Frames are parsed in
//! place in one reusable buffer (no allocation per message) and packets are encoded into a caller's
//! buffer so that many of them leave in one `write` call.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;

/// Protocol level on the wire: 4 is MQTT 3.1.1, 5 is MQTT 5.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

impl Version {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "4" | "3.1.1" | "v4" => Ok(Version::V4),
            "5" | "5.0" | "v5" => Ok(Version::V5),
            other => bail!("unknown MQTT version {other:?} (use 4 or 5)"),
        }
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Options of one CONNECT.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub version: Version,
    /// v5 only: how many QoS 1/2 messages the broker may have in flight towards us.
    pub receive_maximum: u16,
    /// v5 only: session expiry (seconds) so that a non-clean session outlives the connection.
    pub session_expiry: u32,
    /// Credentials for the authentication scenarios.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl ConnectOpts {
    pub fn new(client_id: impl Into<String>, version: Version) -> Self {
        ConnectOpts {
            client_id: client_id.into(),
            clean: true,
            keep_alive: 600,
            version,
            receive_maximum: 65_535,
            session_expiry: 0,
            username: None,
            password: None,
        }
    }

    pub fn with_login(mut self, username: &str, password: &str) -> Self {
        self.username = Some(username.to_string());
        self.password = Some(password.to_string());
        self
    }
}

pub fn encode_connect(out: &mut Vec<u8>, o: &ConnectOpts) {
    let mut body = Vec::with_capacity(32 + o.client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(match o.version {
        Version::V4 => 4,
        Version::V5 => 5,
    });
    let mut flags = if o.clean { 0x02 } else { 0x00 };
    if o.username.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&o.keep_alive.to_be_bytes());
    if o.version == Version::V5 {
        let mut props = Vec::with_capacity(8);
        props.push(0x21);
        props.extend_from_slice(&o.receive_maximum.to_be_bytes());
        if o.session_expiry > 0 {
            props.push(0x11);
            props.extend_from_slice(&o.session_expiry.to_be_bytes());
        }
        put_varint(&mut body, props.len());
        body.extend_from_slice(&props);
    }
    put_str(&mut body, o.client_id.as_bytes());
    if let Some(u) = &o.username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = &o.password {
        put_str(&mut body, p.as_bytes());
    }
    out.push(CONNECT << 4);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
}

pub fn encode_subscribe(out: &mut Vec<u8>, version: Version, pkid: u16, filter: &str, qos: u8) {
    let mut body = Vec::with_capacity(8 + filter.len());
    body.extend_from_slice(&pkid.to_be_bytes());
    if version == Version::V5 {
        body.push(0);
    }
    put_str(&mut body, filter.as_bytes());
    body.push(qos);
    out.push(0x82);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
}

pub fn encode_puback(out: &mut Vec<u8>, pkid: u16) {
    out.extend_from_slice(&[PUBACK << 4, 2]);
    out.extend_from_slice(&pkid.to_be_bytes());
}

pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// A PUBLISH encoded once; each send copies it and patches the packet id and the payload's first
/// bytes (send timestamp), so that building a batch costs a memcpy per message.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    pub bytes: Vec<u8>,
    /// Offset of the packet id (QoS > 0 only).
    pub pkid_at: Option<usize>,
    /// Offset of the payload.
    pub payload_at: usize,
}

impl PublishTemplate {
    pub fn new(version: Version, topic: &str, qos: u8, payload_len: usize) -> Self {
        let mut body = Vec::with_capacity(8 + topic.len() + payload_len);
        put_str(&mut body, topic.as_bytes());
        let mut pkid_rel = None;
        if qos > 0 {
            pkid_rel = Some(body.len());
            body.extend_from_slice(&[0, 1]);
        }
        if version == Version::V5 {
            body.push(0);
        }
        let payload_rel = body.len();
        body.resize(body.len() + payload_len, b'x');
        let mut bytes = Vec::with_capacity(body.len() + 5);
        bytes.push((PUBLISH << 4) | (qos << 1));
        put_varint(&mut bytes, body.len());
        let hdr = bytes.len();
        bytes.extend_from_slice(&body);
        PublishTemplate {
            bytes,
            pkid_at: pkid_rel.map(|p| p + hdr),
            payload_at: payload_rel + hdr,
        }
    }

    /// Appends one message carrying `stamp` (8 bytes LE) at the start of its payload.
    pub fn push(&self, out: &mut Vec<u8>, pkid: u16, stamp: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(p) = self.pkid_at {
            out[start + p..start + p + 2].copy_from_slice(&pkid.to_be_bytes());
        }
        let pa = start + self.payload_at;
        if out.len() >= pa + 8 {
            out[pa..pa + 8].copy_from_slice(&stamp.to_le_bytes());
        }
    }
}

/// What a subscriber needs from one incoming PUBLISH.
pub struct PublishView {
    pub qos: u8,
    pub pkid: u16,
    /// The send timestamp the tool put in the payload, if the payload is long enough.
    pub stamp: Option<u64>,
}

/// Parses the body of a PUBLISH without copying.
pub fn parse_publish(flags: u8, body: &[u8], version: Version) -> Option<PublishView> {
    let qos = (flags >> 1) & 3;
    let tlen = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2 + tlen;
    let mut pkid = 0;
    if qos > 0 {
        pkid = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2;
    }
    if version == Version::V5 {
        let (plen, n) = read_varint(body.get(at..)?)?;
        at += n + plen;
    }
    let payload = body.get(at..)?;
    let stamp = payload
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    Some(PublishView { qos, pkid, stamp })
}

/// Returns (value, bytes used), or None when incomplete or malformed.
fn read_varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for i in 0..4 {
        let byte = *b.get(i)?;
        v |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Reads frames into one growable buffer and hands each complete packet to a callback in place.
pub struct FrameReader {
    rd: Reader,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A broker that sends a packet larger than this is treated as broken: the tool never asks for
    /// anything that large, and the cap keeps one connection's buffer bounded.
    max_packet: usize,
}

impl FrameReader {
    pub fn new(rd: Reader, buf_size: usize) -> Self {
        FrameReader {
            rd,
            buf: vec![0; buf_size.max(1024)],
            start: 0,
            end: 0,
            max_packet: 1 << 20,
        }
    }

    /// Reads once (at least one byte) into the buffer. Returns Ok(false) on EOF.
    pub async fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = (self.buf.len() * 2).min(self.max_packet + 8);
                if n <= self.buf.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "packet too large",
                    ));
                }
                self.buf.resize(n, 0);
            }
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Calls `f(type, flags, body)` for each complete packet buffered; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(u8, u8, &[u8])) -> io::Result<usize> {
        let mut count = 0;
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                break;
            }
            let Some((len, n)) = read_varint(&avail[1..]) else {
                if avail.len() >= 5 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad remaining length",
                    ));
                }
                break;
            };
            if len > self.max_packet {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "packet too large",
                ));
            }
            let total = 1 + n + len;
            if avail.len() < total {
                break;
            }
            let h = avail[0];
            f(h >> 4, h & 0x0f, &avail[1 + n..total]);
            self.start += total;
            count += 1;
        }
        Ok(count)
    }

    /// Waits for one packet of type `want` (others are skipped), bounded by `timeout`.
    pub async fn expect(&mut self, want: u8, timeout: Duration) -> Result<Vec<u8>> {
        let fut = async {
            loop {
                let mut got = None;
                // Only the first matching packet is taken; the rest stay buffered.
                let avail = &self.buf[self.start..self.end];
                if avail.len() >= 2 {
                    if let Some((len, n)) = read_varint(&avail[1..]) {
                        if avail.len() >= 1 + n + len {
                            let h = avail[0];
                            if h >> 4 == want {
                                got = Some(avail[1 + n..1 + n + len].to_vec());
                            }
                            self.start += 1 + n + len;
                            if let Some(b) = got {
                                return Ok(b);
                            }
                            continue;
                        }
                    }
                }
                if !self.fill().await? {
                    bail!("connection closed by broker while waiting for packet type {want}");
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow!("timed out waiting for packet type {want}"))?
    }
}

/// TLS settings for the client side.
#[derive(Clone)]
pub struct TlsClient {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Opens a TCP connection, optionally from a chosen local address (bind-before-connect spreads
/// source addresses over 127.0.0.x so that tens of thousands of connections do not exhaust the
/// ephemeral ports of one source address).
pub async fn tcp_connect(addr: SocketAddr, local: Option<std::net::IpAddr>) -> Result<TcpStream> {
    let s = tcp_connect_plain(addr, local).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// [`tcp_connect`] without TCP_NODELAY, for connections that write one packet and then only
/// read: Nagle's algorithm never holds back a connection's first segment, so the option would
/// only cost a system call per connection.
async fn tcp_connect_plain(addr: SocketAddr, local: Option<std::net::IpAddr>) -> Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let s = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    Ok(s)
}

/// Opens the transport (TCP or TLS over TCP) and splits it.
pub async fn open(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    tls: Option<&TlsClient>,
) -> Result<(Reader, Writer)> {
    let tcp = tcp_connect(addr, local).await?;
    match tls {
        None => {
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(t) => {
            let s = t
                .connector
                .connect(t.server_name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            let (r, w) = tokio::io::split(s);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

/// A connected MQTT session: reader and writer halves.
pub struct Conn {
    pub rd: FrameReader,
    pub wr: Writer,
    pub version: Version,
}

pub struct Dial<'a> {
    pub addr: SocketAddr,
    pub local: Option<std::net::IpAddr>,
    pub tls: Option<&'a TlsClient>,
    pub read_buf: usize,
    pub timeout: Duration,
}

impl Conn {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(d: &Dial<'_>, o: &ConnectOpts) -> Result<Conn> {
        let (r, mut w) = tokio::time::timeout(d.timeout, open(d.addr, d.local, d.tls))
            .await
            .map_err(|_| anyhow!("connect to {} timed out", d.addr))??;
        let mut out = Vec::with_capacity(64);
        encode_connect(&mut out, o);
        w.write_all(&out).await?;
        w.flush().await?;
        let mut rd = FrameReader::new(r, d.read_buf);
        let ack = rd.expect(CONNACK, d.timeout).await?;
        let code = *ack.get(1).ok_or_else(|| anyhow!("short CONNACK"))?;
        if code != 0 {
            bail!("CONNACK refused with code 0x{code:02x}");
        }
        Ok(Conn {
            rd,
            wr: w,
            version: o.version,
        })
    }

    pub async fn subscribe(&mut self, filter: &str, qos: u8, timeout: Duration) -> Result<()> {
        let mut out = Vec::with_capacity(32);
        encode_subscribe(&mut out, self.version, 1, filter, qos);
        self.wr.write_all(&out).await?;
        self.wr.flush().await?;
        let ack = self.rd.expect(SUBACK, timeout).await?;
        let at = match self.version {
            Version::V4 => 2,
            Version::V5 => {
                let (plen, n) = read_varint(ack.get(2..).unwrap_or(&[]))
                    .ok_or_else(|| anyhow!("bad SUBACK"))?;
                2 + n + plen
            }
        };
        let code = *ack.get(at).ok_or_else(|| anyhow!("short SUBACK"))?;
        if code >= 0x80 {
            bail!("SUBACK refused {filter:?} with code 0x{code:02x}");
        }
        Ok(())
    }
}

pub type SharedTls = Arc<TlsClient>;

/// A CONNECT encoded once for many connections: each use patches the last `DIGITS` bytes of
/// the client id with the connection's number, so that the connection-count scenarios spend no
/// formatting or encoding per connection.
#[derive(Clone, Debug)]
pub struct ConnectTemplate {
    pub bytes: Vec<u8>,
    digits_at: usize,
}

impl ConnectTemplate {
    const DIGITS: usize = 8;

    /// `o.client_id` is the prefix; the number is appended to it.
    pub fn new(o: &ConnectOpts) -> Self {
        let mut o = o.clone();
        o.client_id.push_str(&"0".repeat(Self::DIGITS));
        let mut bytes = Vec::with_capacity(64);
        encode_connect(&mut bytes, &o);
        // The client id comes right after the variable header; find it once.
        let id = o.client_id.as_bytes();
        let digits_at = bytes
            .windows(id.len())
            .position(|w| w == id)
            .map(|p| p + id.len() - Self::DIGITS)
            .unwrap_or(0);
        ConnectTemplate { bytes, digits_at }
    }

    /// Writes `n` (mod 10^8) into the client id, zero-padded.
    pub fn set_number(&mut self, mut n: usize) {
        for i in (0..Self::DIGITS).rev() {
            self.bytes[self.digits_at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

/// The cheapest complete MQTT connection, for the scenarios that count connections: plain TCP,
/// the pre-encoded CONNECT written at once, the CONNACK read into a small stack buffer. It
/// returns the bare stream (no split halves, no boxing, no frame buffer), which is all an idle
/// connection needs to keep.
pub async fn connect_bare(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    connect: &[u8],
    timeout: Duration,
) -> Result<TcpStream> {
    let fut = async {
        let mut s = tcp_connect_plain(addr, local).await?;
        s.write_all(connect).await?;
        read_connack(&mut s).await.map(|()| s)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))?
}

/// Reads one CONNACK (skipping nothing: it must be the first packet) and checks its code.
pub async fn read_connack<R: AsyncRead + Unpin>(s: &mut R) -> Result<()> {
    let mut buf = [0u8; 64];
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            bail!("connection closed by broker before CONNACK");
        }
        have += n;
        if have >= 2 {
            if buf[0] >> 4 != CONNACK {
                bail!("expected CONNACK, got packet type {}", buf[0] >> 4);
            }
            if let Some((len, hl)) = read_varint(&buf[1..have]) {
                if have >= 1 + hl + len {
                    let code = *buf
                        .get(1 + hl + 1)
                        .ok_or_else(|| anyhow!("short CONNACK"))?;
                    if code != 0 {
                        bail!("CONNACK refused with code 0x{code:02x}");
                    }
                    return Ok(());
                }
            }
            if have == buf.len() {
                bail!("CONNACK too large");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
        }
    }

    #[test]
    fn connect_template_patches_the_client_id() {
        let o = ConnectOpts::new("c-", Version::V4).with_login("u", "p");
        let mut t = ConnectTemplate::new(&o);
        t.set_number(42);
        let mut want = Vec::new();
        encode_connect(
            &mut want,
            &ConnectOpts::new("c-00000042", Version::V4).with_login("u", "p"),
        );
        assert_eq!(t.bytes, want);
        assert_eq!(want[9] & 0xc0, 0xc0, "username and password flags");
    }

    #[test]
    fn publish_template_parses_back() {
        for version in [Version::V4, Version::V5] {
            for qos in [0u8, 1] {
                let t = PublishTemplate::new(version, "bench/3/data", qos, 64);
                let mut out = Vec::new();
                t.push(&mut out, 77, 123_456_789);
                let hdr = out[0];
                assert_eq!(hdr >> 4, PUBLISH);
                let (len, n) = read_varint(&out[1..]).expect("varint");
                assert_eq!(1 + n + len, out.len());
                let v = parse_publish(hdr & 0x0f, &out[1 + n..], version).expect("parse");
                assert_eq!(v.qos, qos);
                assert_eq!(v.stamp, Some(123_456_789));
                if qos == 1 {
                    assert_eq!(v.pkid, 77);
                }
            }
        }
    }
}
