//! Authorization: every rule form and placeholder of the ACL file, identity rules, source
//! order, the final deny, the decision cache and reload without a restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rampart_auth::{Action, AuthService, Decision, Identity, Request};
use rampart_core::conn_info::CertIdentity;

fn identity(user: Option<&str>, client: &str, peer: &str) -> Identity {
    Identity {
        username: user.map(str::to_string),
        client_id: client.to_string(),
        peer: peer.parse().expect("ip"),
        listener: Arc::from("local"),
        cert: None,
        superuser: false,
        groups: Vec::new(),
        acl: Vec::new(),
        expires_at: None,
        backend: "test".to_string(),
        auth_method: None,
    }
}

fn with_cert(mut id: Identity, cn: &str) -> Identity {
    id.cert = Some(CertIdentity {
        common_name: Some(cn.to_string()),
        subject_dn: format!("CN={cn}"),
        sans: Vec::new(),
        fingerprint_sha256: "fp".to_string(),
    });
    id
}

fn pubr(topic: &str) -> Request<'_> {
    Request {
        action: Action::Publish,
        topic,
        qos: 0,
        retain: false,
    }
}

fn sub(topic: &str) -> Request<'_> {
    Request {
        action: Action::Subscribe,
        topic,
        qos: 0,
        retain: false,
    }
}

struct AclFixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    svc: AuthService,
}

fn acl_service(rules: &str, extra: &str) -> AclFixture {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("acl.conf");
    std::fs::write(&path, rules).expect("write");
    let svc = service(
        &format!("[acl]\nfile = \"{}\"\n{extra}", path.display()),
        None,
    );
    AclFixture {
        _dir: dir,
        path,
        svc,
    }
}

const RULES: &str = r#"
# Operators see everything.
allow group:ops all #
allow user:admin subscribe $SYS/#
deny  client:blocked-* all #
allow user:alice publish sensors/alice/#
allow user:alice subscribe sensors/#
allow all publish devices/${username}/state
allow all subscribe devices/${clientid}/cmd
allow cn:meter-* publish meters/${cert_common_name}/reading qos=0,1
allow all publish retained/ok retain=false
allow all subscribe eq:rooms/+/temp
allow ip:10.1.0.0/16 subscribe lan/#
allow anonymous subscribe public/#
"#;

#[test]
fn every_rule_form() {
    let f = acl_service(RULES, "");
    let s = &f.svc;
    let alice = identity(Some("alice"), "alice-1", "192.0.2.1");
    let bob = identity(Some("bob"), "bob-1", "192.0.2.2");
    let d = |id: &Identity, r: Request| s.authorize(id, &r);

    // user: with publish and subscribe, and coverage of subscription filters.
    assert_eq!(d(&alice, pubr("sensors/alice/t")), Decision::Allow);
    assert_eq!(d(&alice, pubr("sensors/bob/t")), Decision::Deny);
    assert_eq!(d(&alice, sub("sensors/+/t")), Decision::Allow);
    assert_eq!(
        d(&alice, sub("#")),
        Decision::Deny,
        "# needs an explicit allow"
    );
    assert_eq!(d(&bob, pubr("sensors/alice/t")), Decision::Deny);

    // group: and `#` explicitly allowed; `#` never reaches $SYS.
    let mut ops = identity(Some("olga"), "o", "192.0.2.3");
    ops.groups = vec!["ops".to_string()];
    assert_eq!(d(&ops, sub("#")), Decision::Allow);
    assert_eq!(d(&ops, sub("$SYS/#")), Decision::Deny);
    let admin = identity(Some("admin"), "adm", "192.0.2.4");
    assert_eq!(d(&admin, sub("$SYS/#")), Decision::Allow);
    assert_eq!(d(&admin, sub("$SYS/broker/uptime")), Decision::Allow);

    // client: prefix with a deny before later allows.
    let blocked = identity(Some("alice"), "blocked-7", "192.0.2.5");
    assert_eq!(d(&blocked, pubr("sensors/alice/t")), Decision::Deny);

    // ${username} and ${clientid}.
    assert_eq!(d(&bob, pubr("devices/bob/state")), Decision::Allow);
    assert_eq!(d(&bob, pubr("devices/alice/state")), Decision::Deny);
    assert_eq!(d(&bob, sub("devices/bob-1/cmd")), Decision::Allow);
    assert_eq!(d(&bob, sub("devices/bob/cmd")), Decision::Deny);

    // A placeholder value that would widen the rule matches nothing.
    let sneaky = identity(Some("+"), "#", "192.0.2.6");
    assert_eq!(d(&sneaky, pubr("devices/x/state")), Decision::Deny);
    assert_eq!(d(&sneaky, sub("devices/#/cmd")), Decision::Deny);
    let slashed = identity(Some("a/b"), "c", "192.0.2.6");
    assert_eq!(d(&slashed, pubr("devices/a/b/state")), Decision::Deny);

    // cn: and ${cert_common_name} with a QoS condition.
    let meter = with_cert(identity(None, "m", "192.0.2.7"), "meter-9");
    let q = |qos| Request {
        qos,
        ..pubr("meters/meter-9/reading")
    };
    assert_eq!(d(&meter, q(1)), Decision::Allow);
    assert_eq!(d(&meter, q(2)), Decision::Deny);
    assert_eq!(d(&meter, pubr("meters/meter-8/reading")), Decision::Deny);
    // No certificate: the placeholder has no value, the rule matches nothing.
    assert_eq!(d(&bob, pubr("meters//reading")), Decision::Deny);

    // retain condition.
    assert_eq!(d(&bob, pubr("retained/ok")), Decision::Allow);
    let retained = Request {
        retain: true,
        ..pubr("retained/ok")
    };
    assert_eq!(d(&bob, retained), Decision::Deny);

    // eq: matches the filter literally.
    assert_eq!(d(&bob, sub("rooms/+/temp")), Decision::Allow);
    assert_eq!(d(&bob, sub("rooms/kitchen/temp")), Decision::Deny);

    // ip: CIDR, including an IPv4-mapped IPv6 peer.
    assert_eq!(
        d(&identity(Some("x"), "x", "10.1.2.3"), sub("lan/a")),
        Decision::Allow
    );
    assert_eq!(
        d(&identity(Some("x"), "x", "::ffff:10.1.2.3"), sub("lan/a")),
        Decision::Allow
    );
    assert_eq!(
        d(&identity(Some("x"), "x", "10.2.0.1"), sub("lan/a")),
        Decision::Deny
    );

    // anonymous.
    assert_eq!(
        d(&identity(None, "anon", "192.0.2.9"), sub("public/news")),
        Decision::Allow
    );
    assert_eq!(d(&bob, sub("public/news")), Decision::Deny);

    // Shared subscriptions are judged by their filter.
    assert_eq!(d(&alice, sub("$share/g/sensors/#")), Decision::Allow);

    // The final deny, and super-users above it all.
    assert_eq!(d(&bob, pubr("anything/else")), Decision::Deny);
    let mut root = identity(Some("root"), "r", "192.0.2.10");
    root.superuser = true;
    assert_eq!(d(&root, sub("#")), Decision::Allow);
}

#[test]
fn no_match_allow_and_source_order() {
    let f = acl_service("deny all publish secret/#\n", "no_match = \"allow\"\n");
    let bob = identity(Some("bob"), "b", "192.0.2.1");
    assert_eq!(f.svc.authorize(&bob, &pubr("open/x")), Decision::Allow);
    assert_eq!(f.svc.authorize(&bob, &pubr("secret/x")), Decision::Deny);

    // Identity rules come first by default: they can allow what the file would deny...
    let mut carol = identity(Some("carol"), "c", "192.0.2.1");
    carol.acl =
        vec![
            rampart_auth::AclRule::parse_identity_rule("allow publish secret/carol", "t".into())
                .expect("rule"),
        ];
    assert_eq!(
        f.svc.authorize(&carol, &pubr("secret/carol")),
        Decision::Allow
    );
    // ...and with sources = ["file", "identity"] the file wins.
    let f2 = acl_service(
        "deny all publish secret/#\n",
        "sources = [\"file\", \"identity\"]\n",
    );
    assert_eq!(
        f2.svc.authorize(&carol, &pubr("secret/carol")),
        Decision::Deny
    );
}

#[test]
fn bad_file_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("acl.conf");
    std::fs::write(
        &path,
        "allow all publish a\nallow someone publish a\n\nallow all jump a\n",
    )
    .expect("write");
    let cfg = config(&format!("[acl]\nfile = \"{}\"\n", path.display()));
    let err = AuthService::from_config(&cfg, None).expect_err("bad file");
    let name = path.display().to_string();
    assert!(
        err.0[0].starts_with(&format!("{name}:2: expected who")),
        "{err}"
    );
    assert!(
        err.0[1].starts_with(&format!("{name}:4: expected publish")),
        "{err}"
    );
}

#[test]
fn cache_and_reload_without_restart() {
    let f = acl_service("allow all publish a/#\n", "cache_ttl_secs = 60\n");
    let bob = Arc::new(identity(Some("bob"), "b", "192.0.2.1"));
    let mut authz = f.svc.authorizer(bob);
    let t0 = Instant::now();
    assert_eq!(authz.authorize(&pubr("a/1"), t0), Decision::Allow);
    assert_eq!(authz.authorize(&pubr("b/1"), t0), Decision::Deny);
    assert_eq!(authz.cached(), 2);
    let hits = || {
        f.svc
            .metrics()
            .authz_cache_hits
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(authz.authorize(&pubr("a/1"), t0), Decision::Allow);
    assert_eq!(hits(), 1);

    // Change the file: the next check sees it (mtime or size differ) and the cache is dropped.
    std::fs::write(
        &f.path,
        "allow all publish b/#\n# longer, so the size changes too\n",
    )
    .expect("write");
    assert!(f.svc.reload_acl_if_changed());
    assert_eq!(authz.authorize(&pubr("a/1"), t0), Decision::Deny);
    assert_eq!(authz.authorize(&pubr("b/1"), t0), Decision::Allow);

    // A broken edit keeps the old rules.
    std::fs::write(
        &f.path,
        "allow all publish b/#\nbroken line here and more\n",
    )
    .expect("write");
    assert!(!f.svc.reload_acl_if_changed());
    assert_eq!(authz.authorize(&pubr("b/1"), t0), Decision::Allow);
    assert!(
        f.svc
            .metrics()
            .acl_reload_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // Entries expire after the TTL.
    let later = t0 + Duration::from_secs(61);
    let before = hits();
    authz.authorize(&pubr("b/1"), later);
    assert_eq!(hits(), before, "expired entry must be recomputed");
}

#[test]
fn cache_is_bounded() {
    let f = acl_service("allow all publish #\n", "cache_max_entries = 8\n");
    let mut authz = f
        .svc
        .authorizer(Arc::new(identity(Some("b"), "b", "192.0.2.1")));
    let now = Instant::now();
    for i in 0..100 {
        let t = format!("t/{i}");
        authz.authorize(&pubr(&t), now);
        assert!(authz.cached() <= 8);
    }
}

#[tokio::test]
async fn watcher_reloads_the_file() {
    let f = acl_service("allow all publish a\n", "reload_check_secs = 1\n");
    let svc = Arc::new(f.svc);
    let _task = svc.spawn_acl_watcher().expect("watcher");
    let bob = identity(Some("bob"), "b", "192.0.2.1");
    std::fs::write(&f.path, "allow all publish zz/top\n").expect("write");
    // Bounded wait for the watcher's next tick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while svc.authorize(&bob, &pubr("zz/top")) != Decision::Allow {
        assert!(Instant::now() < deadline, "ACL file change not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(svc.authorize(&bob, &pubr("a")), Decision::Deny);
}

#[test]
fn local_only_allows_everything() {
    let svc = AuthService::from_config(&rampart_config::Config::local_only(), None).expect("svc");
    let anon = identity(None, "x", "127.0.0.1");
    assert_eq!(svc.authorize(&anon, &sub("#")), Decision::Allow);
}
