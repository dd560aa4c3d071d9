//! The `[auth]` and `[acl]` sections: the authenticator chain, its backends, brute-force
//! protection, client-id ownership and the authorization sources.
//!
//! Only the schema lives here; `rampart-auth` gives it meaning. Every secret (database URLs
//! with passwords, HMAC keys, LDAP bind passwords) is a [`Secret`] so that no `Debug` of the
//! config can print it.

use std::path::PathBuf;

use crate::Secret;

/// A [`Secret`] inside the auth schema. It compares by value so that [`crate::Config`] can
/// still be compared (reload detection); comparing it is not an authentication check.
#[derive(Clone, Default)]
pub struct AuthSecret(pub Secret);

impl AuthSecret {
    pub fn new(value: impl Into<String>) -> AuthSecret {
        AuthSecret(Secret::new(value))
    }

    /// The secret itself; keep call sites few.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl PartialEq for AuthSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose() == other.0.expose()
    }
}

impl std::fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// The authenticator chain, in order. Each backend answers allow, deny or "not mine"
    /// (the next one is asked). A backend error or timeout denies. Empty: only anonymous
    /// rules apply (loopback in local-only mode, or `danger.allow_anonymous`).
    pub backends: Vec<BackendConfig>,
    /// Upper bound on one backend's answer, in milliseconds. Default 5000, range 10..=60000.
    /// Worst case: a CONNECT waits this long per backend in the chain before it is denied.
    pub timeout_ms: u64,
    /// Password verifications running at once (they are CPU- and memory-heavy by design).
    /// Default 4, range 1..=256. Worst case memory: this many x `password_hash.memory_kib`.
    pub max_concurrent_verifications: u32,
    /// Seconds a successful password verification is remembered, so that a reconnect with
    /// the same password skips the slow hash. Default 0 (off), range 0..=86400. The memory
    /// then holds a keyed digest of recently used passwords (cheap to test guesses against
    /// for someone who can read the broker's memory), at most 100000 entries of ~100 bytes.
    pub verified_cache_secs: u64,
    pub password_hash: PasswordHashConfig,
    pub brute_force: BruteForceConfig,
    /// Refuse a client id held by another identity: a connected client, or a persistent
    /// session that is offline (its owner is stored with it). Default true.
    pub client_id_ownership: bool,
    /// How a refused takeover is answered: "client_id_not_valid" (0x85, default) or
    /// "not_authorized" (0x87).
    pub ownership_refusal: OwnershipRefusal,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            backends: Vec::new(),
            timeout_ms: 5000,
            max_concurrent_verifications: 4,
            verified_cache_secs: 0,
            password_hash: PasswordHashConfig::default(),
            brute_force: BruteForceConfig::default(),
            client_id_ownership: true,
            ownership_refusal: OwnershipRefusal::ClientIdNotValid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipRefusal {
    ClientIdNotValid,
    NotAuthorized,
}

/// `[auth.password_hash]`: how new passwords are hashed (argon2id). Existing hashes keep the
/// parameters they were made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashConfig {
    /// Argon2 memory per verification, KiB. Default 19456 (19 MiB, the OWASP minimum),
    /// range 8192..=1048576.
    pub memory_kib: u32,
    /// Argon2 passes. Default 2, range 1..=16. Cost grows linearly.
    pub iterations: u32,
    /// Argon2 lanes. Default 1, range 1..=16.
    pub parallelism: u32,
}

impl Default for PasswordHashConfig {
    fn default() -> Self {
        PasswordHashConfig {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// `[auth.brute_force]`: failed logins per source address and per username are delayed,
/// then locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BruteForceConfig {
    pub enabled: bool,
    /// Failures within `window_secs` answered without delay. Default 5, range 1..=1000.
    pub free_failures: u32,
    /// Each failure beyond the free ones doubles the answer delay, from 250 ms up to this.
    /// Default 5000, range 0..=60000. Worst case: a held connection per delayed attempt (the
    /// connection caps bound them).
    pub max_delay_ms: u64,
    /// Failures within the window after which the address or username is locked out.
    /// Default 20, range 2..=100000; must exceed free_failures.
    pub lockout_after: u32,
    /// How long a lockout lasts. Default 900, range 1..=86400.
    pub lockout_secs: u64,
    /// Failures older than this are forgotten. Default 900, range 1..=86400.
    pub window_secs: u64,
    /// Addresses plus usernames tracked at once; the oldest are dropped past it.
    /// Default 100000, range 100..=10000000. Worst case about 100 bytes each.
    pub max_tracked: u32,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        BruteForceConfig {
            enabled: true,
            free_failures: 5,
            max_delay_ms: 5000,
            lockout_after: 20,
            lockout_secs: 900,
            window_secs: 900,
            max_tracked: 100_000,
        }
    }
}

/// One `[[auth.backends]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique; used in logs and metrics.
    pub name: String,
    /// Listener names this backend serves; empty: every listener.
    pub listeners: Vec<String>,
    /// Overrides `auth.timeout_ms` for this backend.
    pub timeout_ms: Option<u64>,
    pub kind: BackendKind,
}

/// The backend kinds and their settings.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendKind {
    /// Users in the broker's own store (`rampart ctl users`), optionally seeded from a
    /// Mosquitto password file.
    Builtin {
        /// A Mosquitto `mosquitto_passwd` file whose users are accepted too (read at start).
        mosquitto_password_file: Option<PathBuf>,
    },
    /// The verified client certificate is the identity (TLS listeners with client_auth).
    Certificate {
        /// Which field becomes the username: "cn" (default), "san" (first SAN) or "dn".
        username_from: CertField,
    },
    Jwt(JwtConfig),
    Http(HttpConfig),
    Sql(SqlConfig),
    Redis(RedisConfig),
    Ldap(LdapConfig),
    /// MQTT 5 enhanced authentication (SCRAM-SHA-256/512) against the built-in users.
    Scram,
}

impl BackendKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendKind::Builtin { .. } => "builtin",
            BackendKind::Certificate { .. } => "certificate",
            BackendKind::Jwt(_) => "jwt",
            BackendKind::Http(_) => "http",
            BackendKind::Sql(s) if s.engine == SqlEngine::Postgres => "postgres",
            BackendKind::Sql(_) => "mysql",
            BackendKind::Redis(_) => "redis",
            BackendKind::Ldap(_) => "ldap",
            BackendKind::Scram => "scram",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    CommonName,
    FirstSan,
    SubjectDn,
}

impl CertField {
    /// The config spellings (`username_from`, `client_id_from`).
    pub const NAMES: [(&'static str, CertField); 3] = [
        ("cn", CertField::CommonName),
        ("san", CertField::FirstSan),
        ("dn", CertField::SubjectDn),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertField::CommonName => "cn",
            CertField::FirstSan => "san",
            CertField::SubjectDn => "dn",
        }
    }
}

/// `kind = "jwt"`: the password is a JWT.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    /// Accepted `alg` values (HS256..512, RS256..512, PS256..512, ES256, ES384). "none" and
    /// mixing HMAC with public-key algorithms are refused.
    pub algorithms: Vec<String>,
    /// HMAC key (HS*). Prefer `secret_file`.
    pub secret: Option<AuthSecret>,
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS*, PS*, ES*).
    pub public_key_file: Option<PathBuf>,
    /// JWKS endpoint (https, or http on loopback only).
    pub jwks_url: Option<String>,
    /// Seconds between JWKS refreshes. Default 300, range 10..=86400.
    pub jwks_refresh_secs: u64,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of) when set.
    pub audience: Option<String>,
    /// Clock skew allowed on exp/nbf. Default 30, range 0..=600.
    pub leeway_secs: u64,
    /// Claim that must equal the MQTT username, when the client sends one. Default "sub".
    pub username_claim: String,
    /// Claim holding ACL rules (a list of ACL-file rule lines without `who`). Default "acl".
    pub acl_claim: String,
    /// Boolean claim that makes the client a super-user. Unset: never.
    pub superuser_claim: Option<String>,
}

/// `kind = "http"`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// https, or http to a loopback address only (passwords must not cross a network in clear).
    pub url: String,
    /// "POST" (JSON body, default) or "GET" (query string).
    pub method: String,
    /// Request fields; values may use ${username}, ${password}, ${clientid}, ${peerhost},
    /// ${listener}, ${cert_common_name}, ${cert_subject}. Default: username, password, clientid,
    /// peerhost.
    pub params: Vec<(String, String)>,
    /// Extra request headers (e.g. an API key); values are secrets.
    pub headers: Vec<(String, AuthSecret)>,
    /// Extra CA bundle for the auth server's certificate (system roots otherwise).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlEngine {
    Postgres,
    Mysql,
}

/// `kind = "postgres"` / `kind = "mysql"`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlConfig {
    pub engine: SqlEngine,
    /// Connection URL; it usually holds a password, so it is a secret.
    pub url: AuthSecret,
    /// Returns one row: `password_hash` [, `salt`] [, `is_superuser`]. Placeholders such as
    /// ${username} are bound as parameters, never spliced into the SQL text.
    pub query: String,
    /// Optional: rows of (`permission`, `action`, `topic`) for the authorization source.
    pub acl_query: Option<String>,
    /// Hash algorithm of the rows: "auto" (PHC strings such as argon2id and
    /// pbkdf2-sha512, and bcrypt; default), "sha256-salt" (hex sha256(password + salt)) or
    /// "sha256-salt-prefix" (hex sha256(salt + password)). Plain text is never accepted.
    pub password_hash: SqlHash,
    /// Connections in the pool. Default 4, range 1..=100.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlHash {
    Auto,
    Sha256SaltSuffix,
    Sha256SaltPrefix,
}

/// `kind = "redis"`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub url: AuthSecret,
    /// Whitespace-separated command; placeholders are separate arguments, never re-split.
    /// Default `HMGET mqtt_user:${username} password_hash is_superuser`. The reply is
    /// [hash, superuser-flag]; a missing hash is "unknown user".
    pub command: String,
    /// Optional: a command whose reply is a hash of topic -> action ("publish", "subscribe"
    /// or "all"), each an allow rule for this client, e.g. `HGETALL mqtt_acl:${username}`.
    pub acl_command: Option<String>,
}

/// `kind = "ldap"`.
#[derive(Debug, Clone, PartialEq)]
pub struct LdapConfig {
    /// ldap:// (needs starttls = true unless loopback) or ldaps://.
    pub url: String,
    pub starttls: bool,
    /// Bind as the user: a DN template such as `uid=${username},ou=people,dc=example,dc=org`.
    pub bind_dn_template: Option<String>,
    /// Search then bind: the service account's DN and password.
    pub search_bind_dn: Option<String>,
    pub search_bind_password: Option<AuthSecret>,
    pub search_base: Option<String>,
    /// Default `(uid=${username})`; the username is escaped per RFC 4515.
    pub search_filter: String,
    /// Attribute listing the user's groups (e.g. memberOf). Optional.
    pub group_attribute: Option<String>,
    /// Members of this group (DN or CN) are super-users.
    pub superuser_group: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// `[acl]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AclConfig {
    /// Consulted in order; the first rule that matches decides. "identity" = rules that came
    /// with the login (built-in user, JWT claims, HTTP response, LDAP groups, SQL acl_query);
    /// "file" = `acl.file`. Default ["identity", "file"].
    pub sources: Vec<AclSource>,
    /// The ACL file (see rampart-auth for the syntax). Reloaded without a restart.
    pub file: Option<PathBuf>,
    /// What happens when no rule matches: deny (default, M2) or allow.
    pub no_match: NoMatch,
    /// Seconds a cached decision lives. Default 60, range 0..=3600 (0: no cache).
    pub cache_ttl_secs: u64,
    /// Cached decisions per client. Default 256, range 1..=65536. Worst case: this many
    /// topic strings per connected client.
    pub cache_max_entries: u32,
    /// Seconds between checks of the ACL file for changes. Default 5, range 1..=3600.
    pub reload_check_secs: u64,
    /// Disconnect a client whose publish is denied (instead of answering 0x87 / dropping).
    pub disconnect_on_deny: bool,
    /// The "http" source: https (or http to loopback) endpoint asked with a JSON body
    /// {username, clientid, peerhost, action, topic, qos, retain}; it answers
    /// {"result": "allow" | "deny" | "ignore"}. An error or timeout denies.
    pub http_url: Option<String>,
    /// Upper bound on one http decision, ms. Default 2000, range 10..=60000. Worst case: a
    /// publish or subscribe waits this long on a cache miss.
    pub http_timeout_ms: u64,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            sources: vec![AclSource::Identity, AclSource::File],
            file: None,
            no_match: NoMatch::Deny,
            cache_ttl_secs: 60,
            cache_max_entries: 256,
            reload_check_secs: 5,
            disconnect_on_deny: false,
            http_url: None,
            http_timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclSource {
    Identity,
    File,
    /// Ask `acl.http_url` per decision (cached like every decision).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMatch {
    Deny,
    Allow,
}
