//! PostgreSQL, MariaDB, Redis and OpenLDAP backends against real servers. Each test skips
//! (with a message) when its RAMPART_TEST_*_URL is unset; scripts/lib/auth-services.sh starts
//! the servers and sets them. "Down" and "slow" need no server: a dead port and a listener
//! that never answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rampart_auth::{Action, Decision, DenyKind, Request};
use rampart_config::PasswordHashConfig;

fn cheap() -> PasswordHashConfig {
    PasswordHashConfig {
        memory_kib: 8192,
        iterations: 1,
        parallelism: 1,
    }
}

fn hash(pw: &str) -> String {
    rampart_auth::hash::hash_password(pw.as_bytes(), &cheap()).expect("hash")
}

fn sha256_salted(pw: &str, salt: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{pw}{salt}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A table name unique to this run, so concurrent runs and reruns do not collide.
fn table() -> String {
    format!("mqtt_user_{:08x}", rand::random::<u32>())
}

/// `slow_kinds`: a SQL pool gives up waiting for a connection at half the backend timeout and
/// reports an error, so for SQL a server that never finishes its handshake is an error; a
/// slow query on a real server is a timeout (tested below with pg_sleep / SLEEP).
async fn check_down_and_slow(kind_and_url: &str, slow_url: &str, slow_kinds: &[DenyKind]) {
    let c = conn("192.0.2.30:1");
    let svc = service(
        &format!("{CHEAP_HASH}[[auth.backends]]\nname = \"b\"\n{kind_and_url}"),
        None,
    );
    let d = denied(login(&svc, &c, Some("alice"), Some("pw")).await);
    assert_eq!(d.kind, DenyKind::BackendError, "down: {d:?}");
    assert_eq!(svc.backend_stats()[0].errors, 1);
    let svc = service(
        &format!("{CHEAP_HASH}[[auth.backends]]\nname = \"b\"\ntimeout_ms = 300\n{slow_url}"),
        None,
    );
    let t = Instant::now();
    let d = denied(login(&svc, &c, Some("alice"), Some("pw")).await);
    assert!(slow_kinds.contains(&d.kind), "slow: {d:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let stats = &svc.backend_stats()[0];
    assert_eq!(stats.timeouts + stats.errors, 1);
}

#[tokio::test]
async fn postgres_backend() {
    let (slow_port, _silent) = silent_server().await;
    let q = "SELECT password_hash FROM t WHERE username = ${username}";
    check_down_and_slow(
        &format!("kind = \"postgres\"\nurl = \"postgres://u:p@127.0.0.1:{}/db\"\nquery = \"{q}\"\n", dead_port()),
        &format!("kind = \"postgres\"\nurl = \"postgres://u:p@127.0.0.1:{slow_port}/db\"\nquery = \"{q}\"\n"),
        &[DenyKind::Timeout, DenyKind::BackendError],
    )
    .await;
    let Some(url) = server_url("RAMPART_TEST_PG_URL") else {
        return;
    };
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let t = table();
    sqlx::query(&format!(
        "CREATE TABLE {t} (username text primary key, password_hash text not null, salt text, is_superuser boolean not null default false)"
    ))
    .execute(&pool)
    .await
    .expect("create");
    sqlx::query(&format!(
        "CREATE TABLE {t}_acl (username text, permission text, action text, topic text)"
    ))
    .execute(&pool)
    .await
    .expect("create acl");
    for (u, h, s, su) in [
        ("alice", hash("a-pw"), None, false),
        ("bob", sha256_salted("b-pw", "NaCl"), Some("NaCl"), false),
        ("root", hash("r-pw"), None, true),
    ] {
        sqlx::query(&format!("INSERT INTO {t} VALUES ($1, $2, $3, $4)"))
            .bind(u)
            .bind(h)
            .bind(s)
            .bind(su)
            .execute(&pool)
            .await
            .expect("insert");
    }
    sqlx::query(&format!(
        "INSERT INTO {t}_acl VALUES ('alice', 'allow', 'publish', 'pg/${{username}}/#')"
    ))
    .execute(&pool)
    .await
    .expect("acl row");
    let c = conn("192.0.2.31:1");
    let svc = service(
        &format!(
            "{CHEAP_HASH}[[auth.backends]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"{url}\"\nquery = \"SELECT password_hash, salt, is_superuser FROM {t} WHERE username = ${{username}} LIMIT 1\"\nacl_query = \"SELECT permission, action, topic FROM {t}_acl WHERE username = ${{username}}\"\n"
        ),
        None,
    );
    let id = allowed(login(&svc, &c, Some("alice"), Some("a-pw")).await);
    assert!(!id.superuser);
    assert_eq!(
        svc.authorize(
            &id,
            &Request {
                action: Action::Publish,
                topic: "pg/alice/x",
                qos: 0,
                retain: false
            }
        ),
        Decision::Allow
    );
    assert!(allowed(login(&svc, &c, Some("root"), Some("r-pw")).await).superuser);
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("nope")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("carol"), Some("a-pw")).await).kind,
        DenyKind::BadCredentials
    );
    // The username is a bound parameter: SQL in it is just an unknown name.
    assert_eq!(
        denied(login(&svc, &c, Some("x' OR '1'='1"), Some("a-pw")).await).kind,
        DenyKind::BadCredentials
    );

    // Salted SHA-256 rows of migrated users, with the hash mode per backend.
    let svc = service(
        &format!(
            "[[auth.backends]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"{url}\"\npassword_hash = \"sha256-salt\"\nquery = \"SELECT password_hash, salt FROM {t} WHERE username = ${{username}}\"\n"
        ),
        None,
    );
    allowed(login(&svc, &c, Some("bob"), Some("b-pw")).await);
    denied(login(&svc, &c, Some("bob"), Some("b-pX")).await);

    // A slow query (the real server, sleeping) times out and denies.
    let svc = service(
        &format!(
            "[[auth.backends]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"{url}\"\ntimeout_ms = 300\nquery = \"SELECT password_hash FROM {t}, pg_sleep(3) WHERE username = ${{username}}\"\n"
        ),
        None,
    );
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("a-pw")).await).kind,
        DenyKind::Timeout
    );
    for suffix in ["", "_acl"] {
        let _ = sqlx::query(&format!("DROP TABLE {t}{suffix}"))
            .execute(&pool)
            .await;
    }
}

#[tokio::test]
async fn mysql_backend() {
    let (slow_port, _silent) = silent_server().await;
    let q = "SELECT password_hash FROM t WHERE username = ${username}";
    check_down_and_slow(
        &format!(
            "kind = \"mysql\"\nurl = \"mysql://u:p@127.0.0.1:{}/db\"\nquery = \"{q}\"\n",
            dead_port()
        ),
        &format!(
            "kind = \"mysql\"\nurl = \"mysql://u:p@127.0.0.1:{slow_port}/db\"\nquery = \"{q}\"\n"
        ),
        &[DenyKind::Timeout, DenyKind::BackendError],
    )
    .await;
    let Some(url) = server_url("RAMPART_TEST_MYSQL_URL") else {
        return;
    };
    let pool = sqlx::MySqlPool::connect(&url).await.expect("connect");
    let t = table();
    sqlx::query(&format!(
        "CREATE TABLE {t} (username varchar(64) primary key, password_hash varchar(255) not null, salt varchar(64), is_superuser tinyint(1) not null default 0)"
    ))
    .execute(&pool)
    .await
    .expect("create");
    for (u, h, s, su) in [
        ("alice", hash("a-pw"), None, 0i8),
        ("bob", sha256_salted("b-pw", "NaCl"), Some("NaCl"), 0),
        ("root", bcrypt::hash("r-pw", 4).expect("bcrypt"), None, 1),
    ] {
        sqlx::query(&format!("INSERT INTO {t} VALUES (?, ?, ?, ?)"))
            .bind(u)
            .bind(h)
            .bind(s)
            .bind(su)
            .execute(&pool)
            .await
            .expect("insert");
    }
    let c = conn("192.0.2.32:1");
    let svc = service(
        &format!(
            "{CHEAP_HASH}[[auth.backends]]\nname = \"my\"\nkind = \"mysql\"\nurl = \"{url}\"\nquery = \"SELECT password_hash, salt, is_superuser FROM {t} WHERE username = ${{username}} LIMIT 1\"\n"
        ),
        None,
    );
    assert!(!allowed(login(&svc, &c, Some("alice"), Some("a-pw")).await).superuser);
    // bcrypt row, super-user from a TINYINT(1).
    assert!(allowed(login(&svc, &c, Some("root"), Some("r-pw")).await).superuser);
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("nope")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("carol"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("' OR 1=1 -- "), Some("a-pw")).await).kind,
        DenyKind::BadCredentials
    );
    let svc = service(
        &format!(
            "[[auth.backends]]\nname = \"my\"\nkind = \"mysql\"\nurl = \"{url}\"\ntimeout_ms = 300\nquery = \"SELECT password_hash FROM {t} WHERE username = ${{username}} AND SLEEP(3) = 0\"\n"
        ),
        None,
    );
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("a-pw")).await).kind,
        DenyKind::Timeout
    );
    let _ = sqlx::query(&format!("DROP TABLE {t}")).execute(&pool).await;
}

#[tokio::test]
async fn redis_backend() {
    let (slow_port, _silent) = silent_server().await;
    check_down_and_slow(
        &format!(
            "kind = \"redis\"\nurl = \"redis://127.0.0.1:{}/\"\n",
            dead_port()
        ),
        &format!("kind = \"redis\"\nurl = \"redis://127.0.0.1:{slow_port}/\"\n"),
        &[DenyKind::Timeout],
    )
    .await;
    let Some(url) = server_url("RAMPART_TEST_REDIS_URL") else {
        return;
    };
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let prefix = table();
    for (u, h, su) in [("alice", hash("a-pw"), "0"), ("root", hash("r-pw"), "1")] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}:{u}"))
            .arg("password_hash")
            .arg(h)
            .arg("is_superuser")
            .arg(su)
            .query_async(&mut con)
            .await
            .expect("hset");
    }
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}_acl:alice"))
        .arg("redis/${username}/#")
        .arg("publish")
        .arg("cmd/alice")
        .arg("subscribe")
        .query_async(&mut con)
        .await
        .expect("hset acl");
    let svc = service(
        &format!(
            "{CHEAP_HASH}[[auth.backends]]\nname = \"r\"\nkind = \"redis\"\nurl = \"{url}\"\ncommand = \"HMGET {prefix}:${{username}} password_hash is_superuser\"\nacl_command = \"HGETALL {prefix}_acl:${{username}}\"\n"
        ),
        None,
    );
    let c = conn("192.0.2.33:1");
    let alice = allowed(login(&svc, &c, Some("alice"), Some("a-pw")).await);
    assert!(!alice.superuser);
    let r = |action, topic| Request {
        action,
        topic,
        qos: 0,
        retain: false,
    };
    assert_eq!(
        svc.authorize(&alice, &r(Action::Publish, "redis/alice/x")),
        Decision::Allow
    );
    assert_eq!(
        svc.authorize(&alice, &r(Action::Subscribe, "cmd/alice")),
        Decision::Allow
    );
    assert_eq!(
        svc.authorize(&alice, &r(Action::Publish, "cmd/alice")),
        Decision::Deny
    );
    assert!(allowed(login(&svc, &c, Some("root"), Some("r-pw")).await).superuser);
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("no")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("carol"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    // A username with spaces stays one argument: no extra fields, no second command.
    assert_eq!(
        denied(login(&svc, &c, Some("alice password_hash"), Some("a-pw")).await).kind,
        DenyKind::BadCredentials
    );
    for u in ["alice", "root"] {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{prefix}:{u}"))
            .query_async(&mut con)
            .await
            .unwrap_or(0);
    }
}

#[tokio::test]
async fn ldap_backend() {
    let (slow_port, _silent) = silent_server().await;
    let tmpl = "bind_dn_template = \"uid=${username},ou=people,dc=rampart,dc=test\"\n";
    check_down_and_slow(
        &format!(
            "kind = \"ldap\"\nurl = \"ldap://127.0.0.1:{}\"\n{tmpl}",
            dead_port()
        ),
        &format!("kind = \"ldap\"\nurl = \"ldap://127.0.0.1:{slow_port}\"\n{tmpl}"),
        &[DenyKind::Timeout],
    )
    .await;
    let Some(url) = server_url("RAMPART_TEST_LDAP_URL") else {
        return;
    };
    let c = conn("192.0.2.34:1");
    let groups = "group_attribute = \"departmentNumber\"\nsuperuser_group = \"mqtt-admins\"\n";
    // Bind as the user.
    let svc = service(
        &format!(
            "[[auth.backends]]\nname = \"ldap\"\nkind = \"ldap\"\nurl = \"{url}\"\n{tmpl}{groups}"
        ),
        None,
    );
    let alice = allowed(login(&svc, &c, Some("alice"), Some("alice-pw")).await);
    assert!(alice.superuser);
    let bob = allowed(login(&svc, &c, Some("bob"), Some("bob-pw")).await);
    assert!(!bob.superuser);
    assert!(
        bob.groups.iter().any(|g| g == "sensors"),
        "{:?}",
        bob.groups
    );
    assert_eq!(
        denied(login(&svc, &c, Some("bob"), Some("wrong")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("carol"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    // An empty password would be an unauthenticated bind that "succeeds": refused first.
    assert_eq!(
        denied(login(&svc, &c, Some("bob"), Some("")).await).kind,
        DenyKind::BadCredentials
    );
    // DN injection: the username is escaped into one RDN value.
    denied(login(&svc, &c, Some("bob,ou=people"), Some("bob-pw")).await);

    // Search, then bind.
    let svc = service(
        &format!(
            "[[auth.backends]]\nname = \"ldap\"\nkind = \"ldap\"\nurl = \"{url}\"\nsearch_base = \"ou=people,dc=rampart,dc=test\"\nsearch_bind_dn = \"cn=admin,dc=rampart,dc=test\"\nsearch_bind_password = \"rampart-test\"\n{groups}"
        ),
        None,
    );
    assert!(allowed(login(&svc, &c, Some("alice"), Some("alice-pw")).await).superuser);
    assert_eq!(
        denied(login(&svc, &c, Some("alice"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    assert_eq!(
        denied(login(&svc, &c, Some("carol"), Some("x")).await).kind,
        DenyKind::BadCredentials
    );
    // Filter injection: `*` is escaped, so it matches no one.
    assert_eq!(
        denied(login(&svc, &c, Some("*"), Some("alice-pw")).await).kind,
        DenyKind::BadCredentials
    );

    // TLS: ldaps:// and StartTLS, verified against the CA the script made.
    let (Some(ldaps), Some(ca)) = (
        server_url("RAMPART_TEST_LDAPS_URL"),
        server_url("RAMPART_TEST_LDAP_CA"),
    ) else {
        return;
    };
    let mk = |url: &str, extra: &str| {
        service(
            &format!("[[auth.backends]]\nname = \"ldap\"\nkind = \"ldap\"\nurl = \"{url}\"\n{tmpl}{extra}"),
            None,
        )
    };
    let with_ca = format!("ca_file = \"{ca}\"\n");
    allowed(login(&mk(&ldaps, &with_ca), &c, Some("bob"), Some("bob-pw")).await);
    let starttls = format!("{with_ca}starttls = true\n");
    allowed(login(&mk(&url, &starttls), &c, Some("bob"), Some("bob-pw")).await);
    // Without the CA the server is not trusted: the backend fails closed.
    assert_eq!(
        denied(login(&mk(&ldaps, ""), &c, Some("bob"), Some("bob-pw")).await).kind,
        DenyKind::BackendError
    );
}
