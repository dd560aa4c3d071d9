//! Decoding of `[limits]` (types in `crate::limits`).

use super::*;
use crate::limits::*;

pub(super) fn limits_section(cx: &mut Cx, mut r: Reader) -> LimitsConfig {
    let d = LimitsConfig::default();
    const BIG: u32 = 100_000_000;
    let mut l = LimitsConfig {
        accept_rate: r.range(cx, "accept_rate", d.accept_rate, 1, BIG),
        accept_burst: r.range(cx, "accept_burst", d.accept_burst, 1, BIG),
        per_address_rate: r.range(cx, "per_address_rate", d.per_address_rate, 1, BIG),
        per_address_burst: r.range(cx, "per_address_burst", d.per_address_burst, 1, BIG),
        per_address_max_connections: r.range(
            cx,
            "per_address_max_connections",
            d.per_address_max_connections,
            1,
            10_000_000,
        ),
        ipv4_prefix: r.range(cx, "ipv4_prefix", d.ipv4_prefix, 1, 32),
        ipv6_prefix: r.range(cx, "ipv6_prefix", d.ipv6_prefix, 1, 128),
        per_network_rate: r.range(cx, "per_network_rate", d.per_network_rate, 1, BIG),
        per_network_burst: r.range(cx, "per_network_burst", d.per_network_burst, 1, BIG),
        per_network_max_connections: r.range(
            cx,
            "per_network_max_connections",
            d.per_network_max_connections,
            1,
            10_000_000,
        ),
        exempt: match r.opt::<Vec<String>>(cx, "exempt") {
            None => d.exempt.clone(),
            Some(list) => {
                let mut out = Vec::new();
                for p in list {
                    match IpNet::parse(&p) {
                        Ok(n) => out.push(n),
                        Err(msg) => {
                            let origin = r.origin_of("exempt");
                            cx.err(&origin, r.path("exempt"), msg);
                        }
                    }
                }
                out
            }
        },
        max_tracked_sources: r.range(
            cx,
            "max_tracked_sources",
            d.max_tracked_sources,
            16,
            10_000_000,
        ),
        flapping_max_connects: r.range(
            cx,
            "flapping_max_connects",
            d.flapping_max_connects,
            1,
            10_000,
        ),
        flapping_window_secs: r.range(
            cx,
            "flapping_window_secs",
            d.flapping_window_secs,
            1,
            86_400,
        ),
        flapping_ban_secs: r.range(cx, "flapping_ban_secs", d.flapping_ban_secs, 1, 604_800),
        max_banned: r.range(cx, "max_banned", d.max_banned, 1, 10_000_000),
        publish_rate: r.range(cx, "publish_rate", d.publish_rate, 1, BIG),
        publish_burst: r.range(cx, "publish_burst", d.publish_burst, 1, BIG),
        publish_byte_rate: r.range(cx, "publish_byte_rate", d.publish_byte_rate, 64, u32::MAX),
        publish_byte_burst: r.range(cx, "publish_byte_burst", d.publish_byte_burst, 64, u32::MAX),
        publish_rate_action: r.enum_or(
            cx,
            "publish_rate_action",
            d.publish_rate_action,
            &[
                ("back_pressure", RateAction::BackPressure),
                ("disconnect", RateAction::Disconnect),
            ],
        ),
        overload_protection: r.get(cx, "overload_protection", d.overload_protection),
        memory_high_percent: r.range(cx, "memory_high_percent", d.memory_high_percent, 2, 99),
        memory_low_percent: r.range(cx, "memory_low_percent", d.memory_low_percent, 1, 98),
        memory_high_mb: r.opt_range(cx, "memory_high_mb", 1, 1 << 30),
        memory_low_mb: r.opt_range(cx, "memory_low_mb", 1, 1 << 30),
        scheduler_delay_ms: r.range(cx, "scheduler_delay_ms", d.scheduler_delay_ms, 10, 60_000),
        overload_sample_ms: r.range(cx, "overload_sample_ms", d.overload_sample_ms, 10, 10_000),
    };
    if l.memory_low_percent >= l.memory_high_percent {
        let key = if r.has("memory_low_percent") {
            "memory_low_percent"
        } else {
            "memory_high_percent"
        };
        r.cross(
            cx,
            key,
            format!(
                "memory_low_percent ({}) must be below memory_high_percent ({})",
                l.memory_low_percent, l.memory_high_percent
            ),
        );
        l.memory_low_percent = d.memory_low_percent;
        l.memory_high_percent = d.memory_high_percent;
    }
    match (l.memory_high_mb, l.memory_low_mb) {
        (Some(h), Some(lo)) if lo >= h => {
            r.cross(
                cx,
                "memory_low_mb",
                format!("memory_low_mb ({lo}) must be below memory_high_mb ({h})"),
            );
        }
        (Some(_), None) => r.cross(
            cx,
            "memory_high_mb",
            "set memory_low_mb too (recovery needs a low watermark)".to_string(),
        ),
        (None, Some(_)) => r.cross(
            cx,
            "memory_low_mb",
            "set memory_high_mb too (it replaces memory_high_percent)".to_string(),
        ),
        _ => {}
    }
    if l.per_address_max_connections > l.per_network_max_connections {
        r.cross(
            cx,
            "per_address_max_connections",
            format!(
                "{} is larger than limits.per_network_max_connections ({}): an address is \
                 inside its network",
                l.per_address_max_connections, l.per_network_max_connections
            ),
        );
    }
    r.finish(cx);
    l
}
