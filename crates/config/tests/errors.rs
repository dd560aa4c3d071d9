//! Every error kind, with its exact `file:line: key: message` output.

use rampart_config::*;

/// The error lines for `text` parsed as `r.toml` with no environment.
fn errs(text: &str) -> Vec<String> {
    errs_env(text, &[])
}

fn errs_env(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::from_str(text, "r.toml", &env) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => {
            // Display is exactly one line per error.
            let shown: Vec<String> = e.to_string().lines().map(str::to_string).collect();
            let each: Vec<String> = e.0.iter().map(ToString::to_string).collect();
            assert_eq!(shown, each);
            each
        }
    }
}

fn ok(text: &str) -> Config {
    Config::from_str(text, "r.toml", &[]).unwrap_or_else(|e| panic!("{e}"))
}

const TLS_LISTENER: &str = r#"
[[listeners]]
name = "mqtts"
kind = "tls"
bind = "0.0.0.0:8883"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
"#;

#[test]
fn syntax_error_has_its_line() {
    assert_eq!(
        errs("[mqtt]\nmax_packet_size = 1024\nmax_qos = = 2\n"),
        ["r.toml:3: TOML syntax error: invalid string; expected `\"`, `'`"]
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    assert_eq!(
        errs("[mqtt]\nmax_qos = 1\nmax_qos = 2\n"),
        ["r.toml:3: TOML syntax error: duplicate key `max_qos` in table `mqtt`"]
    );
}

#[test]
fn unknown_keys_at_every_depth() {
    let text = r#"colour = "blue"
[mqtt]
max_packet_sise = 1024
[[listeners]]
name = "a"
kind = "tls"
bind = "0.0.0.0:8883"
port = 8883
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
password = "x"
[auth]
users = []
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:1: colour: unknown key",
            "r.toml:3: mqtt.max_packet_sise: unknown key; did you mean `max_packet_size`?",
            "r.toml:8: listeners[0].port: unknown key",
            "r.toml:12: listeners[0].tls.password: unknown key",
            "r.toml:14: auth.users: unknown key",
        ]
    );
}

#[test]
fn wrong_types() {
    let text = r#"[node]
name = 7
[log]
format = true
[mqtt]
max_packet_size = "1MB"
retain_available = "yes"
max_qos = 1.5
[sys]
enabled = 1
[storage]
backend = ["redb"]
[danger]
allow_plaintext = "false"
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:2: node.name: expected a string, found the integer 7",
            "r.toml:4: log.format: expected a string, found the boolean true",
            "r.toml:6: mqtt.max_packet_size: expected an integer, found the string \"1MB\"",
            "r.toml:7: mqtt.retain_available: expected a boolean, found the string \"yes\"",
            "r.toml:8: mqtt.max_qos: expected an integer, found the float 1.5",
            "r.toml:10: sys.enabled: expected a boolean, found the integer 1",
            "r.toml:12: storage.backend: expected a string, found an array",
            "r.toml:14: danger.allow_plaintext: expected a boolean, found the string \"false\"",
        ]
    );
}

#[test]
fn wrong_container_types() {
    let text = "mqtt = 5\nlisteners = \"tcp\"\n";
    assert_eq!(
        errs(text),
        [
            "r.toml:1: mqtt: expected a table, found the integer 5",
            "r.toml:2: listeners: expected an array of tables ([[listeners]]), found the string \"tcp\"",
        ]
    );
    let text = format!("{TLS_LISTENER}ciphers = [\"TLS_AES_128_GCM_SHA256\", 3]\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.ciphers: expected an array of strings, found the integer 3 at index 1"]
    );
}

#[test]
fn out_of_range_values_report_the_field_range() {
    let text = r#"[mqtt]
max_packet_size = 10
max_client_id_length = 22
max_qos = 3
max_topic_levels = -1
max_session_expiry = 4294967296
receive_maximum = 0
[sys]
interval_secs = 3601
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:2: mqtt.max_packet_size: 10 is out of range 64..=268435455",
            "r.toml:3: mqtt.max_client_id_length: 22 is out of range 23..=65535",
            "r.toml:4: mqtt.max_qos: 3 is out of range 0..=2",
            "r.toml:5: mqtt.max_topic_levels: -1 is out of range 1..=128",
            "r.toml:6: mqtt.max_session_expiry: 4294967296 is out of range 0..=4294967295",
            "r.toml:7: mqtt.receive_maximum: 0 is out of range 1..=65535",
            "r.toml:9: sys.interval_secs: 3601 is out of range 1..=3600",
        ]
    );
}

#[test]
fn session_expiry_may_be_never() {
    let c = ok("[mqtt]\nmax_session_expiry = 4294967295\n");
    assert_eq!(c.mqtt.max_session_expiry, u32::MAX);
}

#[test]
fn enums_and_log_level() {
    let text = r#"[log]
level = "verbose"
format = "xml"
[mqtt]
shared_subscription_strategy = "least_busy"
[storage]
backend = "sqlite"
sync = "never"
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:2: log.level: expected one of error, warn, info, debug, trace, found \"verbose\"",
            "r.toml:3: log.format: expected one of \"text\", \"json\", found \"xml\"",
            "r.toml:5: mqtt.shared_subscription_strategy: expected one of \"round_robin\", \"random\", \"hash_client_id\", \"hash_topic\", \"sticky\", found \"least_busy\"",
            "r.toml:7: storage.backend: expected one of \"redb\", \"memory\", found \"sqlite\"",
            "r.toml:8: storage.sync: expected one of \"always\", \"periodic\", found \"never\"",
        ]
    );
}

#[test]
fn node_name_is_checked() {
    assert_eq!(
        errs("[node]\nname = \"my node/1\"\n"),
        ["r.toml:2: node.name: \"my node/1\" is not a valid name: use 1 to 64 characters of A-Z a-z 0-9 . _ -"]
    );
}

#[test]
fn bind_defaults_to_loopback_on_the_kind_port() {
    let tls = "[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n";
    let text = format!(
        "[[listeners]]\nname = \"a\"\nkind = \"tcp\"\n\
         [[listeners]]\nname = \"b\"\nkind = \"tls\"\n{tls}\
         [[listeners]]\nname = \"c\"\nkind = \"ws\"\n\
         [[listeners]]\nname = \"d\"\nkind = \"wss\"\nbind = \"0.0.0.0\"\n{tls}\
         [[listeners]]\nname = \"e\"\nkind = \"wss\"\nbind = \"[::]\"\n{tls}\
         [[listeners]]\nname = \"f\"\nkind = \"tls\"\nbind = \"127.0.0.1:9883\"\n{tls}"
    );
    let c = ok(&text);
    let binds: Vec<String> = c.listeners.iter().map(|l| l.bind.to_string()).collect();
    assert_eq!(
        binds,
        [
            "127.0.0.1:1883",
            "127.0.0.1:8883",
            "127.0.0.1:8083",
            "0.0.0.0:8084",
            "[::]:8084",
            "127.0.0.1:9883"
        ]
    );
    // Two listeners of one kind without bind share a default: a conflict, reported.
    let twice = "[[listeners]]\nname = \"a\"\nkind = \"tcp\"\n[[listeners]]\nname = \"b\"\nkind = \"tcp\"\n";
    assert_eq!(
        errs(twice),
        ["r.toml:4: listeners[1].bind: 127.0.0.1:1883 conflicts with 127.0.0.1:1883 of listeners[0] (\"a\")"]
    );
}

#[test]
fn missing_required_listener_keys_point_at_the_header() {
    let text = "[node]\nname = \"n\"\n\n[[listeners]]\nproxy_protocol = false\n";
    assert_eq!(
        errs(text),
        [
            "r.toml:4: listeners[0].name: missing required key",
            "r.toml:4: listeners[0].kind: missing required key",
        ]
    );
}

#[test]
fn listener_kind_and_bind_values() {
    let text = r#"[[listeners]]
name = "a"
kind = "quic"
bind = "localhost:1883"
max_connections = 0
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:3: listeners[0].kind: expected one of \"tcp\", \"tls\", \"ws\", \"wss\", found \"quic\"",
            "r.toml:4: listeners[0].bind: \"localhost:1883\" is not an IP:PORT address or an IP (examples: 0.0.0.0:8883, [::]:8883, 127.0.0.1:1883, 0.0.0.0 for the kind's default port)",
            "r.toml:5: listeners[0].max_connections: 0 is out of range 1..=10000000",
        ]
    );
}

#[test]
fn tls_listeners_need_a_tls_table_with_cert_and_key() {
    let text = r#"[[listeners]]
name = "a"
kind = "tls"
bind = "0.0.0.0:8883"

[[listeners]]
name = "b"
kind = "wss"
bind = "0.0.0.0:8084"
[listeners.tls]
ca_file = "ca.pem"
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:1: listeners[0].tls: kind \"tls\" needs a [listeners.tls] table with cert_file and key_file",
            "r.toml:10: listeners[1].tls.cert_file: missing required key",
            "r.toml:10: listeners[1].tls.key_file: missing required key",
        ]
    );
}

#[test]
fn tls_of_the_wrong_type_is_reported_once() {
    let text = "[[listeners]]\nname = \"a\"\nkind = \"tls\"\nbind = \"0.0.0.0:8883\"\ntls = true\n";
    assert_eq!(
        errs(text),
        ["r.toml:5: listeners[0].tls: expected a table, found the boolean true"]
    );
}

#[test]
fn tls_table_on_plaintext_listener_and_ws_path_on_tcp() {
    let text = r#"[[listeners]]
name = "a"
kind = "tcp"
bind = "127.0.0.1:1883"
ws_path = "/mqtt"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"

[[listeners]]
name = "b"
kind = "ws"
bind = "127.0.0.1:8080"
ws_path = "mqtt"
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:5: listeners[0].ws_path: only applies to kind \"ws\" or \"wss\", not \"tcp\"",
            "r.toml:6: listeners[0].tls: kind \"tcp\" is plaintext; tls settings need kind \"tls\" or \"wss\"",
            "r.toml:14: listeners[1].ws_path: \"mqtt\" is not a valid path: it must start with / and contain only visible ASCII (at most 256 bytes)",
        ]
    );
}

#[test]
fn tls_1_0_and_1_1_are_refused_t1() {
    for v in ["1.0", "1.1"] {
        let text = format!("{TLS_LISTENER}min_version = \"{v}\"\n");
        assert_eq!(
            errs(&text),
            [format!("r.toml:9: listeners[0].tls.min_version: TLS {v} is not supported: TLS 1.0 and 1.1 are insecure and cannot be enabled (T1); use \"1.2\" or \"1.3\"")]
        );
    }
    let text = format!("{TLS_LISTENER}min_version = \"1.4\"\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.min_version: expected \"1.2\" or \"1.3\", found \"1.4\""]
    );
    let c = ok(&format!("{TLS_LISTENER}min_version = \"1.3\"\n"));
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.min_version, TlsVersion::V1_3);
}

#[test]
fn non_aead_ciphers_are_refused_t2() {
    let text = format!(
        "{TLS_LISTENER}ciphers = [\"TLS_AES_128_GCM_SHA256\", \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256\", \"TLS_RSA_WITH_AES_128_GCM_SHA256\"]\n"
    );
    let allowed = "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, \
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, \
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";
    assert_eq!(
        errs(&text),
        [
            format!("r.toml:9: listeners[0].tls.ciphers: \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256\" is not allowed: only AEAD suites with forward secrecy (T2), by IANA name: {allowed}"),
            format!("r.toml:9: listeners[0].tls.ciphers: \"TLS_RSA_WITH_AES_128_GCM_SHA256\" is not allowed: only AEAD suites with forward secrecy (T2), by IANA name: {allowed}"),
        ]
    );
}

#[test]
fn cipher_list_must_cover_the_enabled_versions() {
    let text = format!("{TLS_LISTENER}ciphers = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.ciphers: no TLS 1.3 suite listed: include at least one of TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256"]
    );
    let text = format!("{TLS_LISTENER}ciphers = [\"TLS_AES_256_GCM_SHA384\"]\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.ciphers: no TLS 1.2 suite listed while min_version = \"1.2\": add a TLS_ECDHE_* suite or set min_version = \"1.3\""]
    );
    let c = ok(&format!(
        "{TLS_LISTENER}min_version = \"1.3\"\nciphers = [\"TLS_AES_256_GCM_SHA384\"]\n"
    ));
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.ciphers, ["TLS_AES_256_GCM_SHA384"]);
}

#[test]
fn client_auth_needs_a_ca_and_crls_need_client_auth() {
    let text = format!("{TLS_LISTENER}client_auth = \"required\"\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.ca_file: client_auth = \"required\" needs ca_file (the CA bundle that client certificates must chain to)"]
    );
    let text = format!("{TLS_LISTENER}crl_files = [\"a.crl\"]\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.crl_files: CRLs check client certificates: set client_auth = \"optional\" or \"required\""]
    );
    let text = format!("{TLS_LISTENER}client_id_from = \"cn\"\n");
    assert_eq!(
        errs(&text),
        ["r.toml:9: listeners[0].tls.client_id_from: client ids come from client certificates: set client_auth = \"optional\" or \"required\""]
    );
    let text = format!(
        "{TLS_LISTENER}client_auth = \"required\"\nca_file = \"ca.pem\"\nclient_id_from = \"serial\"\n"
    );
    assert_eq!(
        errs(&text),
        ["r.toml:11: listeners[0].tls.client_id_from: expected \"cn\", \"san\" or \"dn\", found \"serial\""]
    );
    let c = ok(&format!(
        "{TLS_LISTENER}client_auth = \"optional\"\nca_file = \"ca.pem\"\ncrl_files = [\"a.crl\"]\nverify_depth = 3\n"
    ));
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.client_auth, ClientAuth::Optional);
    assert_eq!(tls.client_id_from, None);
    assert_eq!(tls.crl_files, [std::path::PathBuf::from("a.crl")]);
    assert_eq!(tls.verify_depth, 3);
}

#[test]
fn plaintext_on_non_loopback_needs_danger_h3() {
    let text = r#"[[listeners]]
name = "a"
kind = "tcp"
bind = "0.0.0.0:1883"
[[listeners]]
name = "b"
kind = "ws"
bind = "[::]:8080"
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:4: listeners[0].bind: plaintext (tcp) listener on non-loopback address 0.0.0.0:1883: use kind \"tls\" or \"wss\", bind to 127.0.0.1 or [::1], or set danger.allow_plaintext = true (H3)",
            "r.toml:8: listeners[1].bind: plaintext (ws) listener on non-loopback address [::]:8080: use kind \"tls\" or \"wss\", bind to 127.0.0.1 or [::1], or set danger.allow_plaintext = true (H3)",
        ]
    );
    let c = ok(&format!("{text}[danger]\nallow_plaintext = true\n"));
    assert!(c.danger.allow_plaintext);
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].ws_path, "/mqtt");
}

#[test]
fn duplicate_listener_names_and_binds() {
    let text = r#"[[listeners]]
name = "a"
kind = "tcp"
bind = "127.0.0.1:1883"
[[listeners]]
name = "a"
kind = "tcp"
bind = "127.0.0.1:1883"
[[listeners]]
name = "c"
kind = "tls"
bind = "0.0.0.0:8883"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
[[listeners]]
name = "d"
kind = "wss"
bind = "10.0.0.1:8883"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
[[listeners]]
name = "e"
kind = "tls"
bind = "[::]:8883"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
"#;
    assert_eq!(
        errs(text),
        [
            "r.toml:6: listeners[1].name: duplicate listener name \"a\" (also used by listeners[0])",
            "r.toml:8: listeners[1].bind: 127.0.0.1:1883 conflicts with 127.0.0.1:1883 of listeners[0] (\"a\")",
            "r.toml:19: listeners[3].bind: 10.0.0.1:8883 conflicts with 0.0.0.0:8883 of listeners[2] (\"c\")",
        ]
    );
}

#[test]
fn empty_listener_list_is_refused() {
    assert_eq!(
        errs("listeners = []\n"),
        ["r.toml:1: listeners: at least one listener is required"]
    );
}

#[test]
fn inline_listener_tables_work_too() {
    let c = ok("listeners = [{ name = \"a\", kind = \"tcp\", bind = \"127.0.0.1:1\" }]\n");
    assert_eq!(c.listeners[0].bind.port(), 1);
    assert_eq!(
        errs("listeners = [{ name = \"a\", kind = \"tcp\", bind = \"127.0.0.1:1\", x = 1 }]\n"),
        ["r.toml:1: listeners[0].x: unknown key"]
    );
}

#[test]
fn storage_sync_modes() {
    let c = ok("[storage]\nsync = \"periodic\"\nsync_interval_ms = 25\n");
    assert_eq!(c.storage.sync, SyncMode::Periodic { interval_ms: 25 });
    let c = ok("[storage]\nsync = \"periodic\"\n");
    assert_eq!(c.storage.sync, SyncMode::Periodic { interval_ms: 10 });
    assert_eq!(
        errs("[storage]\nsync_interval_ms = 25\n"),
        ["r.toml:2: storage.sync_interval_ms: only applies with sync = \"periodic\""]
    );
    assert_eq!(
        errs("[storage]\nsync = \"periodic\"\nsync_interval_ms = 0\n"),
        ["r.toml:3: storage.sync_interval_ms: 0 is out of range 1..=60000"]
    );
}

#[test]
fn cross_field_limits_blame_the_key_that_was_set() {
    assert_eq!(
        errs("[mqtt]\nserver_keep_alive_when_zero = 4000\n"),
        ["r.toml:2: mqtt.server_keep_alive_when_zero: 4000 is larger than mqtt.max_keep_alive (3600)"]
    );
    // Lowering only the maximum pulls the keep-alive-0 default down with it.
    let cfg = rampart_config::Config::from_str("[mqtt]\nmax_keep_alive = 60\n", "r.toml", &[])
        .expect("valid");
    assert_eq!(cfg.mqtt.server_keep_alive_when_zero, 60);
    assert_eq!(
        errs("[mqtt]\nmax_queued_bytes = 1024\n"),
        ["r.toml:2: mqtt.max_queued_bytes: 1024 is smaller than mqtt.max_packet_size (1048576): a maximum-size message could never be queued"]
    );
    assert_eq!(
        errs("[mqtt]\nmax_packet_size = 268435455\n"),
        ["r.toml:2: mqtt.max_packet_size: 268435455 is larger than mqtt.max_queued_bytes (16777216): a maximum-size message could never be queued"]
    );
}

#[test]
fn many_errors_are_reported_at_once_in_file_order() {
    let text = r#"[node]
name = ""
[[listeners]]
name = "x"
kind = "tls"
bind = "0.0.0.0:8883"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
min_version = "1.1"
ciphers = ["TLS_RSA_WITH_RC4_128_SHA"]
[mqtt]
max_packet_size = 0
bogus = 1
[sys]
interval_secs = "10"
"#;
    let e = errs_env(text, &[("RAMPART_MQTT__MAX_QOS", "9")]);
    assert_eq!(e.len(), 7, "{e:#?}");
    assert!(e[0].starts_with("r.toml:2: node.name: "));
    assert!(e[1].starts_with("r.toml:10: listeners[0].tls.min_version: TLS 1.1 is not supported"));
    assert!(e[2].starts_with(
        "r.toml:11: listeners[0].tls.ciphers: \"TLS_RSA_WITH_RC4_128_SHA\" is not allowed"
    ));
    assert_eq!(
        e[3],
        "r.toml:13: mqtt.max_packet_size: 0 is out of range 64..=268435455"
    );
    assert_eq!(e[4], "r.toml:14: mqtt.bogus: unknown key");
    assert_eq!(
        e[5],
        "r.toml:16: sys.interval_secs: expected an integer, found the string \"10\""
    );
    assert_eq!(
        e[6],
        "env RAMPART_MQTT__MAX_QOS: mqtt.max_qos: 9 is out of range 0..=2"
    );
}

#[test]
fn long_values_are_clipped_in_messages() {
    let long = "x".repeat(1000);
    let e = errs(&format!("[log]\nlevel = \"{long}\"\n"));
    assert!(e[0].len() < 200, "{}", e[0]);
    assert!(e[0].ends_with("...\""));
}

#[test]
fn oversized_and_missing_files() {
    let big = format!("# {}\n", "x".repeat(MAX_CONFIG_FILE_BYTES as usize));
    assert_eq!(
        errs(&big),
        [format!(
            "r.toml: config is {} bytes; the limit is 1048576",
            big.len()
        )]
    );
    let e = Config::load(std::path::Path::new("/nonexistent/rampart.toml"), &[])
        .expect_err("missing file");
    assert_eq!(e.0.len(), 1);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rampart.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn error_display_format() {
    let e = ConfigError {
        file: "a.toml".into(),
        line: Some(3),
        key: "mqtt.max_qos".into(),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "a.toml:3: mqtt.max_qos: bad");
    let e = ConfigError {
        file: "env RAMPART_MQTT__MAX_QOS".into(),
        line: None,
        key: "mqtt.max_qos".into(),
        message: "bad".into(),
    };
    assert_eq!(
        e.to_string(),
        "env RAMPART_MQTT__MAX_QOS: mqtt.max_qos: bad"
    );
}
