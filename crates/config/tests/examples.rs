//! The shipped example configs must always parse.

use std::path::PathBuf;

use rampart_config::*;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn production_example_parses() {
    let path = repo_file("config/rampart.example.toml");
    let cfg = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.local_only);
    assert_eq!(cfg.source.as_deref(), Some(path.as_path()));
    assert_eq!(cfg.node.name, "rampart-1");
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert_eq!(cfg.listeners.len(), 3);
    let mqtts = &cfg.listeners[0];
    assert_eq!(mqtts.kind, ListenerKind::Tls);
    assert_eq!(mqtts.bind.port(), 8883);
    let tls = mqtts.tls.as_ref().expect("tls");
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.verify_depth, 4);
    assert_eq!(tls.ciphers.len(), 9);
    let wss = &cfg.listeners[1];
    assert_eq!(wss.kind, ListenerKind::Wss);
    assert_eq!(wss.bind.port(), 8084);
    assert_eq!(wss.tls.as_ref().expect("tls").min_version, TlsVersion::V1_3);
    assert_eq!(cfg.storage.backend, StorageBackend::Redb);
    assert_eq!(cfg.storage.sync, SyncMode::Always);
    assert!(!cfg.danger.allow_plaintext && !cfg.danger.allow_anonymous);
}

#[test]
fn dev_example_parses() {
    let cfg = Config::load(&repo_file("config/dev.toml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.storage.backend, StorageBackend::Memory);
    assert!(cfg.listeners.iter().all(|l| l.bind.ip().is_loopback()));
    assert_eq!(cfg.log.level, "debug");
}

#[test]
fn schema_keys_cover_every_section() {
    let keys = schema_keys();
    for k in [
        "node.name",
        "log.format",
        "listeners",
        "listeners.bind",
        "listeners.tls.verify_depth",
        "mqtt.max_connections",
        "storage.sync_interval_ms",
        "sys.interval_secs",
        "danger.allow_anonymous",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    assert!(keys.len() > 40, "{keys:?}");
}

/// The production example documents every key the schema accepts (as a setting, or in a
/// comment when the key cannot be combined with the settings shown).
#[test]
fn production_example_mentions_every_key() {
    let text = std::fs::read_to_string(repo_file("config/rampart.example.toml")).expect("read");
    for key in schema_keys() {
        let leaf = key.rsplit('.').next().unwrap_or(&key);
        let mentioned = text.contains(&format!("{leaf} =")) || text.contains(&format!("[{key}]"));
        assert!(mentioned, "{key} is not described in rampart.example.toml");
    }
}
