//! rampart-config: the typed configuration schema.
//!
//! It owns the meaning of every configuration key, its default, its allowed range and the
//! worst-case cost of each limit. It parses a TOML file plus `RAMPART_<SECTION>__<KEY>`
//! environment overrides and reports *every* problem at once as `file:line: key: message`.
//!
//! It never opens sockets, never reads certificate contents and never starts anything: the
//! broker decides what to do with a valid [`Config`]. The only I/O here is reading the config
//! file itself and, for [`Config::describe`], the process's open-file limit.
//!
//! # Sources, in order of precedence
//! 1. Environment: `RAMPART_<SECTION>__<KEY>=value`, segments joined by `__`, list elements
//!    by index: `RAMPART_MQTT__MAX_PACKET_SIZE=2048`, `RAMPART_LISTENERS__0__BIND=0.0.0.0:8883`,
//!    `RAMPART_LISTENERS__0__TLS__CIPHERS=A,B` (lists are comma-separated). The text takes
//!    the type of the field it lands on. Index `n` = current length appends a listener.
//!    Unknown `RAMPART_<SECTION>...` variables are errors, except [`RESERVED_ENV_VARS`];
//!    other `RAMPART_` names without `__` that match no section are left alone.
//! 2. The TOML file ([`Config::load`], [`Config::from_str`]), or nothing in zero-config mode
//!    ([`Config::local_only`], [`Config::local_only_with_env`]).
//! 3. Built-in defaults; without `[[listeners]]` the listeners are plain MQTT on
//!    127.0.0.1:1883 and `[::1]:1883` (addressable from env as listeners 0 and 1).
//!
//! # Errors
//! Syntax errors, unknown keys (at any depth), wrong types, out-of-range values and
//! cross-field problems (duplicate listeners, TLS policy T1/T2, plaintext exposure H3, ...)
//! are all collected into one [`ConfigErrors`], sorted by line, env errors last by variable
//! name. Each is `file:line: key: message`, or `env RAMPART_X: key: message`.
//! Keys are spelled `mqtt.max_qos`, `listeners[1].tls.min_version`.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

mod auth;
mod decode;
mod describe;
mod limits;
mod secret;
mod tree;

pub use auth::*;
pub use limits::*;
pub use secret::Secret;

/// Prefix of environment overrides: `RAMPART_MQTT__MAX_PACKET_SIZE=2048`.
pub const ENV_PREFIX: &str = "RAMPART_";

/// `RAMPART_` variables that are not config overrides (they belong to the command line) and
/// are therefore not reported as unknown.
pub const RESERVED_ENV_VARS: &[&str] = &["RAMPART_CONFIG", "RAMPART_LOG"];

/// Top-level config sections; a `RAMPART_` variable without `__` that starts with one of
/// these (e.g. `RAMPART_MQTT_MAX_PACKET_SIZE`) is reported as a misspelt override.
pub const SECTIONS: &[&str] = &[
    "node",
    "log",
    "listeners",
    "mqtt",
    "storage",
    "sys",
    "danger",
    "auth",
    "acl",
    "limits",
];

/// Config files larger than this are refused before parsing: a real config is a few KiB, and
/// the parsed tree costs several times the text size.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// File name used in error messages in zero-config mode (errors then come from env only).
pub const ZERO_CONFIG_NAME: &str = "<zero-config>";

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was loaded from; `None` in zero-config mode.
    pub source: Option<PathBuf>,
    /// True in zero-config mode (no file given): loopback listeners only, for development.
    pub local_only: bool,
    /// Names of the `RAMPART_*` variables that overrode a setting (values are never kept here:
    /// future settings will include secrets).
    pub env_overrides: Vec<String>,
    pub node: NodeConfig,
    pub log: LogConfig,
    /// Never empty. Defaults to plain MQTT on 127.0.0.1:1883 and `[::1]:1883`.
    pub listeners: Vec<ListenerConfig>,
    pub mqtt: MqttConfig,
    pub storage: StorageConfig,
    pub sys: SysConfig,
    pub danger: DangerConfig,
    /// Authentication chain, brute-force protection, client-id ownership.
    pub auth: AuthConfig,
    /// Authorization sources; ends in deny by default (M2).
    pub acl: AclConfig,
    /// Admission before TLS, publish rates, flapping bans, overload protection.
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Identifies this node in logs, `$SYS` topics and (later) the cluster.
    /// 1..=64 characters of `[A-Za-z0-9._-]`, so it is safe inside a topic level.
    pub name: String,
    /// Where the embedded store and other state live. Default `./data`.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "rampart".to_string(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One of `error`, `warn`, `info`, `debug`, `trace`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// The accepted log levels, least verbose first.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Plain MQTT over TCP (plaintext: loopback only unless `danger.allow_plaintext`).
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (plaintext: loopback only unless `danger.allow_plaintext`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }

    /// The port a listener of this kind binds when `bind` gives none: 1883 (tcp), 8883 (tls),
    /// 8083 (ws), 8084 (wss).
    pub fn default_port(self) -> u16 {
        match self {
            ListenerKind::Tcp => 1883,
            ListenerKind::Tls => 8883,
            ListenerKind::Ws => 8083,
            ListenerKind::Wss => 8084,
        }
    }

    /// True for kinds that carry TLS (and therefore need a `[listeners.tls]` table).
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// True for WebSocket kinds (which use `ws_path`).
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Unique among listeners; used in logs and metrics labels.
    pub name: String,
    pub kind: ListenerKind,
    /// Unique among listeners (an unspecified address such as 0.0.0.0 conflicts with every
    /// address of its family on the same port). `bind = "IP:PORT"`, or `"IP"` for the kind's
    /// default port ([`ListenerKind::default_port`]); without `bind`, 127.0.0.1 on that port
    /// (local-only, like the rest of the defaults).
    pub bind: SocketAddr,
    /// Cap on open connections through this listener, on top of `mqtt.max_connections`.
    /// `None`: only the global cap applies. 0 is refused (it would never mean "unlimited").
    /// Worst case: each connection costs one file descriptor plus its buffers and queues.
    pub max_connections: Option<u32>,
    /// HTTP path of the WebSocket upgrade (ws/wss only). Default `/mqtt`.
    pub ws_path: String,
    /// Expect a PROXY protocol v1/v2 header first (behind a load balancer). Default false:
    /// when true, anyone who can reach the port can claim any source address, so only enable
    /// it on a port that only the proxy can reach.
    pub proxy_protocol: bool,
    /// Peers allowed to send a PROXY header (`proxy_protocol = true` needs at least one). A
    /// connection from one of them must start with a v1 or v2 header; a header from any other
    /// address is refused, so no client can forge its address or certificate identity.
    pub trusted_proxies: Vec<IpNet>,
    /// Origin values a browser may send on the WebSocket upgrade (ws/wss only). Empty: any
    /// origin, and none, are accepted.
    pub ws_allowed_origins: Vec<String>,
    /// Required for tls and wss, refused for tcp and ws.
    pub tls: Option<TlsListenerConfig>,
}

/// An address range such as `10.0.0.0/8` or `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\" is not an address or CIDR range (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": prefix length must be 0..={max}"))?,
            None => max,
        };
        // Host bits are cleared so that equal ranges compare and hash equal.
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0),
            )),
        };
        Ok(IpNet { addr, prefix })
    }

    /// True if `ip` is inside the range; an IPv4-mapped IPv6 peer matches IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl ListenerConfig {
    /// The listeners of zero-config mode, also the default when a file has no `[[listeners]]`.
    pub fn local_defaults() -> Vec<ListenerConfig> {
        let mk = |name: &str, ip: IpAddr| ListenerConfig {
            name: name.to_string(),
            kind: ListenerKind::Tcp,
            bind: SocketAddr::new(ip, 1883),
            max_connections: None,
            ws_path: DEFAULT_WS_PATH.to_string(),
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            ws_allowed_origins: Vec::new(),
            tls: None,
        };
        vec![
            mk("local-v4", IpAddr::V4(Ipv4Addr::LOCALHOST)),
            mk("local-v6", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]
    }
}

pub const DEFAULT_WS_PATH: &str = "/mqtt";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenerConfig {
    /// PEM certificate chain served to clients, leaf first, whole chain (T3).
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`. Should be readable by the owner only (C2).
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates must chain to. Required when `client_auth`
    /// is `optional` or `required`.
    pub ca_file: Option<PathBuf>,
    /// Default `none`. `required` is mutual TLS (T4): no certificate, no handshake.
    pub client_auth: ClientAuth,
    /// PEM/DER CRLs checked on every client handshake (T5). Needs client_auth other than none.
    pub crl_files: Vec<PathBuf>,
    /// Lowest TLS version accepted. Default 1.2; 1.0 and 1.1 cannot be configured (T1).
    pub min_version: TlsVersion,
    /// IANA names of the allowed cipher suites; empty means the TLS library's defaults
    /// (which are all AEAD with forward secrecy). Only AEAD suites are accepted (T2).
    pub ciphers: Vec<String>,
    /// Maximum number of intermediate certificates between a client certificate and the CA
    /// (T3), counted on the verified path to a certificate of `ca_file`, not in what the client
    /// sends. Default 10, range 1..=32; the path builder never goes beyond 6, so larger values
    /// act as 6. Worst case: each extra level is one more signature check per handshake.
    pub verify_depth: u8,
    /// Key-exchange groups in order of preference: `X25519`, `secp256r1`, `secp384r1`. Empty:
    /// the TLS library's defaults (all three).
    pub groups: Vec<String>,
    /// Seconds a client has to complete the TLS handshake. Default 10, range 1..=120. Worst
    /// case: a stalled client holds one connection slot this long.
    pub handshake_timeout_secs: u32,
    /// More certificate chains, chosen by the SNI name a client sends (matched against each
    /// certificate's DNS names); `cert_file` serves everything else. Pairs with `sni_key_files`.
    pub sni_cert_files: Vec<PathBuf>,
    pub sni_key_files: Vec<PathBuf>,
    /// What a handshake meets when a CRL is past its nextUpdate (T5). Default deny.
    pub crl_expired: CrlExpired,
    /// Also fetch CRLs over HTTP(S) from the CRL distribution points of the CA bundle and of
    /// client certificates seen, cached in memory and refreshed. Default false.
    pub crl_fetch: bool,
    /// Seconds between refreshes of fetched CRLs (sooner when a CRL's nextUpdate comes first).
    /// Default 3600, range 60..=86400.
    pub crl_refresh_secs: u32,
    /// Staple an OCSP response for the server certificate (T6) when a responder is known (the
    /// certificate's AIA extension or `ocsp_url`). Default true.
    pub ocsp_stapling: bool,
    /// OCSP responder URL (http:// or https://) used instead of the certificate's AIA extension.
    pub ocsp_url: Option<String>,
    /// PEM CA bundle trusted for https:// OCSP responders and CRL distribution points (on top
    /// of the system roots unless `fetch_system_roots = false`). Default none.
    pub fetch_ca_file: Option<PathBuf>,
    /// Also trust the system's CA bundle (`SSL_CERT_FILE`, else the distribution's usual
    /// file) for https:// fetches. Default true.
    pub fetch_system_roots: bool,
    /// Seconds between checks of the certificate, key, CA and CRL files for changes (SIGHUP
    /// also reloads). Default 5, range 1..=3600. Worst case: a stat of each file per period.
    pub reload_poll_secs: u32,
    /// Take the MQTT client id from the verified client certificate: "cn", "san" (first
    /// SAN) or "dn" (issue 4 T4). The id the client sent is replaced (a v5 client is told
    /// through Assigned Client Identifier) and a client without a certificate is refused
    /// (0x85), so no client can pick another's id. Needs client_auth. Default: off.
    pub client_id_from: Option<crate::auth::CertField>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlExpired {
    /// Refuse client certificates while the CRL that covers them is out of date.
    Deny,
    /// Keep using the last CRL after its nextUpdate (`danger`-level: revocations may be missed).
    Allow,
}

/// Key-exchange groups accepted in `groups`; all are ECDHE (forward secret).
pub const TLS_GROUPS: &[&str] = &["X25519", "secp256r1", "secp384r1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// TLS 1.3 cipher suites accepted in `ciphers` (IANA names). All are AEAD; TLS 1.3 key
/// exchange is always forward secret.
pub const TLS13_CIPHERS: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// TLS 1.2 cipher suites accepted in `ciphers` (IANA names): ECDHE key exchange (forward
/// secret) with an AEAD cipher only; no CBC, no static RSA key exchange (T2).
pub const TLS12_CIPHERS: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedStrategy {
    RoundRobin,
    Random,
    HashClientId,
    HashTopic,
    Sticky,
}

impl SharedStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedStrategy::RoundRobin => "round_robin",
            SharedStrategy::Random => "random",
            SharedStrategy::HashClientId => "hash_client_id",
            SharedStrategy::HashTopic => "hash_topic",
            SharedStrategy::Sticky => "sticky",
        }
    }
}

/// MQTT protocol limits. Each field says why it exists and what it costs at worst.
/// No field uses 0 to mean "unlimited"; the one special 0 is `max_connections` (derive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Largest packet accepted or sent, in bytes, checked from the fixed header before the body
    /// is read (reason 0x95). Default 1 MiB, range 64..=268_435_455 (the protocol maximum).
    /// Worst case: one buffer of this size per connection that is mid-read.
    pub max_packet_size: u32,
    /// Most `/`-separated levels in a topic name or filter. Default 10, range 1..=128.
    /// Worst case: matching walks this many trie levels per publish.
    pub max_topic_levels: u16,
    /// Longest topic name or filter in bytes. Default 1024, range 1..=65535.
    /// Worst case: stored once per subscription and per retained message.
    pub max_topic_length: u16,
    /// Longest client identifier in bytes. Default 128, range 23..=65535 (23 is the minimum
    /// the protocol requires a server to accept). Worst case: one copy per session.
    pub max_client_id_length: u16,
    /// The server's inbound QoS 1/2 window announced in CONNACK (Receive Maximum): how many
    /// unacknowledged QoS 1/2 PUBLISHes a client may send. Default 256, range 1..=65535.
    /// Worst case: this many in-progress inbound messages (each up to max_packet_size) per client.
    pub receive_maximum: u16,
    /// Outbound unacknowledged QoS 1/2 messages per client, also capped by the client's own
    /// receive maximum. Default 128, range 1..=65535. Worst case: this many messages retained
    /// per client until acknowledged.
    pub max_inflight: u16,
    /// Messages queued for one client (offline or slow) beyond in-flight. Default 1000,
    /// range 1..=10_000_000. On overflow (this or max_queued_bytes) the newest messages for
    /// that client are refused and counted ($SYS/broker/queue/refused); the queue keeps the
    /// oldest.
    /// Worst case per client: min(max_queued_messages x max_packet_size, max_queued_bytes).
    pub max_queued_messages: u32,
    /// Bytes queued for one client. Default 16 MiB, range 1024..=1 TiB; must be at least
    /// max_packet_size so one maximum-size message fits. This is the per-client memory bound.
    pub max_queued_bytes: u64,
    /// Inbound topic aliases per connection (v5). Default 64, 0 disables inbound aliases.
    /// Worst case: this many topic names (each up to max_topic_length) per connection.
    pub topic_alias_maximum: u16,
    /// Largest keep alive accepted, in seconds; a larger request is lowered via Server Keep
    /// Alive (v5). Default 3600, range 1..=65535. Worst case: a silent dead peer holds its
    /// connection for 1.5x this long.
    pub max_keep_alive: u16,
    /// Server Keep Alive sent to v5 clients that ask for keep alive 0 (none), so that no v5
    /// connection can idle forever. Default 300, range 1..=max_keep_alive.
    pub server_keep_alive_when_zero: u16,
    /// 3.1.1 clients with keep alive 0 cannot be told a server keep alive, so they are closed
    /// after this much silence. Default 3600, range 1..=604800.
    pub max_idle_v3_secs: u32,
    /// Largest session expiry interval granted, in seconds. Default 604800 (7 days);
    /// 4294967295 (u32::MAX) is allowed and means "never expires". Worst case: an abandoned
    /// session keeps its subscriptions and a full queue for this long.
    pub max_session_expiry: u32,
    /// Subscriptions one client may hold. Default 256, range 1..=1_000_000.
    /// Worst case: this many trie entries per client.
    pub max_subscriptions_per_client: u32,
    /// Retained messages held broker-wide. Default 1_000_000, range 1..=1_000_000_000; a new
    /// retained topic beyond it is refused (0x97 on v5).
    /// Worst case memory/disk: retained_max_count x retained_max_payload.
    pub retained_max_count: u64,
    /// Largest payload that may be retained, in bytes. Default 1 MiB, range 0..=268_435_455.
    pub retained_max_payload: u32,
    /// Highest QoS granted (0, 1 or 2). Default 2.
    pub max_qos: u8,
    pub retain_available: bool,
    pub wildcard_subscriptions: bool,
    pub shared_subscriptions: bool,
    pub subscription_identifiers: bool,
    /// How one message of a shared subscription picks its receiver. Default round_robin.
    pub shared_subscription_strategy: SharedStrategy,
    /// Seconds a new connection has to send CONNECT (TLS handshake included). Default 10,
    /// range 1..=300. Worst case: a slowloris holds one descriptor this long.
    pub connect_timeout_secs: u32,
    /// Open MQTT connections broker-wide. 0 (the default) means "derive from the open-file
    /// limit at start-up" (see [`derive_max_connections`]); this is the only place where 0 is
    /// special, and it still results in a finite cap. Range 0..=10_000_000.
    /// Worst case: one descriptor plus per-connection buffers and queues each.
    pub max_connections: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: 1_048_576,
            max_topic_levels: 10,
            max_topic_length: 1024,
            max_client_id_length: 128,
            receive_maximum: 256,
            max_inflight: 128,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            topic_alias_maximum: 64,
            max_keep_alive: 3600,
            server_keep_alive_when_zero: 300,
            max_idle_v3_secs: 3600,
            max_session_expiry: 604_800,
            max_subscriptions_per_client: 256,
            retained_max_count: 1_000_000,
            retained_max_payload: 1_048_576,
            max_qos: 2,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            connect_timeout_secs: 10,
            max_connections: 0,
        }
    }
}

impl MqttConfig {
    /// The connection cap in effect given the process's open-file limit (`None` if unknown).
    pub fn effective_max_connections(&self, nofile: Option<u64>) -> u32 {
        if self.max_connections != 0 {
            return self.max_connections;
        }
        derive_max_connections(nofile)
    }
}

/// Descriptors kept back from the open-file limit for the store, listeners, logs and admin.
pub const RESERVED_FDS_MIN: u64 = 64;

/// Used when the open-file limit cannot be read.
pub const FALLBACK_MAX_CONNECTIONS: u32 = 1024;

/// `mqtt.max_connections = 0`: the open-file limit minus a reserve of 5% (at least
/// [`RESERVED_FDS_MIN`]) for everything that is not a client connection, so that a connection
/// flood hits our cap (a clean refusal) before the kernel's (EMFILE on accept, and on the store).
pub fn derive_max_connections(nofile: Option<u64>) -> u32 {
    match nofile {
        None => FALLBACK_MAX_CONNECTIONS,
        Some(n) => {
            let reserve = (n / 20).max(RESERVED_FDS_MIN);
            let usable = n.saturating_sub(reserve).max(1);
            u32::try_from(usable).unwrap_or(u32::MAX)
        }
    }
}

/// The soft open-file limit of this process, read from `/proc/self/limits` (Linux only;
/// `None` elsewhere or when unreadable).
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::from(u32::MAX));
    }
    soft.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageBackend {
    /// Embedded transactional store (redb) under `node.data_dir`.
    #[default]
    Redb,
    /// Nothing survives a restart. For tests and development.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every acknowledged message is on disk before the acknowledgement (survives kill -9
    /// and power loss).
    #[default]
    Always,
    /// Commit at most every `interval_ms`: faster, but a crash loses up to that window of
    /// acknowledged messages. `sync_interval_ms` range 1..=60000, default 10.
    Periodic { interval_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub sync: SyncMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysConfig {
    /// Publish `$SYS/broker/...` statistics.
    pub enabled: bool,
    /// Seconds between `$SYS` updates. Default 10, range 1..=3600.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            enabled: true,
            interval_secs: 10,
        }
    }
}

/// Settings that weaken the hardened defaults. Each one is reported by `rampart doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DangerConfig {
    /// Allow tcp/ws (plaintext) listeners on non-loopback addresses (H3).
    pub allow_plaintext: bool,
    /// Allow clients without credentials from non-loopback addresses (M1).
    pub allow_anonymous: bool,
}

impl Config {
    /// Zero-config mode: plain MQTT on 127.0.0.1:1883 and `[::1]:1883`, data in `./data`.
    pub fn local_only() -> Config {
        Config {
            source: None,
            local_only: true,
            env_overrides: Vec::new(),
            node: NodeConfig::default(),
            log: LogConfig::default(),
            listeners: ListenerConfig::local_defaults(),
            mqtt: MqttConfig::default(),
            storage: StorageConfig::default(),
            sys: SysConfig::default(),
            danger: DangerConfig::default(),
            auth: AuthConfig::default(),
            acl: AclConfig::default(),
            limits: LimitsConfig::default(),
        }
    }

    /// Zero-config mode with `RAMPART_*` overrides applied. `RAMPART_LISTENERS__0__...`
    /// addresses the default loopback listeners (0 = 127.0.0.1, 1 = `[::1]`).
    pub fn local_only_with_env(env: &[(String, String)]) -> Result<Config, ConfigErrors> {
        decode::build(tree::Table::default(), ZERO_CONFIG_NAME, env, None, true)
    }

    /// Reads and parses a config file, then applies `RAMPART_*` overrides from `env`.
    pub fn load(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let io_err = |message: String| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                line: None,
                key: String::new(),
                message,
            }])
        };
        let meta = std::fs::metadata(path).map_err(|e| io_err(format!("cannot read: {e}")))?;
        if meta.len() > MAX_CONFIG_FILE_BYTES {
            return Err(io_err(format!(
                "file is {} bytes; the limit is {MAX_CONFIG_FILE_BYTES}",
                meta.len()
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| io_err(format!("cannot read: {e}")))?;
        let mut cfg = Config::from_str(&text, &name, env)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses config text; `file_name` is used in error messages and as `source`.
    #[allow(clippy::should_implement_trait)] // needs a file name and env, unlike FromStr
    pub fn from_str(
        text: &str,
        file_name: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigErrors> {
        if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigErrors(vec![ConfigError {
                file: file_name.to_string(),
                line: None,
                key: String::new(),
                message: format!(
                    "config is {} bytes; the limit is {MAX_CONFIG_FILE_BYTES}",
                    text.len()
                ),
            }]));
        }
        let root = match tree::parse_toml(text, file_name) {
            Ok(root) => root,
            Err(e) => {
                // Env problems are independent of the file: report them alongside.
                let mut errors = vec![e];
                let mut scratch = tree::Table::default();
                let _ = tree::apply_env(&mut scratch, env, &mut errors);
                return Err(ConfigErrors(errors));
            }
        };
        decode::build(root, file_name, env, Some(PathBuf::from(file_name)), false)
    }

    /// Human summary of the listeners and every limit in effect, for `rampart check-config`.
    pub fn describe(&self) -> String {
        describe::describe(self, open_file_limit())
    }

    /// [`Config::describe`] with an explicit open-file limit (for tests and other hosts).
    pub fn describe_with_nofile(&self, nofile: Option<u64>) -> String {
        describe::describe(self, nofile)
    }
}

/// The process environment's `RAMPART_*` variables, for [`Config::load`] and
/// [`Config::local_only_with_env`]. A variable whose name or value is not valid UTF-8 is kept
/// with the invalid bytes replaced, so that it is still reported rather than silently ignored.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// Every key the schema accepts, as sorted dotted paths in TOML table form, for example
/// `mqtt.max_packet_size` and `listeners.tls.ciphers` (tables themselves are included).
/// Documentation and tests use it to check that every key is described.
pub fn schema_keys() -> Vec<String> {
    decode::schema_keys()
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name, or `env RAMPART_...` for an environment override.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path such as `listeners[0].tls.min_version`; empty for whole-file errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in file order (environment problems last). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
