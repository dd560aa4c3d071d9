//! `[auth]` and `[acl]`: every backend kind decodes, and every mistake is reported at once.

use rampart_config::*;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::from_str(text, "a.toml", &[]).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

const LISTENER: &str =
    "[[listeners]]\nname = \"local\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\n";

#[test]
fn defaults_deny_and_protect() {
    let cfg = parse(LISTENER).expect("valid");
    assert!(cfg.auth.backends.is_empty());
    assert_eq!(cfg.acl.no_match, NoMatch::Deny);
    assert_eq!(cfg.acl.sources, vec![AclSource::Identity, AclSource::File]);
    assert!(cfg.auth.brute_force.enabled);
    assert!(cfg.auth.client_id_ownership);
    assert_eq!(cfg.auth.password_hash.memory_kib, 19456);
}

#[test]
fn every_kind_decodes_and_secrets_stay_hidden() {
    let text = format!(
        r#"{LISTENER}
[auth]
timeout_ms = 1000
[[auth.backends]]
name = "u"
kind = "builtin"
listeners = ["local"]
[[auth.backends]]
name = "c"
kind = "certificate"
username_from = "san"
[[auth.backends]]
name = "j"
kind = "jwt"
algorithms = ["HS256"]
secret = "0123456789abcdef0123456789abcdef-hunter2"
[[auth.backends]]
name = "h"
kind = "http"
url = "http://127.0.0.1:9000/auth"
headers = {{ "X-Key" = "hunter2" }}
[[auth.backends]]
name = "p"
kind = "postgres"
url = "postgres://u:hunter2@127.0.0.1/db"
query = "SELECT password_hash FROM users WHERE username = ${{username}}"
[[auth.backends]]
name = "m"
kind = "mysql"
url = "mysql://u:hunter2@127.0.0.1/db"
query = "SELECT password_hash FROM users WHERE username = ${{username}}"
password_hash = "sha256-salt"
[[auth.backends]]
name = "r"
kind = "redis"
url = "redis://:hunter2@127.0.0.1/"
[[auth.backends]]
name = "l"
kind = "ldap"
url = "ldap://127.0.0.1:389"
bind_dn_template = "uid=${{username}},dc=example,dc=org"
search_bind_password = "hunter2"
[[auth.backends]]
name = "s"
kind = "scram"
[acl]
file = "/etc/rampart/acl.conf"
no_match = "deny"
"#
    );
    let cfg = parse(&text).expect("valid");
    let kinds: Vec<&str> = cfg.auth.backends.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "builtin",
            "certificate",
            "jwt",
            "http",
            "postgres",
            "mysql",
            "redis",
            "ldap",
            "scram"
        ]
    );
    assert_eq!(cfg.auth.backends[0].listeners, ["local"]);
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let BackendKind::Http(h) = &cfg.auth.backends[3].kind else {
        panic!("http")
    };
    assert_eq!(h.params.len(), 4, "default params");
}

#[test]
fn every_error_at_once() {
    let text = format!(
        r#"{LISTENER}
[auth]
timeout_ms = 5
[auth.brute_force]
free_failures = 10
lockout_after = 5
[[auth.backends]]
name = "j"
kind = "jwt"
algorithms = ["HS256", "RS256"]
secret = "short"
[[auth.backends]]
name = "h"
kind = "http"
url = "http://10.0.0.1/auth"
[[auth.backends]]
name = "j"
kind = "postgres"
url = "postgres://x"
query = "SELECT * FROM users WHERE username = 'x'"
listeners = ["nope"]
[[auth.backends]]
name = "x"
kind = "kerberos"
[[auth.backends]]
name = "l"
kind = "ldap"
url = "ldap://ldap.example.org"
search_base = "dc=example,dc=org"
[acl]
no_match = "maybe"
sources = ["file"]
"#
    );
    let errs = parse(&text).expect_err("invalid");
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    for needle in [
        "a.toml:7: auth.timeout_ms: 5 is out of range 10..=60000",
        "auth.brute_force.lockout_after: 5 must be larger than free_failures",
        "auth.backends[0].algorithms: mixes HMAC",
        "auth.backends[1].url: \"http://10.0.0.1/auth\": http:// is only allowed to a loopback host",
        "auth.backends[2].name: duplicate backend name",
        "auth.backends[2].query: must use ${username}",
        "auth.backends[2].listeners: no listener is named \"nope\"",
        "auth.backends[3].kind: expected one of",
        "auth.backends[4].url",
        "acl.no_match: expected one of \"deny\", \"allow\"",
        "acl.sources: \"file\" needs acl.file",
    ] {
        assert!(has(needle), "{needle} not in {errs:#?}");
    }
}

#[test]
fn describe_shows_the_chain_and_the_final_deny() {
    let text = format!(
        "{LISTENER}[[auth.backends]]\nname = \"users\"\nkind = \"builtin\"\n[acl]\nfile = \"/etc/rampart/acl.conf\"\n"
    );
    let d = parse(&text)
        .expect("valid")
        .describe_with_nofile(Some(1024));
    assert!(
        d.contains("  users: builtin on all listeners, timeout 5000 ms"),
        "{d}"
    );
    assert!(d.contains("no_match = deny"), "{d}");
    let d = parse(LISTENER)
        .expect("valid")
        .describe_with_nofile(Some(1024));
    assert!(d.contains("nobody can log in"), "{d}");
    let d = Config::local_only().describe_with_nofile(Some(1024));
    assert!(d.contains("anonymous loopback clients only"), "{d}");
}
