//! Decodes the merged value tree into a [`Config`], collecting every error on the way.
//!
//! Each section is read through a [`Reader`] that records which keys it asked for; whatever is
//! left over is an unknown key. A bad value is reported and replaced by its default so that
//! decoding carries on and later errors are found in the same run.

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::tree::{apply_env, clip, Entry, Kind, Node, Origin, Table};
use crate::*;

mod auth;
mod limits;

/// Collects errors, each tied to the origin of the key or value at fault.
pub(crate) struct Cx<'a> {
    file: &'a str,
    errors: Vec<(ConfigError, u8, usize)>,
    /// Every key path the schema asked for (see [`schema_keys`]).
    asked: Vec<String>,
}

impl Cx<'_> {
    fn err(&mut self, origin: &Origin, key: impl Into<String>, message: impl Into<String>) {
        // Sort key: file errors by line, then errors without a line, then env errors.
        let (file, line, rank) = match origin {
            Origin::File(line) => (
                self.file.to_string(),
                *line,
                if line.is_some() { 0 } else { 1 },
            ),
            Origin::Default => (self.file.to_string(), None, 1),
            Origin::Env(var) => (format!("env {var}"), None, 2),
        };
        let seq = self.errors.len();
        self.errors.push((
            ConfigError {
                file,
                line,
                key: key.into(),
                message: message.into(),
            },
            rank,
            seq,
        ));
    }

    fn push(&mut self, e: ConfigError) {
        let rank = if e.file.starts_with("env ") { 2 } else { 1 };
        let seq = self.errors.len();
        self.errors.push((e, rank, seq));
    }
}

static EMPTY_TABLE: Table = Table {
    entries: Vec::new(),
};

/// Reads one table; remembers which keys were asked for so that the rest are unknown.
struct Reader<'t> {
    table: &'t Table,
    path: String,
    origin: Origin,
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'t> Reader<'t> {
    fn new(table: &'t Table, path: String, origin: Origin) -> Reader<'t> {
        Reader {
            table,
            path,
            origin,
            used: vec![false; table.entries.len()],
            known: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn entry(&mut self, key: &'static str) -> Option<&'t Entry> {
        self.known.push(key);
        let i = self.table.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        Some(&self.table.entries[i])
    }

    /// The origin to blame for a cross-field problem with `key`: its value, else the table.
    fn origin_of(&self, key: &str) -> Origin {
        self.table
            .get(key)
            .map(|e| e.node.origin.clone())
            .unwrap_or_else(|| self.origin.clone())
    }

    /// A sub-table; an absent one reads as empty so that its defaults apply.
    fn table(&mut self, cx: &mut Cx, key: &'static str) -> Reader<'t> {
        let path = self.path(key);
        match self.entry(key) {
            Some(Entry {
                node:
                    Node {
                        origin,
                        kind: Kind::Table(t),
                    },
                ..
            }) => Reader::new(t, path, origin.clone()),
            Some(e) => {
                cx.err(
                    &e.node.origin,
                    &path,
                    format!("expected a table, found {}", e.node.kind.noun()),
                );
                Reader::new(&EMPTY_TABLE, path, e.node.origin.clone())
            }
            None => Reader::new(&EMPTY_TABLE, path, self.origin.clone()),
        }
    }

    fn opt<T: FromNode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        let path = self.path(key);
        let e = self.entry(key)?;
        match T::from_node(&e.node) {
            Ok(v) => Some(v),
            Err(msg) => {
                cx.err(&e.node.origin, path, msg);
                None
            }
        }
    }

    fn get<T: FromNode>(&mut self, cx: &mut Cx, key: &'static str, default: T) -> T {
        self.opt(cx, key).unwrap_or(default)
    }

    /// An integer within `lo..=hi`. The range is checked on the wide value, so a negative or
    /// huge number reports the field's own range, not the range of its Rust type.
    fn opt_range<T: Int>(&mut self, cx: &mut Cx, key: &'static str, lo: T, hi: T) -> Option<T> {
        let path = self.path(key);
        let e = self.entry(key)?;
        let v = match int_value(&e.node) {
            Ok(v) => v,
            Err(msg) => {
                cx.err(&e.node.origin, path, msg);
                return None;
            }
        };
        if v < lo.into() || v > hi.into() {
            cx.err(&e.node.origin, path, range_msg(v, lo, hi));
            return None;
        }
        T::try_from(v).ok()
    }

    fn range<T: Int>(&mut self, cx: &mut Cx, key: &'static str, default: T, lo: T, hi: T) -> T {
        self.opt_range(cx, key, lo, hi).unwrap_or(default)
    }

    /// A string that must be one of `choices`.
    fn opt_enum<T: Copy>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let s = self.opt::<String>(cx, key)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(*v);
        }
        let list = choices
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let origin = self.origin_of(key);
        cx.err(
            &origin,
            self.path(key),
            format!("expected one of {list}, found \"{}\"", clip(&s)),
        );
        None
    }

    fn enum_or<T: Copy>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        default: T,
        choices: &[(&str, T)],
    ) -> T {
        self.opt_enum(cx, key, choices).unwrap_or(default)
    }

    /// A string parsed by `f`; `Err` values are reported at the value.
    fn opt_parse<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.opt::<String>(cx, key)?;
        match f(&s) {
            Ok(v) => Some(v),
            Err(msg) => {
                let origin = self.origin_of(key);
                cx.err(&origin, self.path(key), msg);
                None
            }
        }
    }

    /// Reports a problem involving `key` at its value (or at the table if it is not set).
    fn cross(&self, cx: &mut Cx, key: &str, message: String) {
        cx.err(&self.origin_of(key), self.path(key), message);
    }

    /// Reports a missing required key at the table's own position.
    fn missing(&self, cx: &mut Cx, key: &str) {
        cx.err(&self.origin, self.path(key), "missing required key");
    }

    fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// Reports every key nobody asked for.
    fn finish(self, cx: &mut Cx) {
        cx.asked.extend(self.known.iter().map(|k| self.path(k)));
        for (entry, used) in self.table.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let msg = match suggest(&entry.key, &self.known) {
                Some(s) => format!("unknown key; did you mean `{s}`?"),
                None => "unknown key".to_string(),
            };
            cx.err(&entry.key_origin, self.path(&entry.key), msg);
        }
    }
}

fn range_msg(v: impl Display, lo: impl Display, hi: impl Display) -> String {
    format!("{v} is out of range {lo}..={hi}")
}

/// The closest known key within edit distance 2, to catch typos.
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // Keys are short; a long unknown key is simply not a typo of a known one.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Conversion of one tree value to a field type. `Raw` (environment) text is parsed as that type.
trait FromNode: Sized {
    fn from_node(n: &Node) -> Result<Self, String>;
}

/// The unsigned field types; every one fits in an i128 together with any TOML integer.
trait Int: Copy + Display + Into<i128> + TryFrom<i128> {}
impl Int for u8 {}
impl Int for u16 {}
impl Int for u32 {}
impl Int for u64 {}

fn int_value(n: &Node) -> Result<i128, String> {
    match &n.kind {
        Kind::Int(i) => Ok(i128::from(*i)),
        Kind::Raw(s) => {
            // Environment text: digits with optional `_` separators, like TOML.
            let t = s.trim();
            let digits: String = t.chars().filter(|c| *c != '_').collect();
            if t.starts_with('_') || t.ends_with('_') || t.contains("__") {
                return Err(format!("expected an integer, found `{}`", clip(s)));
            }
            digits
                .parse::<i128>()
                .map_err(|_| format!("expected an integer, found `{}`", clip(s)))
        }
        other => Err(format!("expected an integer, found {}", other.noun())),
    }
}

impl FromNode for bool {
    fn from_node(n: &Node) -> Result<Self, String> {
        match &n.kind {
            Kind::Bool(b) => Ok(*b),
            Kind::Raw(s) => match s.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expected true or false, found `{}`", clip(s))),
            },
            other => Err(format!("expected a boolean, found {}", other.noun())),
        }
    }
}

impl FromNode for String {
    fn from_node(n: &Node) -> Result<Self, String> {
        match &n.kind {
            Kind::Str(s) | Kind::Raw(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", other.noun())),
        }
    }
}

impl FromNode for PathBuf {
    fn from_node(n: &Node) -> Result<Self, String> {
        let s = String::from_node(n)?;
        if s.is_empty() {
            return Err("path must not be empty".to_string());
        }
        Ok(PathBuf::from(s))
    }
}

impl FromNode for Vec<String> {
    fn from_node(n: &Node) -> Result<Self, String> {
        match &n.kind {
            Kind::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match &item.kind {
                    Kind::Str(s) => Ok(s.clone()),
                    other => Err(format!(
                        "expected an array of strings, found {} at index {i}",
                        other.noun()
                    )),
                })
                .collect(),
            // Environment lists are comma-separated.
            Kind::Raw(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()),
            other => Err(format!(
                "expected an array of strings, found {}",
                other.noun()
            )),
        }
    }
}

impl FromNode for Vec<PathBuf> {
    fn from_node(n: &Node) -> Result<Self, String> {
        let v = Vec::<String>::from_node(n)?;
        if v.iter().any(String::is_empty) {
            return Err("path must not be empty".to_string());
        }
        Ok(v.into_iter().map(PathBuf::from).collect())
    }
}

/// Every key the schema accepts, as dotted paths in TOML table form (`listeners.tls.ciphers`),
/// sorted. Found by running the decoder over a config that reaches every table.
pub(crate) fn schema_keys() -> Vec<String> {
    let text = "[[listeners]]\nkind = \"wss\"\n[listeners.tls]\n";
    let root = match crate::tree::parse_toml(text, "") {
        Ok(root) => root,
        Err(_) => return Vec::new(),
    };
    let mut cx = Cx {
        file: "",
        errors: Vec::new(),
        asked: Vec::new(),
    };
    let mut r = Reader::new(&root, String::new(), Origin::Default);
    let _ = decode_sections(&mut cx, &mut r);
    let _ = auth_sections(&mut cx, &mut r, &[]);
    let t = r.table(&mut cx, "limits");
    let _ = limits::limits_section(&mut cx, t);
    r.finish(&mut cx);
    let mut keys: Vec<String> = cx.asked.into_iter().map(|k| k.replace("[0]", "")).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Builds the config from a parsed file tree (empty in zero-config mode) plus env overrides.
pub(crate) fn build(
    mut root: Table,
    file: &str,
    env: &[(String, String)],
    source: Option<PathBuf>,
    local_only: bool,
) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        file,
        errors: Vec::new(),
        asked: Vec::new(),
    };
    if root.get("listeners").is_none() {
        root.insert("listeners", Origin::Default, default_listener_nodes());
    }
    let mut env_errors = Vec::new();
    let env_overrides = apply_env(&mut root, env, &mut env_errors);
    for e in env_errors {
        cx.push(e);
    }
    let root_origin = if local_only {
        Origin::Default
    } else {
        Origin::File(None)
    };
    let mut r = Reader::new(&root, String::new(), root_origin);
    let (node, log, mqtt, storage, sys, danger, listeners) = decode_sections(&mut cx, &mut r);
    let (auth, acl) = auth_sections(&mut cx, &mut r, &listeners);
    let t = r.table(&mut cx, "limits");
    let limits = limits::limits_section(&mut cx, t);
    r.finish(&mut cx);

    if !cx.errors.is_empty() {
        let mut errors = cx.errors;
        // File errors by line; environment errors by variable name, since the order of the
        // process environment means nothing.
        errors.sort_by(|a, b| {
            (a.1, a.0.line.unwrap_or(0), &a.0.file, a.2).cmp(&(
                b.1,
                b.0.line.unwrap_or(0),
                &b.0.file,
                b.2,
            ))
        });
        return Err(ConfigErrors(errors.into_iter().map(|e| e.0).collect()));
    }
    Ok(Config {
        source,
        local_only,
        env_overrides,
        node,
        log,
        listeners,
        mqtt,
        storage,
        sys,
        danger,
        auth,
        acl,
        limits,
    })
}

/// `[auth]` and `[acl]` (decoded in `decode/auth.rs`); after the listeners, which backends
/// refer to by name.
fn auth_sections(
    cx: &mut Cx,
    r: &mut Reader,
    listeners: &[ListenerConfig],
) -> (AuthConfig, AclConfig) {
    let t = r.table(cx, "auth");
    let auth = auth::auth_section(cx, t, listeners);
    let t = r.table(cx, "acl");
    let acl = auth::acl_section(cx, t);
    (auth, acl)
}

type Sections = (
    NodeConfig,
    LogConfig,
    MqttConfig,
    StorageConfig,
    SysConfig,
    DangerConfig,
    Vec<ListenerConfig>,
);

fn decode_sections(cx: &mut Cx, r: &mut Reader) -> Sections {
    let t = r.table(cx, "node");
    let node = node_section(cx, t);
    let t = r.table(cx, "log");
    let log = log_section(cx, t);
    let t = r.table(cx, "mqtt");
    let mqtt = mqtt_section(cx, t);
    let t = r.table(cx, "storage");
    let storage = storage_section(cx, t);
    let t = r.table(cx, "sys");
    let sys = sys_section(cx, t);
    let t = r.table(cx, "danger");
    let danger = danger_section(cx, t);
    let listeners = listeners_section(cx, r, &danger);
    (node, log, mqtt, storage, sys, danger, listeners)
}

/// The default listeners as tree nodes, so that `RAMPART_LISTENERS__0__BIND` can adjust them.
fn default_listener_nodes() -> Node {
    let str_node = |s: String| Node {
        origin: Origin::Default,
        kind: Kind::Str(s),
    };
    let items = ListenerConfig::local_defaults()
        .into_iter()
        .map(|l| {
            let mut t = Table::default();
            t.insert("name", Origin::Default, str_node(l.name));
            t.insert(
                "kind",
                Origin::Default,
                str_node(l.kind.as_str().to_string()),
            );
            t.insert("bind", Origin::Default, str_node(l.bind.to_string()));
            Node {
                origin: Origin::Default,
                kind: Kind::Table(t),
            }
        })
        .collect();
    Node {
        origin: Origin::Default,
        kind: Kind::Array(items),
    }
}

fn valid_name(s: &str) -> Result<String, String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
        return Err(format!(
            "\"{}\" is not a valid name: use 1 to 64 characters of A-Z a-z 0-9 . _ -",
            clip(s)
        ));
    }
    Ok(s.to_string())
}

fn node_section(cx: &mut Cx, mut r: Reader) -> NodeConfig {
    let d = NodeConfig::default();
    let out = NodeConfig {
        name: r.opt_parse(cx, "name", valid_name).unwrap_or(d.name),
        data_dir: r.get(cx, "data_dir", d.data_dir),
    };
    r.finish(cx);
    out
}

fn log_section(cx: &mut Cx, mut r: Reader) -> LogConfig {
    let d = LogConfig::default();
    let level = r
        .opt_parse(cx, "level", |s| {
            if LOG_LEVELS.contains(&s) {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "expected one of error, warn, info, debug, trace, found \"{}\"",
                    clip(s)
                ))
            }
        })
        .unwrap_or(d.level);
    let format = r.enum_or(
        cx,
        "format",
        d.format,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    r.finish(cx);
    LogConfig { level, format }
}

fn mqtt_section(cx: &mut Cx, mut r: Reader) -> MqttConfig {
    let d = MqttConfig::default();
    let mut m = MqttConfig {
        max_packet_size: r.range(cx, "max_packet_size", d.max_packet_size, 64, 268_435_455),
        max_topic_levels: r.range(cx, "max_topic_levels", d.max_topic_levels, 1, 128),
        max_topic_length: r.range(cx, "max_topic_length", d.max_topic_length, 1, u16::MAX),
        max_client_id_length: r.range(
            cx,
            "max_client_id_length",
            d.max_client_id_length,
            23,
            u16::MAX,
        ),
        receive_maximum: r.range(cx, "receive_maximum", d.receive_maximum, 1, u16::MAX),
        max_inflight: r.range(cx, "max_inflight", d.max_inflight, 1, u16::MAX),
        max_queued_messages: r.range(
            cx,
            "max_queued_messages",
            d.max_queued_messages,
            1,
            10_000_000,
        ),
        max_queued_bytes: r.range(cx, "max_queued_bytes", d.max_queued_bytes, 1024, 1 << 40),
        topic_alias_maximum: r.range(
            cx,
            "topic_alias_maximum",
            d.topic_alias_maximum,
            0,
            u16::MAX,
        ),
        max_keep_alive: r.range(cx, "max_keep_alive", d.max_keep_alive, 1, u16::MAX),
        server_keep_alive_when_zero: r.range(
            cx,
            "server_keep_alive_when_zero",
            d.server_keep_alive_when_zero,
            1,
            u16::MAX,
        ),
        max_idle_v3_secs: r.range(cx, "max_idle_v3_secs", d.max_idle_v3_secs, 1, 604_800),
        max_session_expiry: r.range(cx, "max_session_expiry", d.max_session_expiry, 0, u32::MAX),
        max_subscriptions_per_client: r.range(
            cx,
            "max_subscriptions_per_client",
            d.max_subscriptions_per_client,
            1,
            1_000_000,
        ),
        retained_max_count: r.range(
            cx,
            "retained_max_count",
            d.retained_max_count,
            1,
            1_000_000_000,
        ),
        retained_max_payload: r.range(
            cx,
            "retained_max_payload",
            d.retained_max_payload,
            0,
            268_435_455,
        ),
        max_qos: r.range(cx, "max_qos", d.max_qos, 0, 2),
        retain_available: r.get(cx, "retain_available", d.retain_available),
        wildcard_subscriptions: r.get(cx, "wildcard_subscriptions", d.wildcard_subscriptions),
        shared_subscriptions: r.get(cx, "shared_subscriptions", d.shared_subscriptions),
        subscription_identifiers: r.get(cx, "subscription_identifiers", d.subscription_identifiers),
        shared_subscription_strategy: r.enum_or(
            cx,
            "shared_subscription_strategy",
            d.shared_subscription_strategy,
            &[
                ("round_robin", SharedStrategy::RoundRobin),
                ("random", SharedStrategy::Random),
                ("hash_client_id", SharedStrategy::HashClientId),
                ("hash_topic", SharedStrategy::HashTopic),
                ("sticky", SharedStrategy::Sticky),
            ],
        ),
        connect_timeout_secs: r.range(cx, "connect_timeout_secs", d.connect_timeout_secs, 1, 300),
        max_connections: r.range(cx, "max_connections", d.max_connections, 0, 10_000_000),
    };
    // A cross-field error is reported on whichever of the two keys the file sets (the first
    // one if both), so that the line points at something the operator wrote.
    if m.server_keep_alive_when_zero > m.max_keep_alive {
        let (a, b) = (m.server_keep_alive_when_zero, m.max_keep_alive);
        if r.has("server_keep_alive_when_zero") {
            r.cross(
                cx,
                "server_keep_alive_when_zero",
                format!("{a} is larger than mqtt.max_keep_alive ({b})"),
            );
        } else {
            // Only the maximum was lowered: the default for keep-alive-0 clients follows it.
            m.server_keep_alive_when_zero = b;
        }
    }
    if m.max_queued_bytes < u64::from(m.max_packet_size) {
        let (a, b) = (m.max_queued_bytes, m.max_packet_size);
        let why = "a maximum-size message could never be queued";
        if r.has("max_queued_bytes") || !r.has("max_packet_size") {
            r.cross(
                cx,
                "max_queued_bytes",
                format!("{a} is smaller than mqtt.max_packet_size ({b}): {why}"),
            );
        } else {
            r.cross(
                cx,
                "max_packet_size",
                format!("{b} is larger than mqtt.max_queued_bytes ({a}): {why}"),
            );
        }
    }
    r.finish(cx);
    m
}

fn storage_section(cx: &mut Cx, mut r: Reader) -> StorageConfig {
    let backend = r.enum_or(
        cx,
        "backend",
        StorageBackend::default(),
        &[
            ("redb", StorageBackend::Redb),
            ("memory", StorageBackend::Memory),
        ],
    );
    let periodic = r.enum_or(cx, "sync", false, &[("always", false), ("periodic", true)]);
    let interval = r.opt_range::<u64>(cx, "sync_interval_ms", 1, 60_000);
    let sync = if periodic {
        SyncMode::Periodic {
            interval_ms: interval.unwrap_or(10),
        }
    } else {
        if r.has("sync_interval_ms") {
            let origin = r.origin_of("sync_interval_ms");
            cx.err(
                &origin,
                r.path("sync_interval_ms"),
                "only applies with sync = \"periodic\"",
            );
        }
        SyncMode::Always
    };
    r.finish(cx);
    StorageConfig { backend, sync }
}

fn sys_section(cx: &mut Cx, mut r: Reader) -> SysConfig {
    let d = SysConfig::default();
    let s = SysConfig {
        enabled: r.get(cx, "enabled", d.enabled),
        interval_secs: r.range(cx, "interval_secs", d.interval_secs, 1, 3600),
    };
    r.finish(cx);
    s
}

fn danger_section(cx: &mut Cx, mut r: Reader) -> DangerConfig {
    let d = DangerConfig::default();
    let out = DangerConfig {
        allow_plaintext: r.get(cx, "allow_plaintext", d.allow_plaintext),
        allow_anonymous: r.get(cx, "allow_anonymous", d.allow_anonymous),
    };
    r.finish(cx);
    out
}

/// A decoded listener plus the origins needed for cross-listener checks.
struct Decoded {
    cfg: ListenerConfig,
    path: String,
    name_origin: Origin,
    bind_origin: Origin,
}

fn listeners_section(cx: &mut Cx, root: &mut Reader, danger: &DangerConfig) -> Vec<ListenerConfig> {
    let Some(entry) = root.entry("listeners") else {
        return Vec::new();
    };
    let items = match &entry.node.kind {
        Kind::Array(items) => items,
        other => {
            cx.err(
                &entry.node.origin,
                "listeners",
                format!(
                    "expected an array of tables ([[listeners]]), found {}",
                    other.noun()
                ),
            );
            return Vec::new();
        }
    };
    if items.is_empty() {
        cx.err(
            &entry.node.origin,
            "listeners",
            "at least one listener is required",
        );
        return Vec::new();
    }
    let mut decoded: Vec<Decoded> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("listeners[{i}]");
        let Kind::Table(t) = &item.kind else {
            cx.err(
                &item.origin,
                &path,
                format!("expected a table, found {}", item.kind.noun()),
            );
            continue;
        };
        let r = Reader::new(t, path.clone(), item.origin.clone());
        if let Some(d) = listener(cx, r, danger) {
            decoded.push(d);
        }
    }
    for (i, l) in decoded.iter().enumerate() {
        if let Some(prev) = decoded[..i].iter().find(|p| p.cfg.name == l.cfg.name) {
            cx.err(
                &l.name_origin,
                format!("{}.name", l.path),
                format!(
                    "duplicate listener name \"{}\" (also used by {})",
                    clip(&l.cfg.name),
                    prev.path
                ),
            );
        }
        if let Some(prev) = decoded[..i]
            .iter()
            .find(|p| binds_conflict(p.cfg.bind, l.cfg.bind))
        {
            cx.err(
                &l.bind_origin,
                format!("{}.bind", l.path),
                format!(
                    "{} conflicts with {} of {} (\"{}\")",
                    l.cfg.bind,
                    prev.cfg.bind,
                    prev.path,
                    clip(&prev.cfg.name)
                ),
            );
        }
    }
    decoded.into_iter().map(|d| d.cfg).collect()
}

/// Two binds conflict on the same port when the addresses are equal, or when one is the
/// unspecified address of the other's family (it already covers every address).
fn binds_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    match (a.ip(), b.ip()) {
        (IpAddr::V4(x), IpAddr::V4(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        (IpAddr::V6(x), IpAddr::V6(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        _ => false,
    }
}

/// `IP:PORT`, or a bare `IP` (`[IPv6]` too) whose port is the listener kind's default
/// (`None` here, filled in once the kind is known).
fn parse_bind(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), Some(a.port())));
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        format!(
            "\"{}\" is not an IP:PORT address or an IP (examples: 0.0.0.0:8883, [::]:8883, 127.0.0.1:1883, 0.0.0.0 for the kind's default port)",
            clip(s)
        )
    })
}

fn listener(cx: &mut Cx, mut r: Reader, danger: &DangerConfig) -> Option<Decoded> {
    let name = r.opt_parse(cx, "name", valid_name);
    let kind = r.opt_enum(
        cx,
        "kind",
        &[
            ("tcp", ListenerKind::Tcp),
            ("tls", ListenerKind::Tls),
            ("ws", ListenerKind::Ws),
            ("wss", ListenerKind::Wss),
        ],
    );
    let bind_given = r.opt_parse(cx, "bind", parse_bind);
    let bind_bad = r.has("bind") && bind_given.is_none();
    // Without `bind`, loopback (local-only); without a port, the kind's default port.
    let bind = match (kind, bind_given) {
        (Some(k), Some((ip, port))) => Some(SocketAddr::new(ip, port.unwrap_or(k.default_port()))),
        (Some(k), None) if !bind_bad => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            k.default_port(),
        )),
        _ => None,
    };
    let max_connections = r.opt_range::<u32>(cx, "max_connections", 1, 10_000_000);
    let ws_path = r.opt_parse(cx, "ws_path", |s| {
        if s.starts_with('/') && s.len() <= 256 && s.chars().all(|c| c.is_ascii_graphic()) {
            Ok(s.to_string())
        } else {
            Err(format!(
                "\"{}\" is not a valid path: it must start with / and contain only visible ASCII (at most 256 bytes)",
                clip(s)
            ))
        }
    });
    let proxy_protocol = r.get(cx, "proxy_protocol", false);
    let mut trusted_proxies = Vec::new();
    let mut bad_proxy = false;
    for p in r.get::<Vec<String>>(cx, "trusted_proxies", Vec::new()) {
        match IpNet::parse(&p) {
            Ok(n) => trusted_proxies.push(n),
            Err(msg) => {
                bad_proxy = true;
                let origin = r.origin_of("trusted_proxies");
                cx.err(&origin, r.path("trusted_proxies"), msg);
            }
        }
    }
    if proxy_protocol && trusted_proxies.is_empty() && !bad_proxy {
        let origin = r.origin_of("proxy_protocol");
        cx.err(
            &origin,
            r.path("trusted_proxies"),
            "proxy_protocol = true needs trusted_proxies (the load balancers' addresses or CIDR ranges): a PROXY header from any other peer is refused",
        );
    }
    if !proxy_protocol && r.has("trusted_proxies") {
        let origin = r.origin_of("trusted_proxies");
        cx.err(
            &origin,
            r.path("trusted_proxies"),
            "only applies with proxy_protocol = true",
        );
    }
    let ws_allowed_origins = r.get::<Vec<String>>(cx, "ws_allowed_origins", Vec::new());
    let tls_origin = r.origin_of("tls");
    // A `tls` value of the wrong type is reported once (by `table`), not again as a table
    // missing cert_file and key_file.
    let tls_present = r.has("tls");
    let tls_is_table = matches!(
        r.table.get("tls").map(|e| &e.node.kind),
        Some(Kind::Table(_))
    );
    let tls = {
        let tr = r.table(cx, "tls");
        if tls_is_table {
            tls_section(cx, tr)
        } else {
            None
        }
    };
    for key in ["name", "kind"] {
        if !r.has(key) {
            r.missing(cx, key);
        }
    }
    if let Some(kind) = kind {
        if kind.is_tls() && !tls_present {
            cx.err(
                &r.origin,
                r.path("tls"),
                format!(
                    "kind \"{kind}\" needs a [listeners.tls] table with cert_file and key_file"
                ),
            );
        }
        if !kind.is_tls() && tls_present {
            cx.err(
                &tls_origin,
                r.path("tls"),
                format!("kind \"{kind}\" is plaintext; tls settings need kind \"tls\" or \"wss\""),
            );
        }
        for key in ["ws_path", "ws_allowed_origins"] {
            if !kind.is_websocket() && r.has(key) {
                let origin = r.origin_of(key);
                cx.err(
                    &origin,
                    r.path(key),
                    format!("only applies to kind \"ws\" or \"wss\", not \"{kind}\""),
                );
            }
        }
        if let Some(bind) = bind {
            if !kind.is_tls() && !bind.ip().is_loopback() && !danger.allow_plaintext {
                let origin = r.origin_of("bind");
                cx.err(
                    &origin,
                    r.path("bind"),
                    format!(
                        "plaintext ({kind}) listener on non-loopback address {bind}: use kind \"tls\" or \"wss\", bind to 127.0.0.1 or [::1], or set danger.allow_plaintext = true (H3)"
                    ),
                );
            }
        }
    }
    let name_origin = r.origin_of("name");
    let bind_origin = r.origin_of("bind");
    let path = r.path.clone();
    r.finish(cx);
    Some(Decoded {
        cfg: ListenerConfig {
            name: name?,
            kind: kind?,
            bind: bind?,
            max_connections,
            ws_path: ws_path.unwrap_or_else(|| DEFAULT_WS_PATH.to_string()),
            proxy_protocol,
            trusted_proxies,
            ws_allowed_origins,
            tls: if kind?.is_tls() { tls } else { None },
        },
        path,
        name_origin,
        bind_origin,
    })
}

fn tls_section(cx: &mut Cx, mut r: Reader) -> Option<TlsListenerConfig> {
    let cert_file = r.opt::<PathBuf>(cx, "cert_file");
    let key_file = r.opt::<PathBuf>(cx, "key_file");
    let ca_file = r.opt::<PathBuf>(cx, "ca_file");
    let client_auth = r.enum_or(
        cx,
        "client_auth",
        ClientAuth::None,
        &[
            ("none", ClientAuth::None),
            ("optional", ClientAuth::Optional),
            ("required", ClientAuth::Required),
        ],
    );
    let crl_files = r.get::<Vec<PathBuf>>(cx, "crl_files", Vec::new());
    let min_version = r
        .opt_parse(cx, "min_version", |s| match s {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            "1.0" | "1.1" => Err(format!(
                "TLS {s} is not supported: TLS 1.0 and 1.1 are insecure and cannot be enabled (T1); use \"1.2\" or \"1.3\""
            )),
            _ => Err(format!("expected \"1.2\" or \"1.3\", found \"{}\"", clip(s))),
        })
        .unwrap_or(TlsVersion::V1_2);
    let ciphers = r.get::<Vec<String>>(cx, "ciphers", Vec::new());
    let verify_depth = r.range::<u8>(cx, "verify_depth", 10, 1, 32);
    let groups = r.get::<Vec<String>>(cx, "groups", Vec::new());
    for g in &groups {
        if !TLS_GROUPS.contains(&g.as_str()) {
            let origin = r.origin_of("groups");
            cx.err(
                &origin,
                r.path("groups"),
                format!(
                    "\"{}\" is not allowed: key exchange is ECDHE with one of {}",
                    clip(g),
                    TLS_GROUPS.join(", ")
                ),
            );
        }
    }
    let handshake_timeout_secs = r.range::<u32>(cx, "handshake_timeout_secs", 10, 1, 120);
    let sni_cert_files = r.get::<Vec<PathBuf>>(cx, "sni_cert_files", Vec::new());
    let sni_key_files = r.get::<Vec<PathBuf>>(cx, "sni_key_files", Vec::new());
    if sni_cert_files.len() != sni_key_files.len() {
        let origin = r.origin_of("sni_key_files");
        cx.err(
            &origin,
            r.path("sni_key_files"),
            format!(
                "{} sni_cert_files but {} sni_key_files: each certificate needs its key, in the same order",
                sni_cert_files.len(),
                sni_key_files.len()
            ),
        );
    }
    let crl_expired = r.enum_or(
        cx,
        "crl_expired",
        CrlExpired::Deny,
        &[("deny", CrlExpired::Deny), ("allow", CrlExpired::Allow)],
    );
    let crl_fetch = r.get(cx, "crl_fetch", false);
    let crl_refresh_secs = r.range::<u32>(cx, "crl_refresh_secs", 3600, 60, 86_400);
    let ocsp_stapling = r.get(cx, "ocsp_stapling", true);
    let ocsp_url = r.opt_parse(cx, "ocsp_url", |s| {
        if (s.starts_with("http://") || s.starts_with("https://")) && s.len() <= 2048 {
            Ok(s.to_string())
        } else {
            Err(format!(
                "\"{}\" is not an http:// or https:// URL of at most 2048 bytes",
                clip(s)
            ))
        }
    });
    let fetch_ca_file = r.opt::<PathBuf>(cx, "fetch_ca_file");
    let fetch_system_roots = r.get(cx, "fetch_system_roots", true);
    let reload_poll_secs = r.range::<u32>(cx, "reload_poll_secs", 5, 1, 3600);
    let client_id_from = r.opt_parse(cx, "client_id_from", |s| {
        crate::auth::CertField::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("expected \"cn\", \"san\" or \"dn\", found \"{}\"", clip(s)))
    });
    if client_auth == ClientAuth::None && client_id_from.is_some() {
        let origin = r.origin_of("client_id_from");
        cx.err(
            &origin,
            r.path("client_id_from"),
            "client ids come from client certificates: set client_auth = \"optional\" or \"required\"",
        );
    }

    for key in ["cert_file", "key_file"] {
        if !r.has(key) {
            r.missing(cx, key);
        }
    }
    if client_auth != ClientAuth::None && !r.has("ca_file") {
        let origin = r.origin_of("client_auth");
        cx.err(
            &origin,
            r.path("ca_file"),
            format!(
                "client_auth = \"{}\" needs ca_file (the CA bundle that client certificates must chain to)",
                client_auth.as_str()
            ),
        );
    }
    if client_auth == ClientAuth::None && crl_fetch {
        let origin = r.origin_of("crl_fetch");
        cx.err(
            &origin,
            r.path("crl_fetch"),
            "CRLs check client certificates: set client_auth = \"optional\" or \"required\"",
        );
    }
    if client_auth == ClientAuth::None && !crl_files.is_empty() {
        let origin = r.origin_of("crl_files");
        cx.err(
            &origin,
            r.path("crl_files"),
            "CRLs check client certificates: set client_auth = \"optional\" or \"required\"",
        );
    }
    let mut bad = false;
    for c in &ciphers {
        if !TLS13_CIPHERS.contains(&c.as_str()) && !TLS12_CIPHERS.contains(&c.as_str()) {
            bad = true;
            let origin = r.origin_of("ciphers");
            cx.err(
                &origin,
                r.path("ciphers"),
                format!(
                    "\"{}\" is not allowed: only AEAD suites with forward secrecy (T2), by IANA name: {}",
                    clip(c),
                    TLS13_CIPHERS
                        .iter()
                        .chain(TLS12_CIPHERS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    if !bad && !ciphers.is_empty() {
        let has13 = ciphers.iter().any(|c| TLS13_CIPHERS.contains(&c.as_str()));
        let has12 = ciphers.iter().any(|c| TLS12_CIPHERS.contains(&c.as_str()));
        let origin = r.origin_of("ciphers");
        if !has13 {
            cx.err(
                &origin,
                r.path("ciphers"),
                "no TLS 1.3 suite listed: include at least one of TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256",
            );
        }
        if !has12 && min_version == TlsVersion::V1_2 {
            cx.err(
                &origin,
                r.path("ciphers"),
                "no TLS 1.2 suite listed while min_version = \"1.2\": add a TLS_ECDHE_* suite or set min_version = \"1.3\"",
            );
        }
    }
    r.finish(cx);
    Some(TlsListenerConfig {
        cert_file: cert_file?,
        key_file: key_file?,
        ca_file,
        client_auth,
        crl_files,
        min_version,
        ciphers,
        verify_depth,
        groups,
        handshake_timeout_secs,
        sni_cert_files,
        sni_key_files,
        crl_expired,
        crl_fetch,
        crl_refresh_secs,
        ocsp_stapling,
        ocsp_url,
        fetch_ca_file,
        fetch_system_roots,
        reload_poll_secs,
        client_id_from,
    })
}
