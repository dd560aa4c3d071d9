//! The built-in users backend, anonymous rules, certificates, brute-force protection,
//! client-id ownership and SCRAM enhanced authentication.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rampart_auth::users::{self, UserRecord};
use rampart_auth::{AuthResult, DenyKind, ScramAlg, ScramClient};
use rampart_codec::ReasonCode;
use rampart_config::PasswordHashConfig;
use rampart_store::{Store, WriteBatch};

fn cheap() -> PasswordHashConfig {
    PasswordHashConfig {
        memory_kib: 8192,
        iterations: 1,
        parallelism: 1,
    }
}

fn add_user(store: &Arc<dyn Store>, name: &str, pw: &str, superuser: bool, acl: &[&str]) {
    let mut rec = UserRecord::with_password(pw.as_bytes(), &cheap()).expect("hash");
    rec.superuser = superuser;
    rec.acl = acl.iter().map(|s| s.to_string()).collect();
    let mut b = WriteBatch::new();
    users::put_user(&mut b, name, &rec);
    store
        .write(b)
        .try_result()
        .expect("memory store commits at once")
        .expect("write");
}

const BUILTIN: &str = "[[auth.backends]]\nname = \"users\"\nkind = \"builtin\"\n";

#[tokio::test]
async fn builtin_allow_deny_unknown() {
    let store = memory_store();
    add_user(
        &store,
        "alice",
        "wonderland",
        false,
        &["allow publish a/${username}/#"],
    );
    let svc = service(&format!("{CHEAP_HASH}{BUILTIN}"), Some(store));
    let c = conn("192.0.2.10:5000");

    let id = allowed(login(&svc, &c, Some("alice"), Some("wonderland")).await);
    assert_eq!(id.username.as_deref(), Some("alice"));
    assert_eq!(id.backend, "users");
    assert_eq!(id.acl.len(), 1);
    assert!(!id.superuser);

    let wrong = denied(login(&svc, &c, Some("alice"), Some("nope")).await);
    let unknown = denied(login(&svc, &c, Some("mallory"), Some("wonderland")).await);
    // An unknown user and a wrong password look the same.
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.reason, ReasonCode::BadUserNameOrPassword);
    let m = svc.metrics();
    assert_eq!(m.allowed.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        m.denied_credentials
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn unknown_user_takes_as_long_as_a_wrong_password() {
    let store = memory_store();
    // Default parameters on both sides: the point is the cost of the verification itself.
    let rec = UserRecord::with_password(b"pw", &PasswordHashConfig::default()).expect("hash");
    let mut b = WriteBatch::new();
    users::put_user(&mut b, "alice", &rec);
    store
        .write(b)
        .try_result()
        .expect("committed")
        .expect("write");
    let extra = "[auth.brute_force]\nenabled = false\n";
    let svc = service(&format!("{extra}{BUILTIN}"), Some(store));
    let c = conn("192.0.2.11:5000");
    let time = |user: &'static str| {
        let svc = &svc;
        let c = &c;
        async move {
            let t = Instant::now();
            denied(login(svc, c, Some(user), Some("wrong")).await);
            t.elapsed()
        }
    };
    // The fastest of several alternating logins on each side: on a loaded machine a single
    // timing includes whatever preempted it, while the minimum is the verification's own cost.
    let (mut known, mut unknown) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        known = known.min(time("alice").await);
        unknown = unknown.min(time("nobody").await);
    }
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}: the dummy verification must cost the same"
    );
}

#[tokio::test]
async fn anonymous_rules() {
    // Local-only mode: anonymous from loopback only.
    let svc = rampart_auth::AuthService::from_config(&rampart_config::Config::local_only(), None)
        .expect("svc");
    let id = allowed(login(&svc, &conn("127.0.0.1:4000"), None, None).await);
    assert!(id.is_anonymous());
    let d = denied(login(&svc, &conn("192.0.2.1:4000"), None, None).await);
    assert_eq!(d.reason, ReasonCode::NotAuthorized);

    // A config file: nobody is anonymous, not even on loopback...
    let svc = service("", None);
    denied(login(&svc, &conn("127.0.0.1:4000"), None, None).await);
    // ...unless the operator opts into danger.allow_anonymous.
    let svc = service("[danger]\nallow_anonymous = true\n", None);
    allowed(login(&svc, &conn("192.0.2.1:4000"), None, None).await);
    // Credentials that no backend knows are refused, even then.
    let d = denied(login(&svc, &conn("192.0.2.1:4000"), Some("x"), Some("y")).await);
    assert_eq!(d.kind, DenyKind::BadCredentials);
}

#[tokio::test]
async fn client_certificate_identity() {
    let svc = service(
        "[[auth.backends]]\nname = \"certs\"\nkind = \"certificate\"\n",
        None,
    );
    let id = allowed(login(&svc, &tls_conn("192.0.2.2:1", "sensor-7"), None, None).await);
    assert_eq!(id.username.as_deref(), Some("sensor-7"));
    assert_eq!(
        id.cert.as_ref().and_then(|c| c.common_name.as_deref()),
        Some("sensor-7")
    );
    // Without a certificate the backend does not answer, and anonymous access is off.
    denied(login(&svc, &conn("192.0.2.2:1"), None, None).await);

    let svc = service(
        "[[auth.backends]]\nname = \"certs\"\nkind = \"certificate\"\nusername_from = \"san\"\n",
        None,
    );
    let id = allowed(login(&svc, &tls_conn("192.0.2.2:1", "s8"), None, None).await);
    assert_eq!(id.username.as_deref(), Some("s8.devices.test"));
}

#[tokio::test]
async fn chain_is_per_listener_and_ordered() {
    let store = memory_store();
    add_user(&store, "alice", "pw", false, &[]);
    let extra = format!(
        "{CHEAP_HASH}[[auth.backends]]\nname = \"users\"\nkind = \"builtin\"\nlisteners = [\"other\"]\n"
    );
    let text = format!(
        "{extra}\n[[listeners]]\nname = \"other\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1884\"\n"
    );
    let svc = service(&text, Some(store));
    // The "local" listener has no backend: alice is unknown there.
    denied(login(&svc, &conn("192.0.2.3:1"), Some("alice"), Some("pw")).await);
    let mut other = conn("192.0.2.3:1");
    other.listener = Arc::from("other");
    allowed(login(&svc, &other, Some("alice"), Some("pw")).await);
}

#[tokio::test]
async fn mosquitto_password_file_users() {
    use base64::Engine;
    use sha2::Sha512;
    let salt = b"saltsaltsaltsalt";
    let mut dk = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(b"from-mosquitto", salt, 1000, &mut dk);
    let e = base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("passwd");
    std::fs::write(
        &file,
        format!("carol:$7$1000${}${}\n", e.encode(salt), e.encode(dk)),
    )
    .expect("write");
    let svc = service(
        &format!(
            "{CHEAP_HASH}[[auth.backends]]\nname = \"mosq\"\nkind = \"builtin\"\nmosquitto_password_file = \"{}\"\n",
            file.display()
        ),
        None,
    );
    let c = conn("192.0.2.4:1");
    allowed(login(&svc, &c, Some("carol"), Some("from-mosquitto")).await);
    denied(login(&svc, &c, Some("carol"), Some("guess")).await);
}

// Real time: paused time would let the chain timeout fire while argon2 runs on a blocking
// thread. The delays here add up to under a second.
#[tokio::test]
async fn brute_force_slows_then_locks_out() {
    let store = memory_store();
    add_user(&store, "alice", "right", false, &[]);
    let bf = "[auth.brute_force]\nfree_failures = 2\nmax_delay_ms = 300\nlockout_after = 5\nlockout_secs = 60\n";
    let svc = service(&format!("{CHEAP_HASH}{bf}{BUILTIN}"), Some(store));
    let c = conn("198.51.100.7:1");
    for i in 0..4 {
        let t = Instant::now();
        denied(login(&svc, &c, Some("alice"), Some("wrong")).await);
        let waited = t.elapsed();
        if i < 2 {
            assert!(
                waited < Duration::from_millis(200),
                "failure {i} waited {waited:?}"
            );
        } else {
            assert!(
                waited >= Duration::from_millis(250),
                "failure {i} waited {waited:?}"
            );
        }
    }
    denied(login(&svc, &c, Some("alice"), Some("wrong")).await);
    // Locked out: even the right password is refused, with 0x8A.
    let d = denied(login(&svc, &c, Some("alice"), Some("right")).await);
    assert_eq!(d.reason, ReasonCode::Banned);
    // Another address is locked out for this username too.
    let d = denied(login(&svc, &conn("198.51.100.8:1"), Some("alice"), Some("right")).await);
    assert_eq!(d.kind, DenyKind::Banned);
}

#[tokio::test]
async fn client_id_ownership() {
    let store = memory_store();
    add_user(&store, "alice", "a", false, &[]);
    add_user(&store, "bob", "b", false, &[]);
    let svc = service(&format!("{CHEAP_HASH}{BUILTIN}"), Some(store.clone()));
    let c = conn("192.0.2.5:1");
    let alice = allowed(login(&svc, &c, Some("alice"), Some("a")).await);
    let bob = allowed(login(&svc, &c, Some("bob"), Some("b")).await);
    // An offline session: its recorded owner decides (none recorded: anyone adopts it).
    let alice_key = alice.owner_key();
    assert!(svc.check_session_owner(Some(&alice_key), &alice).is_ok());
    assert!(svc.check_session_owner(None, &bob).is_ok());
    assert_eq!(
        svc.check_session_owner(Some(&alice_key), &bob)
            .expect_err("another identity")
            .reason,
        ReasonCode::ClientIdentifierNotValid
    );
    let claim = svc.claim_client_id(&alice).expect("first claim");
    // Alice may take over her own session...
    let again = svc.claim_client_id(&alice).expect("same owner");
    // ...Bob may not take her client id while she is connected.
    let d = svc.claim_client_id(&bob).expect_err("other owner");
    assert_eq!(d.reason, ReasonCode::ClientIdentifierNotValid);
    drop(claim);
    drop(again);
    assert_eq!(svc.claimed_client_ids(), 0);
    let _bob_claim = svc.claim_client_id(&bob).expect("released");

    let svc = service(
        &format!("{CHEAP_HASH}{BUILTIN}[auth]\nownership_refusal = \"not_authorized\"\n"),
        Some(store.clone()),
    );
    let _c = svc.claim_client_id(&alice).expect("claim");
    assert_eq!(
        svc.claim_client_id(&bob).expect_err("refused").reason,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        svc.check_session_owner(Some(&alice_key), &bob)
            .expect_err("refused")
            .reason,
        ReasonCode::NotAuthorized
    );

    let svc = service(
        &format!("{CHEAP_HASH}{BUILTIN}[auth]\nclient_id_ownership = false\n"),
        Some(store),
    );
    let _c = svc.claim_client_id(&alice).expect("claim");
    let _d = svc.claim_client_id(&bob).expect("ownership off");
    assert!(svc.check_session_owner(Some(&alice_key), &bob).is_ok());
}

async fn scram_login(
    svc: &rampart_auth::AuthService,
    alg: ScramAlg,
    user: &str,
    pw: &str,
) -> AuthResult {
    let c = conn("192.0.2.6:1");
    let (mut client, first) = ScramClient::new(alg, user, pw.as_bytes());
    let mut r = req(&c, "scram-client", None, None);
    r.auth_method = Some(alg.method());
    r.auth_data = Some(&first);
    let ch = match svc.authenticate(&r).await {
        AuthResult::Continue(ch) => ch,
        other => return other,
    };
    assert_eq!(ch.method, alg.method());
    let fin = client.respond(&ch.auth_data).expect("server-first");
    let result = svc.continue_auth(ch.state, alg.method(), &fin).await;
    if let AuthResult::Allow(a) = &result {
        assert!(client.verify_server(a.auth_data.as_deref().expect("server-final")));
    }
    result
}

#[tokio::test]
async fn scram_sha256_and_512() {
    let store = memory_store();
    add_user(&store, "alice", "scram-pw", true, &[]);
    let svc = service(
        &format!("{CHEAP_HASH}[[auth.backends]]\nname = \"scram\"\nkind = \"scram\"\n"),
        Some(store),
    );
    for alg in [ScramAlg::Sha256, ScramAlg::Sha512] {
        let id = allowed(scram_login(&svc, alg, "alice", "scram-pw").await);
        assert_eq!(id.username.as_deref(), Some("alice"));
        assert!(id.superuser);
        assert_eq!(id.auth_method.as_deref(), Some(alg.method()));
        let d = denied(scram_login(&svc, alg, "alice", "wrong").await);
        assert_eq!(d.reason, ReasonCode::BadUserNameOrPassword);
        // Unknown users get a full exchange and fail at the same step.
        let d2 = denied(scram_login(&svc, alg, "nobody", "x").await);
        assert_eq!(d, d2);
    }
    // Re-authentication is the same exchange started from an AUTH packet.
    let first = allowed(scram_login(&svc, ScramAlg::Sha256, "alice", "scram-pw").await);
    let second = allowed(scram_login(&svc, ScramAlg::Sha256, "alice", "scram-pw").await);
    assert!(first.same_principal(&second));
}

#[tokio::test]
async fn unknown_auth_method_is_0x8c() {
    let svc = service("", None);
    let c = conn("192.0.2.7:1");
    let mut r = req(&c, "x", None, None);
    r.auth_method = Some("SCRAM-SHA-256");
    assert_eq!(
        denied(svc.authenticate(&r).await).reason,
        ReasonCode::BadAuthenticationMethod
    );
    r.auth_method = Some("KERBEROS");
    assert_eq!(
        denied(svc.authenticate(&r).await).reason,
        ReasonCode::BadAuthenticationMethod
    );
}

#[test]
fn secrets_never_printed() {
    let c = conn("192.0.2.8:1");
    let r = req(&c, "x", Some("u"), Some(b"hunter2"));
    assert!(!format!("{r:?}").contains("hunter2"));
    let rec = UserRecord::with_password(b"hunter2", &cheap()).expect("hash");
    let dbg = format!("{rec:?}");
    assert!(!dbg.contains("argon2") && !dbg.contains("hunter2"), "{dbg}");
}

#[tokio::test]
async fn per_client_rules_from_the_store() {
    use rampart_auth::{Action, Decision, Request};
    let store = memory_store();
    add_user(
        &store,
        "alice",
        "a",
        false,
        &["allow publish user/${username}"],
    );
    let mut b = WriteBatch::new();
    users::put_client_rules(
        &mut b,
        "c1",
        &["allow subscribe client/${clientid}".to_string()],
    );
    store
        .write(b)
        .try_result()
        .expect("committed")
        .expect("write");
    let svc = service(&format!("{CHEAP_HASH}{BUILTIN}"), Some(store.clone()));
    let id = allowed(login(&svc, &conn("192.0.2.9:1"), Some("alice"), Some("a")).await);
    let r = |action, topic| Request {
        action,
        topic,
        qos: 0,
        retain: false,
    };
    assert_eq!(
        svc.authorize(&id, &r(Action::Publish, "user/alice")),
        Decision::Allow
    );
    assert_eq!(
        svc.authorize(&id, &r(Action::Subscribe, "client/c1")),
        Decision::Allow
    );
    assert_eq!(
        svc.authorize(&id, &r(Action::Subscribe, "client/c2")),
        Decision::Deny
    );
    // A corrupt record denies the login rather than dropping rules.
    let mut b = WriteBatch::new();
    b.put_kv(users::CLIENT_ACL_NS, b"c1".to_vec(), b"not json".to_vec());
    store
        .write(b)
        .try_result()
        .expect("committed")
        .expect("write");
    assert_eq!(
        denied(login(&svc, &conn("192.0.2.9:1"), Some("alice"), Some("a")).await).kind,
        DenyKind::BackendError
    );
}

/// The broker holds the service in an `Arc` shared by connection tasks and awaits these
/// futures inside `tokio::spawn`ed tasks: they must be `Send`.
#[test]
fn service_and_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let svc = service("", None);
    send_sync(&svc);
    let c = conn("192.0.2.9:1");
    let r = req(&c, "x", Some("u"), Some(b"p"));
    send(svc.authenticate(&r));
    let _ = tokio::runtime::Builder::new_current_thread()
        .build()
        .map(|rt| {
            rt.block_on(async {
                if let rampart_auth::AuthResult::Allow(a) = svc.authenticate(&r).await {
                    send(svc.authorizer(a.identity));
                }
            })
        });
}

#[tokio::test]
async fn verified_cache_skips_the_slow_hash_only_for_the_same_password() {
    let store = memory_store();
    // Default (slow) parameters, so that a hit is visibly faster than a verification.
    let rec = UserRecord::with_password(b"pw", &PasswordHashConfig::default()).expect("hash");
    let mut b = WriteBatch::new();
    users::put_user(&mut b, "alice", &rec);
    store
        .write(b)
        .try_result()
        .expect("committed")
        .expect("write");
    let svc = service(
        &format!("[auth]\nverified_cache_secs = 60\n{BUILTIN}"),
        Some(store.clone()),
    );
    let c = conn("192.0.2.12:1");
    let t = Instant::now();
    allowed(login(&svc, &c, Some("alice"), Some("pw")).await);
    let first = t.elapsed();
    let t = Instant::now();
    for _ in 0..5 {
        allowed(login(&svc, &c, Some("alice"), Some("pw")).await);
    }
    let cached = t.elapsed() / 5;
    assert!(cached * 4 < first, "cached {cached:?} vs first {first:?}");
    // A wrong password is never answered from the cache.
    denied(login(&svc, &c, Some("alice"), Some("pW")).await);
    // A changed password misses (the stored hash changed).
    let rec = UserRecord::with_password(b"new", &cheap()).expect("hash");
    let mut b = WriteBatch::new();
    users::put_user(&mut b, "alice", &rec);
    store
        .write(b)
        .try_result()
        .expect("committed")
        .expect("write");
    denied(login(&svc, &c, Some("alice"), Some("pw")).await);
    allowed(login(&svc, &c, Some("alice"), Some("new")).await);
}

/// A store whose user reads fail ("down") or hang ("slow"), for the built-in backends.
struct FaultyStore {
    inner: Arc<dyn Store>,
    slow: bool,
}

impl Store for FaultyStore {
    fn write(&self, batch: WriteBatch) -> rampart_store::Commit {
        self.inner.write(batch)
    }
    fn flush(&self) -> rampart_store::Commit {
        self.inner.flush()
    }
    fn load_all(&self) -> Result<rampart_store::Snapshot, rampart_store::StoreError> {
        self.inner.load_all()
    }
    fn check(&self) -> Result<rampart_store::CheckReport, rampart_store::StoreError> {
        self.inner.check()
    }
    fn stats(&self) -> rampart_store::StoreStats {
        self.inner.stats()
    }
    fn get_kv(
        &self,
        ns: &str,
        key: &[u8],
    ) -> Result<Option<bytes::Bytes>, rampart_store::StoreError> {
        if self.slow {
            // Runs on a blocking thread (the backend reads through spawn_blocking).
            std::thread::sleep(Duration::from_secs(2));
            return self.inner.get_kv(ns, key);
        }
        Err(rampart_store::StoreError::Corrupt {
            what: "test: disk gone".to_string(),
        })
    }
    fn scan_kv(
        &self,
        ns: &str,
    ) -> Result<Vec<(bytes::Bytes, bytes::Bytes)>, rampart_store::StoreError> {
        self.inner.scan_kv(ns)
    }
}

#[tokio::test]
async fn builtin_and_scram_store_down_and_slow_deny() {
    let inner = memory_store();
    add_user(&inner, "alice", "pw", false, &[]);
    let scram = "[[auth.backends]]\nname = \"scram\"\nkind = \"scram\"\n";
    for slow in [false, true] {
        let store: Arc<dyn Store> = Arc::new(FaultyStore {
            inner: inner.clone(),
            slow,
        });
        let svc = service(
            &format!("{CHEAP_HASH}[auth]\ntimeout_ms = 300\n{BUILTIN}{scram}"),
            Some(store),
        );
        let c = conn("192.0.2.40:1");
        let t = Instant::now();
        let d = denied(login(&svc, &c, Some("alice"), Some("pw")).await);
        let want = if slow {
            DenyKind::Timeout
        } else {
            DenyKind::BackendError
        };
        assert_eq!(d.kind, want, "slow={slow}");
        assert_eq!(d.reason, ReasonCode::NotAuthorized);
        assert!(t.elapsed() < Duration::from_millis(1500), "slow={slow}");
        let stats = &svc.backend_stats()[0];
        assert_eq!(stats.errors + stats.timeouts, 1, "{stats:?}");
        if !slow {
            // SCRAM reads the same store: its lookup failure denies too.
            let d = denied(scram_login(&svc, ScramAlg::Sha256, "alice", "pw").await);
            assert_eq!(d.kind, DenyKind::BackendError);
        }
    }
}

#[tokio::test]
async fn brute_force_locks_out_an_address_trying_many_usernames() {
    let store = memory_store();
    add_user(&store, "zoe", "right", false, &[]);
    let bf = "[auth.brute_force]\nfree_failures = 1\nmax_delay_ms = 10\nlockout_after = 4\nlockout_secs = 60\n";
    let svc = service(&format!("{CHEAP_HASH}{bf}{BUILTIN}"), Some(store));
    let attacker = conn("198.51.100.20:1");
    for i in 0..4 {
        let user = format!("guess{i}");
        denied(login(&svc, &attacker, Some(&user), Some("x")).await);
    }
    // The address is locked out, whatever the username, even with a right password...
    let d = denied(login(&svc, &attacker, Some("zoe"), Some("right")).await);
    assert_eq!(d.kind, DenyKind::Banned);
    assert_eq!(d.reason, ReasonCode::Banned);
    // ...while the same user from another address is not.
    allowed(login(&svc, &conn("198.51.100.21:1"), Some("zoe"), Some("right")).await);
}
