//! `[limits]`: admission control before TLS, per-client publish rates, flapping bans and
//! overload protection (issue 6; hardening ids H1, H2, M3).
//!
//! Every limit has a non-zero default and a documented worst case. The protocol limits
//! (packet size, topic depth, queues, ...) stay in `[mqtt]`.

/// What happens to a client that publishes faster than its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAction {
    /// The connection stops reading until the client's tokens refill: TCP flow control
    /// slows the publisher down and nothing is lost.
    BackPressure,
    /// DISCONNECT 0x96 (Message rate too high) on v5; the socket is closed on 3.1.1.
    Disconnect,
}

impl RateAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RateAction::BackPressure => "back_pressure",
            RateAction::Disconnect => "disconnect",
        }
    }
}

use crate::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Admission, abuse and overload limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// New connections per second accepted by each listener (token bucket), checked right
    /// after accept, before the PROXY header, TLS or WebSocket work. Default 1000, burst
    /// `accept_burst` (default 2000). Worst case: this many handshakes per second per listener.
    pub accept_rate: u32,
    pub accept_burst: u32,
    /// New connections per second from one source address. Default 50, burst 100.
    pub per_address_rate: u32,
    pub per_address_burst: u32,
    /// Open connections from one source address. Default 1000 (NAT gateways share one).
    pub per_address_max_connections: u32,
    /// Prefix lengths that group source addresses into networks. Default /24 and /64.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// New connections per second from one network. Default 500, burst 1000.
    pub per_network_rate: u32,
    pub per_network_burst: u32,
    /// Open connections from one network. Default 10000.
    pub per_network_max_connections: u32,
    /// Peers exempt from the per-address and per-network limits (the listener rate, bans and
    /// overload still apply). Default 127.0.0.1 and ::1 only: local tools, health checks and
    /// benchmarks; the rest of 127.0.0.0/8 is limited like any address. A local reverse proxy
    /// that does not send PROXY headers makes every client look like 127.0.0.1: use
    /// `proxy_protocol` on that listener, or remove the exemption.
    pub exempt: Vec<IpNet>,
    /// Source addresses and networks tracked at once (the rest are refused while the table
    /// is full of active entries). Default 100000. Worst case: about 128 bytes per entry per
    /// table, so 2 x 12.8 MB at the default.
    pub max_tracked_sources: u32,
    /// Flapping: a client id that connects more than `flapping_max_connects` times within
    /// `flapping_window_secs` is banned for `flapping_ban_secs`. Defaults 500 in 60 s (a tight
    /// reconnect loop is caught within seconds; fleets of well-behaved devices may lower it to
    /// a few per minute), banned 300 s. Worst case: 4 bytes per remembered connect, at most `flapping_max_connects` per
    /// client id, for at most `max_tracked_sources` client ids.
    pub flapping_max_connects: u32,
    pub flapping_window_secs: u32,
    pub flapping_ban_secs: u32,
    /// Entries in the banned list (persisted in the store). Default 100000. Worst case:
    /// about 200 bytes each in memory.
    pub max_banned: u32,
    /// PUBLISH packets per second per client (token bucket). Default 1000, burst 2000.
    pub publish_rate: u32,
    pub publish_burst: u32,
    /// PUBLISH bytes per second per client (whole packets). Default 10 MiB/s, burst 20 MiB.
    /// A packet larger than the burst is let through into debt, so any packet within
    /// `mqtt.max_packet_size` can pass; the debt is paid before the next one.
    pub publish_byte_rate: u32,
    pub publish_byte_burst: u32,
    /// What happens above either publish rate. Default `back_pressure`.
    pub publish_rate_action: RateAction,
    /// Overload protection: refuse new connections and shed QoS 0 to slow subscribers while
    /// the process's resident memory is above the high watermark or the scheduler runs late;
    /// recover below the low watermark. Default true.
    pub overload_protection: bool,
    /// Watermarks in percent of physical memory. Defaults 80 and 70.
    pub memory_high_percent: u8,
    pub memory_low_percent: u8,
    /// Absolute watermarks in MiB; when set they replace the percentages (set both).
    pub memory_high_mb: Option<u64>,
    pub memory_low_mb: Option<u64>,
    /// Milliseconds a periodic tick may run late before the broker counts as overloaded.
    /// Default 500, range 10..=60000. Recovery when lateness falls below half of it.
    pub scheduler_delay_ms: u32,
    /// Milliseconds between overload samples. Default 250, range 10..=10000. Cost: one read
    /// of /proc/self/statm per sample.
    pub overload_sample_ms: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            accept_rate: 1000,
            accept_burst: 2000,
            per_address_rate: 50,
            per_address_burst: 100,
            per_address_max_connections: 1000,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            per_network_rate: 500,
            per_network_burst: 1000,
            per_network_max_connections: 10_000,
            exempt: vec![
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    prefix: 32,
                },
                IpNet {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
            ],
            max_tracked_sources: 100_000,
            flapping_max_connects: 500,
            flapping_window_secs: 60,
            flapping_ban_secs: 300,
            max_banned: 100_000,
            publish_rate: 1000,
            publish_burst: 2000,
            publish_byte_rate: 10 * 1024 * 1024,
            publish_byte_burst: 20 * 1024 * 1024,
            publish_rate_action: RateAction::BackPressure,
            overload_protection: true,
            memory_high_percent: 80,
            memory_low_percent: 70,
            memory_high_mb: None,
            memory_low_mb: None,
            scheduler_delay_ms: 500,
            overload_sample_ms: 250,
        }
    }
}
