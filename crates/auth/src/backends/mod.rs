//! The backends of the chain. Each answers allow (with what it knows about the client),
//! deny, or ignore (not mine: ask the next one); `Err` is a backend failure, which denies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use rampart_config::{BackendKind, CertField};
use rampart_store::Store;
use tokio::sync::Semaphore;

use crate::acl::AclRule;
use crate::scram::{ScramAlg, ScramCredential};
use crate::users::{self, UserRecord};
use crate::{ConnectRequest, Entry};

mod http;
pub(crate) use http::read_capped;
mod jwt;
mod ldap;
mod redis;
mod sql;

/// What the service hands every backend.
#[derive(Clone)]
pub(crate) struct Shared {
    pub store: Option<Arc<dyn Store>>,
    pub permits: Arc<Semaphore>,
    /// Longest wait for a verification permit (half of `auth.timeout_ms`). A login that waited
    /// longer is denied without hashing: one that got its permit just before its timeout
    /// would burn a whole hash and be denied anyway, and in a login storm, where every
    /// permit goes to such a login, nobody would get in (measured: 12 logins/s against the
    /// 70/s the hashing allows).
    pub permit_wait: std::time::Duration,
    /// Unknown users are verified against this, so they cost what a known user costs.
    pub dummy_hash: Arc<String>,
    /// `auth.verified_cache_secs`; `None` when off.
    pub verified: Option<Arc<VerifiedCache>>,
}

/// Most remembered verifications; the table is cleared when full. ~100 bytes each.
const MAX_VERIFIED: usize = 100_000;

type Verified = ([u8; 32], std::time::Instant);

/// Recently verified (hash, password) pairs, keyed and stored as HMACs under a per-process
/// key, so that a reconnect with the same password skips the slow hash. A changed password
/// changes the stored hash and therefore misses.
pub(crate) struct VerifiedCache {
    key: [u8; 32],
    ttl: std::time::Duration,
    /// HMAC(hash) -> (HMAC(hash, password), when verified).
    map: parking_lot::Mutex<HashMap<[u8; 32], Verified>>,
}

impl VerifiedCache {
    pub(crate) fn new(ttl: std::time::Duration) -> VerifiedCache {
        VerifiedCache {
            key: rand::random(),
            ttl,
            map: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac;
        let mut m = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            // HMAC takes keys of any length.
            Err(_) => return [0; 32],
        };
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn hit(&self, hash: &str, password: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let k = self.mac(&[hash.as_bytes()]);
        let v = self.mac(&[hash.as_bytes(), password]);
        let map = self.map.lock();
        match map.get(&k) {
            Some((stored, at)) if at.elapsed() < self.ttl => stored.ct_eq(&v).into(),
            _ => false,
        }
    }

    fn remember(&self, hash: &str, password: &[u8]) {
        let k = self.mac(&[hash.as_bytes()]);
        let v = self.mac(&[hash.as_bytes(), password]);
        let mut map = self.map.lock();
        if map.len() >= MAX_VERIFIED {
            map.clear();
        }
        map.insert(k, (v, std::time::Instant::now()));
    }
}

#[derive(Debug, Default)]
pub(crate) struct Grant {
    pub username: Option<String>,
    pub superuser: bool,
    pub groups: Vec<String>,
    pub acl: Vec<AclRule>,
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug)]
pub(crate) enum Answer {
    Allow(Grant),
    Deny,
    Ignore,
}

pub(crate) enum Backend {
    Builtin(Builtin),
    Certificate(CertField),
    Jwt(jwt::Jwt),
    Http(http::Http),
    Sql(sql::Sql),
    Redis(redis::RedisBackend),
    Ldap(ldap::LdapBackend),
    /// Enhanced authentication against the built-in users.
    Scram(Builtin),
}

impl Backend {
    pub(crate) fn build(
        kind: &BackendKind,
        shared: &Shared,
        timeout: std::time::Duration,
    ) -> Result<Backend, String> {
        Ok(match kind {
            BackendKind::Builtin {
                mosquitto_password_file,
            } => Backend::Builtin(Builtin::new(shared, mosquitto_password_file.as_deref())?),
            BackendKind::Certificate { username_from } => Backend::Certificate(*username_from),
            BackendKind::Jwt(c) => Backend::Jwt(jwt::Jwt::new(c)?),
            BackendKind::Http(c) => Backend::Http(http::Http::new(c)?),
            BackendKind::Sql(c) => Backend::Sql(sql::Sql::new(c, shared, timeout)?),
            BackendKind::Redis(c) => Backend::Redis(redis::RedisBackend::new(c, shared)?),
            BackendKind::Ldap(c) => Backend::Ldap(ldap::LdapBackend::new(c)?),
            BackendKind::Scram => Backend::Scram(Builtin::new(shared, None)?),
        })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backend::Builtin(_) => "builtin",
            Backend::Certificate(_) => "certificate",
            Backend::Jwt(_) => "jwt",
            Backend::Http(_) => "http",
            Backend::Sql(s) => s.kind(),
            Backend::Redis(_) => "redis",
            Backend::Ldap(_) => "ldap",
            Backend::Scram(_) => "scram",
        }
    }

    pub(crate) async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        match self {
            Backend::Builtin(b) => b.check(req).await,
            Backend::Certificate(field) => Ok(cert(req, *field)),
            Backend::Jwt(j) => j.check(req).await,
            Backend::Http(h) => h.check(req).await,
            Backend::Sql(s) => s.check(req).await,
            Backend::Redis(r) => r.check(req).await,
            Backend::Ldap(l) => l.check(req).await,
            Backend::Scram(_) => Ok(Answer::Ignore),
        }
    }
}

fn cert(req: &ConnectRequest<'_>, field: CertField) -> Answer {
    let Some(c) = req.conn.tls.as_ref().and_then(|t| t.client_cert.as_ref()) else {
        return Answer::Ignore;
    };
    match crate::cert_username(c, field) {
        Some(u) => Answer::Allow(Grant {
            username: Some(u),
            ..Grant::default()
        }),
        // A verified certificate without the configured field is not an identity.
        None => Answer::Ignore,
    }
}

/// Verifies `password` against `hash` (or the dummy hash when the user is unknown) on a
/// blocking thread, under the verification permit. Returns false for an unknown user.
pub(crate) async fn verify(
    shared: &Shared,
    hash: Option<String>,
    password: &[u8],
) -> Result<bool, String> {
    if let (Some(c), Some(h)) = (&shared.verified, &hash) {
        if c.hit(h, password) {
            return Ok(true);
        }
    }
    // The permit moves into the hashing task: a login whose wait times out (its future is
    // dropped) must not free the permit while its hash still runs, or a reconnect storm
    // piles up verifications (CPU and 19 MiB each) far beyond the limit.
    let permit = match tokio::time::timeout(
        shared.permit_wait,
        shared.permits.clone().acquire_owned(),
    )
    .await
    {
        Ok(p) => p.map_err(|_| "verification pool closed".to_string())?,
        Err(_) => {
            return Err(format!(
                "all verification permits busy for {} ms: denying without hashing",
                shared.permit_wait.as_millis()
            ))
        }
    };
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| shared.dummy_hash.as_ref().clone());
    let pw = password.to_vec();
    let cache = shared.verified.clone().filter(|_| known);
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let ok = crate::hash::verify_password(&pw, &hash);
        if let (true, Some(c)) = (ok, &cache) {
            c.remember(&hash, &pw);
        }
        ok
    })
    .await
    .map_err(|e| format!("verification task: {e}"))?;
    Ok(known && ok)
}

/// Rules from a backend, in the identity form; a bad rule is an error (fail closed), since
/// silently dropping a deny would widen access.
pub(crate) fn parse_rules<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    origin: &str,
) -> Result<Vec<AclRule>, String> {
    lines
        .into_iter()
        .map(|l| {
            AclRule::parse_identity_rule(l, origin.to_string())
                .map_err(|e| format!("{origin}: bad ACL rule: {e}"))
        })
        .collect()
}

/// ACL rules given as JSON: strings in the identity form, or objects
/// `{"permission": "allow", "action": "publish", "topic": "a/#"}`.
pub(crate) fn rules_from_json(v: &serde_json::Value, origin: &str) -> Result<Vec<AclRule>, String> {
    let Some(items) = v.as_array() else {
        return Err(format!("{origin}: ACL must be an array"));
    };
    items
        .iter()
        .map(|item| match item {
            serde_json::Value::String(s) => AclRule::parse_identity_rule(s, origin.to_string()),
            serde_json::Value::Object(o) => {
                let f = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("");
                AclRule::from_parts(f("permission"), f("action"), f("topic"), origin.to_string())
            }
            _ => Err("expected a string or an object".to_string()),
        })
        .map(|r| r.map_err(|e| format!("{origin}: bad ACL rule: {e}")))
        .collect()
}

/// Fills `${name}` placeholders of a template value from the request. Unknown placeholders
/// stay as they are; missing values become empty.
pub(crate) fn fill(template: &str, req: &ConnectRequest<'_>) -> String {
    if !template.contains("${") {
        return template.to_string();
    }
    let cert = req.conn.tls.as_ref().and_then(|t| t.client_cert.as_ref());
    let pairs: [(&str, String); 8] = [
        ("${username}", req.username.unwrap_or("").to_string()),
        (
            "${password}",
            req.password
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
        ),
        ("${clientid}", req.client_id.to_string()),
        ("${peerhost}", req.conn.peer.ip().to_canonical().to_string()),
        ("${listener}", req.conn.listener.to_string()),
        ("${protocol}", req.protocol_level.to_string()),
        (
            "${cert_common_name}",
            cert.and_then(|c| c.common_name.clone()).unwrap_or_default(),
        ),
        (
            "${cert_subject}",
            cert.map(|c| c.subject_dn.clone()).unwrap_or_default(),
        ),
    ];
    // Single pass, so that a value containing `${...}` is never expanded again.
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match pairs.iter().find(|(k, _)| tail.starts_with(k)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &tail[k.len()..];
            }
            None => {
                out.push_str("${");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Built-in users: the store's `users` namespace, plus an optional Mosquitto password file.
pub(crate) struct Builtin {
    shared: Shared,
    mosquitto: Arc<HashMap<String, String>>,
}

impl Builtin {
    fn new(shared: &Shared, mosquitto: Option<&std::path::Path>) -> Result<Builtin, String> {
        let mut map = HashMap::new();
        if let Some(path) = mosquitto {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let users = crate::hash::parse_mosquitto_passwd(&text).map_err(|errs| {
                errs.iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            map.extend(users);
        }
        if shared.store.is_none() && mosquitto.is_none() {
            return Err("built-in users need the store (or mosquitto_password_file)".to_string());
        }
        Ok(Builtin {
            shared: shared.clone(),
            mosquitto: Arc::new(map),
        })
    }

    /// The user's record, read on a blocking thread (store reads block).
    async fn record(&self, name: &str) -> Result<Option<UserRecord>, String> {
        if let Some(h) = self.mosquitto.get(name) {
            return Ok(Some(UserRecord {
                hash: h.clone(),
                ..UserRecord::default()
            }));
        }
        let Some(store) = self.shared.store.clone() else {
            return Ok(None);
        };
        let name = name.to_string();
        tokio::task::spawn_blocking(move || users::get_user(store.as_ref(), &name))
            .await
            .map_err(|e| format!("store task: {e}"))?
    }

    async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        let Some(name) = req.username else {
            return Ok(Answer::Ignore);
        };
        let rec = self.record(name).await?;
        let hash = rec.as_ref().map(|r| r.hash.clone());
        let ok = verify(&self.shared, hash, req.password.unwrap_or_default()).await?;
        match rec {
            None => Ok(Answer::Ignore),
            Some(_) if !ok => Ok(Answer::Deny),
            Some(r) => Ok(Answer::Allow(grant_of(name, &r)?)),
        }
    }
}

fn grant_of(name: &str, r: &UserRecord) -> Result<Grant, String> {
    Ok(Grant {
        username: Some(name.to_string()),
        superuser: r.superuser,
        groups: r.groups.clone(),
        acl: parse_rules(r.acl.iter().map(String::as_str), &format!("user {name}"))?,
        expires_at: None,
    })
}

pub(crate) async fn builtin_scram_credential(
    backend: &Backend,
    user: &str,
    alg: ScramAlg,
) -> Result<Option<ScramCredential>, String> {
    let Backend::Scram(b) = backend else {
        return Ok(None);
    };
    Ok(b.record(user).await?.and_then(|r| r.scram(alg).cloned()))
}

pub(crate) async fn builtin_user_grant(
    chain: &[Entry],
    backend: &str,
    user: &str,
) -> Result<Option<Grant>, String> {
    let Some(Backend::Scram(b)) = chain.iter().find(|e| e.name == backend).map(|e| &e.backend)
    else {
        return Ok(None);
    };
    match b.record(user).await? {
        Some(r) => grant_of(user, &r).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verification cancelled by its timeout keeps its permit until the hash is done.
    #[tokio::test]
    async fn cancelled_verification_holds_its_permit_until_the_hash_ends() {
        let p = rampart_config::PasswordHashConfig {
            memory_kib: 65536,
            iterations: 3,
            parallelism: 1,
        };
        let hash = crate::hash::hash_password(b"pw", &p).expect("hash");
        let shared = Shared {
            store: None,
            permits: Arc::new(Semaphore::new(1)),
            permit_wait: std::time::Duration::from_secs(60),
            dummy_hash: Arc::new(hash.clone()),
            verified: None,
        };
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            verify(&shared, Some(hash), b"pw"),
        )
        .await;
        assert!(r.is_err(), "timed out");
        assert_eq!(shared.permits.available_permits(), 0, "still hashing");
        // Released once the hash finishes (bounded wait).
        let again =
            tokio::time::timeout(std::time::Duration::from_secs(30), shared.permits.acquire())
                .await;
        assert!(matches!(again, Ok(Ok(_))));
    }

    /// A login that cannot get a permit within `permit_wait` is denied without hashing.
    #[tokio::test]
    async fn busy_permits_deny_without_hashing() {
        let shared = Shared {
            store: None,
            permits: Arc::new(Semaphore::new(1)),
            permit_wait: std::time::Duration::from_millis(20),
            dummy_hash: Arc::new(String::new()),
            verified: None,
        };
        let held = shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("permit");
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            verify(&shared, Some("$sha256$s$00".into()), b"pw"),
        )
        .await
        .expect("answered within the bound");
        assert!(r.is_err(), "{r:?}");
        drop(held);
        assert_eq!(shared.permits.available_permits(), 1);
    }
}
