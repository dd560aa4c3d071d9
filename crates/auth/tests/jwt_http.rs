//! JWT (HMAC, RSA, RSA-PSS, ECDSA; key file and JWKS endpoint) and HTTP backends against
//! local servers on 127.0.0.1:0 inside the test.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rampart_auth::{Action, Decision, DenyKind, Request};
use rampart_codec::ReasonCode;
use serde_json::{json, Value};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

fn keys_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, key).expect("sign")
}

fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

async fn serve(app: Router) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    port
}

async fn try_login(
    svc: &rampart_auth::AuthService,
    user: Option<&str>,
    token: &str,
) -> rampart_auth::AuthResult {
    login(svc, &conn("192.0.2.20:1"), user, Some(token)).await
}

fn jwt_hs_service(extra: &str) -> rampart_auth::AuthService {
    service(
        &format!(
            "[[auth.backends]]\nname = \"jwt\"\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\nissuer = \"rampart-tests\"\naudience = \"mqtt\"\nleeway_secs = 0\nsuperuser_claim = \"su\"\n{extra}"
        ),
        None,
    )
}

#[tokio::test]
async fn jwt_hmac_claims_and_checks() {
    let svc = jwt_hs_service("");
    let good = json!({"sub": "dev-1", "iss": "rampart-tests", "aud": "mqtt", "exp": now() + 600,
                      "acl": ["allow publish dev/${username}/#", {"permission": "allow", "action": "subscribe", "topic": "cmd/dev-1"}]});
    let id = allowed(try_login(&svc, Some("dev-1"), &hs(good.clone())).await);
    assert_eq!(id.username.as_deref(), Some("dev-1"));
    assert_eq!(id.backend, "jwt");
    let exp = id.expires_at.expect("exp carried");
    assert!(exp > SystemTime::now() + Duration::from_secs(500));
    assert_eq!(
        svc.authorize(
            &id,
            &Request {
                action: Action::Publish,
                topic: "dev/dev-1/t",
                qos: 1,
                retain: false
            }
        ),
        Decision::Allow
    );
    assert_eq!(
        svc.authorize(
            &id,
            &Request {
                action: Action::Subscribe,
                topic: "cmd/dev-1",
                qos: 1,
                retain: false
            }
        ),
        Decision::Allow
    );
    assert!(!id.superuser);
    // No username in CONNECT: the subject is the username.
    let id = allowed(try_login(&svc, None, &hs(good.clone())).await);
    assert_eq!(id.username.as_deref(), Some("dev-1"));

    let mut su = good.clone();
    su["su"] = json!(true);
    assert!(allowed(try_login(&svc, None, &hs(su)).await).superuser);

    let bad = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().expect("obj") {
            if v.is_null() {
                c.as_object_mut().expect("obj").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        hs(c)
    };
    for (what, token) in [
        ("expired", bad(json!({"exp": now() - 10}))),
        ("not yet valid", bad(json!({"nbf": now() + 600}))),
        ("wrong issuer", bad(json!({"iss": "elsewhere"}))),
        ("wrong audience", bad(json!({"aud": "web"}))),
        ("no exp", bad(json!({"exp": null}))),
        ("bad acl claim", bad(json!({"acl": ["allow jump x"]}))),
    ] {
        let r = try_login(&svc, Some("dev-1"), &token).await;
        let d = denied(r);
        assert!(
            matches!(d.kind, DenyKind::BadCredentials | DenyKind::BackendError),
            "{what}: {d:?}"
        );
    }
    // Username that disagrees with the subject.
    denied(try_login(&svc, Some("dev-2"), &hs(good.clone())).await);
    // Wrong key.
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret of enough length!!"),
        None,
        good.clone(),
    );
    assert_eq!(
        denied(try_login(&svc, Some("dev-1"), &forged).await).reason,
        ReasonCode::BadUserNameOrPassword
    );
    // alg none.
    use base64::Engine;
    let signed = hs(good.clone());
    let payload = signed.split('.').nth(1).expect("payload");
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{payload}.");
    denied(try_login(&svc, Some("dev-1"), &unsigned).await);
    // A password that is not a JWT: the backend does not answer; nobody else does either.
    assert_eq!(
        denied(try_login(&svc, Some("dev-1"), "hunter2").await).kind,
        DenyKind::BadCredentials
    );
}

#[tokio::test]
async fn jwt_rsa_pss_and_ecdsa_from_key_files() {
    let dir = keys_dir();
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(dir.join("rsa.key")).expect("rsa"))
        .expect("rsa key");
    let ec =
        EncodingKey::from_ec_pem(&std::fs::read(dir.join("ec.key")).expect("ec")).expect("ec key");
    let claims = json!({"sub": "d", "exp": now() + 60});
    let mk = |algs: &str, key: &str| {
        service(
            &format!(
                "[[auth.backends]]\nname = \"jwt\"\nkind = \"jwt\"\nalgorithms = [{algs}]\npublic_key_file = \"{}\"\n",
                dir.join(key).display()
            ),
            None,
        )
    };
    let svc = mk("\"RS256\", \"PS256\"", "rsa.pub");
    allowed(
        try_login(
            &svc,
            None,
            &sign(Algorithm::RS256, &rsa, None, claims.clone()),
        )
        .await,
    );
    allowed(
        try_login(
            &svc,
            None,
            &sign(Algorithm::PS256, &rsa, None, claims.clone()),
        )
        .await,
    );
    // An algorithm the backend does not accept.
    denied(
        try_login(
            &svc,
            None,
            &sign(Algorithm::RS384, &rsa, None, claims.clone()),
        )
        .await,
    );
    // An HMAC token "signed" with the public key (algorithm confusion) is refused.
    let pubkey = std::fs::read(dir.join("rsa.pub")).expect("pub");
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&pubkey),
        None,
        claims.clone(),
    );
    denied(try_login(&svc, None, &confused).await);

    let svc = mk("\"ES256\"", "ec.pub");
    allowed(
        try_login(
            &svc,
            None,
            &sign(Algorithm::ES256, &ec, None, claims.clone()),
        )
        .await,
    );
    denied(try_login(&svc, None, &sign(Algorithm::RS256, &rsa, None, claims)).await);
}

#[tokio::test]
async fn jwt_jwks_endpoint_refresh_down_and_slow() {
    let dir = keys_dir();
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(dir.join("rsa.key")).expect("rsa")).expect("key");
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(dir.join("jwks.json")).expect("jwks")).expect("json");
    let fetches = Arc::new(AtomicUsize::new(0));
    let f2 = fetches.clone();
    let app = Router::new()
        .route(
            "/jwks",
            get(move || {
                let jwks = jwks.clone();
                let f = f2.clone();
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    Json(jwks)
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "{}"
            }),
        );
    let port = serve(app).await;
    let mk = |path: &str, extra: &str| {
        service(
            &format!(
                "[[auth.backends]]\nname = \"jwks\"\nkind = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:{port}{path}\"\ntimeout_ms = 500\n{extra}"
            ),
            None,
        )
    };
    let claims = json!({"sub": "d", "exp": now() + 60});
    let svc = mk("/jwks", "");
    let token = sign(Algorithm::RS256, &rsa, Some("test-rsa"), claims.clone());
    allowed(try_login(&svc, None, &token).await);
    allowed(try_login(&svc, None, &token).await);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");
    // An unknown kid: denied, and it cannot make us refetch more than once per 10 s.
    let unknown = sign(Algorithm::RS256, &rsa, Some("other"), claims.clone());
    denied(try_login(&svc, None, &unknown).await);
    denied(try_login(&svc, None, &unknown).await);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // JWKS endpoint down: fail closed, counted.
    let dead = dead_port();
    let svc = service(
        &format!("[[auth.backends]]\nname = \"jwks\"\nkind = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:{dead}/jwks\"\n"),
        None,
    );
    assert_eq!(
        denied(try_login(&svc, None, &token).await).kind,
        DenyKind::BackendError
    );
    assert_eq!(svc.backend_stats()[0].errors, 1);

    // JWKS endpoint slow: the backend timeout denies.
    let svc = mk("/slow", "");
    let t = std::time::Instant::now();
    assert_eq!(
        denied(try_login(&svc, None, &token).await).kind,
        DenyKind::Timeout
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(svc.backend_stats()[0].timeouts, 1);
}

async fn auth_server() -> u16 {
    let app = Router::new().route(
        "/auth",
        post(|Json(body): Json<Value>| async move {
            let user = body["username"].as_str().unwrap_or("");
            let pw = body["password"].as_str().unwrap_or("");
            match (user, pw) {
                ("alice", "a-pw") => (
                    axum::http::StatusCode::OK,
                    Json(json!({"result": "allow", "is_superuser": false,
                                "acl": ["allow publish http/${username}/#"]})),
                ),
                ("root", "r-pw") => (
                    axum::http::StatusCode::OK,
                    Json(json!({"result": "allow", "is_superuser": true})),
                ),
                ("alice", _) => (axum::http::StatusCode::OK, Json(json!({"result": "deny"}))),
                ("slow", _) => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    (axum::http::StatusCode::OK, Json(json!({"result": "allow"})))
                }
                ("broken", _) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({})),
                ),
                ("forbidden", _) => (axum::http::StatusCode::FORBIDDEN, Json(json!({}))),
                _ => (
                    axum::http::StatusCode::OK,
                    Json(json!({"result": "ignore"})),
                ),
            }
        }),
    );
    serve(app).await
}

#[tokio::test]
async fn http_allow_deny_unknown_down_slow() {
    let port = auth_server().await;
    let svc = service(
        &format!("[[auth.backends]]\nname = \"http\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/auth\"\ntimeout_ms = 500\n"),
        None,
    );
    let c = conn("192.0.2.21:1");
    let id = allowed(login(&svc, &c, Some("alice"), Some("a-pw")).await);
    assert!(!id.superuser);
    assert_eq!(
        svc.authorize(
            &id,
            &Request {
                action: Action::Publish,
                topic: "http/alice/x",
                qos: 0,
                retain: false
            }
        ),
        Decision::Allow
    );
    assert!(allowed(login(&svc, &c, Some("root"), Some("r-pw")).await).superuser);
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("bad")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("forbidden"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    // "ignore" from the only backend: unknown user.
    assert_eq!(
        denied(login(&svc, &c, Some("nobody"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("broken"), Some("x")).await).kind,
        DenyKind::BackendError
    );
    let t = std::time::Instant::now();
    assert_eq!(
        denied(login(&svc, &c, Some("slow"), Some("x")).await).kind,
        DenyKind::Timeout
    );
    assert!(t.elapsed() < Duration::from_secs(5));

    let dead = dead_port();
    let svc = service(
        &format!("[[auth.backends]]\nname = \"http\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{dead}/auth\"\n"),
        None,
    );
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("a-pw")).await).kind,
        DenyKind::BackendError
    );
}

#[tokio::test]
async fn http_get_with_templated_params() {
    let app = Router::new().route(
        "/q",
        get(
            |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| async move {
                let ok = q.get("u").map(String::as_str) == Some("we ird&user=x")
                    && q.get("c").map(String::as_str) == Some("cid-1")
                    && q.get("ip").map(String::as_str) == Some("192.0.2.22")
                    && q.get("cn").map(String::as_str) == Some("cn-1");
                Json(json!({"result": if ok { "allow" } else { "deny" }}))
            },
        ),
    );
    let port = serve(app).await;
    let svc = service(
        &format!(
            "[[auth.backends]]\nname = \"http\"\nkind = \"http\"\nmethod = \"GET\"\nurl = \"http://127.0.0.1:{port}/q\"\nparams = {{ u = \"${{username}}\", c = \"${{clientid}}\", ip = \"${{peerhost}}\", cn = \"${{cert_common_name}}\" }}\n"
        ),
        None,
    );
    let c = tls_conn("192.0.2.22:1", "cn-1");
    let r = svc
        .authenticate(&req(&c, "cid-1", Some("we ird&user=x"), Some(b"pw")))
        .await;
    allowed(r);
}

/// A minimal HTTPS server (certificate for 127.0.0.1 from the test CA) that answers every
/// request with `{"result": "allow"}`.
async fn https_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = keys_dir();
    let certs: Vec<_> = rustls_pemfile::certs(
        &mut std::fs::read(dir.join("server.pem"))
            .expect("pem")
            .as_slice(),
    )
    .collect::<Result<_, _>>()
    .expect("certs");
    let key = rustls_pemfile::private_key(
        &mut std::fs::read(dir.join("server.key"))
            .expect("key")
            .as_slice(),
    )
    .expect("key")
    .expect("a key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = 0;
                // Headers, then the body by Content-Length (bounded by the buffer).
                loop {
                    let Ok(n) = tls.read(&mut buf[got..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got += n;
                    let text = String::from_utf8_lossy(&buf[..got]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got >= end + 4 + len || got == buf.len() {
                            break;
                        }
                    }
                }
                let body = r#"{"result": "allow"}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_backend_verifies_the_server_certificate() {
    let port = https_server().await;
    let ca = keys_dir().join("ca.pem");
    let c = conn("192.0.2.23:1");
    let mk = |url: String, ca: Option<&std::path::Path>| {
        let ca = ca
            .map(|p| format!("ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default();
        service(
            &format!("[[auth.backends]]\nname = \"https\"\nkind = \"http\"\nurl = \"{url}\"\ntimeout_ms = 3000\n{ca}"),
            None,
        )
    };
    // Trusted through ca_file, name matches (IP SAN 127.0.0.1): allowed.
    let svc = mk(format!("https://127.0.0.1:{port}/auth"), Some(&ca));
    allowed(login(&svc, &c, Some("u"), Some("p")).await);
    // Without the CA the certificate is not trusted: the backend fails, the login is denied.
    let svc = mk(format!("https://127.0.0.1:{port}/auth"), None);
    assert_eq!(
        denied(login(&svc, &c, Some("u"), Some("p")).await).kind,
        DenyKind::BackendError
    );
}

#[tokio::test]
async fn acl_http_source_in_order_with_fail_closed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let app = Router::new().route(
        "/acl",
        post(move |Json(body): Json<Value>| {
            let calls = c2.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let topic = body["topic"].as_str().unwrap_or("").to_string();
                let who_ok = body["username"] == "alice"
                    && body["clientid"] == "c1"
                    && body["action"] == "publish";
                if topic.starts_with("slow") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let result = if !who_ok {
                    "deny"
                } else if topic.starts_with("allowed/") {
                    "allow"
                } else if topic.starts_with("denied/") {
                    "deny"
                } else {
                    "ignore"
                };
                Json(json!({ "result": result }))
            }
        }),
    );
    let port = serve(app).await;
    let dir = tempfile::tempdir().expect("tmp");
    let acl = dir.path().join("acl.conf");
    std::fs::write(
        &acl,
        "allow all publish fallback/#\nallow all publish denied/by-file\n",
    )
    .expect("write");
    let svc = service(
        &format!(
            "[acl]\nsources = [\"http\", \"file\"]\nfile = \"{}\"\nhttp_url = \"http://127.0.0.1:{port}/acl\"\nhttp_timeout_ms = 300\n",
            acl.display()
        ),
        None,
    );
    assert!(svc.authorization_needs_async());
    let id = Arc::new(rampart_auth::Identity {
        username: Some("alice".into()),
        client_id: "c1".into(),
        peer: "192.0.2.24".parse().expect("ip"),
        listener: Arc::from("local"),
        cert: None,
        superuser: false,
        groups: Vec::new(),
        acl: Vec::new(),
        expires_at: None,
        backend: "test".into(),
        auth_method: None,
    });
    let mut authz = svc.authorizer(id.clone());
    let p = |topic| Request {
        action: Action::Publish,
        topic,
        qos: 0,
        retain: false,
    };
    let now = std::time::Instant::now();
    assert_eq!(
        authz.authorize_async(&p("allowed/x"), now).await,
        Decision::Allow
    );
    // The http source comes first: its deny wins over the file's allow.
    assert_eq!(
        authz.authorize_async(&p("denied/by-file"), now).await,
        Decision::Deny
    );
    // Ignore: the file is asked next, then the final deny.
    assert_eq!(
        authz.authorize_async(&p("fallback/y"), now).await,
        Decision::Allow
    );
    assert_eq!(
        authz.authorize_async(&p("other"), now).await,
        Decision::Deny
    );
    // Cached: no second request.
    let before = calls.load(Ordering::SeqCst);
    assert_eq!(
        authz.authorize_async(&p("allowed/x"), now).await,
        Decision::Allow
    );
    assert_eq!(calls.load(Ordering::SeqCst), before);
    // Slow: the timeout denies, and it is counted.
    let t = std::time::Instant::now();
    assert_eq!(
        authz.authorize_async(&p("slow/x"), now).await,
        Decision::Deny
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(svc.acl_http_errors(), 1);
    // The sync path cannot ask: it denies where it would have to.
    assert_eq!(
        authz.authorize(&p("allowed/never-cached"), now),
        Decision::Deny
    );
    // The broker's split: try without awaiting (a cached decision answers; a miss that
    // reaches the http source says so), ask elsewhere, record the answer for next time.
    assert_eq!(
        authz.try_authorize(&p("allowed/x"), now),
        Some(Decision::Allow)
    );
    assert_eq!(authz.try_authorize(&p("allowed/fresh"), now), None);
    let asked = svc.authorize_async(&id, &p("allowed/fresh")).await;
    assert_eq!(asked, Decision::Allow);
    authz.record(&p("allowed/fresh"), asked, now);
    let before = calls.load(Ordering::SeqCst);
    assert_eq!(
        authz.try_authorize(&p("allowed/fresh"), now),
        Some(Decision::Allow)
    );
    assert_eq!(calls.load(Ordering::SeqCst), before);
    assert!(svc.authorize_async_bound() >= Duration::from_millis(300));

    // Down: denies.
    let dead = dead_port();
    let svc = service(
        &format!("[acl]\nsources = [\"http\"]\nhttp_url = \"http://127.0.0.1:{dead}/acl\"\n"),
        None,
    );
    assert_eq!(
        svc.authorize_async(&id, &p("allowed/x")).await,
        Decision::Deny
    );
    assert_eq!(svc.acl_http_errors(), 1);
}
