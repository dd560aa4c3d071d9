//! Helpers shared by the integration tests: configs from TOML text, connection info,
//! requests, and the skip rule for tests that need a real server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use rampart_auth::{AuthResult, AuthService, ConnectRequest, Identity};
use rampart_config::Config;
use rampart_core::conn_info::{CertIdentity, ConnInfo, TlsInfo};
use rampart_store::{MemoryStore, Store};

/// Cheap argon2 parameters so that tests do not spend seconds hashing.
pub const CHEAP_HASH: &str = "[auth.password_hash]\nmemory_kib = 8192\niterations = 1\n";

pub const LISTENERS: &str = r#"
[[listeners]]
name = "local"
kind = "tcp"
bind = "127.0.0.1:1883"
"#;

pub fn config(extra: &str) -> Config {
    let text = format!("{LISTENERS}\n{extra}");
    Config::from_str(&text, "test.toml", &[]).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

pub fn service(extra: &str, store: Option<Arc<dyn Store>>) -> AuthService {
    AuthService::from_config(&config(extra), store).unwrap_or_else(|e| panic!("{e}"))
}

pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

pub fn conn(peer: &str) -> ConnInfo {
    ConnInfo {
        peer: peer.parse::<SocketAddr>().expect("peer"),
        listener: Arc::from("local"),
        transport: "tcp",
        tls: None,
    }
}

pub fn tls_conn(peer: &str, cn: &str) -> ConnInfo {
    let mut c = conn(peer);
    c.transport = "tls";
    c.tls = Some(TlsInfo {
        protocol: Some("TLSv1.3".to_string()),
        client_cert: Some(CertIdentity {
            common_name: Some(cn.to_string()),
            subject_dn: format!("CN={cn},O=Test"),
            sans: vec![format!("{cn}.devices.test")],
            fingerprint_sha256: format!("fp-{cn}"),
        }),
        ..TlsInfo::default()
    });
    c
}

pub fn req<'a>(
    conn: &'a ConnInfo,
    client_id: &'a str,
    user: Option<&'a str>,
    pw: Option<&'a [u8]>,
) -> ConnectRequest<'a> {
    ConnectRequest {
        client_id,
        username: user,
        password: pw,
        conn,
        protocol_level: 5,
        auth_method: None,
        auth_data: None,
    }
}

pub async fn login(
    svc: &AuthService,
    conn: &ConnInfo,
    user: Option<&str>,
    pw: Option<&str>,
) -> AuthResult {
    svc.authenticate(&req(conn, "c1", user, pw.map(str::as_bytes)))
        .await
}

pub fn allowed(r: AuthResult) -> Arc<Identity> {
    match r {
        AuthResult::Allow(a) => a.identity,
        other => panic!("expected allow, got {other:?}"),
    }
}

pub fn denied(r: AuthResult) -> rampart_auth::Denial {
    match r {
        AuthResult::Deny(d) => d,
        other => panic!("expected deny, got {other:?}"),
    }
}

/// The URL of a real server from the environment, or `None` after printing why the test
/// is skipped (scripts/test.sh starts the servers and sets these).
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("SKIPPED: {var} is not set (scripts/test.sh starts the server and sets it)");
            None
        }
    }
}

/// A loopback port with nothing listening (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A TCP server that accepts connections and never answers: a backend that hangs.
pub async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: a test makes a handful of connections.
        for _ in 0..64 {
            match l.accept().await {
                Ok((s, _)) => held.push(s),
                Err(_) => return,
            }
        }
    });
    (port, task)
}
