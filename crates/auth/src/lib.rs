//! rampart-auth: who may connect, and what a connected client may publish and subscribe to.
//!
//! It owns the authenticator chain (built-in users, client certificates, JWT, HTTP,
//! PostgreSQL, MySQL/MariaDB, Redis, LDAP, SCRAM enhanced authentication), brute-force
//! protection, client-id ownership and the authorization sources (rules that come with an
//! identity, the ACL file) that end in deny by default (M1, M2).
//!
//! It must never: let a backend error or timeout allow a client (fail closed); log or
//! `Debug`-print a password, token, hash or backend secret; splice a client's input into SQL,
//! LDAP filters or a Redis command (values are bound or escaped); compare secrets in
//! variable time; or touch sockets other than its backends' (the broker owns the clients).
//!
//! # Use from the connection task
//! ```text
//! let svc = Arc::new(AuthService::from_config(&cfg, Some(store))?);   // at start-up
//! svc.spawn_acl_watcher();                                            // ACL file reload
//! // CONNECT:
//! match svc.authenticate(&ConnectRequest { .. }).await {
//!     AuthResult::Allow(a) => { let claim = svc.claim_client_id(&a.identity)?; ... }
//!     AuthResult::Continue(ch) => { send AUTH 0x18 with ch.auth_data; on the client's AUTH:
//!                                   svc.continue_auth(ch.state, method, data).await }
//!     AuthResult::Deny(d) => CONNACK d.reason,
//! }
//! let mut authz = svc.authorizer(identity);                          // per connection
//! authz.authorize(&Request { action, topic, qos, retain }, Instant::now())   // per PUBLISH/SUBSCRIBE
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use rampart_codec::ReasonCode;
use rampart_config::{
    AclConfig, AclSource, CertField, Config, NoMatch, OwnershipRefusal, PasswordHashConfig,
};
use rampart_core::conn_info::{CertIdentity, ConnInfo};
use rampart_store::Store;
use tokio::sync::Semaphore;
use tracing::{info, warn};

pub mod acl;
mod backends;
mod brute;
pub mod hash;
mod ownership;
pub mod scram;
pub mod users;

pub use acl::{AclRule, Action, Permission, Request};
pub use brute::{BruteForce, Gate};
pub use ownership::ClientIdClaim;
pub use scram::{ScramAlg, ScramClient};

use backends::{Answer, Backend, Grant};

/// What the broker knows at CONNECT (or at an AUTH packet that starts re-authentication).
pub struct ConnectRequest<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    /// Never logged or printed.
    pub password: Option<&'a [u8]>,
    pub conn: &'a ConnInfo,
    /// 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub protocol_level: u8,
    /// v5 Authentication Method / Data (enhanced authentication).
    pub auth_method: Option<&'a str>,
    pub auth_data: Option<&'a [u8]>,
}

impl std::fmt::Debug for ConnectRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("peer", &self.conn.peer)
            .field("listener", &self.conn.listener)
            .field("auth_method", &self.auth_method)
            .finish()
    }
}

/// An authenticated client. It travels with the session; ACL rules refer to its fields.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The MQTT username, or the certificate field / token subject that stands for it.
    pub username: Option<String>,
    pub client_id: String,
    pub peer: IpAddr,
    pub listener: Arc<str>,
    pub cert: Option<CertIdentity>,
    pub superuser: bool,
    pub groups: Vec<String>,
    /// Rules that came with the login (built-in user, JWT claim, HTTP answer, SQL rows).
    pub acl: Vec<AclRule>,
    /// When the credential stops being valid (JWT `exp`): the broker disconnects then.
    pub expires_at: Option<SystemTime>,
    /// The backend that allowed it, or "anonymous".
    pub backend: String,
    /// The v5 enhanced authentication method used, if any (re-authentication must reuse it).
    pub auth_method: Option<String>,
}

impl Identity {
    pub fn is_anonymous(&self) -> bool {
        self.backend == "anonymous"
    }

    /// The key that owns a client id: the same person reconnecting may take over its own
    /// session, anybody else may not.
    pub fn owner_key(&self) -> String {
        match (&self.username, &self.cert) {
            (Some(u), _) => format!("user:{u}"),
            (None, Some(c)) => format!("cert:{}", c.fingerprint_sha256),
            (None, None) => "anonymous".to_string(),
        }
    }

    /// True if a re-authentication produced the same principal (MQTT 5 re-authentication
    /// must not change who the client is).
    pub fn same_principal(&self, other: &Identity) -> bool {
        self.owner_key() == other.owner_key()
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Wrong password, unknown user, bad token (0x86).
    BadCredentials,
    /// Anonymous not allowed, backend said no without a credential problem (0x87).
    NotAuthorized,
    /// Locked out by brute-force protection (0x8A).
    Banned,
    /// Unknown or unconfigured enhanced authentication method (0x8C).
    BadAuthMethod,
    /// A backend failed; fail closed (0x87, counted).
    BackendError,
    /// A backend did not answer in time; fail closed (0x87, counted).
    Timeout,
    /// The client id belongs to a connected client of another identity (0x85 or 0x87).
    ClientIdTaken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenyKind,
    /// The CONNACK (or DISCONNECT, on re-authentication) reason code. For MQTT 3.1.1 map it
    /// with `rampart_codec::v3_connack_code`.
    pub reason: ReasonCode,
}

impl Denial {
    fn new(kind: DenyKind) -> Denial {
        let reason = match kind {
            DenyKind::BadCredentials => ReasonCode::BadUserNameOrPassword,
            DenyKind::NotAuthorized | DenyKind::BackendError | DenyKind::Timeout => {
                ReasonCode::NotAuthorized
            }
            DenyKind::Banned => ReasonCode::Banned,
            DenyKind::BadAuthMethod => ReasonCode::BadAuthenticationMethod,
            DenyKind::ClientIdTaken => ReasonCode::ClientIdentifierNotValid,
        };
        Denial { kind, reason }
    }
}

/// An allowed login.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub identity: Arc<Identity>,
    /// Authentication Data for the CONNACK (or the AUTH 0x00 that ends re-authentication):
    /// the SCRAM server-final message.
    pub auth_data: Option<Vec<u8>>,
}

/// Enhanced authentication goes on: send AUTH 0x18 (Continue authentication) with
/// `auth_data`, then call [`AuthService::continue_auth`] with the client's next AUTH.
#[derive(Debug)]
pub struct Challenge {
    pub method: &'static str,
    pub auth_data: Vec<u8>,
    pub state: Box<EnhancedAuth>,
}

/// Server state between AUTH packets. Keep it in the connection; it expires after the
/// chain timeout.
#[derive(Debug)]
pub struct EnhancedAuth {
    scram: scram::ScramServer,
    backend: String,
    client_id: String,
    peer: IpAddr,
    listener: Arc<str>,
    cert: Option<CertIdentity>,
    started: Instant,
}

#[derive(Debug)]
pub enum AuthResult {
    Allow(Allowed),
    Continue(Challenge),
    Deny(Denial),
}

impl AuthResult {
    fn deny(kind: DenyKind) -> AuthResult {
        AuthResult::Deny(Denial::new(kind))
    }
}

/// Authorization outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// Counters for metrics and `$SYS`. Backend errors and timeouts are also kept per backend.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    pub allowed: AtomicU64,
    pub denied_credentials: AtomicU64,
    pub denied_not_authorized: AtomicU64,
    pub denied_banned: AtomicU64,
    pub backend_errors: AtomicU64,
    pub backend_timeouts: AtomicU64,
    pub client_id_refused: AtomicU64,
    pub authz_allowed: AtomicU64,
    pub authz_denied: AtomicU64,
    pub authz_cache_hits: AtomicU64,
    pub acl_reloads: AtomicU64,
    pub acl_reload_errors: AtomicU64,
}

/// One backend of the chain.
struct Entry {
    name: String,
    /// Empty: every listener.
    listeners: Vec<String>,
    timeout: Duration,
    backend: Backend,
    errors: AtomicU64,
    timeouts: AtomicU64,
}

/// Per-backend counters, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub name: String,
    pub kind: &'static str,
    pub errors: u64,
    pub timeouts: u64,
}

/// A configuration problem found while building the service (a file that cannot be read,
/// a key that cannot be parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub Vec<String>);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for SetupError {}

/// Shared state of authorization (the connection tasks' [`ClientAuthz`] point at it).
struct Authz {
    cfg: AclConfig,
    /// Local-only mode has no ACL: everything is allowed, as before authentication existed.
    allow_all: bool,
    file_rules: RwLock<Arc<Vec<AclRule>>>,
    /// Bumped whenever rules change; cached decisions of an older generation are dropped.
    generation: AtomicU64,
    file_stamp: parking_lot::Mutex<Option<(SystemTime, u64)>>,
    http: Option<AclHttp>,
    /// Errors and timeouts of the http source (each denied).
    http_errors: AtomicU64,
}

/// The authentication chain and the authorization sources of one broker.
pub struct AuthService {
    chain: Vec<Entry>,
    /// For per-client rules; the backends hold their own handle.
    store: Option<Arc<dyn Store>>,
    local_only: bool,
    allow_anonymous: bool,
    ownership: bool,
    ownership_refusal: OwnershipRefusal,
    registry: Arc<ownership::Registry>,
    brute: BruteForce,
    authz: Arc<Authz>,
    metrics: Arc<AuthMetrics>,
    /// Per-process secret for SCRAM decoys of unknown users.
    decoy_secret: [u8; 32],
    chain_timeout: Duration,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field(
                "chain",
                &self.chain.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .field("local_only", &self.local_only)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// Builds the chain and loads the ACL file. Reads key files and the ACL file; opens no
    /// network connection (SQL pools, LDAP and JWKS connect on first use).
    pub fn from_config(
        cfg: &Config,
        store: Option<Arc<dyn Store>>,
    ) -> Result<AuthService, SetupError> {
        let a = &cfg.auth;
        let mut errors = Vec::new();
        let verify_permits = Arc::new(Semaphore::new(a.max_concurrent_verifications as usize));
        let shared = backends::Shared {
            store: store.clone(),
            // Limits concurrent password verifications (CPU and argon2 memory).
            permits: verify_permits,
            permit_wait: Duration::from_millis(a.timeout_ms) / 2,
            dummy_hash: Arc::new(dummy_hash(&a.password_hash)),
            verified: (a.verified_cache_secs > 0).then(|| {
                Arc::new(backends::VerifiedCache::new(Duration::from_secs(
                    a.verified_cache_secs,
                )))
            }),
        };
        let mut chain = Vec::new();
        for b in &a.backends {
            let timeout = Duration::from_millis(b.timeout_ms.unwrap_or(a.timeout_ms));
            match Backend::build(&b.kind, &shared, timeout) {
                Ok(backend) => chain.push(Entry {
                    name: b.name.clone(),
                    listeners: b.listeners.clone(),
                    timeout,
                    backend,
                    errors: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                }),
                Err(e) => errors.push(format!("auth.backends \"{}\": {e}", b.name)),
            }
        }
        let authz = Arc::new(Authz {
            cfg: cfg.acl.clone(),
            allow_all: cfg.local_only,
            file_rules: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            file_stamp: parking_lot::Mutex::new(None),
            http: match &cfg.acl.http_url {
                Some(url) => match reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                {
                    Ok(client) => Some(AclHttp {
                        client,
                        url: url.clone(),
                        timeout: Duration::from_millis(cfg.acl.http_timeout_ms),
                    }),
                    Err(e) => {
                        errors.push(format!("acl.http_url: HTTP client: {e}"));
                        None
                    }
                },
                None => None,
            },
            http_errors: AtomicU64::new(0),
        });
        let svc = AuthService {
            chain,
            store,
            local_only: cfg.local_only,
            allow_anonymous: cfg.danger.allow_anonymous,
            ownership: a.client_id_ownership,
            ownership_refusal: a.ownership_refusal,
            registry: Arc::new(ownership::Registry::default()),
            brute: BruteForce::new(a.brute_force),
            authz,
            metrics: Arc::new(AuthMetrics::default()),
            decoy_secret: rand::random(),
            chain_timeout: Duration::from_millis(a.timeout_ms),
        };
        if svc.authz.cfg.sources.contains(&AclSource::File) && svc.authz.cfg.file.is_some() {
            if let Err(e) = svc.reload_acl() {
                errors.extend(e);
            }
        }
        if errors.is_empty() {
            Ok(svc)
        } else {
            Err(SetupError(errors))
        }
    }

    pub fn metrics(&self) -> &Arc<AuthMetrics> {
        &self.metrics
    }

    pub fn backend_stats(&self) -> Vec<BackendStats> {
        self.chain
            .iter()
            .map(|e| BackendStats {
                name: e.name.clone(),
                kind: e.backend.kind(),
                errors: e.errors.load(Ordering::Relaxed),
                timeouts: e.timeouts.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// True if a denied publish should disconnect the client (acl.disconnect_on_deny).
    pub fn disconnect_on_deny(&self) -> bool {
        self.authz.cfg.disconnect_on_deny
    }

    fn serves(e: &Entry, listener: &str) -> bool {
        e.listeners.is_empty() || e.listeners.iter().any(|l| l == listener)
    }

    fn count(&self, d: DenyKind) {
        let m = &self.metrics;
        let c = match d {
            DenyKind::BadCredentials => &m.denied_credentials,
            DenyKind::Banned => &m.denied_banned,
            DenyKind::ClientIdTaken => &m.client_id_refused,
            _ => &m.denied_not_authorized,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the chain for a CONNECT (or for the AUTH packet that starts re-authentication).
    pub async fn authenticate(&self, req: &ConnectRequest<'_>) -> AuthResult {
        let r = self.run_chain(req).await;
        self.add_client_rules(r).await
    }

    /// Appends the built-in per-client rules (store namespace [`users::CLIENT_ACL_NS`]) to
    /// an allowed identity. A store failure denies: missing deny rules must not widen access.
    async fn add_client_rules(&self, r: AuthResult) -> AuthResult {
        // Local-only mode allows everything anyway: no store read per CONNECT.
        let Some(store) = self.store.clone().filter(|_| !self.authz.allow_all) else {
            return r;
        };
        let AuthResult::Allow(mut a) = r else {
            return r;
        };
        let client_id = a.identity.client_id.clone();
        let read = tokio::task::spawn_blocking(move || {
            users::get_client_rules(store.as_ref(), &client_id)
        })
        .await;
        match read {
            Ok(Ok(lines)) if lines.is_empty() => AuthResult::Allow(a),
            Ok(Ok(lines)) => {
                let origin = format!("client {}", a.identity.client_id);
                match backends::parse_rules(lines.iter().map(String::as_str), &origin) {
                    Ok(rules) => {
                        Arc::make_mut(&mut a.identity).acl.extend(rules);
                        AuthResult::Allow(a)
                    }
                    Err(e) => self.store_failure(&e),
                }
            }
            Ok(Err(e)) => self.store_failure(&e),
            Err(e) => self.store_failure(&e.to_string()),
        }
    }

    fn store_failure(&self, e: &str) -> AuthResult {
        self.metrics.backend_errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %e, "per-client ACL rules unreadable: denying");
        self.count(DenyKind::BackendError);
        AuthResult::deny(DenyKind::BackendError)
    }

    async fn run_chain(&self, req: &ConnectRequest<'_>) -> AuthResult {
        let peer = req.conn.peer.ip();
        if let Gate::Locked(_) = self.brute.gate(peer, req.username, Instant::now()) {
            info!(%peer, listener = %req.conn.listener, "login refused: locked out after repeated failures");
            self.count(DenyKind::Banned);
            return AuthResult::deny(DenyKind::Banned);
        }
        if let Some(method) = req.auth_method {
            return self.start_enhanced(req, method).await;
        }
        let has_credentials = req.username.is_some() || req.password.is_some();
        for e in self
            .chain
            .iter()
            .filter(|e| Self::serves(e, &req.conn.listener))
        {
            if matches!(e.backend, Backend::Scram(_)) {
                continue;
            }
            let answer = match tokio::time::timeout(e.timeout, e.backend.check(req)).await {
                Ok(Ok(a)) => a,
                Ok(Err(err)) => {
                    e.errors.fetch_add(1, Ordering::Relaxed);
                    self.metrics.backend_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(backend = %e.name, error = %err, client_id = ?req.client_id, "auth backend failed: denying");
                    self.count(DenyKind::BackendError);
                    return AuthResult::deny(DenyKind::BackendError);
                }
                Err(_) => {
                    e.timeouts.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .backend_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(backend = %e.name, timeout_ms = e.timeout.as_millis() as u64, client_id = ?req.client_id, "auth backend timed out: denying");
                    self.count(DenyKind::Timeout);
                    return AuthResult::deny(DenyKind::Timeout);
                }
            };
            match answer {
                Answer::Ignore => continue,
                Answer::Allow(g) => return self.allow(req, &e.name, g, None),
                Answer::Deny => return self.fail(req, DenyKind::BadCredentials).await,
            }
        }
        if !has_credentials {
            let loopback = peer.to_canonical().is_loopback();
            if (self.local_only && loopback) || self.allow_anonymous {
                let g = Grant {
                    username: None,
                    ..Grant::default()
                };
                return self.allow(req, "anonymous", g, None);
            }
            info!(%peer, listener = %req.conn.listener, "login refused: anonymous access is off");
            self.count(DenyKind::NotAuthorized);
            return AuthResult::deny(DenyKind::NotAuthorized);
        }
        self.fail(req, DenyKind::BadCredentials).await
    }

    fn allow(
        &self,
        req: &ConnectRequest<'_>,
        backend: &str,
        g: Grant,
        auth_data: Option<Vec<u8>>,
    ) -> AuthResult {
        self.brute.success(req.username);
        self.metrics.allowed.fetch_add(1, Ordering::Relaxed);
        let cert = req.conn.tls.as_ref().and_then(|t| t.client_cert.clone());
        let username = g.username.or_else(|| {
            // A backend that allowed without naming the user keeps the client's username.
            if backend == "anonymous" {
                None
            } else {
                req.username.map(str::to_string)
            }
        });
        AuthResult::Allow(Allowed {
            identity: Arc::new(Identity {
                username,
                client_id: req.client_id.to_string(),
                peer: req.conn.peer.ip(),
                listener: req.conn.listener.clone(),
                cert,
                superuser: g.superuser,
                groups: g.groups,
                acl: g.acl,
                expires_at: g.expires_at,
                backend: backend.to_string(),
                auth_method: req.auth_method.map(str::to_string),
            }),
            auth_data,
        })
    }

    /// A credential failure: counted per address and username, answered after the
    /// brute-force delay.
    async fn fail(&self, req: &ConnectRequest<'_>, kind: DenyKind) -> AuthResult {
        let peer = req.conn.peer.ip();
        let delay = self.brute.failure(peer, req.username, Instant::now());
        info!(%peer, listener = %req.conn.listener, client_id = ?req.client_id, delay_ms = delay.as_millis() as u64, "login refused: bad credentials");
        self.count(kind);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        AuthResult::deny(kind)
    }

    async fn start_enhanced(&self, req: &ConnectRequest<'_>, method: &str) -> AuthResult {
        let Some(alg) = ScramAlg::from_method(method) else {
            self.count(DenyKind::BadAuthMethod);
            return AuthResult::deny(DenyKind::BadAuthMethod);
        };
        let Some(entry) = self.chain.iter().find(|e| {
            matches!(e.backend, Backend::Scram(_)) && Self::serves(e, &req.conn.listener)
        }) else {
            self.count(DenyKind::BadAuthMethod);
            return AuthResult::deny(DenyKind::BadAuthMethod);
        };
        let data = req.auth_data.unwrap_or_default();
        let (gs2, bare, user, nonce) = match scram::parse_client_first(data) {
            Ok(x) => x,
            Err(e) => {
                info!(peer = %req.conn.peer, error = %e, "SCRAM client-first refused");
                return self.fail(req, DenyKind::BadCredentials).await;
            }
        };
        if let Gate::Locked(_) = self
            .brute
            .gate(req.conn.peer.ip(), Some(&user), Instant::now())
        {
            self.count(DenyKind::Banned);
            return AuthResult::deny(DenyKind::Banned);
        }
        let cred = match backends::builtin_scram_credential(&entry.backend, &user, alg).await {
            Ok(Some(c)) => c,
            Ok(None) => scram::ScramCredential::decoy(alg, &self.decoy_secret, &user),
            Err(err) => {
                entry.errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.backend_errors.fetch_add(1, Ordering::Relaxed);
                warn!(backend = %entry.name, error = %err, "SCRAM credential lookup failed: denying");
                self.count(DenyKind::BackendError);
                return AuthResult::deny(DenyKind::BackendError);
            }
        };
        let (server, first) = scram::ScramServer::start(alg, gs2, bare, user, &nonce, cred);
        AuthResult::Continue(Challenge {
            method: alg.method(),
            auth_data: first,
            state: Box::new(EnhancedAuth {
                scram: server,
                backend: entry.name.clone(),
                client_id: req.client_id.to_string(),
                peer: req.conn.peer.ip(),
                listener: req.conn.listener.clone(),
                cert: req.conn.tls.as_ref().and_then(|t| t.client_cert.clone()),
                started: Instant::now(),
            }),
        })
    }

    /// The client's next AUTH packet (method and data) in an enhanced authentication.
    pub async fn continue_auth(
        &self,
        state: Box<EnhancedAuth>,
        method: &str,
        data: &[u8],
    ) -> AuthResult {
        let r = self.finish_enhanced(state, method, data).await;
        self.add_client_rules(r).await
    }

    async fn finish_enhanced(
        &self,
        state: Box<EnhancedAuth>,
        method: &str,
        data: &[u8],
    ) -> AuthResult {
        let user = state.scram.username.clone();
        let kind = if method != state.scram.alg.method() {
            DenyKind::BadAuthMethod
        } else if state.started.elapsed() > self.chain_timeout.max(Duration::from_secs(30)) {
            DenyKind::NotAuthorized
        } else {
            match state.scram.finish(data) {
                Ok(server_final) => {
                    let rec =
                        backends::builtin_user_grant(&self.chain, &state.backend, &user).await;
                    let g = match rec {
                        Ok(Some(g)) => g,
                        // Deleted between the two messages.
                        Ok(None) => return self.fail_enhanced(&state, &user).await,
                        Err(_) => return AuthResult::deny(DenyKind::BackendError),
                    };
                    self.brute.success(Some(&user));
                    self.metrics.allowed.fetch_add(1, Ordering::Relaxed);
                    return AuthResult::Allow(Allowed {
                        identity: Arc::new(Identity {
                            username: Some(user),
                            client_id: state.client_id.clone(),
                            peer: state.peer,
                            listener: state.listener.clone(),
                            cert: state.cert.clone(),
                            superuser: g.superuser,
                            groups: g.groups,
                            acl: g.acl,
                            expires_at: None,
                            backend: state.backend.clone(),
                            auth_method: Some(method.to_string()),
                        }),
                        auth_data: Some(server_final),
                    });
                }
                Err(_) => return self.fail_enhanced(&state, &user).await,
            }
        };
        self.count(kind);
        AuthResult::deny(kind)
    }

    async fn fail_enhanced(&self, state: &EnhancedAuth, user: &str) -> AuthResult {
        let delay = self.brute.failure(state.peer, Some(user), Instant::now());
        info!(peer = %state.peer, "SCRAM authentication failed");
        self.count(DenyKind::BadCredentials);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        AuthResult::deny(DenyKind::BadCredentials)
    }

    /// Call after a successful login, before taking over any session: refuses a client id
    /// held by a connected client of another identity. Keep the claim for the connection's
    /// life; dropping it releases the id.
    pub fn claim_client_id(&self, id: &Identity) -> Result<ClientIdClaim, Denial> {
        let key: Arc<str> = Arc::from(id.client_id.as_str());
        // With ownership off every claim has the same owner, so nothing is refused.
        let owner: Arc<str> = if self.ownership {
            Arc::from(id.owner_key())
        } else {
            Arc::from("")
        };
        self.registry.claim(&key, owner).map_err(|()| {
            self.count(DenyKind::ClientIdTaken);
            info!(client_id = ?id.client_id, "client id refused: in use by another identity");
            self.ownership_denial()
        })
    }

    /// Client ids currently claimed.
    pub fn claimed_client_ids(&self) -> usize {
        self.registry.len()
    }

    /// Re-reads the ACL file; on error the old rules stay in force.
    pub fn reload_acl(&self) -> Result<usize, Vec<String>> {
        let Some(path) = self.authz.cfg.file.clone() else {
            return Ok(0);
        };
        let result = load_acl_file(&path);
        match result {
            Ok((rules, stamp)) => {
                let n = rules.len();
                *self.authz.file_rules.write() = Arc::new(rules);
                *self.authz.file_stamp.lock() = stamp;
                self.authz.generation.fetch_add(1, Ordering::Release);
                self.metrics.acl_reloads.fetch_add(1, Ordering::Relaxed);
                info!(file = %path.display(), rules = n, "ACL loaded");
                Ok(n)
            }
            Err(e) => {
                self.metrics
                    .acl_reload_errors
                    .fetch_add(1, Ordering::Relaxed);
                for line in &e {
                    warn!("ACL not reloaded: {line}");
                }
                Err(e)
            }
        }
    }

    /// Reloads the ACL file if its modification time or size changed. Returns true if the
    /// rules were replaced.
    pub fn reload_acl_if_changed(&self) -> bool {
        let Some(path) = &self.authz.cfg.file else {
            return false;
        };
        let now = stamp(path);
        if now == *self.authz.file_stamp.lock() {
            return false;
        }
        self.reload_acl().is_ok()
    }

    /// Polls the ACL file every `acl.reload_check_secs` and reloads it when it changed.
    pub fn spawn_acl_watcher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.authz.cfg.file.as_ref()?;
        let weak = Arc::downgrade(self);
        let period = Duration::from_secs(self.authz.cfg.reload_check_secs);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(svc) = weak.upgrade() else { return };
                // Reading a small file: cheap enough not to need spawn_blocking.
                svc.reload_acl_if_changed();
            }
        }))
    }

    /// Per-connection authorizer with its decision cache.
    pub fn authorizer(&self, identity: Arc<Identity>) -> ClientAuthz {
        ClientAuthz {
            authz: self.authz.clone(),
            metrics: self.metrics.clone(),
            identity,
            cache: HashMap::new(),
            generation: self.authz.generation.load(Ordering::Acquire),
        }
    }

    /// One uncached decision (tools, tests; the connection path uses [`ClientAuthz`]).
    pub fn authorize(&self, identity: &Identity, req: &Request<'_>) -> Decision {
        self.authz.decide(identity, req)
    }

    /// [`AuthService::authorize`] including the "http" source.
    pub async fn authorize_async(&self, identity: &Identity, req: &Request<'_>) -> Decision {
        self.authz.decide_async(identity, req).await
    }

    /// True when `acl.sources` contains "http": the connection path must then use
    /// [`ClientAuthz::authorize_async`] (the sync call denies where it would have to ask).
    pub fn authorization_needs_async(&self) -> bool {
        self.authz.cfg.sources.contains(&AclSource::Http)
    }

    /// Errors and timeouts of the ACL http source.
    pub fn acl_http_errors(&self) -> u64 {
        self.authz.http_errors.load(Ordering::Relaxed)
    }

    /// Longest an [`AuthService::authorize_async`] call can take: the http source's timeout
    /// (asked at most once per source entry) plus slack. Callers bound their wait with it.
    pub fn authorize_async_bound(&self) -> Duration {
        let asks = self
            .authz
            .cfg
            .sources
            .iter()
            .filter(|s| **s == AclSource::Http)
            .count()
            .max(1) as u32;
        Duration::from_millis(self.authz.cfg.http_timeout_ms) * asks + Duration::from_millis(500)
    }

    /// The ownership rule for a session that outlives its connection: `stored_owner` is the
    /// [`Identity::owner_key`] recorded with the session (`None`: recorded by no one, e.g. a
    /// session from before owners were stored; the next client adopts it). A different
    /// identity is refused like a takeover of a connected client id.
    pub fn check_session_owner(
        &self,
        stored_owner: Option<&str>,
        id: &Identity,
    ) -> Result<(), Denial> {
        match stored_owner {
            Some(owner) if self.ownership && owner != id.owner_key() => {
                self.count(DenyKind::ClientIdTaken);
                info!(client_id = ?id.client_id, "client id refused: its stored session belongs to another identity");
                Err(self.ownership_denial())
            }
            _ => Ok(()),
        }
    }

    fn ownership_denial(&self) -> Denial {
        let mut d = Denial::new(DenyKind::ClientIdTaken);
        if self.ownership_refusal == OwnershipRefusal::NotAuthorized {
            d.reason = ReasonCode::NotAuthorized;
        }
        d
    }
}

/// Where a decision got to without awaiting anything.
enum Step {
    Decided(Decision),
    /// The source at this index is the HTTP one: ask it, then go on after it if it ignores.
    AskHttp(usize),
}

impl Authz {
    /// The synchronous decision: an "http" source that would have to be asked denies (fail
    /// closed); use the async path when [`AuthService::authorization_needs_async`].
    fn decide(&self, id: &Identity, req: &Request<'_>) -> Decision {
        match self.step(id, req, 0) {
            Step::Decided(d) => d,
            Step::AskHttp(_) => Decision::Deny,
        }
    }

    async fn decide_async(&self, id: &Identity, req: &Request<'_>) -> Decision {
        let mut from = 0;
        loop {
            match self.step(id, req, from) {
                Step::Decided(d) => return d,
                Step::AskHttp(i) => match self.ask_http(id, req).await {
                    Some(p) => {
                        return match p {
                            Permission::Allow => Decision::Allow,
                            Permission::Deny => Decision::Deny,
                        }
                    }
                    None => from = i + 1,
                },
            }
        }
    }

    fn step(&self, id: &Identity, req: &Request<'_>, from: usize) -> Step {
        if self.allow_all || id.superuser {
            return Step::Decided(Decision::Allow);
        }
        let topic = match req.action {
            Action::Subscribe => acl::unshare(req.topic),
            Action::Publish => req.topic,
        };
        let req = Request { topic, ..*req };
        for (i, source) in self.cfg.sources.iter().enumerate().skip(from) {
            let hit = match source {
                AclSource::Identity => id.acl.iter().find_map(|r| r.check(id, &req)),
                AclSource::File => {
                    let rules = self.file_rules.read().clone();
                    rules.iter().find_map(|r| r.check(id, &req))
                }
                AclSource::Http => return Step::AskHttp(i),
            };
            match hit {
                Some(Permission::Allow) => return Step::Decided(Decision::Allow),
                Some(Permission::Deny) => return Step::Decided(Decision::Deny),
                None => {}
            }
        }
        Step::Decided(match self.cfg.no_match {
            NoMatch::Allow => Decision::Allow,
            NoMatch::Deny => Decision::Deny,
        })
    }

    /// `Some(permission)`, or `None` when the server ignores. Errors and timeouts deny.
    async fn ask_http(&self, id: &Identity, req: &Request<'_>) -> Option<Permission> {
        let Some(h) = &self.http else {
            return Some(Permission::Deny);
        };
        let body = serde_json::json!({
            "username": id.username,
            "clientid": id.client_id,
            "peerhost": id.peer.to_canonical().to_string(),
            "listener": &*id.listener,
            "cert_common_name": id.cert.as_ref().and_then(|c| c.common_name.clone()),
            "action": match req.action { Action::Publish => "publish", Action::Subscribe => "subscribe" },
            "topic": req.topic,
            "qos": req.qos,
            "retain": req.retain,
        });
        let call = async {
            let resp = h
                .client
                .post(&h.url)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("request: {}", e.without_url()))?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status().as_u16()));
            }
            let bytes = backends::read_capped(resp, 64 * 1024).await?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))?;
            match v.get("result").and_then(|r| r.as_str()) {
                Some("allow") => Ok(Some(Permission::Allow)),
                Some("deny") => Ok(Some(Permission::Deny)),
                Some("ignore") => Ok(None),
                _ => Err("answer without result allow/deny/ignore".to_string()),
            }
        };
        match tokio::time::timeout(h.timeout, call).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                self.http_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, client_id = ?id.client_id, "ACL http source failed: denying");
                Some(Permission::Deny)
            }
            Err(_) => {
                self.http_errors.fetch_add(1, Ordering::Relaxed);
                warn!(client_id = ?id.client_id, "ACL http source timed out: denying");
                Some(Permission::Deny)
            }
        }
    }
}

/// The "http" authorization source.
struct AclHttp {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

type CacheKey = (Action, u8, bool, String);

/// Authorization for one connection: decisions cached for `acl.cache_ttl_secs`, dropped when
/// the rules change. Worst-case memory: `acl.cache_max_entries` topics per connection.
pub struct ClientAuthz {
    authz: Arc<Authz>,
    metrics: Arc<AuthMetrics>,
    identity: Arc<Identity>,
    cache: HashMap<CacheKey, (Decision, Instant)>,
    generation: u64,
}

impl std::fmt::Debug for ClientAuthz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthz")
            .field("client_id", &self.identity.client_id)
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl ClientAuthz {
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// After re-authentication: new rules, so the cache goes.
    pub fn set_identity(&mut self, identity: Arc<Identity>) {
        self.identity = identity;
        self.cache.clear();
    }

    /// The decision for a PUBLISH (topic name) or one SUBSCRIBE filter. `now` is passed in
    /// so that tests control the cache's clock.
    pub fn authorize(&mut self, req: &Request<'_>, now: Instant) -> Decision {
        if let Some(d) = self.cached_decision(req, now) {
            return d;
        }
        let d = self.authz.decide(&self.identity, req);
        self.remember(req, d, now);
        d
    }

    /// The decision if it can be made without awaiting anything (a cached decision, or no
    /// "http" source on the way); `None` when the http source must be asked: then ask with
    /// [`AuthService::authorize_async`] off the packet path and [`ClientAuthz::record`] the
    /// answer. Costs what [`ClientAuthz::authorize`] costs.
    pub fn try_authorize(&mut self, req: &Request<'_>, now: Instant) -> Option<Decision> {
        if let Some(d) = self.cached_decision(req, now) {
            return Some(d);
        }
        match self.authz.step(&self.identity, req, 0) {
            Step::Decided(d) => {
                self.remember(req, d, now);
                Some(d)
            }
            Step::AskHttp(_) => None,
        }
    }

    /// Caches (and counts) a decision made elsewhere, for [`ClientAuthz::try_authorize`].
    pub fn record(&mut self, req: &Request<'_>, d: Decision, now: Instant) {
        self.remember(req, d, now);
    }

    /// [`ClientAuthz::authorize`] including the "http" source (awaited only on a cache miss
    /// that reaches it).
    pub async fn authorize_async(&mut self, req: &Request<'_>, now: Instant) -> Decision {
        if let Some(d) = self.cached_decision(req, now) {
            return d;
        }
        let d = self.authz.decide_async(&self.identity, req).await;
        self.remember(req, d, now);
        d
    }

    fn cached_decision(&mut self, req: &Request<'_>, now: Instant) -> Option<Decision> {
        let generation = self.authz.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.cache.clear();
            self.generation = generation;
        }
        let ttl = Duration::from_secs(self.authz.cfg.cache_ttl_secs);
        if ttl.is_zero() {
            return None;
        }
        let key: CacheKey = (req.action, req.qos, req.retain, req.topic.to_string());
        let (d, at) = self.cache.get(&key)?;
        if now.saturating_duration_since(*at) >= ttl {
            return None;
        }
        let d = *d;
        self.metrics
            .authz_cache_hits
            .fetch_add(1, Ordering::Relaxed);
        self.count(d);
        Some(d)
    }

    fn remember(&mut self, req: &Request<'_>, d: Decision, now: Instant) {
        let ttl = Duration::from_secs(self.authz.cfg.cache_ttl_secs);
        let key: CacheKey = (req.action, req.qos, req.retain, req.topic.to_string());
        if !ttl.is_zero() {
            if self.cache.len() >= self.authz.cfg.cache_max_entries as usize {
                // Simple and bounded: a client cycling through many topics just recomputes.
                self.cache.clear();
            }
            self.cache.insert(key, (d, now));
        }
        self.count(d);
    }

    fn count(&self, d: Decision) {
        let c = match d {
            Decision::Allow => &self.metrics.authz_allowed,
            Decision::Deny => &self.metrics.authz_denied,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Upper bound on the ACL file's size: it is read whole on every change.
const MAX_ACL_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Modification time and size of the ACL file: a change in either triggers a reload.
type Stamp = Option<(SystemTime, u64)>;

fn load_acl_file(path: &PathBuf) -> Result<(Vec<AclRule>, Stamp), Vec<String>> {
    let name = path.display().to_string();
    let st = stamp(path);
    if let Some((_, len)) = st {
        if len > MAX_ACL_FILE_BYTES {
            return Err(vec![format!(
                "{name}: {len} bytes; the limit is {MAX_ACL_FILE_BYTES}"
            )]);
        }
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    let rules = acl::parse_file(&text, &name)?;
    Ok((rules, st))
}

/// The hash that unknown users are verified against, so that they take as long as known
/// ones. Built with the configured parameters.
fn dummy_hash(p: &PasswordHashConfig) -> String {
    let pw: [u8; 16] = rand::random();
    hash::hash_password(&pw, p).unwrap_or_default()
}

/// The field of a certificate that `username_from` (or a listener's `client_id_from`)
/// names, if the certificate has it.
pub fn cert_username(c: &CertIdentity, from: CertField) -> Option<String> {
    match from {
        CertField::CommonName => c.common_name.clone(),
        CertField::FirstSan => c.sans.first().cloned(),
        CertField::SubjectDn => Some(c.subject_dn.clone()).filter(|s| !s.is_empty()),
    }
}
