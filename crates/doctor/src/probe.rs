//! The live TLS probe: real handshakes with a listener, to confirm what it accepts and serves
//! rather than what the config says it should (T1-T4, T6).
//!
//! rustls client configs, one per protocol version and one per cipher suite, find which of
//! the modern versions and AEAD suites the server accepts, the chain it serves, whether it
//! staples an OCSP response and whether it enforces client certificates. rustls cannot offer
//! TLS 1.0/1.1 or CBC suites, so three hand-built ClientHellos ask for exactly those and
//! the first record of the answer tells whether the server would have gone on.
//!
//! The probe trusts nothing it receives: the certificate verifier records the chain and
//! accepts it (doctor audits the chain itself, it does not authenticate the server), but
//! handshake signatures are still verified, so each accepted handshake is real. Every
//! connect, read and write is bounded by `Options::probe_timeout`, and so is the number of
//! reads, so a silent or hostile server costs at most a few timeouts per listener.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rampart_config::{ClientAuth, Config, ListenerConfig, TlsVersion};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::checks::{judge_chain, load_certs};
use crate::model::{Finding, Status};
use crate::{Options, Role};

/// Most TLS records read while waiting for the server's verdict on a missing client
/// certificate (session tickets come first): bounds the time a chatty server can hold us.
const MAX_VERDICT_READS: usize = 16;
/// Largest TLS record body accepted from the legacy probe (2^14 plus expansion).
const MAX_RECORD: usize = 16_384 + 2_048;

/// What the server did with one rustls handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempt {
    /// TCP connect failed: the listener is not reachable.
    pub unreachable: Option<String>,
    /// The protocol version and suite the server chose (its ServerHello), even if the
    /// handshake failed later (for example for want of a client certificate).
    pub negotiated: Option<(String, String)>,
    /// The handshake error, if any.
    pub error: Option<String>,
    /// The server sent a CertificateRequest.
    pub cert_requested: bool,
    /// After a handshake in which we sent no certificate: `Some(true)` when the server then
    /// refused the connection, `Some(false)` when it kept it open.
    pub refused_without_cert: Option<bool>,
    /// Served chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// Stapled OCSP response (empty when none).
    pub ocsp: Vec<u8>,
}

/// The answer to a hand-built legacy ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Legacy {
    /// The server answered with a ServerHello: `(version, suite)` as hex.
    Accepted(u16, u16),
    /// An alert or a closed connection.
    Refused(String),
    /// Silence until the timeout, or an unreadable answer.
    NoAnswer(String),
}

/// Everything learnt about one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub addr: SocketAddr,
    /// Both versions, default suites: chain, OCSP, client-certificate behaviour.
    pub main: Attempt,
    pub tls13: Attempt,
    pub tls12: Attempt,
    /// IANA names of the suites the server accepted when offered alone.
    pub suites: Vec<String>,
    /// TLS 1.0, TLS 1.1, TLS 1.2 with CBC suites only.
    pub legacy: Vec<(&'static str, Legacy)>,
}

#[derive(Debug, Default)]
struct Seen {
    chain: Vec<Vec<u8>>,
    ocsp: Vec<u8>,
    cert_requested: bool,
}

fn lock(m: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    // A panic elsewhere cannot leave `Seen` half-written in a way that matters here.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records what the server presents and accepts it; signatures are still verified.
#[derive(Debug)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut s = lock(&self.seen);
        s.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        s.ocsp = ocsp_response.to_vec();
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Notes a CertificateRequest and answers it with no certificate.
#[derive(Debug)]
struct NoClientCert {
    seen: Arc<Mutex<Seen>>,
}

impl ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        lock(&self.seen).cert_requested = true;
        None
    }

    // True so that rustls keeps the transcript a CertificateRequest needs.
    fn has_certs(&self) -> bool {
        true
    }
}

/// IANA name of a rustls suite (`TLS13_AES_128_GCM_SHA256` -> `TLS_AES_128_GCM_SHA256`).
fn iana(s: rustls::CipherSuite) -> String {
    let name = format!("{s:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
        other => format!("{other:?}"),
    }
}

/// One rustls handshake. `await_verdict`: after a handshake without a client certificate,
/// wait (bounded) to see whether the server refuses it (TLS 1.3 refuses after Finished).
pub fn attempt(
    addr: SocketAddr,
    provider: CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
    timeout: Duration,
    await_verdict: bool,
) -> Attempt {
    let mut out = Attempt::default();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let algs = provider.signature_verification_algorithms;
    let config = match ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recorder {
                seen: seen.clone(),
                algs,
            }))
            .with_client_cert_resolver(Arc::new(NoClientCert { seen: seen.clone() })),
        Err(e) => {
            out.error = Some(format!("client config: {e}"));
            return out;
        }
    };
    let name = ServerName::from(addr.ip());
    let mut conn = match ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("client: {e}"));
            return out;
        }
    };
    let mut sock = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            out.unreachable = Some(e.to_string());
            return out;
        }
    };
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    let _ = sock.set_nodelay(true);
    let mut result = Ok(());
    // Each round trip either progresses the handshake or errors; rustls needs at most a
    // handful, so the bound only stops a server that dribbles bytes forever.
    for _ in 0..64 {
        if !conn.is_handshaking() {
            break;
        }
        if let Err(e) = conn.complete_io(&mut sock) {
            result = Err(e.to_string());
            break;
        }
    }
    if let (Some(v), Some(s)) = (conn.protocol_version(), conn.negotiated_cipher_suite()) {
        out.negotiated = Some((version_name(v), iana(s.suite())));
    }
    if result.is_ok() && conn.is_handshaking() {
        result = Err("handshake did not finish".to_string());
    }
    if let Err(e) = result {
        out.error = Some(e);
    } else if await_verdict && lock(&seen).cert_requested {
        out.refused_without_cert = Some(verdict(&mut conn, &mut sock));
    }
    let s = lock(&seen);
    out.cert_requested = s.cert_requested;
    out.chain = s.chain.clone();
    out.ocsp = s.ocsp.clone();
    out
}

/// After a handshake without a client certificate: true when the server refuses (an alert,
/// or it closes), false when it keeps the connection open until our read timeout.
fn verdict(conn: &mut ClientConnection, sock: &mut TcpStream) -> bool {
    while conn.wants_write() {
        if conn.write_tls(sock).is_err() {
            return true;
        }
    }
    for _ in 0..MAX_VERDICT_READS {
        match conn.read_tls(sock) {
            Ok(0) => return true,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// CBC suites (never AEAD) used by the legacy probes: ECDHE and static RSA, SHA-1 and SHA-256.
const CBC_SUITES: &[u16] = &[
    0xc013, 0xc014, 0xc009, 0xc00a, 0xc027, 0xc028, 0xc023, 0xc024, 0x002f, 0x0035, 0x003c, 0x003d,
    0x000a,
];

/// A ClientHello for `version` offering only `suites`.
pub fn legacy_client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(version.to_be_bytes());
    // A fixed random is fine: no key is ever derived from this hello.
    body.extend([0x5a; 32]);
    body.push(0);
    let n = u16::try_from(suites.len() * 2).unwrap_or(0);
    body.extend(n.to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]);
    let ext: &[u8] = &[
        // supported_groups: x25519, secp256r1, secp384r1
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18,
        // ec_point_formats: uncompressed
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
        // signature_algorithms: rsa_pkcs1_sha256, ecdsa_p256_sha256, rsa_pss_rsae_sha256,
        // rsa_pkcs1_sha1, ecdsa_sha1
        0x00, 0x0d, 0x00, 0x0c, 0x00, 0x0a, 0x04, 0x01, 0x04, 0x03, 0x08, 0x04, 0x02, 0x01, 0x02,
        0x03, // renegotiation_info (empty)
        0xff, 0x01, 0x00, 0x01, 0x00,
    ];
    body.extend(u16::try_from(ext.len()).unwrap_or(0).to_be_bytes());
    body.extend(ext);
    let len = body.len();
    let mut hs = vec![0x01, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend(u16::try_from(hs.len()).unwrap_or(0).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Classifies the first record a server sends back to a ClientHello.
pub fn classify_answer(first: &[u8]) -> Legacy {
    match first.first() {
        None => Legacy::Refused("closed the connection".to_string()),
        Some(0x15) => Legacy::Refused("alert".to_string()),
        Some(0x16) => {
            let hs = first.get(5..).unwrap_or(&[]);
            if hs.first() != Some(&0x02) {
                return Legacy::NoAnswer("handshake record without a ServerHello".to_string());
            }
            let get16 = |at: usize| -> Option<u16> {
                Some(u16::from_be_bytes([*hs.get(at)?, *hs.get(at + 1)?]))
            };
            let Some(version) = get16(4) else {
                return Legacy::NoAnswer("short ServerHello".to_string());
            };
            let sid = usize::from(*hs.get(38).unwrap_or(&0));
            match get16(39 + sid) {
                Some(suite) => Legacy::Accepted(version, suite),
                None => Legacy::NoAnswer("short ServerHello".to_string()),
            }
        }
        Some(t) => Legacy::NoAnswer(format!("unexpected record type {t:#04x}")),
    }
}

/// Sends a legacy ClientHello and reads the first record of the answer.
pub fn legacy_attempt(addr: SocketAddr, version: u16, suites: &[u16], timeout: Duration) -> Legacy {
    let mut sock = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return Legacy::NoAnswer(format!("connect: {e}")),
    };
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    if let Err(e) = sock.write_all(&legacy_client_hello(version, suites)) {
        return Legacy::Refused(format!("write: {e}"));
    }
    let mut hdr = [0u8; 5];
    match read_full(&mut sock, &mut hdr) {
        Ok(0) => return Legacy::Refused("closed the connection".to_string()),
        Ok(n) if n < 5 => return Legacy::Refused("closed the connection".to_string()),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Legacy::NoAnswer("no answer before the timeout".to_string())
        }
        Err(e) => return Legacy::Refused(format!("connection reset ({e})")),
    }
    let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]])).min(MAX_RECORD);
    let mut body = vec![0u8; len];
    let got = read_full(&mut sock, &mut body).unwrap_or(0);
    body.truncate(got);
    let mut first = hdr.to_vec();
    first.extend(body);
    classify_answer(&first)
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(sock: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match sock.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Runs every handshake against one address.
pub fn observe(addr: SocketAddr, timeout: Duration) -> Observation {
    let main = attempt(addr, ring(), rustls::ALL_VERSIONS, timeout, true);
    let mut obs = Observation {
        addr,
        main,
        tls13: Attempt::default(),
        tls12: Attempt::default(),
        suites: Vec::new(),
        legacy: Vec::new(),
    };
    if obs.main.unreachable.is_some() {
        return obs;
    }
    obs.tls13 = attempt(addr, ring(), &[&rustls::version::TLS13], timeout, false);
    obs.tls12 = attempt(addr, ring(), &[&rustls::version::TLS12], timeout, false);
    for suite in ring().cipher_suites {
        let version: &'static rustls::SupportedProtocolVersion = match suite {
            rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
            rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        };
        let provider = CryptoProvider {
            cipher_suites: vec![suite],
            ..ring()
        };
        let a = attempt(addr, provider, &[version], timeout, false);
        if a.negotiated.is_some() {
            obs.suites.push(iana(suite.suite()));
        }
    }
    obs.legacy = vec![
        ("TLS 1.0", legacy_attempt(addr, 0x0301, CBC_SUITES, timeout)),
        ("TLS 1.1", legacy_attempt(addr, 0x0302, CBC_SUITES, timeout)),
        (
            "TLS 1.2 with CBC suites",
            legacy_attempt(addr, 0x0303, CBC_SUITES, timeout),
        ),
    ];
    obs
}

/// Where to connect for a listener: an unspecified bind address is probed on loopback.
pub fn probe_addr(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port())
        }
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bind.port())
        }
        _ => bind,
    }
}

/// Findings for every TLS listener of `cfg`, from live handshakes.
pub fn probe_config(cfg: &Config, opts: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    for l in cfg.listeners.iter().filter(|l| l.tls.is_some()) {
        if l.proxy_protocol {
            // The listener expects a PROXY header from its load balancers first; a direct
            // handshake would be refused and read as a broken listener.
            out.push(
                Finding::new(
                    "T1.live_probe",
                    "T1",
                    "live TLS handshake",
                    Status::NotApplicable,
                    format!(
                        "{} ({}): PROXY protocol listener: probe it through its load balancer",
                        l.bind, l.name
                    ),
                )
                .on(&l.name),
            );
            continue;
        }
        let obs = observe(probe_addr(l.bind), opts.probe_timeout);
        out.extend(judge(l, &obs, opts.now));
    }
    out
}

/// The placeholder findings when the probe does not run.
pub fn not_probed(cfg: &Config, role: Role) -> Vec<Finding> {
    let why = match role {
        Role::Startup => "not probed at start-up (listeners are not bound yet); run `rampart doctor` against the running broker",
        Role::Audit => "live probe disabled (--no-probe)",
    };
    cfg.listeners
        .iter()
        .filter(|l| l.tls.is_some())
        .map(|l| {
            Finding::new(
                "T1.live_probe",
                "T1",
                "live TLS handshake",
                Status::NotApplicable,
                why,
            )
            .on(&l.name)
        })
        .collect()
}

/// Turns one observation into findings, comparing it with the listener's config.
pub fn judge(l: &ListenerConfig, obs: &Observation, now: i64) -> Vec<Finding> {
    let Some(tls) = &l.tls else { return Vec::new() };
    let at = format!("{} ({})", obs.addr, l.name);
    let mut out = Vec::new();
    if let Some(e) = &obs.main.unreachable {
        out.push(
            Finding::new(
                "T1.live_probe",
                "T1",
                "live TLS handshake",
                Status::Warn,
                format!("{at}: not reachable: {e}; is the broker running?"),
            )
            .on(&l.name)
            .fix("start the broker (systemctl start rampart) and run rampart doctor again"),
        );
        return out;
    }

    // T1: versions.
    let mut status = Status::Pass;
    let mut notes = Vec::new();
    let v13 = obs.tls13.negotiated.is_some();
    let v12 = obs.tls12.negotiated.is_some();
    notes.push(format!(
        "TLS 1.3 {}, TLS 1.2 {}",
        if v13 { "accepted" } else { "refused" },
        if v12 { "accepted" } else { "refused" }
    ));
    if !v13 && !v12 {
        status = Status::Fail;
        notes.push(format!(
            "no handshake succeeded: {}",
            obs.main.error.as_deref().unwrap_or("unknown error")
        ));
    }
    if v12 && tls.min_version == TlsVersion::V1_3 {
        status = Status::Fail;
        notes.push("min_version = 1.3 but TLS 1.2 is accepted".to_string());
    }
    if !v12 && v13 && tls.min_version == TlsVersion::V1_2 {
        status = status.max(Status::Warn);
        notes.push("min_version = 1.2 but TLS 1.2 is refused".to_string());
    }
    if !v13 && v12 {
        status = status.max(Status::Warn);
        notes.push("TLS 1.3 is refused".to_string());
    }
    for (what, r) in obs.legacy.iter().take(2) {
        match r {
            Legacy::Accepted(v, _) => {
                status = Status::Fail;
                notes.push(format!("{what} accepted (server chose version {v:#06x})"));
            }
            Legacy::Refused(why) => notes.push(format!("{what} refused ({why})")),
            Legacy::NoAnswer(why) => {
                status = status.max(Status::Warn);
                notes.push(format!("{what}: {why}"));
            }
        }
    }
    out.push(
        Finding::new("T1.live_versions", "T1", "protocol versions the listener accepts", status,
            format!("{at}: {}", notes.join("; ")))
            .on(&l.name)
            .fix("TLS 1.2 and 1.3 only: min_version = \"1.2\" or \"1.3\" in [listeners.tls], served by rampart-tls"),
    );

    // T2: suites.
    let mut status = Status::Pass;
    let mut notes = vec![if obs.suites.is_empty() {
        "no AEAD suite accepted".to_string()
    } else {
        format!("accepted: {}", obs.suites.join(", "))
    }];
    if obs.suites.is_empty() {
        status = Status::Fail;
    }
    if !tls.ciphers.is_empty() {
        let extra: Vec<&String> = obs
            .suites
            .iter()
            .filter(|s| !tls.ciphers.contains(s))
            .collect();
        if !extra.is_empty() {
            status = Status::Fail;
            notes.push(format!(
                "not in the configured ciphers: {}",
                extra
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some((what, r)) = obs.legacy.get(2) {
        match r {
            Legacy::Accepted(_, suite) => {
                status = Status::Fail;
                notes.push(format!("{what}: accepted (suite {suite:#06x})"));
            }
            Legacy::Refused(_) => notes.push("CBC suites refused".to_string()),
            Legacy::NoAnswer(why) => {
                status = status.max(Status::Warn);
                notes.push(format!("{what}: {why}"));
            }
        }
    }
    out.push(
        Finding::new(
            "T2.live_suites",
            "T2",
            "cipher suites the listener accepts",
            status,
            format!("{at}: {}", notes.join("; ")),
        )
        .on(&l.name)
        .fix("ciphers = [] in [listeners.tls] (AEAD with forward secrecy only)"),
    );

    // T3: the chain actually served.
    let served = &obs.main.chain;
    let f = if served.is_empty() {
        Finding::new(
            "T3.live_chain",
            "T3",
            "certificate chain the listener serves",
            Status::Fail,
            format!(
                "{at}: no certificate received ({})",
                obs.main.error.as_deref().unwrap_or("handshake failed")
            ),
        )
    } else {
        let (mut status, mut ev) = judge_chain(served, now);
        match load_certs(&tls.cert_file) {
            Ok(configured) if configured == *served => ev.push_str("; identical to cert_file"),
            Ok(configured) if configured.len() > served.len() && configured.starts_with(served) => {
                status = Status::Fail;
                ev.push_str(&format!(
                    "; serves {} of the {} certificates in cert_file: chain incomplete",
                    served.len(),
                    configured.len()
                ));
            }
            Ok(_) => {
                status = status.max(Status::Warn);
                ev.push_str("; differs from cert_file (changed on disk and not reloaded yet?)");
            }
            Err(e) => ev.push_str(&format!("; cert_file unreadable here: {e}")),
        }
        Finding::new(
            "T3.live_chain",
            "T3",
            "certificate chain the listener serves",
            status,
            format!("{at}: {ev}"),
        )
        .fix(format!(
            "serve the whole chain, leaf first, from {} (then reload or restart)",
            tls.cert_file.display()
        ))
    };
    out.push(f.on(&l.name));

    // T4: client certificates.
    let m = &obs.main;
    let refused = m.error.is_some() && m.cert_requested || m.refused_without_cert == Some(true);
    let f = match tls.client_auth {
        ClientAuth::Required if m.cert_requested && refused => Finding::new(
            "T4.live_client_auth",
            "T4",
            "client certificate enforcement",
            Status::Pass,
            format!("{at}: a client without a certificate is refused"),
        ),
        ClientAuth::Required => Finding::new(
            "T4.live_client_auth",
            "T4",
            "client certificate enforcement",
            Status::Fail,
            format!(
                "{at}: client_auth = required, but a client without a certificate {}",
                if m.cert_requested {
                    "completes the handshake and stays connected"
                } else {
                    "is not even asked for one"
                }
            ),
        )
        .fix("restart the broker with client_auth = \"required\" and a ca_file"),
        ClientAuth::Optional => Finding::new(
            "T4.live_client_auth",
            "T4",
            "client certificate enforcement",
            if m.cert_requested {
                Status::Pass
            } else {
                Status::Warn
            },
            format!(
                "{at}: client_auth = optional; certificate {}",
                if m.cert_requested {
                    "requested"
                } else {
                    "not requested"
                }
            ),
        )
        .fix("client_auth = \"required\""),
        ClientAuth::None => Finding::new(
            "T4.live_client_auth",
            "T4",
            "client certificate enforcement",
            Status::NotApplicable,
            format!(
                "{at}: client_auth = none; certificate {}",
                if m.cert_requested {
                    "requested anyway"
                } else {
                    "not requested"
                }
            ),
        ),
    };
    out.push(f.on(&l.name));

    // T6: stapled OCSP response.
    let f = if m.ocsp.is_empty() {
        Finding::new("T6.live_ocsp", "T6", "OCSP response stapled", Status::Warn,
            format!("{at}: no OCSP response stapled; clients must fetch revocation status themselves, or skip it"))
            .fix("no setting yet: OCSP stapling belongs to rampart-tls (T6); until then clients should use CRLs or short-lived certificates")
    } else {
        Finding::new(
            "T6.live_ocsp",
            "T6",
            "OCSP response stapled",
            Status::Pass,
            format!("{at}: stapled OCSP response of {} bytes", m.ocsp.len()),
        )
    };
    out.push(f.on(&l.name));
    out
}
