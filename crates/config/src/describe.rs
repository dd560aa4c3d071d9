//! The human summary printed by `rampart check-config`.

use std::fmt::Write;

use crate::*;

pub(crate) fn describe(c: &Config, nofile: Option<u64>) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let w = &mut s;
    match &c.source {
        Some(p) => {
            let _ = writeln!(w, "source: {}", p.display());
        }
        None => {
            let _ = writeln!(w, "source: none (zero-config mode)");
        }
    }
    if !c.env_overrides.is_empty() {
        let _ = writeln!(w, "env overrides: {}", c.env_overrides.join(", "));
    }
    if c.local_only {
        let _ = writeln!(
            w,
            "mode: local-only development mode (loopback listeners, no config file)"
        );
    } else {
        let _ = writeln!(w, "mode: configured");
    }
    let _ = writeln!(w, "node.name = {}", c.node.name);
    let _ = writeln!(w, "node.data_dir = {}", c.node.data_dir.display());
    let _ = writeln!(w, "log.level = {}", c.log.level);
    let fmt = match c.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let _ = writeln!(w, "log.format = {fmt}");

    let _ = writeln!(w, "listeners ({}):", c.listeners.len());
    for l in &c.listeners {
        let cap = match l.max_connections {
            Some(n) => n.to_string(),
            None => "global cap only".to_string(),
        };
        let _ = write!(w, "  {}: {} on {}", l.name, l.kind, l.bind);
        if l.kind.is_websocket() {
            let _ = write!(w, " path {}", l.ws_path);
        }
        let plain = if l.kind.is_tls() {
            ""
        } else if l.bind.ip().is_loopback() {
            ", plaintext (loopback)"
        } else {
            ", PLAINTEXT on a non-loopback address (danger.allow_plaintext)"
        };
        let _ = writeln!(
            w,
            ", max_connections = {cap}, proxy_protocol = {}{plain}",
            l.proxy_protocol
        );
        if l.proxy_protocol {
            let nets: Vec<String> = l.trusted_proxies.iter().map(ToString::to_string).collect();
            let _ = writeln!(w, "    trusted_proxies = {}", nets.join(","));
        }
        if !l.ws_allowed_origins.is_empty() {
            let _ = writeln!(
                w,
                "    ws_allowed_origins = {}",
                l.ws_allowed_origins.join(",")
            );
        }
        if let Some(t) = &l.tls {
            let ca = t
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".to_string());
            let ciphers = if t.ciphers.is_empty() {
                "library defaults (AEAD only)".to_string()
            } else {
                t.ciphers.join(",")
            };
            let crls = if t.crl_files.is_empty() {
                "none".to_string()
            } else {
                t.crl_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = writeln!(
                w,
                "    tls: cert_file = {}, key_file = {}, ca_file = {ca}, client_auth = {}, \
                 min_version = {}, ciphers = {ciphers}, verify_depth = {}, crl_files = {crls}",
                t.cert_file.display(),
                t.key_file.display(),
                t.client_auth.as_str(),
                t.min_version.as_str(),
                t.verify_depth,
            );
            let groups = if t.groups.is_empty() {
                "library defaults (X25519, secp256r1, secp384r1)".to_string()
            } else {
                t.groups.join(",")
            };
            let _ = writeln!(
                w,
                "    tls: groups = {groups}, handshake_timeout_secs = {}, sni_certs = {}, \
                 crl_expired = {}, crl_fetch = {}, ocsp_stapling = {}{}, https fetch roots = {}, \
                 reload_poll_secs = {}, client_id_from = {}",
                t.handshake_timeout_secs,
                t.sni_cert_files.len(),
                match t.crl_expired {
                    CrlExpired::Deny => "deny",
                    CrlExpired::Allow => "allow",
                },
                t.crl_fetch,
                t.ocsp_stapling,
                t.ocsp_url
                    .as_ref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default(),
                match (&t.fetch_ca_file, t.fetch_system_roots) {
                    (Some(f), true) => format!("{} + system", f.display()),
                    (Some(f), false) => f.display().to_string(),
                    (None, true) => "system".to_string(),
                    (None, false) => "none".to_string(),
                },
                t.reload_poll_secs,
                t.client_id_from
                    .map_or("off (the client's own)", crate::auth::CertField::as_str),
            );
        }
    }

    let m = &c.mqtt;
    let _ = writeln!(w, "mqtt:");
    let lines: Vec<(&str, String)> = vec![
        ("max_packet_size", format!("{} bytes", m.max_packet_size)),
        ("max_topic_levels", m.max_topic_levels.to_string()),
        ("max_topic_length", format!("{} bytes", m.max_topic_length)),
        (
            "max_client_id_length",
            format!("{} bytes", m.max_client_id_length),
        ),
        ("receive_maximum", m.receive_maximum.to_string()),
        ("max_inflight", m.max_inflight.to_string()),
        ("max_queued_messages", m.max_queued_messages.to_string()),
        ("max_queued_bytes", format!("{} bytes", m.max_queued_bytes)),
        ("topic_alias_maximum", m.topic_alias_maximum.to_string()),
        ("max_keep_alive", format!("{} s", m.max_keep_alive)),
        (
            "server_keep_alive_when_zero",
            format!("{} s", m.server_keep_alive_when_zero),
        ),
        ("max_idle_v3_secs", format!("{} s", m.max_idle_v3_secs)),
        (
            "max_session_expiry",
            if m.max_session_expiry == u32::MAX {
                format!("{} s (never expires)", m.max_session_expiry)
            } else {
                format!("{} s", m.max_session_expiry)
            },
        ),
        (
            "max_subscriptions_per_client",
            m.max_subscriptions_per_client.to_string(),
        ),
        ("retained_max_count", m.retained_max_count.to_string()),
        (
            "retained_max_payload",
            format!("{} bytes", m.retained_max_payload),
        ),
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
        (
            "shared_subscription_strategy",
            m.shared_subscription_strategy.as_str().to_string(),
        ),
        (
            "connect_timeout_secs",
            format!("{} s", m.connect_timeout_secs),
        ),
        ("max_connections", max_connections_line(m, nofile)),
    ];
    for (k, v) in lines {
        let _ = writeln!(w, "  mqtt.{k} = {v}");
    }
    let per_client =
        (u64::from(m.max_queued_messages) * u64::from(m.max_packet_size)).min(m.max_queued_bytes);
    let _ = writeln!(
        w,
        "  worst-case queued bytes per client = {per_client} \
         (min(max_queued_messages x max_packet_size, max_queued_bytes))"
    );

    let _ = writeln!(
        w,
        "storage.backend = {}",
        match c.storage.backend {
            StorageBackend::Redb => "redb",
            StorageBackend::Memory => "memory (nothing survives a restart)",
        }
    );
    match c.storage.sync {
        SyncMode::Always => {
            let _ = writeln!(w, "storage.sync = always");
        }
        SyncMode::Periodic { interval_ms } => {
            let _ = writeln!(
                w,
                "storage.sync = periodic, storage.sync_interval_ms = {interval_ms} \
                 (a crash may lose up to this window of acknowledged messages)"
            );
        }
    }
    let _ = writeln!(w, "sys.enabled = {}", c.sys.enabled);
    let _ = writeln!(w, "sys.interval_secs = {}", c.sys.interval_secs);
    describe_auth(w, c);
    describe_limits(w, &c.limits);
    let _ = writeln!(w, "danger.allow_plaintext = {}", c.danger.allow_plaintext);
    let _ = writeln!(w, "danger.allow_anonymous = {}", c.danger.allow_anonymous);
    s
}

/// The authenticator chain and the authorization sources (M1, M2).
fn describe_auth(w: &mut String, c: &Config) {
    let a = &c.auth;
    if a.backends.is_empty() {
        let anon = if c.local_only {
            "anonymous loopback clients only (local-only mode)"
        } else if c.danger.allow_anonymous {
            "ANONYMOUS clients only (danger.allow_anonymous)"
        } else {
            "nobody can log in: add [[auth.backends]]"
        };
        let _ = writeln!(w, "auth: no backends; {anon}");
    } else {
        let _ = writeln!(w, "auth chain ({}):", a.backends.len());
        for b in &a.backends {
            let on = if b.listeners.is_empty() {
                "all listeners".to_string()
            } else {
                b.listeners.join(", ")
            };
            let timeout = b.timeout_ms.unwrap_or(a.timeout_ms);
            let _ = writeln!(
                w,
                "  {}: {} on {on}, timeout {timeout} ms",
                b.name,
                b.kind.as_str()
            );
        }
    }
    let ph = &a.password_hash;
    let _ = writeln!(
        w,
        "auth.password_hash = argon2id m={} KiB t={} p={} (memory per verification; at most {} at once)",
        ph.memory_kib, ph.iterations, ph.parallelism, a.max_concurrent_verifications
    );
    let bf = &a.brute_force;
    if bf.enabled {
        let _ = writeln!(
            w,
            "auth.brute_force: delay after {} failures (up to {} ms), lockout after {} for {} s",
            bf.free_failures, bf.max_delay_ms, bf.lockout_after, bf.lockout_secs
        );
    } else {
        let _ = writeln!(w, "auth.brute_force: OFF");
    }
    let l = &c.acl;
    let sources: Vec<&str> = l
        .sources
        .iter()
        .map(|s| match s {
            AclSource::Identity => "identity",
            AclSource::File => "file",
            AclSource::Http => "http",
        })
        .collect();
    let file = l
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none".to_string());
    let no_match = match l.no_match {
        NoMatch::Deny => "deny",
        NoMatch::Allow => "ALLOW (the ACL is a deny-list; M2 fails)",
    };
    if c.local_only {
        let _ = writeln!(w, "acl: everything allowed (local-only mode)");
    } else {
        let _ = writeln!(
            w,
            "acl: sources {}, file {file}, no_match = {no_match}, cache {} s",
            sources.join(" then "),
            l.cache_ttl_secs
        );
    }
}

fn max_connections_line(m: &MqttConfig, nofile: Option<u64>) -> String {
    if m.max_connections != 0 {
        return m.max_connections.to_string();
    }
    let derived = m.effective_max_connections(nofile);
    match nofile {
        Some(n) => format!(
            "0 (derived: {derived}, from the open-file limit {n} minus a reserve of max(5%, {RESERVED_FDS_MIN}))"
        ),
        None => format!("0 (derived: {derived}; the open-file limit could not be read)"),
    }
}

/// Admission, publish rates, flapping and overload protection (issue 6).
fn describe_limits(w: &mut String, l: &LimitsConfig) {
    let _ = writeln!(
        w,
        "limits.admission: per listener {}/s (burst {}); per address {}/s (burst {}), {} open; \
         per network /{} and /{} {}/s (burst {}), {} open; {} sources tracked",
        l.accept_rate,
        l.accept_burst,
        l.per_address_rate,
        l.per_address_burst,
        l.per_address_max_connections,
        l.ipv4_prefix,
        l.ipv6_prefix,
        l.per_network_rate,
        l.per_network_burst,
        l.per_network_max_connections,
        l.max_tracked_sources
    );
    let exempt = if l.exempt.is_empty() {
        "none".to_string()
    } else {
        l.exempt
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(w, "limits.exempt (no per-address limits): {exempt}");
    let _ = writeln!(
        w,
        "limits.flapping: ban {} s after more than {} connects in {} s; banned list up to {}",
        l.flapping_ban_secs, l.flapping_max_connects, l.flapping_window_secs, l.max_banned
    );
    let _ = writeln!(
        w,
        "limits.publish: {}/s (burst {}), {} bytes/s (burst {}) per client, then {}",
        l.publish_rate,
        l.publish_burst,
        l.publish_byte_rate,
        l.publish_byte_burst,
        l.publish_rate_action.as_str()
    );
    if !l.overload_protection {
        let _ = writeln!(w, "limits.overload: OFF");
        return;
    }
    let mem = match (l.memory_high_mb, l.memory_low_mb) {
        (Some(h), Some(lo)) => format!("memory high {h} MiB, low {lo} MiB"),
        _ => format!(
            "memory high {}% low {}% of physical memory",
            l.memory_high_percent, l.memory_low_percent
        ),
    };
    let _ = writeln!(
        w,
        "limits.overload: {mem}; scheduler delay {} ms; sampled every {} ms",
        l.scheduler_delay_ms, l.overload_sample_ms
    );
}
