//! Environment overrides, defaults, zero-config mode and `describe()`.

use std::net::SocketAddr;
use std::path::PathBuf;

use rampart_config::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lines(e: ConfigErrors) -> Vec<String> {
    e.0.iter().map(ToString::to_string).collect()
}

const FILE: &str = r#"[node]
name = "n1"
[[listeners]]
name = "mqtts"
kind = "tls"
bind = "0.0.0.0:8883"
[listeners.tls]
cert_file = "c.pem"
key_file = "k.pem"
[mqtt]
max_packet_size = 4096
"#;

#[test]
fn env_overrides_every_type() {
    let e = env(&[
        ("RAMPART_MQTT__MAX_PACKET_SIZE", "2048"),
        ("RAMPART_MQTT__MAX_QUEUED_BYTES", "1_000_000"),
        ("RAMPART_MQTT__RETAIN_AVAILABLE", "false"),
        ("RAMPART_MQTT__SHARED_SUBSCRIPTION_STRATEGY", "sticky"),
        ("RAMPART_NODE__DATA_DIR", "/var/lib/rampart"),
        ("RAMPART_NODE__NAME", "123"),
        ("RAMPART_LOG__FORMAT", "json"),
        ("RAMPART_LISTENERS__0__BIND", "10.0.0.5:8883"),
        (
            "RAMPART_LISTENERS__0__TLS__CIPHERS",
            "TLS_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ),
        ("RAMPART_LISTENERS__0__TLS__CLIENT_AUTH", "required"),
        ("RAMPART_LISTENERS__0__TLS__CA_FILE", "/ca.pem"),
        ("RAMPART_STORAGE__SYNC", "periodic"),
        ("RAMPART_STORAGE__SYNC_INTERVAL_MS", "50"),
        ("RAMPART_CONFIG", "/etc/rampart.toml"),
        ("HOME", "/root"),
    ]);
    let c = Config::from_str(FILE, "r.toml", &e).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.mqtt.max_packet_size, 2048);
    assert_eq!(c.mqtt.max_queued_bytes, 1_000_000);
    assert!(!c.mqtt.retain_available);
    assert_eq!(c.mqtt.shared_subscription_strategy, SharedStrategy::Sticky);
    assert_eq!(c.node.data_dir, PathBuf::from("/var/lib/rampart"));
    // A string field takes the text as is, even when it looks like a number.
    assert_eq!(c.node.name, "123");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.listeners[0].bind,
        "10.0.0.5:8883".parse::<SocketAddr>().expect("addr")
    );
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(
        tls.ciphers,
        [
            "TLS_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        ]
    );
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(c.storage.sync, SyncMode::Periodic { interval_ms: 50 });
    // Names only, sorted; reserved and foreign variables are not overrides.
    assert_eq!(c.env_overrides.len(), 13);
    assert!(!c
        .env_overrides
        .iter()
        .any(|v| v == "RAMPART_CONFIG" || v == "HOME"));
    assert!(c
        .describe()
        .contains("env overrides: RAMPART_LISTENERS__0__BIND"));
}

#[test]
fn env_can_append_a_listener() {
    let e = env(&[
        ("RAMPART_LISTENERS__1__NAME", "local"),
        ("RAMPART_LISTENERS__1__KIND", "tcp"),
        ("RAMPART_LISTENERS__1__BIND", "127.0.0.1:1883"),
    ]);
    let c = Config::from_str(FILE, "r.toml", &e).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].name, "local");
}

#[test]
fn bad_env_overrides_name_the_variable() {
    let e = env(&[
        ("RAMPART_MQTT__MAX_PACKET_SIZE", "big"),
        ("RAMPART_MQTT__MAX_TOPIC_LEVELS", "0"),
        ("RAMPART_MQTT__RETAIN_AVAILABLE", "yes"),
        ("RAMPART_MQTT__MAX_PACKETSIZE", "1"),
        ("RAMPART_NOPE__X", "1"),
        ("RAMPART_DEBUG", "1"),
        ("RAMPART_MQTT_MAX_QOS", "1"),
        ("RAMPART_MQTT____X", "1"),
        ("RAMPART_LISTENERS__5__BIND", "127.0.0.1:1"),
        ("RAMPART_LISTENERS__NAME", "x"),
        ("RAMPART_MQTT__MAX_QOS__X", "1"),
        ("RAMPART_LISTENERS__0__BIND", "0.0.0.0:x"),
        ("RAMPART_MQTT", "x"),
    ]);
    let got = lines(Config::from_str(FILE, "r.toml", &e).expect_err("must fail"));
    assert_eq!(
        got,
        [
            "env RAMPART_LISTENERS__0__BIND: listeners[0].bind: \"0.0.0.0:x\" is not an IP:PORT address or an IP (examples: 0.0.0.0:8883, [::]:8883, 127.0.0.1:1883, 0.0.0.0 for the kind's default port)",
            "env RAMPART_LISTENERS__5__BIND: listeners[5].bind: index 5 is past the end of `listeners` (1 entries); the next new entry is 1",
            "env RAMPART_LISTENERS__NAME: listeners.name: `listeners` is a list: the segment after it must be an index such as 0",
            "env RAMPART_MQTT: unknown RAMPART_ variable; overrides are spelled RAMPART_<SECTION>__<KEY>, e.g. RAMPART_MQTT__MAX_PACKET_SIZE",
            "env RAMPART_MQTT_MAX_QOS: unknown RAMPART_ variable; overrides are spelled RAMPART_<SECTION>__<KEY>, e.g. RAMPART_MQTT__MAX_PACKET_SIZE",
            "env RAMPART_MQTT__MAX_PACKETSIZE: mqtt.max_packetsize: unknown key; did you mean `max_packet_size`?",
            "env RAMPART_MQTT__MAX_PACKET_SIZE: mqtt.max_packet_size: expected an integer, found `big`",
            "env RAMPART_MQTT__MAX_QOS__X: mqtt.max_qos: expected an integer, found a table",
            "env RAMPART_MQTT__MAX_TOPIC_LEVELS: mqtt.max_topic_levels: 0 is out of range 1..=128",
            "env RAMPART_MQTT__RETAIN_AVAILABLE: mqtt.retain_available: expected true or false, found `yes`",
            "env RAMPART_MQTT____X: mqtt..x: empty key segment in variable name",
            "env RAMPART_NOPE__X: nope: unknown key; did you mean `node`?",
        ]
    );
    // A variable that addresses inside an existing scalar cannot be placed at all.
    let got = lines(
        Config::from_str(
            FILE,
            "r.toml",
            &env(&[("RAMPART_MQTT__MAX_PACKET_SIZE__X", "1")]),
        )
        .expect_err("must fail"),
    );
    assert_eq!(
        got,
        ["env RAMPART_MQTT__MAX_PACKET_SIZE__X: mqtt.max_packet_size.x: `max_packet_size` is not a table"]
    );
}

#[test]
fn defaults() {
    let c = Config::from_str("", "empty.toml", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.local_only);
    assert_eq!(c.source, Some(PathBuf::from("empty.toml")));
    assert_eq!(c.node.name, "rampart");
    assert_eq!(c.node.data_dir, PathBuf::from("./data"));
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    // No [[listeners]]: loopback only, like zero-config mode.
    assert_eq!(c.listeners, ListenerConfig::local_defaults());
    assert_eq!(c.storage.backend, StorageBackend::Redb);
    assert_eq!(c.storage.sync, SyncMode::Always);
    assert!(c.sys.enabled);
    assert_eq!(c.sys.interval_secs, 10);
    assert!(!c.danger.allow_plaintext);
    assert!(!c.danger.allow_anonymous);
    let m = &c.mqtt;
    assert_eq!(m.max_packet_size, 1_048_576);
    assert_eq!(m.max_topic_levels, 10);
    assert_eq!(m.max_topic_length, 1024);
    assert_eq!(m.max_client_id_length, 128);
    assert_eq!(m.receive_maximum, 256);
    assert_eq!(m.max_inflight, 128);
    assert_eq!(m.max_queued_messages, 1000);
    assert_eq!(m.max_queued_bytes, 16 * 1024 * 1024);
    assert_eq!(m.topic_alias_maximum, 64);
    assert_eq!(m.max_keep_alive, 3600);
    assert_eq!(m.server_keep_alive_when_zero, 300);
    assert_eq!(m.max_idle_v3_secs, 3600);
    assert_eq!(m.max_session_expiry, 604_800);
    assert_eq!(m.max_subscriptions_per_client, 256);
    assert_eq!(m.retained_max_count, 1_000_000);
    assert_eq!(m.retained_max_payload, 1_048_576);
    assert_eq!(m.max_qos, 2);
    assert!(m.retain_available && m.wildcard_subscriptions);
    assert!(m.shared_subscriptions && m.subscription_identifiers);
    assert_eq!(m.shared_subscription_strategy, SharedStrategy::RoundRobin);
    assert_eq!(m.connect_timeout_secs, 10);
    assert_eq!(m.max_connections, 0);
    assert_eq!(*m, MqttConfig::default());

    let tls = Config::from_str(
        "[[listeners]]\nname = \"t\"\nkind = \"wss\"\nbind = \"0.0.0.0:8084\"\n[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
        "r.toml",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let l = &tls.listeners[0];
    assert_eq!(l.ws_path, "/mqtt");
    assert!(!l.proxy_protocol);
    assert_eq!(l.max_connections, None);
    let t = l.tls.as_ref().expect("tls");
    assert_eq!(t.client_auth, ClientAuth::None);
    assert_eq!(t.min_version, TlsVersion::V1_2);
    assert!(t.ciphers.is_empty() && t.crl_files.is_empty() && t.ca_file.is_none());
    assert_eq!(t.verify_depth, 10);
}

#[test]
fn local_only_mode() {
    let c = Config::local_only();
    assert!(c.local_only);
    assert_eq!(c.source, None);
    let binds: Vec<String> = c.listeners.iter().map(|l| l.bind.to_string()).collect();
    assert_eq!(binds, ["127.0.0.1:1883", "[::1]:1883"]);
    assert!(c.listeners.iter().all(|l| l.kind == ListenerKind::Tcp));
    assert_eq!(c.node.data_dir, PathBuf::from("./data"));
    assert_eq!(Config::local_only_with_env(&[]), Ok(c));
}

#[test]
fn local_only_with_env() {
    let c = Config::local_only_with_env(&env(&[
        ("RAMPART_LISTENERS__0__BIND", "127.0.0.1:11883"),
        ("RAMPART_STORAGE__BACKEND", "memory"),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.local_only);
    assert_eq!(c.listeners[0].bind.port(), 11883);
    assert_eq!(c.listeners[1].bind.to_string(), "[::1]:1883");
    assert_eq!(c.storage.backend, StorageBackend::Memory);

    let e = Config::local_only_with_env(&env(&[
        ("RAMPART_LISTENERS__0__BIND", "0.0.0.0:1883"),
        ("RAMPART_SYS__INTERVAL_SECS", "0"),
    ]))
    .expect_err("must fail");
    assert_eq!(
        lines(e),
        [
            "env RAMPART_LISTENERS__0__BIND: listeners[0].bind: plaintext (tcp) listener on non-loopback address 0.0.0.0:1883: use kind \"tls\" or \"wss\", bind to 127.0.0.1 or [::1], or set danger.allow_plaintext = true (H3)",
            "env RAMPART_SYS__INTERVAL_SECS: sys.interval_secs: 0 is out of range 1..=3600",
        ]
    );
}

#[test]
fn syntax_error_and_env_errors_together() {
    let got = lines(
        Config::from_str("[mqtt\n", "r.toml", &env(&[("RAMPART_MQTT_X", "1")])).expect_err("fail"),
    );
    assert_eq!(got.len(), 2);
    assert!(
        got[0].starts_with("r.toml:1: TOML syntax error: "),
        "{got:?}"
    );
    assert!(got[1].starts_with("env RAMPART_MQTT_X: unknown RAMPART_ variable"));
}

#[test]
fn derived_max_connections() {
    assert_eq!(derive_max_connections(Some(1_048_576)), 1_048_576 - 52_428);
    assert_eq!(derive_max_connections(Some(1024)), 1024 - 64);
    assert_eq!(derive_max_connections(Some(10)), 1);
    assert_eq!(derive_max_connections(None), FALLBACK_MAX_CONNECTIONS);
    let mut m = MqttConfig::default();
    assert_eq!(m.effective_max_connections(Some(20_000)), 19_000);
    m.max_connections = 5;
    assert_eq!(m.effective_max_connections(Some(20_000)), 5);
}

#[test]
fn describe_lists_listeners_and_every_limit() {
    let c = Config::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/rampart.example.toml"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = c.describe_with_nofile(Some(1_048_576));
    let m = &c.mqtt;
    for (key, value) in [
        ("max_packet_size", m.max_packet_size.to_string()),
        ("max_topic_levels", m.max_topic_levels.to_string()),
        ("max_topic_length", m.max_topic_length.to_string()),
        ("max_client_id_length", m.max_client_id_length.to_string()),
        ("receive_maximum", m.receive_maximum.to_string()),
        ("max_inflight", m.max_inflight.to_string()),
        ("max_queued_messages", m.max_queued_messages.to_string()),
        ("max_queued_bytes", m.max_queued_bytes.to_string()),
        ("topic_alias_maximum", m.topic_alias_maximum.to_string()),
        ("max_keep_alive", m.max_keep_alive.to_string()),
        (
            "server_keep_alive_when_zero",
            m.server_keep_alive_when_zero.to_string(),
        ),
        ("max_idle_v3_secs", m.max_idle_v3_secs.to_string()),
        ("max_session_expiry", m.max_session_expiry.to_string()),
        (
            "max_subscriptions_per_client",
            m.max_subscriptions_per_client.to_string(),
        ),
        ("retained_max_count", m.retained_max_count.to_string()),
        ("retained_max_payload", m.retained_max_payload.to_string()),
        ("max_qos", m.max_qos.to_string()),
        ("retain_available", m.retain_available.to_string()),
        (
            "wildcard_subscriptions",
            m.wildcard_subscriptions.to_string(),
        ),
        ("shared_subscriptions", m.shared_subscriptions.to_string()),
        (
            "subscription_identifiers",
            m.subscription_identifiers.to_string(),
        ),
        ("shared_subscription_strategy", "round_robin".to_string()),
        ("connect_timeout_secs", m.connect_timeout_secs.to_string()),
        ("max_connections", "0 (derived: 996148".to_string()),
    ] {
        let want = format!("  mqtt.{key} = {value}");
        assert!(d.contains(&want), "missing `{want}` in:\n{d}");
    }
    for want in [
        "  mqtts: tls on 0.0.0.0:8883, max_connections = 500000",
        "client_auth = required",
        "verify_depth = 4",
        "  mqtt-wss: wss on 0.0.0.0:8084 path /mqtt, max_connections = 100000",
        "  local: tcp on 127.0.0.1:1883, max_connections = 64, proxy_protocol = false, plaintext (loopback)",
        "storage.backend = redb",
        "storage.sync = always",
        "sys.interval_secs = 10",
        "danger.allow_plaintext = false",
        "node.data_dir = /var/lib/rampart",
    ] {
        assert!(d.contains(want), "missing `{want}` in:\n{d}");
    }
    let d = Config::local_only().describe_with_nofile(None);
    assert!(
        d.contains(
            "mqtt.max_connections = 0 (derived: 1024; the open-file limit could not be read)"
        ),
        "{d}"
    );
    assert!(d.contains("mode: local-only"));
}
