//! Live TLS material per listener: loads certificates, keys, CA bundle and CRLs, builds the
//! rustls `ServerConfig`, and publishes a new `Arc<ServerConfig>` through a `watch` channel
//! whenever a file changes (polled), SIGHUP arrives, an OCSP response is refreshed or a
//! fetched CRL changes. Listeners use the current value for NEW handshakes only; established
//! connections keep theirs. A load that fails keeps the previous material and logs why.

use crate::alarms::{self, AlarmKind};
use crate::expiry::{self, CertExpiry};
use crate::material::{self, CertFacts};
use crate::ocsp::{self, CertStatus};
use crate::resolver::SniResolver;
use crate::verifier::DepthLimited;
use crate::{policy, unix_now, TlsError};
use parking_lot::Mutex;
use rampart_config::{ClientAuth, CrlExpired, TlsListenerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Timeout of one OCSP or CRL fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest CRL fetched over HTTP. Worst case: one such buffer per fetched URL kept in memory.
pub const MAX_FETCHED_CRL_BYTES: usize = 16 * 1024 * 1024;
/// First retry after a failed fetch; doubles up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(600);
/// How long an OCSP answer without nextUpdate is stapled (and when it is refreshed).
const OCSP_NO_NEXT_UPDATE_SECS: i64 = 3600;

/// The current TLS configuration of one listener. Cloning is cheap.
#[derive(Clone)]
pub struct TlsSource {
    rx: watch::Receiver<Arc<ServerConfig>>,
    /// Bound on each handshake (`handshake_timeout_secs`).
    pub handshake_timeout: Duration,
}

impl TlsSource {
    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.rx.borrow().clone()
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current())
    }

    /// A receiver that sees every published configuration (for tests and metrics).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServerConfig>> {
        self.rx.clone()
    }

    /// A fixed configuration (for tests and tools): never reloaded.
    pub fn fixed(cfg: Arc<ServerConfig>, handshake_timeout: Duration) -> TlsSource {
        let (tx, rx) = watch::channel(cfg);
        // Dropping the sender leaves the last value readable.
        drop(tx);
        TlsSource {
            rx,
            handshake_timeout,
        }
    }
}

/// One server certificate as loaded: chain, key, facts.
struct ServerCert {
    cert_file: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
    facts: CertFacts,
}

/// Everything read from files; replaced whole on a successful reload.
struct Loaded {
    certs: Vec<ServerCert>,
    ca: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// Client of https:// OCSP responders and CRL distribution points.
    fetch_tls: Arc<ClientConfig>,
}

impl Loaded {
    fn empty(fetch_tls: Arc<ClientConfig>) -> Loaded {
        Loaded {
            certs: Vec::new(),
            ca: Vec::new(),
            crls: Vec::new(),
            fetch_tls,
        }
    }
}

/// The TLS client for https:// fetches: `fetch_ca_file` and (unless turned off) the system
/// roots. Built only when something is fetched (OCSP stapling or `crl_fetch`).
fn fetch_client(cfg: &TlsListenerConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if cfg.ocsp_stapling || cfg.crl_fetch {
        if let Some(p) = &cfg.fetch_ca_file {
            for c in material::load_chain(p, "fetch_ca_file")? {
                roots.add(c).map_err(|e| {
                    TlsError::new(format!(
                        "fetch_ca_file {}: unusable CA certificate: {e}",
                        p.display()
                    ))
                })?;
            }
        }
        if cfg.fetch_system_roots {
            match material::system_roots() {
                Some((_, certs)) => {
                    roots.add_parsable_certificates(certs);
                }
                None => warn!(
                    "no system CA bundle found (SSL_CERT_FILE or the usual files): https:// OCSP and CRL servers are trusted through fetch_ca_file only"
                ),
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("https client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Clone)]
struct Staple {
    der: Vec<u8>,
    /// Stapled until then (Unix seconds): nextUpdate, or fetch + 1 h without one.
    valid_until: i64,
}

struct Fetch<T> {
    value: Option<T>,
    due: Instant,
    retry: Duration,
}

impl<T> Fetch<T> {
    fn new() -> Self {
        Fetch {
            value: None,
            due: Instant::now(),
            retry: MIN_RETRY,
        }
    }
    fn failed(&mut self) {
        self.due = Instant::now() + self.retry;
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }
    fn succeeded(&mut self, value: Option<T>, next: Duration) {
        self.value = value;
        self.due = Instant::now() + next;
        self.retry = MIN_RETRY;
    }
}

struct FetchedCrl {
    /// Usually one CRL; a PEM answer may carry several.
    der: Vec<CertificateRevocationListDer<'static>>,
}

type Stamp = Option<(SystemTime, u64, u64)>;

struct State {
    name: String,
    cfg: TlsListenerConfig,
    provider: Arc<CryptoProvider>,
    loaded: Loaded,
    stamps: Vec<Stamp>,
    /// Leaf DER -> its OCSP fetch state.
    ocsp: BTreeMap<Vec<u8>, Fetch<Staple>>,
    /// CRL URL -> its fetch state (crl_fetch only).
    crls: BTreeMap<String, Fetch<FetchedCrl>>,
    seen_crl_urls: Arc<Mutex<BTreeSet<String>>>,
    tx: watch::Sender<Arc<ServerConfig>>,
    last_expiry_check: Instant,
}

fn watched_files(cfg: &TlsListenerConfig) -> Vec<PathBuf> {
    let mut v = vec![cfg.cert_file.clone(), cfg.key_file.clone()];
    v.extend(cfg.sni_cert_files.iter().cloned());
    v.extend(cfg.sni_key_files.iter().cloned());
    v.extend(cfg.ca_file.iter().cloned());
    v.extend(cfg.crl_files.iter().cloned());
    v.extend(cfg.fetch_ca_file.iter().cloned());
    v
}

fn stamp(p: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn load(cfg: &TlsListenerConfig, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let mut pairs = vec![(cfg.cert_file.clone(), cfg.key_file.clone())];
    pairs.extend(
        cfg.sni_cert_files
            .iter()
            .cloned()
            .zip(cfg.sni_key_files.iter().cloned()),
    );
    let mut certs = Vec::new();
    for (cert_file, key_file) in pairs {
        let chain = material::load_chain(&cert_file, "cert_file")?;
        let key_der = material::load_key(&key_file)?;
        let key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| {
                TlsError::new(format!(
                    "key_file {}: unsupported key (RSA, ECDSA P-256/P-384 or Ed25519 expected): {e}",
                    key_file.display()
                ))
            })?;
        let ck = CertifiedKey::new(chain.clone(), key.clone());
        match ck.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(TlsError::new(format!(
                    "key_file {} is not the key of cert_file {} (replace both, key first)",
                    key_file.display(),
                    cert_file.display()
                )))
            }
        }
        let facts = material::cert_facts(&chain[0])
            .map_err(|e| TlsError::new(format!("cert_file {}: {e}", cert_file.display())))?;
        certs.push(ServerCert {
            cert_file,
            chain,
            key,
            facts,
        });
    }
    let ca = match &cfg.ca_file {
        Some(p) if cfg.client_auth != ClientAuth::None => material::load_chain(p, "ca_file")?,
        _ => Vec::new(),
    };
    let mut crls = Vec::new();
    for p in &cfg.crl_files {
        crls.extend(material::load_crls(p)?);
    }
    Ok(Loaded {
        certs,
        ca,
        crls,
        fetch_tls: fetch_client(cfg)?,
    })
}

fn build(st: &State, loaded: &Loaded) -> Result<Arc<ServerConfig>, TlsError> {
    let now = unix_now();
    let certified = |c: &ServerCert| {
        let mut ck = CertifiedKey::new(c.chain.clone(), c.key.clone());
        if let Some(Fetch { value: Some(s), .. }) = st.ocsp.get(c.chain[0].as_ref()) {
            if s.valid_until > now {
                ck.ocsp = Some(s.der.clone());
            }
        }
        Arc::new(ck)
    };
    let default = certified(&loaded.certs[0]);
    let mut by_name = Vec::new();
    for c in &loaded.certs[1..] {
        let ck = certified(c);
        for n in &c.facts.dns_names {
            by_name.push((n.clone(), ck.clone()));
        }
    }
    let resolver = SniResolver { default, by_name };

    let verifier = client_verifier(st, loaded)?;
    let mut sc = ServerConfig::builder_with_provider(st.provider.clone())
        .with_protocol_versions(&policy::protocol_versions(&st.cfg))
        .map_err(|e| TlsError::new(format!("TLS policy: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    // The configured order is the operator's preference (T2).
    sc.ignore_client_order = true;
    Ok(Arc::new(sc))
}

/// The client-certificate verifier of `client_auth`, with the CA bundle and every CRL
/// (configured and fetched).
fn client_verifier(
    st: &State,
    loaded: &Loaded,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    if st.cfg.client_auth == ClientAuth::None {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    for c in &loaded.ca {
        roots.add(c.clone()).map_err(|e| {
            TlsError::new(format!(
                "ca_file {}: unusable CA certificate: {e}",
                st.cfg
                    .ca_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
    }
    let fetched = st
        .crls
        .values()
        .filter_map(|f| f.value.as_ref())
        .flat_map(|c| c.der.iter());
    let crls = loaded
        .crls
        .iter()
        .chain(fetched)
        .map(|c| {
            webpki::OwnedCertRevocationList::from_der(c.as_ref())
                .map(webpki::CertRevocationList::from)
                .map_err(|e| TlsError::new(format!("unusable CRL: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let no_crl_yet = st.cfg.crl_fetch && crls.is_empty();
    let roots = Arc::new(roots);
    // Path and revocation checks are `DepthLimited`'s; this one does the handshake signatures
    // and the CA hints.
    let mut b = WebPkiClientVerifier::builder_with_provider(roots.clone(), st.provider.clone());
    if st.cfg.client_auth == ClientAuth::Optional {
        b = b.allow_unauthenticated();
    }
    let inner = b
        .build()
        .map_err(|e| TlsError::new(format!("client verification setup: {e}")))?;
    Ok(Arc::new(DepthLimited {
        inner,
        roots,
        crls,
        deny_expired_crl: st.cfg.crl_expired == CrlExpired::Deny,
        algs: st.provider.signature_verification_algorithms,
        max_intermediates: usize::from(st.cfg.verify_depth),
        seen_crl_urls: st.cfg.crl_fetch.then(|| st.seen_crl_urls.clone()),
        no_crl_yet,
    }))
}

fn expiries(name: &str, loaded: &Loaded) -> Vec<CertExpiry> {
    loaded
        .certs
        .iter()
        .map(|c| CertExpiry {
            listener: name.to_string(),
            file: c.cert_file.display().to_string(),
            subject: c.facts.subject.clone(),
            not_after: c.facts.not_after,
        })
        .collect()
}

/// Loads the listener's material and starts its reload task (needs a tokio runtime). A
/// failure here is a start-up error. The task ends once every [`TlsSource`] clone is gone.
pub fn start(name: &str, cfg: &TlsListenerConfig) -> Result<TlsSource, TlsError> {
    let provider = policy::crypto_provider(cfg)?;
    let stamps = watched_files(cfg).iter().map(stamp).collect();
    let loaded =
        load(cfg, &provider).map_err(|e| TlsError::new(format!("listener {name}: {e}")))?;
    let (tx, rx) = watch::channel(Arc::new(
        ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&policy::protocol_versions(cfg))
            .map_err(|e| TlsError::new(format!("listener {name}: TLS policy: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new())),
    ));
    let mut st = State {
        name: name.to_string(),
        cfg: cfg.clone(),
        provider,
        loaded: Loaded::empty(loaded.fetch_tls.clone()),
        stamps,
        ocsp: BTreeMap::new(),
        crls: BTreeMap::new(),
        seen_crl_urls: Arc::new(Mutex::new(BTreeSet::new())),
        tx,
        last_expiry_check: Instant::now(),
    };
    let first = build(&st, &loaded).map_err(|e| TlsError::new(format!("listener {name}: {e}")))?;
    st.tx.send_replace(first);
    st.install(loaded);
    let source = TlsSource {
        rx,
        handshake_timeout: Duration::from_secs(u64::from(cfg.handshake_timeout_secs)),
    };
    tokio::spawn(st.run());
    Ok(source)
}

impl State {
    /// Makes `loaded` current and refreshes what depends on it (expiry, fetch schedules).
    fn install(&mut self, loaded: Loaded) {
        let exp = expiries(&self.name, &loaded);
        expiry::warn_expiring(&exp, unix_now());
        expiry::publish(&self.name, exp);
        let leaves: BTreeSet<Vec<u8>> = loaded
            .certs
            .iter()
            .map(|c| c.chain[0].as_ref().to_vec())
            .collect();
        // A new certificate gets its OCSP response at once; a replaced one's is dropped.
        self.ocsp.retain(|k, _| leaves.contains(k));
        if self.cfg.ocsp_stapling {
            for l in leaves {
                self.ocsp.entry(l).or_insert_with(Fetch::new);
            }
        }
        if self.cfg.crl_fetch {
            for c in &loaded.ca {
                if let Ok(f) = material::cert_facts(c) {
                    for u in f.crl_urls.into_iter().filter(|u| crate::http::fetchable(u)) {
                        self.crls.entry(u).or_insert_with(Fetch::new);
                    }
                }
            }
        }
        alarms::clear_kind(&self.name, AlarmKind::CrlExpired);
        for (i, crl) in loaded.crls.iter().enumerate() {
            if let Ok(Some(next)) = material::check_crl(crl) {
                if next < unix_now() {
                    alarms::raise(
                        &self.name,
                        AlarmKind::CrlExpired,
                        &i.to_string(),
                        format!("configured CRL #{} is past its nextUpdate", i + 1),
                    );
                    warn!(listener = %self.name, crl = i, "a configured CRL is past its nextUpdate: {}",
                    if self.cfg.crl_expired == CrlExpired::Deny {
                        "certificates it covers are refused until it is replaced (crl_expired = \"deny\")"
                    } else {
                        "still used (crl_expired = \"allow\")"
                    });
                }
            }
        }
        self.loaded = loaded;
    }

    fn publish(&mut self, why: &str) {
        let empty = Loaded::empty(self.loaded.fetch_tls.clone());
        let loaded = std::mem::replace(&mut self.loaded, empty);
        match build(self, &loaded) {
            Ok(sc) => {
                self.tx.send_replace(sc);
                info!(listener = %self.name, reason = why, "TLS configuration updated for new handshakes");
            }
            Err(e) => {
                error!(listener = %self.name, reason = why, error = %e, "TLS configuration not updated; the previous one stays in use")
            }
        }
        self.loaded = loaded;
    }

    /// Reloads every file; on any error keeps the old material.
    fn reload(&mut self, why: &str) {
        let provider = self.provider.clone();
        match load(&self.cfg, &provider) {
            Ok(loaded) => match build(self, &loaded) {
                Ok(sc) => {
                    self.tx.send_replace(sc);
                    self.install(loaded);
                    info!(listener = %self.name, reason = why, "TLS certificates, keys, CA bundle and CRLs reloaded; new handshakes use them");
                }
                Err(e) => error!(listener = %self.name, reason = why, error = %e,
                    "TLS reload failed; the previous certificates, CA bundle and CRLs stay in use"),
            },
            Err(e) => error!(listener = %self.name, reason = why, error = %e,
                "TLS reload failed; the previous certificates, CA bundle and CRLs stay in use"),
        }
    }

    fn next_due(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let ocsp = self.ocsp.values().map(|f| f.due);
        let crls = self.crls.values().map(|f| f.due);
        ocsp.chain(crls).min().unwrap_or(far).min(far)
    }

    async fn run(mut self) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(listener = %self.name, error = %e, "no SIGHUP handler; file polling still reloads");
                None
            }
        };
        let mut poll =
            tokio::time::interval(Duration::from_secs(u64::from(self.cfg.reload_poll_secs)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let due = self.next_due();
            tokio::select! {
                _ = poll.tick() => {
                    if self.tx.receiver_count() == 0 {
                        return;
                    }
                    self.on_poll();
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.stamps = watched_files(&self.cfg).iter().map(stamp).collect();
                    self.reload("SIGHUP");
                }
                _ = tokio::time::sleep_until(due) => self.fetch_due().await,
            }
        }
    }

    fn on_poll(&mut self) {
        let now_stamps: Vec<Stamp> = watched_files(&self.cfg).iter().map(stamp).collect();
        if now_stamps != self.stamps {
            self.stamps = now_stamps;
            self.reload("file change");
        }
        let now = unix_now();
        // An OCSP answer past its validity is no longer stapled.
        let mut expired = false;
        for f in self.ocsp.values_mut() {
            if f.value.as_ref().is_some_and(|s| s.valid_until <= now) {
                f.value = None;
                expired = true;
            }
        }
        if expired {
            error!(listener = %self.name, alarm = "ocsp",
                "the last good OCSP response has expired and the responder gives no new one: no staple is served");
            self.publish("OCSP response expired");
        }
        if self.cfg.crl_fetch {
            let seen: Vec<String> = self.seen_crl_urls.lock().iter().cloned().collect();
            for u in seen {
                self.crls.entry(u).or_insert_with(Fetch::new);
            }
        }
        if self.last_expiry_check.elapsed() >= Duration::from_secs(86_400) {
            self.last_expiry_check = Instant::now();
            expiry::warn_expiring(&expiries(&self.name, &self.loaded), now);
        }
    }

    async fn fetch_due(&mut self) {
        let now_i = Instant::now();
        let mut changed = false;
        let due_ocsp: Vec<Vec<u8>> = self
            .ocsp
            .iter()
            .filter(|(_, f)| f.due <= now_i)
            .map(|(k, _)| k.clone())
            .collect();
        for leaf in due_ocsp {
            changed |= self.fetch_ocsp(&leaf).await;
        }
        let due_crls: Vec<String> = self
            .crls
            .iter()
            .filter(|(_, f)| f.due <= now_i)
            .map(|(k, _)| k.clone())
            .collect();
        for url in due_crls {
            changed |= self.fetch_crl(&url).await;
        }
        if changed {
            self.publish("OCSP/CRL refresh");
        }
    }

    /// Returns true when the staple changed.
    async fn fetch_ocsp(&mut self, leaf: &[u8]) -> bool {
        let Some(cert) = self
            .loaded
            .certs
            .iter()
            .find(|c| c.chain[0].as_ref() == leaf)
        else {
            self.ocsp.remove(leaf);
            return false;
        };
        let url = self.cfg.ocsp_url.clone().or_else(|| {
            cert.facts
                .ocsp_urls
                .iter()
                .find(|u| crate::http::fetchable(u))
                .cloned()
        });
        let (Some(url), Some(issuer)) = (url, cert.chain.get(1)) else {
            // Nothing to fetch: no responder known, or no issuer in the chain to name.
            info!(listener = %self.name, file = %cert.cert_file.display(),
                "no OCSP stapling for this certificate (no http(s):// responder in its AIA extension or ocsp_url, or no issuer in the chain)");
            self.ocsp.remove(leaf);
            return false;
        };
        let file = cert.cert_file.display().to_string();
        let fetch_tls = self.loaded.fetch_tls.clone();
        let result = async {
            let (req, serial) = ocsp::request(leaf, issuer)?;
            let body = crate::http::fetch(
                &url,
                Some(("application/ocsp-request", &req)),
                ocsp::MAX_RESPONSE_BYTES,
                FETCH_TIMEOUT,
                &fetch_tls,
            )
            .await?;
            let answer = ocsp::parse_response(&body, &serial)?;
            Ok::<_, String>((body, answer))
        }
        .await;
        let now = unix_now();
        let Some(f) = self.ocsp.get_mut(leaf) else {
            return false;
        };
        match result {
            Ok((body, a))
                if a.status == CertStatus::Good && a.next_update.is_none_or(|n| n > now) =>
            {
                let valid_until = a.next_update.unwrap_or(now + OCSP_NO_NEXT_UPDATE_SECS);
                // Refresh halfway to nextUpdate, so a responder outage of up to half the
                // validity is bridged by the response already stapled.
                let refresh = ((valid_until - now) / 2).clamp(60, 12 * 3600) as u64;
                info!(listener = %self.name, file = %file, responder = %url,
                    valid_for_secs = valid_until - now, "OCSP response fetched; stapling it");
                alarms::clear(&self.name, AlarmKind::OcspFailing, &file);
                f.succeeded(
                    Some(Staple {
                        der: body,
                        valid_until,
                    }),
                    Duration::from_secs(refresh),
                );
                true
            }
            Ok((_, a)) => {
                error!(listener = %self.name, alarm = "ocsp", file = %file, responder = %url,
                    status = ?a.status, "OCSP responder does not vouch for the server certificate (revoked, unknown or stale): not stapling");
                alarms::raise(
                    &self.name,
                    AlarmKind::OcspFailing,
                    &file,
                    format!("{url} answered {:?} for {file}", a.status),
                );
                let had = f.value.is_some();
                f.succeeded(None, Duration::from_secs(3600));
                had
            }
            Err(e) => {
                let keeping = f.value.as_ref().map(|s| s.valid_until - now);
                error!(listener = %self.name, alarm = "ocsp", file = %file, responder = %url, error = %e,
                    last_good_valid_for_secs = ?keeping,
                    "OCSP fetch failed; handshakes go on with the last good response until it expires");
                alarms::raise(
                    &self.name,
                    AlarmKind::OcspFailing,
                    &file,
                    format!("{url}: {e}"),
                );
                f.failed();
                false
            }
        }
    }

    /// Returns true when the fetched CRL changed.
    async fn fetch_crl(&mut self, url: &str) -> bool {
        let fetch_tls = self.loaded.fetch_tls.clone();
        let result =
            crate::http::fetch(url, None, MAX_FETCHED_CRL_BYTES, FETCH_TIMEOUT, &fetch_tls)
                .await
                .and_then(|body| {
                    let crls = material::parse_crls(body)?;
                    // The earliest nextUpdate among them decides the refresh.
                    let next = crls
                        .iter()
                        .filter_map(|c| material::check_crl(c).ok().flatten())
                        .min();
                    Ok((crls, next))
                });
        let refresh = u64::from(self.cfg.crl_refresh_secs);
        let Some(f) = self.crls.get_mut(url) else {
            return false;
        };
        match result {
            Ok((body, next)) => {
                let now = unix_now();
                let until_next = next.map(|n| (n - now).max(60) as u64).unwrap_or(refresh);
                let changed = f.value.as_ref().is_none_or(|c| c.der != body);
                info!(listener = %self.name, url, changed, "CRL fetched");
                f.succeeded(
                    Some(FetchedCrl { der: body }),
                    Duration::from_secs(refresh.min(until_next)),
                );
                changed
            }
            Err(e) => {
                warn!(listener = %self.name, url, error = %e, "CRL fetch failed; the last fetched copy (if any) stays in use");
                f.failed();
                false
            }
        }
    }
}
