//! Admission control and abuse state (issue 6): per-listener accept rate, per-address and
//! per-network connection rates and caps (checked before any TLS or MQTT work), flapping
//! bans, the persisted banned list, overload protection and per-client publish rates.
//!
//! Owns no sockets: the listener calls [`Limits::admit`] after accept, the connection calls
//! [`Limits::check_connect`] after authentication and [`PublishLimiter::on_publish`] per
//! PUBLISH, and [`Limits::spawn_monitor`] samples memory and scheduling delay.
//!
//! Worst-case memory (defaults): the address and network tables hold at most
//! `max_tracked_sources` entries each (about 128 bytes with the map overhead: 2 x 12.8 MB);
//! the flapping table at most `max_tracked_sources` client ids (as 64-bit keyed hashes, 24
//! bytes a slot) with up to `flapping_max_connects + 1` timestamps each (4 bytes, on the heap
//! only for a client id that connected twice within the window); the banned list at most
//! `max_banned` entries (about 200 bytes each). Every refusal is counted in
//! [`LimitsMetrics`] and logged at most once per second per kind.

use parking_lot::{Mutex, RwLock};
use rampart_codec::ReasonCode;
use rampart_config::{IpNet, LimitsConfig, RateAction};
use rampart_core::rate::{SlidingWindowCounter, TokenBucket};
use rampart_store::{Store, WriteBatch};
use std::collections::HashMap;

/// The hasher of the admission tables, whose keys (peer addresses, client ids) are chosen by
/// peers: aHash keyed randomly per process, like SipHash resistant to chosen-key collisions,
/// at a fraction of SipHash's cost on the accept and CONNECT path (a profile of 10,000 connects
/// showed SipHash, mostly re-hashing keys as these tables grew, as the broker's top user-space
/// symbol).
type Map<K, V> = HashMap<K, V, ahash::RandomState>;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{info, warn};

/// Store KV namespace of the banned list.
pub const BANNED_NS: &str = "banned";

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Overloaded,
    Banned,
    ListenerRate,
    AddressRate,
    AddressConnections,
    NetworkRate,
    NetworkConnections,
    /// The address or network table is full of active entries.
    TooManySources,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Overloaded => "overloaded",
            Refusal::Banned => "banned",
            Refusal::ListenerRate => "listener accept rate",
            Refusal::AddressRate => "per-address connection rate",
            Refusal::AddressConnections => "per-address connection cap",
            Refusal::NetworkRate => "per-network connection rate",
            Refusal::NetworkConnections => "per-network connection cap",
            Refusal::TooManySources => "source table full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters, exported by `$SYS` / metrics.
#[derive(Debug, Default)]
pub struct LimitsMetrics {
    /// Refusals at accept, indexed by [`Refusal`].
    pub refused: [AtomicU64; 8],
    /// CONNECTs refused because of a ban (0x8A).
    pub banned_connects: AtomicU64,
    /// CONNECTs refused while overloaded (0x89).
    pub busy_connects: AtomicU64,
    /// Bans created by flapping detection.
    pub flapping_bans: AtomicU64,
    /// PUBLISHes over the rate that were delayed (back_pressure).
    pub publish_delayed: AtomicU64,
    /// Clients disconnected for their publish rate (0x96).
    pub publish_disconnects: AtomicU64,
    /// Transitions into and out of overload.
    pub overload_transitions: AtomicU64,
    /// Flapping records skipped because the table was full.
    pub flapping_untracked: AtomicU64,
}

impl LimitsMetrics {
    pub fn refused(&self, r: Refusal) -> u64 {
        self.refused[r.index()].load(Ordering::Relaxed)
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// At most one log line per second per kind; the lines in between are counted.
#[derive(Debug, Default)]
struct LogGate {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    /// `Some(lines suppressed since the last one)` when a line may be written now.
    fn allow(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < 1000 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Whoever wins the swap logs; a racing caller counts as suppressed.
        match self.last_ms.compare_exchange(
            last,
            now_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// What a ban matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BanKey {
    ClientId(String),
    Username(String),
    Address(IpAddr),
    Network(IpNet),
}

impl BanKey {
    /// Store key and command-line form: `client:ID`, `user:NAME`, `addr:IP`, `net:CIDR`.
    pub fn encode(&self) -> String {
        match self {
            BanKey::ClientId(c) => format!("client:{c}"),
            BanKey::Username(u) => format!("user:{u}"),
            BanKey::Address(a) => format!("addr:{a}"),
            BanKey::Network(n) => format!("net:{n}"),
        }
    }

    pub fn parse(s: &str) -> Result<BanKey, String> {
        let (kind, v) = s.split_once(':').ok_or_else(|| {
            format!("\"{s}\": expected client:ID, user:NAME, addr:IP or net:CIDR")
        })?;
        if v.is_empty() {
            return Err(format!("\"{s}\": empty value"));
        }
        match kind {
            "client" => Ok(BanKey::ClientId(v.to_string())),
            "user" => Ok(BanKey::Username(v.to_string())),
            "addr" => v
                .parse::<IpAddr>()
                .map(|a| BanKey::Address(canonical(a)))
                .map_err(|_| format!("\"{v}\" is not an IP address")),
            "net" => IpNet::parse(v).map(BanKey::Network),
            _ => Err(format!(
                "\"{kind}\": expected client, user, addr or net before the colon"
            )),
        }
    }
}

/// One entry of the banned list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEntry {
    pub key: BanKey,
    pub reason: String,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<u64>,
}

impl BanEntry {
    /// Store value: `<expiry unix seconds or "never">\n<reason>`.
    pub fn encode_value(&self) -> String {
        let exp = self
            .expires_at
            .map(|e| e.to_string())
            .unwrap_or_else(|| "never".to_string());
        format!("{exp}\n{}", self.reason)
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<BanEntry, String> {
        let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
        let value = std::str::from_utf8(value).map_err(|_| "value is not UTF-8".to_string())?;
        let (exp, reason) = value.split_once('\n').unwrap_or((value, ""));
        let expires_at = match exp {
            "never" => None,
            e => Some(
                e.parse::<u64>()
                    .map_err(|_| format!("bad expiry \"{e}\""))?,
            ),
        };
        Ok(BanEntry {
            key: BanKey::parse(key)?,
            reason: reason.to_string(),
            expires_at,
        })
    }

    pub fn expired(&self, now_unix: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_unix)
    }
}

/// The banned list as loaded from a store (the CLI uses this too).
pub fn load_banned(store: &dyn Store) -> Result<Vec<BanEntry>, String> {
    let rows = store
        .scan_kv(BANNED_NS)
        .map_err(|e| format!("store: {e}"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        match BanEntry::decode(&k, &v) {
            Ok(e) => out.push(e),
            Err(e) => warn!(error = %e, "skipping an unreadable banned-list entry"),
        }
    }
    Ok(out)
}

pub fn put_ban(b: &mut WriteBatch, e: &BanEntry) {
    b.put_kv(
        BANNED_NS,
        e.key.encode().into_bytes(),
        e.encode_value().into_bytes(),
    );
}

pub fn delete_ban(b: &mut WriteBatch, key: &BanKey) {
    b.delete_kv(BANNED_NS, key.encode().into_bytes());
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// IPv4-mapped IPv6 peers count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn network_of(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4_prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

struct Source {
    bucket: TokenBucket,
    open: u32,
}

/// Connection rate and open count per key (an address or a network).
struct SourceTable {
    map: Map<IpAddr, Source>,
    cap: usize,
    rate: u32,
    burst: u32,
    max_open: u32,
    last_sweep_ms: u64,
}

impl SourceTable {
    fn new(cap: u32, rate: u32, burst: u32, max_open: u32) -> Self {
        SourceTable {
            map: Map::default(),
            cap: cap as usize,
            rate,
            burst,
            max_open,
            last_sweep_ms: 0,
        }
    }

    /// Takes a token and an open slot, or says which limit refused.
    fn take(&mut self, key: IpAddr, now_ms: u64) -> Result<(), (bool, bool)> {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            // Sweep at most every 100 ms so that a flood of new sources cannot make every
            // accept an O(table) walk.
            if now_ms.saturating_sub(self.last_sweep_ms) >= 100 || self.last_sweep_ms == 0 {
                self.last_sweep_ms = now_ms;
                let burst = self.burst;
                self.map
                    .retain(|_, s| s.open > 0 || s.bucket.available(now_ms) < burst);
            }
            if self.map.len() >= self.cap {
                return Err((false, false));
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let s = self.map.entry(key).or_insert_with(|| Source {
            bucket: TokenBucket::new(rate, burst, now_ms),
            open: 0,
        });
        if s.open >= self.max_open {
            return Err((true, false));
        }
        if !s.bucket.try_take(now_ms, 1) {
            return Err((false, true));
        }
        s.open += 1;
        Ok(())
    }

    fn release(&mut self, key: IpAddr) {
        if let Some(s) = self.map.get_mut(&key) {
            s.open = s.open.saturating_sub(1);
        }
    }

    fn open(&self, key: IpAddr) -> u32 {
        self.map.get(&key).map(|s| s.open).unwrap_or(0)
    }
}

#[derive(Default)]
struct BannedList {
    exact: Map<BanKey, BanEntry>,
    /// Network bans, checked by walking (operators ban few networks).
    networks: Vec<BanEntry>,
}

impl BannedList {
    fn len(&self) -> usize {
        self.exact.len() + self.networks.len()
    }

    fn insert(&mut self, e: BanEntry) {
        if let BanKey::Network(n) = &e.key {
            let n = *n;
            self.networks.retain(|x| x.key != BanKey::Network(n));
            self.networks.push(e);
        } else {
            self.exact.insert(e.key.clone(), e);
        }
    }

    fn remove(&mut self, key: &BanKey) -> bool {
        if matches!(key, BanKey::Network(_)) {
            let before = self.networks.len();
            self.networks.retain(|x| &x.key != key);
            before != self.networks.len()
        } else {
            self.exact.remove(key).is_some()
        }
    }

    fn find_address(&self, ip: IpAddr, now_unix: u64) -> Option<&BanEntry> {
        self.exact
            .get(&BanKey::Address(ip))
            .filter(|e| !e.expired(now_unix))
            .or_else(|| {
                self.networks.iter().find(|e| {
                    !e.expired(now_unix) && matches!(&e.key, BanKey::Network(n) if n.contains(ip))
                })
            })
    }

    fn find(
        &self,
        client_id: &str,
        username: Option<&str>,
        ip: IpAddr,
        now_unix: u64,
    ) -> Option<&BanEntry> {
        let live = |e: &&BanEntry| !e.expired(now_unix);
        self.exact
            .get(&BanKey::ClientId(client_id.to_string()))
            .filter(live)
            .or_else(|| {
                username.and_then(|u| {
                    self.exact
                        .get(&BanKey::Username(u.to_string()))
                        .filter(live)
                })
            })
            .or_else(|| self.find_address(ip, now_unix))
    }

    fn purge(&mut self, now_unix: u64) -> Vec<BanKey> {
        let mut gone: Vec<BanKey> = self
            .exact
            .values()
            .filter(|e| e.expired(now_unix))
            .map(|e| e.key.clone())
            .collect();
        for k in &gone {
            self.exact.remove(k);
        }
        gone.extend(
            self.networks
                .iter()
                .filter(|e| e.expired(now_unix))
                .map(|e| e.key.clone()),
        );
        self.networks.retain(|e| !e.expired(now_unix));
        gone
    }
}

/// The broker's admission and abuse state; one per broker, shared by listeners and
/// connections.
pub struct Limits {
    cfg: LimitsConfig,
    epoch: Instant,
    store: Option<Arc<dyn Store>>,
    listeners: Mutex<Map<Arc<str>, TokenBucket>>,
    addresses: Mutex<SourceTable>,
    networks: Mutex<SourceTable>,
    /// Keyed by a 64-bit hash of the client id under `flapping_keys` rather than the id
    /// itself: no copy of every recent client id (about 60 bytes each with its allocation).
    /// Two ids sharing a hash would share a counter; with a random key per process and at
    /// most `max_tracked_sources` entries the chance is about n^2 / 2^65, and no one can
    /// choose such ids.
    /// One counter per recently connected client id (`SlidingWindowCounter`: 16 bytes; the
    /// window and the cap are the table's).
    flapping: Mutex<Map<u64, SlidingWindowCounter>>,
    flapping_keys: ahash::RandomState,
    flapping_sweep_ms: AtomicU64,
    banned: RwLock<BannedList>,
    overloaded: AtomicBool,
    /// Overload watermarks in bytes, resolved at start.
    high_bytes: u64,
    low_bytes: u64,
    pub metrics: LimitsMetrics,
    logs: [LogGate; 12],
}

/// Releases the address and network slots of an admitted connection when dropped.
pub struct AdmitGuard {
    limits: Arc<Limits>,
    /// The address whose slot (and its network's) is held; `None` for a trusted proxy's
    /// connection. The network is derived again on release (the prefixes never change):
    /// every connection's task carries this guard for its whole life.
    slots: Option<IpAddr>,
}

impl Drop for AdmitGuard {
    fn drop(&mut self) {
        if let Some(address) = self.slots {
            let network = self.limits.network_of(address);
            self.limits.addresses.lock().release(address);
            self.limits.networks.lock().release(network);
        }
    }
}

/// What the connection does with a PUBLISH after [`PublishLimiter::on_publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    /// Stop reading for this long (back_pressure).
    Wait(Duration),
    /// DISCONNECT 0x96 (v5) or close (3.1.1).
    Disconnect,
}

/// Per-connection publish rate state (two token buckets, 64 bytes).
pub struct PublishLimiter {
    messages: TokenBucket,
    bytes: TokenBucket,
    action: RateAction,
    limits: Arc<Limits>,
}

impl PublishLimiter {
    /// Account one PUBLISH of `packet_bytes` at `now`.
    pub fn on_publish(&mut self, packet_bytes: usize, now: Instant) -> RateVerdict {
        let ms = self.limits.ms(now);
        self.messages.force_take(ms, 1);
        self.bytes
            .force_take(ms, u32::try_from(packet_bytes).unwrap_or(u32::MAX));
        let wait = self
            .messages
            .time_until(ms, 0)
            .max(self.bytes.time_until(ms, 0));
        if wait == 0 {
            return RateVerdict::Allow;
        }
        match self.action {
            RateAction::BackPressure => {
                self.limits
                    .metrics
                    .publish_delayed
                    .fetch_add(1, Ordering::Relaxed);
                RateVerdict::Wait(Duration::from_millis(wait.min(60_000)))
            }
            RateAction::Disconnect => {
                self.limits
                    .metrics
                    .publish_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.limits.logs[10].allow(ms) {
                    warn!(
                        suppressed = n,
                        "client disconnected: publish rate too high (0x96)"
                    );
                }
                RateVerdict::Disconnect
            }
        }
    }

    /// Milliseconds until the client is back within both rates (0 if it is).
    pub fn time_until(&mut self, now: Instant) -> u64 {
        let ms = self.limits.ms(now);
        self.messages
            .time_until(ms, 0)
            .max(self.bytes.time_until(ms, 0))
    }
}

impl Limits {
    /// Builds the state and loads the banned list from the store (dropping expired entries).
    pub fn new(cfg: &LimitsConfig, store: Option<Arc<dyn Store>>) -> Arc<Limits> {
        let (high_bytes, low_bytes) = watermarks(cfg, physical_memory());
        let limits = Limits {
            epoch: Instant::now(),
            store: store.clone(),
            listeners: Mutex::new(Map::default()),
            addresses: Mutex::new(SourceTable::new(
                cfg.max_tracked_sources,
                cfg.per_address_rate,
                cfg.per_address_burst,
                cfg.per_address_max_connections,
            )),
            networks: Mutex::new(SourceTable::new(
                cfg.max_tracked_sources,
                cfg.per_network_rate,
                cfg.per_network_burst,
                cfg.per_network_max_connections,
            )),
            flapping: Mutex::new(Map::default()),
            flapping_keys: ahash::RandomState::new(),
            flapping_sweep_ms: AtomicU64::new(0),
            banned: RwLock::new(BannedList::default()),
            overloaded: AtomicBool::new(false),
            high_bytes,
            low_bytes,
            metrics: LimitsMetrics::default(),
            logs: Default::default(),
            cfg: cfg.clone(),
        };
        if let Some(store) = &store {
            match load_banned(store.as_ref()) {
                Ok(entries) => {
                    let now = unix_now();
                    let mut list = limits.banned.write();
                    let mut stale = WriteBatch::new();
                    for e in entries {
                        if e.expired(now) {
                            delete_ban(&mut stale, &e.key);
                        } else if list.len() < cfg.max_banned as usize {
                            list.insert(e);
                        }
                    }
                    if !stale.is_empty() {
                        drop(store.write(stale));
                    }
                    info!(entries = list.len(), "banned list loaded");
                }
                Err(e) => warn!(error = %e, "cannot load the banned list"),
            }
        }
        Arc::new(limits)
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn refuse(&self, r: Refusal, listener: &str, peer: IpAddr, ms: u64) -> Refusal {
        self.metrics.refused[r.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.logs[r.index()].allow(ms) {
            warn!(listener, %peer, reason = r.as_str(), suppressed = n, "connection refused at accept");
        }
        r
    }

    /// Admission right after accept, before the PROXY header, TLS or WebSocket work. The
    /// guard holds the address's and network's open-connection slots.
    pub fn admit(
        self: &Arc<Self>,
        listener: &str,
        peer: IpAddr,
        now: Instant,
    ) -> Result<AdmitGuard, Refusal> {
        let ms = self.ms(now);
        let peer = canonical(peer);
        if self.is_overloaded() {
            return Err(self.refuse(Refusal::Overloaded, listener, peer, ms));
        }
        {
            let banned = self.banned.read();
            let any = !banned.networks.is_empty() || !banned.exact.is_empty();
            if any && banned.find_address(peer, unix_now()).is_some() {
                drop(banned);
                return Err(self.refuse(Refusal::Banned, listener, peer, ms));
            }
        }
        // Per-source caps first: connections that their own address or network would refuse
        // anyway must not spend the listener's accept budget, or one flooding network gets
        // everyone else's connections refused by the listener rate.
        let guard = self.admit_source(listener, peer, ms)?;
        if !self.listener_token(listener, ms) {
            drop(guard);
            return Err(self.refuse(Refusal::ListenerRate, listener, peer, ms));
        }
        Ok(guard)
    }

    /// Per-source admission of the client a trusted proxy names in its PROXY header, once
    /// the header is read: the address ban and the per-address and per-network caps apply to
    /// the real client, as they would to a direct one (overload and the listener's rate were
    /// checked at accept, by [`Limits::admit_proxied`]).
    pub fn admit_client(
        self: &Arc<Self>,
        listener: &str,
        client: IpAddr,
        now: Instant,
    ) -> Result<AdmitGuard, Refusal> {
        let ms = self.ms(now);
        let client = canonical(client);
        {
            let banned = self.banned.read();
            let any = !banned.networks.is_empty() || !banned.exact.is_empty();
            if any && banned.find_address(client, unix_now()).is_some() {
                drop(banned);
                return Err(self.refuse(Refusal::Banned, listener, client, ms));
            }
        }
        self.admit_source(listener, client, ms)
    }

    /// The per-address and per-network rate and open-connection caps (exempt peers skip them).
    fn admit_source(
        self: &Arc<Self>,
        listener: &str,
        peer: IpAddr,
        ms: u64,
    ) -> Result<AdmitGuard, Refusal> {
        if self.cfg.exempt.iter().any(|n| n.contains(peer)) {
            return Ok(AdmitGuard {
                limits: self.clone(),
                slots: None,
            });
        }
        let network = self.network_of(peer);
        if let Err(e) = self.addresses.lock().take(peer, ms) {
            let r = match e {
                (true, _) => Refusal::AddressConnections,
                (_, true) => Refusal::AddressRate,
                _ => Refusal::TooManySources,
            };
            return Err(self.refuse(r, listener, peer, ms));
        }
        if let Err(e) = self.networks.lock().take(network, ms) {
            self.addresses.lock().release(peer);
            let r = match e {
                (true, _) => Refusal::NetworkConnections,
                (_, true) => Refusal::NetworkRate,
                _ => Refusal::TooManySources,
            };
            return Err(self.refuse(r, listener, peer, ms));
        }
        Ok(AdmitGuard {
            limits: self.clone(),
            slots: Some(peer),
        })
    }

    fn network_of(&self, peer: IpAddr) -> IpAddr {
        network_of(peer, self.cfg.ipv4_prefix, self.cfg.ipv6_prefix)
    }

    /// Admission of a connection from a trusted PROXY-protocol peer: only overload and the
    /// listener's accept rate apply, since the proxy's own address stands for many clients;
    /// the per-source limits apply to the client named in the header ([`Limits::admit_client`]).
    pub fn admit_proxied(
        self: &Arc<Self>,
        listener: &str,
        proxy: IpAddr,
        now: Instant,
    ) -> Result<AdmitGuard, Refusal> {
        let ms = self.ms(now);
        if self.is_overloaded() {
            return Err(self.refuse(Refusal::Overloaded, listener, proxy, ms));
        }
        if !self.listener_token(listener, ms) {
            return Err(self.refuse(Refusal::ListenerRate, listener, proxy, ms));
        }
        Ok(AdmitGuard {
            limits: self.clone(),
            slots: None,
        })
    }

    fn listener_token(&self, listener: &str, ms: u64) -> bool {
        let mut ls = self.listeners.lock();
        match ls.get_mut(listener) {
            Some(b) => b.try_take(ms, 1),
            None => {
                let mut b = TokenBucket::new(self.cfg.accept_rate, self.cfg.accept_burst, ms);
                let ok = b.try_take(ms, 1);
                ls.insert(Arc::from(listener), b);
                ok
            }
        }
    }

    /// Open connections admitted from `peer` (for tests and diagnostics).
    pub fn open_from(&self, peer: IpAddr) -> u32 {
        self.addresses.lock().open(canonical(peer))
    }

    /// At CONNECT, after authentication: overload (0x89), the banned list (0x8A), then
    /// flapping (a client id connecting too often is banned, 0x8A).
    pub fn check_connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        peer: IpAddr,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        let ms = self.ms(now);
        if self.is_overloaded() {
            self.metrics.busy_connects.fetch_add(1, Ordering::Relaxed);
            return Err(ReasonCode::ServerBusy);
        }
        let peer = canonical(peer);
        let now_unix = unix_now();
        {
            // The read guard ends with this block: `record_connect` may take the write lock.
            let banned = self.banned.read();
            // Looking an id up builds its key (an allocation): skipped while nothing is banned.
            let ban = if banned.len() == 0 {
                None
            } else {
                banned.find(client_id, username, peer, now_unix)
            };
            if let Some(e) = ban {
                self.metrics.banned_connects.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.logs[8].allow(ms) {
                    warn!(client_id, %peer, ban = %e.key.encode(), reason = %e.reason,
                        suppressed = n, "banned client refused (0x8A)");
                }
                return Err(ReasonCode::Banned);
            }
        }
        if self.record_connect(client_id, ms, now_unix) {
            return Err(ReasonCode::Banned);
        }
        Ok(())
    }

    /// Records one connect of `client_id`; true when it just got banned for flapping.
    fn record_connect(&self, client_id: &str, ms: u64, now_unix: u64) -> bool {
        let max = self.cfg.flapping_max_connects;
        let key = self.flapping_keys.hash_one(client_id);
        let count = {
            let mut f = self.flapping.lock();
            let window = u64::from(self.cfg.flapping_window_secs) * 1000;
            let cap = max.saturating_add(1);
            let n = if let Some(c) = f.get_mut(&key) {
                c.record(ms, window, cap)
            } else {
                if f.len() >= self.cfg.max_tracked_sources as usize {
                    // At most one O(table) sweep per 100 ms, so that a table full of active
                    // client ids cannot make every CONNECT walk it.
                    let last = self.flapping_sweep_ms.load(Ordering::Relaxed);
                    if last == 0 || ms.saturating_sub(last) >= 100 {
                        self.flapping_sweep_ms.store(ms.max(1), Ordering::Relaxed);
                        f.retain(|_, c| !c.is_idle(ms, window));
                    }
                    if f.len() >= self.cfg.max_tracked_sources as usize {
                        self.metrics
                            .flapping_untracked
                            .fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
                f.insert(key, SlidingWindowCounter::new(ms));
                1
            };
            if n > max {
                f.remove(&key);
            }
            n
        };
        if count <= max {
            return false;
        }
        let entry = BanEntry {
            key: BanKey::ClientId(client_id.to_string()),
            reason: format!(
                "flapping: more than {max} connects in {} s",
                self.cfg.flapping_window_secs
            ),
            expires_at: Some(now_unix + u64::from(self.cfg.flapping_ban_secs)),
        };
        self.metrics.flapping_bans.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.logs[9].allow(ms) {
            warn!(
                client_id,
                ban_secs = self.cfg.flapping_ban_secs,
                suppressed = n,
                "client id banned for flapping"
            );
        }
        self.ban(entry);
        true
    }

    /// Adds or replaces a ban and persists it. Refused (false) when the list is full.
    pub fn ban(&self, e: BanEntry) -> bool {
        {
            let mut list = self.banned.write();
            let max = self.cfg.max_banned as usize;
            if list.len() >= max {
                list.purge(unix_now());
            }
            if list.len() >= max {
                warn!("banned list full (limits.max_banned): ban not recorded");
                return false;
            }
            list.insert(e.clone());
        }
        if let Some(store) = &self.store {
            let mut b = WriteBatch::new();
            put_ban(&mut b, &e);
            // Durability of a ban is best effort: it is enforced from memory at once.
            drop(store.write(b));
        }
        true
    }

    pub fn unban(&self, key: &BanKey) -> bool {
        let found = self.banned.write().remove(key);
        if let Some(store) = &self.store {
            let mut b = WriteBatch::new();
            delete_ban(&mut b, key);
            drop(store.write(b));
        }
        found
    }

    pub fn banned(&self) -> Vec<BanEntry> {
        let l = self.banned.read();
        l.exact.values().chain(l.networks.iter()).cloned().collect()
    }

    /// Drops expired bans from memory and the store.
    pub fn purge_expired(&self, now_unix: u64) -> usize {
        let gone = self.banned.write().purge(now_unix);
        if let (Some(store), false) = (&self.store, gone.is_empty()) {
            let mut b = WriteBatch::new();
            for k in &gone {
                delete_ban(&mut b, k);
            }
            drop(store.write(b));
        }
        gone.len()
    }

    /// A fresh per-connection publish limiter.
    pub fn publish_limiter(self: &Arc<Self>, now: Instant) -> PublishLimiter {
        let ms = self.ms(now);
        PublishLimiter {
            messages: TokenBucket::new(self.cfg.publish_rate, self.cfg.publish_burst, ms),
            bytes: TokenBucket::new(self.cfg.publish_byte_rate, self.cfg.publish_byte_burst, ms),
            action: self.cfg.publish_rate_action,
            limits: self.clone(),
        }
    }

    /// True while overloaded: new connections are refused and the router should shed QoS 0
    /// messages to subscribers whose queues are not empty.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Same as [`Limits::is_overloaded`]: the router's question.
    pub fn shed_qos0(&self) -> bool {
        self.is_overloaded()
    }

    /// (high, low) memory watermarks in bytes.
    pub fn watermarks(&self) -> (u64, u64) {
        (self.high_bytes, self.low_bytes)
    }

    /// One overload sample: enter above either threshold, leave only below both low marks.
    /// Returns the new state when it changed.
    pub fn evaluate(&self, rss_bytes: u64, lateness_ms: u64) -> Option<bool> {
        if !self.cfg.overload_protection {
            return None;
        }
        let delay = u64::from(self.cfg.scheduler_delay_ms);
        let was = self.is_overloaded();
        let now = if was {
            !(rss_bytes < self.low_bytes && lateness_ms < delay / 2)
        } else {
            rss_bytes > self.high_bytes || lateness_ms > delay
        };
        if now == was {
            return None;
        }
        self.overloaded.store(now, Ordering::Relaxed);
        self.metrics
            .overload_transitions
            .fetch_add(1, Ordering::Relaxed);
        let mb = rss_bytes / (1024 * 1024);
        if now {
            warn!(
                rss_mb = mb,
                high_mb = self.high_bytes / (1024 * 1024),
                lateness_ms,
                "overloaded: refusing new connections and shedding QoS 0 to slow subscribers"
            );
        } else {
            info!(
                rss_mb = mb,
                low_mb = self.low_bytes / (1024 * 1024),
                lateness_ms,
                "overload over: accepting connections again"
            );
        }
        Some(now)
    }

    /// The overload monitor and the purge of expired bans, until `shutdown`.
    pub fn spawn_monitor(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_millis(u64::from(me.cfg.overload_sample_ms));
            let mut next = tokio::time::Instant::now() + period;
            let mut last_purge = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = shutdown.changed() => return,
                }
                // The tick's own lateness measures how long runnable tasks wait for a worker.
                let late = tokio::time::Instant::now().saturating_duration_since(next);
                next = tokio::time::Instant::now() + period;
                let late_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX);
                if let Some(rss) = resident_bytes() {
                    me.evaluate(rss, late_ms);
                }
                if last_purge.elapsed() >= Duration::from_secs(5) {
                    last_purge = Instant::now();
                    me.purge_expired(unix_now());
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        })
    }
}

/// (high, low) watermarks in bytes: absolute MiB when set, else percent of physical memory.
fn watermarks(cfg: &LimitsConfig, physical: Option<u64>) -> (u64, u64) {
    const MIB: u64 = 1024 * 1024;
    if let (Some(h), Some(l)) = (cfg.memory_high_mb, cfg.memory_low_mb) {
        return (h.saturating_mul(MIB), l.saturating_mul(MIB));
    }
    // Unknown physical memory: assume 4 GiB (a small host) rather than never protecting.
    let total = physical.unwrap_or(4096 * MIB);
    (
        total / 100 * u64::from(cfg.memory_high_percent),
        total / 100 * u64::from(cfg.memory_low_percent),
    )
}

/// MemTotal from /proc/meminfo, in bytes.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident set size from /proc/self/statm (pages; 4 KiB pages assumed, as on x86-64 and
/// most aarch64 kernels: a 64 KiB-page kernel under-reports, so watermarks trip late there).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            accept_rate: 1000,
            accept_burst: 1000,
            per_address_rate: 2,
            per_address_burst: 3,
            per_address_max_connections: 2,
            per_network_rate: 100,
            per_network_burst: 100,
            per_network_max_connections: 5,
            memory_high_mb: Some(100),
            memory_low_mb: Some(50),
            ..LimitsConfig::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn address_cap_and_guard_release() {
        let l = Limits::new(&cfg(), None);
        let t = Instant::now();
        let a = l.admit("l", ip(1), t).unwrap();
        let b = l.admit("l", ip(1), t).unwrap();
        assert_eq!(
            l.admit("l", ip(1), t).err(),
            Some(Refusal::AddressConnections)
        );
        assert_eq!(l.open_from(ip(1)), 2);
        drop(a);
        assert_eq!(l.open_from(ip(1)), 1);
        // Third token of the burst of 3.
        let _c = l.admit("l", ip(1), t).unwrap();
        drop(b);
        // Burst spent: the rate refuses now, and refills at 2/s.
        assert_eq!(l.admit("l", ip(1), t).err(), Some(Refusal::AddressRate));
        assert!(l.admit("l", ip(1), t + Duration::from_millis(600)).is_ok());
        assert_eq!(l.metrics.refused(Refusal::AddressRate), 1);
        assert_eq!(l.metrics.refused(Refusal::AddressConnections), 1);
    }

    #[test]
    fn network_cap_spans_addresses_and_v6_prefix() {
        let l = Limits::new(&cfg(), None);
        let t = Instant::now();
        let guards: Vec<_> = (1..=5).map(|i| l.admit("l", ip(i), t).unwrap()).collect();
        assert_eq!(
            l.admit("l", ip(9), t).err(),
            Some(Refusal::NetworkConnections)
        );
        // The address slot taken before the network refused was given back.
        assert_eq!(l.open_from(ip(9)), 0);
        // Another /24 is unaffected.
        assert!(l
            .admit("l", IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), t)
            .is_ok());
        drop(guards);
        assert!(l.admit("l", ip(9), t).is_ok());
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(network_of(a, 24, 64), network_of(b, 24, 64));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(canonical(mapped), ip(1));
    }

    #[test]
    fn exempt_peers_skip_per_address_limits() {
        let l = Limits::new(&cfg(), None);
        let t = Instant::now();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let held: Vec<_> = (0..20).map(|_| l.admit("l", lo, t).unwrap()).collect();
        assert_eq!(held.len(), 20);
        // Only 127.0.0.1 itself is exempt by default.
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let _a = l.admit("l", other, t).unwrap();
        let _b = l.admit("l", other, t).unwrap();
        assert_eq!(
            l.admit("l", other, t).err(),
            Some(Refusal::AddressConnections)
        );
    }

    #[test]
    fn listener_rate() {
        let c = LimitsConfig {
            accept_rate: 1,
            accept_burst: 2,
            ..cfg()
        };
        let l = Limits::new(&c, None);
        let t = Instant::now();
        let _a = l.admit("x", ip(1), t).unwrap();
        let _b = l.admit("x", ip(2), t).unwrap();
        assert_eq!(l.admit("x", ip(3), t).err(), Some(Refusal::ListenerRate));
        // Each listener has its own bucket.
        let _y = l.admit("y", ip(3), t).expect("own bucket");
        // A refused connection's slot goes back (ip(3) holds only the one on "y").
        assert_eq!(l.open_from(ip(3)), 1);
        // Connections that their address's own caps refuse don't spend the listener's
        // budget: a flooding address leaves the rest of it for everyone else.
        let z = Limits::new(
            &LimitsConfig {
                accept_rate: 1,
                accept_burst: 3,
                per_address_max_connections: 1,
                ..cfg()
            },
            None,
        );
        let _held = z.admit("z", ip(4), t).unwrap();
        for _ in 0..5 {
            let r = z.admit("z", ip(4), t).err();
            assert!(r.is_some() && r != Some(Refusal::ListenerRate), "{r:?}");
        }
        let _other = z
            .admit("z", ip(5), t)
            .expect("the listener's budget is intact");
        // A trusted proxy is held to the listener rate only, not to per-address caps.
        let p = Limits::new(&cfg(), None);
        let held: Vec<_> = (0..10)
            .map(|_| p.admit_proxied("x", ip(1), t).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
        assert_eq!(p.open_from(ip(1)), 0);
        // The clients it names are held to the per-address caps, each on its own.
        let c1: Vec<_> = (0..2)
            .map(|_| p.admit_client("x", ip(7), t).unwrap())
            .collect();
        assert_eq!(
            p.admit_client("x", ip(7), t).err(),
            Some(Refusal::AddressConnections)
        );
        assert!(p.admit_client("x", ip(8), t).is_ok());
        drop(c1);
        assert_eq!(p.open_from(ip(7)), 0);
        assert!(p.ban(BanEntry {
            key: BanKey::Address(ip(9)),
            reason: String::new(),
            expires_at: None,
        }));
        assert_eq!(p.admit_client("x", ip(9), t).err(), Some(Refusal::Banned));
    }

    #[test]
    fn source_table_is_bounded_and_sweeps_idle_entries() {
        let c = LimitsConfig {
            max_tracked_sources: 16,
            per_address_rate: 1000,
            per_address_burst: 1,
            per_network_max_connections: 10_000,
            ipv4_prefix: 32,
            ..cfg()
        };
        let l = Limits::new(&c, None);
        let t = Instant::now();
        let held: Vec<_> = (0..16).map(|i| l.admit("l", ip(i), t).unwrap()).collect();
        assert_eq!(
            l.admit("l", ip(100), t).err(),
            Some(Refusal::TooManySources)
        );
        drop(held);
        // Released and refilled entries are swept on the next miss.
        let later = t + Duration::from_millis(200);
        assert!(l.admit("l", ip(100), later).is_ok());
        assert!(l.addresses.lock().map.len() <= 16);
    }

    #[test]
    fn flapping_bans_then_expires() {
        let c = LimitsConfig {
            flapping_max_connects: 3,
            flapping_window_secs: 10,
            flapping_ban_secs: 60,
            ..cfg()
        };
        let l = Limits::new(&c, None);
        let t = Instant::now();
        let p = ip(1);
        for _ in 0..3 {
            assert_eq!(l.check_connect("c1", None, p, t), Ok(()));
        }
        assert_eq!(l.check_connect("c1", None, p, t), Err(ReasonCode::Banned));
        assert_eq!(l.check_connect("c1", None, p, t), Err(ReasonCode::Banned));
        assert_eq!(l.check_connect("c2", None, p, t), Ok(()));
        assert_eq!(l.metrics.flapping_bans.load(Ordering::Relaxed), 1);
        let now = unix_now();
        let ban = l.banned().into_iter().next().unwrap();
        assert!(ban.expires_at.unwrap() >= now + 59);
        assert_eq!(l.purge_expired(now + 61), 1);
        assert!(l.banned().is_empty());
        // Connects spread beyond the window do not count as flapping.
        let l = Limits::new(&c, None);
        for i in 0..10u64 {
            let at = t + Duration::from_secs(i * 4);
            assert_eq!(l.check_connect("c3", None, p, at), Ok(()));
        }
    }

    #[test]
    fn flapping_table_is_bounded() {
        let c = LimitsConfig {
            max_tracked_sources: 16,
            ..cfg()
        };
        let l = Limits::new(&c, None);
        let t = Instant::now();
        for i in 0..40 {
            assert_eq!(l.check_connect(&format!("c{i}"), None, ip(1), t), Ok(()));
        }
        assert!(l.flapping.lock().len() <= 16);
        assert_eq!(l.metrics.flapping_untracked.load(Ordering::Relaxed), 24);
        // Once the window has passed, idle counters are swept and tracking resumes.
        let later = t + Duration::from_secs(61);
        assert_eq!(l.check_connect("fresh", None, ip(1), later), Ok(()));
        let key = l.flapping_keys.hash_one("fresh");
        assert!(l.flapping.lock().contains_key(&key));
    }

    #[test]
    fn banned_list_matches_each_kind_and_round_trips() {
        let l = Limits::new(&cfg(), None);
        let t = Instant::now();
        for k in [
            "client:bad",
            "user:mallory",
            "addr:10.0.0.7",
            "net:192.168.0.0/16",
        ] {
            let key = BanKey::parse(k).unwrap();
            assert_eq!(key.encode(), k);
            let e = BanEntry {
                key,
                reason: "test".into(),
                expires_at: None,
            };
            let back = BanEntry::decode(k.as_bytes(), e.encode_value().as_bytes()).unwrap();
            assert_eq!(back, e);
            assert!(l.ban(e));
        }
        let r = |c: &str, u: Option<&str>, p: IpAddr| l.check_connect(c, u, p, t);
        assert_eq!(r("bad", None, ip(1)), Err(ReasonCode::Banned));
        assert_eq!(r("ok", Some("mallory"), ip(1)), Err(ReasonCode::Banned));
        assert_eq!(r("ok", None, ip(7)), Err(ReasonCode::Banned));
        let in_net = IpAddr::V4(Ipv4Addr::new(192, 168, 3, 4));
        assert_eq!(r("ok", None, in_net), Err(ReasonCode::Banned));
        assert_eq!(r("ok", Some("alice"), ip(2)), Ok(()));
        // Address and network bans also refuse at accept, before any handshake.
        assert_eq!(l.admit("l", ip(7), t).err(), Some(Refusal::Banned));
        assert_eq!(l.admit("l", in_net, t).err(), Some(Refusal::Banned));
        assert!(l.unban(&BanKey::parse("addr:10.0.0.7").unwrap()));
        assert!(l.admit("l", ip(7), t).is_ok());
        assert!(BanKey::parse("nope").is_err());
        assert!(BanKey::parse("addr:x").is_err());
        assert!(BanKey::parse("net:10.0.0.0/40").is_err());
    }

    #[test]
    fn banned_list_persists_in_the_store() {
        let store: Arc<dyn Store> = Arc::new(rampart_store::MemoryStore::new());
        let l = Limits::new(&cfg(), Some(store.clone()));
        assert!(l.ban(BanEntry {
            key: BanKey::ClientId("x".into()),
            reason: "manual".into(),
            expires_at: None,
        }));
        assert!(l.ban(BanEntry {
            key: BanKey::ClientId("old".into()),
            reason: "expired".into(),
            expires_at: Some(1),
        }));
        let wait = std::time::Instant::now() + Duration::from_secs(5);
        while load_banned(store.as_ref()).unwrap().len() < 2 && std::time::Instant::now() < wait {
            std::thread::yield_now();
        }
        let again = Limits::new(&cfg(), Some(store.clone()));
        let list = again.banned();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].reason, "manual");
    }

    #[test]
    fn overload_hysteresis() {
        let l = Limits::new(&cfg(), None);
        const MIB: u64 = 1024 * 1024;
        assert_eq!(l.watermarks(), (100 * MIB, 50 * MIB));
        assert_eq!(l.evaluate(90 * MIB, 0), None);
        assert_eq!(l.evaluate(101 * MIB, 0), Some(true));
        assert!(l.shed_qos0());
        let t = Instant::now();
        assert_eq!(l.admit("l", ip(1), t).err(), Some(Refusal::Overloaded));
        assert_eq!(
            l.check_connect("c", None, ip(1), t),
            Err(ReasonCode::ServerBusy)
        );
        // Between the watermarks: still overloaded.
        assert_eq!(l.evaluate(70 * MIB, 0), None);
        assert_eq!(l.evaluate(40 * MIB, 0), Some(false));
        // Scheduling delay alone also trips it, and recovers below half the threshold.
        assert_eq!(l.evaluate(10 * MIB, 501), Some(true));
        assert_eq!(l.evaluate(10 * MIB, 300), None);
        assert_eq!(l.evaluate(10 * MIB, 100), Some(false));
        assert_eq!(l.metrics.overload_transitions.load(Ordering::Relaxed), 4);
        let off = Limits::new(
            &LimitsConfig {
                overload_protection: false,
                ..cfg()
            },
            None,
        );
        assert_eq!(off.evaluate(u64::MAX, u64::MAX), None);
        assert!(resident_bytes().unwrap_or(0) > 0);
        let pct = watermarks(&LimitsConfig::default(), Some(1000 * MIB));
        assert_eq!(pct, (800 * MIB, 700 * MIB));
    }

    #[test]
    fn publish_rate_back_pressure_and_disconnect() {
        let c = LimitsConfig {
            publish_rate: 10,
            publish_burst: 5,
            publish_byte_rate: 1000,
            publish_byte_burst: 1000,
            ..cfg()
        };
        let l = Limits::new(&c, None);
        let t = Instant::now();
        let mut p = l.publish_limiter(t);
        for _ in 0..5 {
            assert_eq!(p.on_publish(10, t), RateVerdict::Allow);
        }
        assert_eq!(
            p.on_publish(10, t),
            RateVerdict::Wait(Duration::from_millis(100))
        );
        assert_eq!(p.time_until(t + Duration::from_millis(100)), 0);
        // A packet bigger than the byte burst passes into debt, then waits it out.
        let mut p = l.publish_limiter(t);
        assert_eq!(
            p.on_publish(3000, t),
            RateVerdict::Wait(Duration::from_millis(2000))
        );
        let l = Limits::new(
            &LimitsConfig {
                publish_rate_action: RateAction::Disconnect,
                ..c
            },
            None,
        );
        let mut p = l.publish_limiter(t);
        for _ in 0..5 {
            assert_eq!(p.on_publish(1, t), RateVerdict::Allow);
        }
        assert_eq!(p.on_publish(1, t), RateVerdict::Disconnect);
        assert_eq!(l.metrics.publish_disconnects.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn log_gate_allows_one_line_per_second() {
        let g = LogGate::default();
        assert_eq!(g.allow(5), Some(0));
        assert_eq!(g.allow(500), None);
        assert_eq!(g.allow(900), None);
        assert_eq!(g.allow(1005), Some(2));
    }
}
