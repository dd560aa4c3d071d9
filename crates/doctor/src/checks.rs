//! The checks that read the configuration, the host and the files the configuration names.
//! The live TLS probe is in `probe.rs`.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rampart_config::{
    AclSource, BackendKind, ClientAuth, Config, CrlExpired, ListenerConfig, NoMatch,
    StorageBackend, TLS12_CIPHERS, TLS13_CIPHERS,
};

use crate::der;
use crate::host::{self, Host, Unit};
use crate::model::{Finding, Location, Mode, Status};
use crate::{Options, Role};

/// Checklist thresholds (HARDENING.md H1).
pub const FILE_MAX_GOOD: u64 = 2_000_000;
pub const NR_OPEN_GOOD: u64 = 2_000_000;
/// The unit's process limit (H1), also the floor below which file-max/nr_open fail.
pub const NOFILE_GOOD: u64 = 1_048_576;
/// A certificate expiring sooner than this is a warning (T3).
pub const CERT_EXPIRY_WARN_SECS: i64 = 30 * 86_400;
/// A CRL whose nextUpdate is sooner than this is a warning (T5).
pub const CRL_NEXT_UPDATE_WARN_SECS: i64 = 86_400;
/// Cap on a certificate, CA bundle or CRL read: real ones are KiB; a CRL of a large CA can
/// reach MiB, so the cap is generous but bounded.
pub const MAX_PKI_FILE_BYTES: u64 = 16 * 1024 * 1024;

const SYSCTL_FILE: &str = "/etc/sysctl.d/99-rampart.conf";

/// Everything the checks share: the config, the host view, and who the service runs as.
pub(crate) struct Cx<'a> {
    pub cfg: &'a Config,
    pub host: &'a Host,
    pub opts: &'a Options,
    pub unit: Option<Unit>,
    /// The config file's text, for locating keys (None in zero-config mode).
    text: Option<String>,
}

impl<'a> Cx<'a> {
    pub fn new(cfg: &'a Config, opts: &'a Options) -> Cx<'a> {
        let text = cfg.source.as_deref().and_then(host::read_capped);
        Cx {
            cfg,
            host: &opts.host,
            opts,
            unit: opts.host.unit(),
            text,
        }
    }

    fn config_name(&self) -> String {
        match &self.cfg.source {
            Some(p) => p.display().to_string(),
            None => rampart_config::ZERO_CONFIG_NAME.to_string(),
        }
    }

    /// Where `key` of `table` was set: an env override, a line of the config file, or
    /// `None` (a default). `listener` selects the n-th `[[listeners]]` block.
    pub fn locate(&self, listener: Option<usize>, table: &str, key: &str) -> Option<Location> {
        let env = match listener {
            Some(i) => {
                let sub = table.strip_prefix("listeners").unwrap_or("");
                let sub = sub.trim_start_matches('.').to_ascii_uppercase();
                if sub.is_empty() {
                    format!("RAMPART_LISTENERS__{i}__{}", key.to_ascii_uppercase())
                } else {
                    format!(
                        "RAMPART_LISTENERS__{i}__{sub}__{}",
                        key.to_ascii_uppercase()
                    )
                }
            }
            None => format!(
                "RAMPART_{}__{}",
                table.to_ascii_uppercase().replace('.', "__"),
                key.to_ascii_uppercase()
            ),
        };
        if self.cfg.env_overrides.contains(&env) {
            return Some(Location {
                file: format!("env {env}"),
                line: None,
            });
        }
        let text = self.text.as_ref()?;
        let mut current = String::new();
        let mut nth: Option<usize> = None;
        for (no, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if let Some(h) = line.strip_prefix("[[").and_then(|h| h.split_once("]]")) {
                current = h.0.trim().to_string();
                if current == "listeners" {
                    nth = Some(nth.map_or(0, |n| n + 1));
                }
                continue;
            }
            if let Some(h) = line.strip_prefix('[').and_then(|h| h.split_once(']')) {
                current = h.0.trim().to_string();
                continue;
            }
            if current != table || (listener.is_some() && nth != listener) {
                continue;
            }
            if let Some(rest) = line.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(Location {
                        file: self.config_name(),
                        line: Some(no + 1),
                    });
                }
            }
        }
        None
    }

    /// The open-file limit the broker runs (or will run) with.
    pub fn service_nofile(&self) -> Option<u64> {
        match (self.opts.role, &self.unit) {
            (Role::Audit, Some(unit)) => {
                unit.get("LimitNOFILE").and_then(|s| parse_limit(&s.value))
            }
            _ => self.host.self_nofile(),
        }
    }

    /// The uid the broker runs as, when it can be told, and how it was found.
    pub fn service_user(&self) -> Option<(u32, String)> {
        match (self.opts.role, &self.unit) {
            (Role::Audit, Some(unit)) => {
                let name = unit.get("User").map(|s| s.value.clone())?;
                if let Ok(uid) = name.parse::<u32>() {
                    return Some((uid, name));
                }
                Some((self.host.uid_of(&name)?, name))
            }
            _ => {
                let uid = self.host.self_euid()?;
                let name = self.host.user_name(uid).unwrap_or_else(|| uid.to_string());
                Some((uid, name))
            }
        }
    }
}

/// `LimitNOFILE=` value: `N`, `SOFT:HARD` or `infinity`; the soft limit is what counts.
fn parse_limit(v: &str) -> Option<u64> {
    let soft = v.split(':').next()?.trim();
    if soft == "infinity" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

fn show_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_private() || a.is_link_local(),
        // fc00::/7 unique local, fe80::/10 link local.
        IpAddr::V6(a) => {
            (a.segments()[0] & 0xfe00) == 0xfc00 || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Development mode: zero-config, or nothing reachable from another host.
pub fn mode_of(cfg: &Config) -> Mode {
    if cfg.local_only || cfg.listeners.iter().all(|l| is_loopback(l.bind.ip())) {
        Mode::Development
    } else {
        Mode::Production
    }
}

fn listener_label(i: usize, l: &ListenerConfig) -> String {
    format!("listeners[{i}] \"{}\" ({} on {})", l.name, l.kind, l.bind)
}

pub(crate) fn all(cx: &Cx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    mode(cx, &mut out);
    h1(cx, &mut out);
    h2(cx, &mut out);
    h3(cx, &mut out);
    c2(cx, &mut out);
    transport(cx, &mut out);
    mqtt(cx, &mut out);
    out
}

fn mode(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let title = "Development or production mode";
    let f = if cx.cfg.local_only {
        Finding::new("DEV.mode", "DEV", title, Status::Warn,
            "development mode: no config file; plain MQTT on loopback only, anonymous loopback clients")
            .fix("rampart serve --config /etc/rampart/rampart.toml (start from config/rampart.example.toml)")
    } else if mode_of(cx.cfg) == Mode::Development {
        Finding::new("DEV.mode", "DEV", title, Status::Warn,
            format!("development mode: all {} listener(s) bound to loopback; failures do not stop `rampart serve`", cx.cfg.listeners.len()))
            .at(cx.config_name(), None)
            .fix("for production, bind TLS listeners to a reachable address (see config/rampart.example.toml)")
    } else {
        let exposed = cx
            .cfg
            .listeners
            .iter()
            .filter(|l| !is_loopback(l.bind.ip()))
            .count();
        Finding::new(
            "DEV.mode",
            "DEV",
            title,
            Status::Pass,
            format!("production mode: {exposed} listener(s) on non-loopback addresses"),
        )
        .at(cx.config_name(), None)
    };
    out.push(f);
}

/// A sysctl compared against a good value and a floor.
fn sysctl_floor(
    cx: &Cx<'_>,
    check: &str,
    id: &'static str,
    name: &str,
    good: u64,
    floor: u64,
    set_to: u64,
) -> Finding {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let title = format!("{name} (good: at least {good})");
    let fix = format!("sysctl -w {name}={set_to}; persist it: install -m 0644 packaging/99-rampart.conf {SYSCTL_FILE}");
    match cx.host.sysctl(name).map(|v| (v.parse::<u64>(), v)) {
        None => Finding::new(
            check,
            id,
            title,
            Status::Warn,
            format!("cannot read {path} (not Linux, or a container without /proc/sys)"),
        )
        .at(path, None)
        .fix(fix),
        Some((Err(_), v)) => Finding::new(
            check,
            id,
            title,
            Status::Warn,
            format!("unreadable value {v:?}"),
        )
        .at(path, None)
        .fix(fix),
        Some((Ok(v), _)) => {
            let status = if v >= good {
                Status::Pass
            } else if v >= floor {
                Status::Warn
            } else {
                Status::Fail
            };
            Finding::new(check, id, title, status, format!("{name} = {v}"))
                .at(path, None)
                .fix(fix)
        }
    }
}

fn h1(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    out.push(sysctl_floor(
        cx,
        "H1.file_max",
        "H1",
        "fs.file-max",
        FILE_MAX_GOOD,
        NOFILE_GOOD,
        4_194_304,
    ));
    out.push(sysctl_floor(
        cx,
        "H1.nr_open",
        "H1",
        "fs.nr_open",
        NR_OPEN_GOOD,
        NOFILE_GOOD,
        2_097_152,
    ));

    // The process limit: the broker's own at start-up; with a unit installed, an audit
    // reads the unit instead (this process is the operator's shell, not the broker).
    let title = format!("process open-file limit (good: at least {NOFILE_GOOD})");
    let explicit = cx.cfg.mqtt.max_connections;
    let f = if cx.opts.role == Role::Audit && cx.unit.is_some() {
        Finding::new(
            "H1.process_nofile",
            "H1",
            title,
            Status::NotApplicable,
            "the service's limit is LimitNOFILE of the installed unit (H1.unit_limitnofile)",
        )
    } else {
        match cx.host.self_nofile() {
            None => Finding::new(
                "H1.process_nofile",
                "H1",
                title,
                Status::Warn,
                "cannot read /proc/self/limits",
            )
            .at("/proc/self/limits", None)
            .fix("run under systemd with LimitNOFILE=1048576 (packaging/rampart.service)"),
            Some(n) => {
                let status = if n >= NOFILE_GOOD {
                    Status::Pass
                } else if explicit != 0
                    && n < u64::from(explicit) + rampart_config::RESERVED_FDS_MIN
                {
                    Status::Fail
                } else {
                    Status::Warn
                };
                let mut ev = format!("soft limit {} for this process", show_limit(n));
                if explicit != 0 {
                    ev.push_str(&format!("; mqtt.max_connections = {explicit}"));
                } else {
                    ev.push_str(&format!(
                        "; connection cap derived from it: {}",
                        rampart_config::derive_max_connections(Some(n))
                    ));
                }
                Finding::new("H1.process_nofile", "H1", title, status, ev)
                    .at("/proc/self/limits", None)
                    .fix("LimitNOFILE=1048576 in the unit (packaging/rampart.service), or `ulimit -n 1048576` before starting")
            }
        }
    };
    out.push(f);

    let title = format!(
        "LimitNOFILE of {} (good: at least {NOFILE_GOOD})",
        host::UNIT_NAME
    );
    let fix = "LimitNOFILE=1048576 in [Service] (install packaging/rampart.service), then systemctl daemon-reload";
    let f = match &cx.unit {
        None => Finding::new(
            "H1.unit_limitnofile",
            "H1",
            title,
            Status::Warn,
            format!(
                "no {} under /etc/systemd/system, /usr/lib/systemd/system or /lib/systemd/system",
                host::UNIT_NAME
            ),
        )
        .fix("install packaging/rampart.service (packaging/install.sh)"),
        Some(unit) => match unit.get("LimitNOFILE") {
            None => Finding::new(
                "H1.unit_limitnofile",
                "H1",
                title,
                Status::Fail,
                "LimitNOFILE not set: systemd's default soft limit is 1024",
            )
            .at(unit.file.clone(), None)
            .fix(fix),
            Some(s) => {
                let (status, ev) = match parse_limit(&s.value) {
                    Some(n) if n >= NOFILE_GOOD => {
                        (Status::Pass, format!("LimitNOFILE={}", s.value))
                    }
                    Some(_) => (
                        Status::Fail,
                        format!("LimitNOFILE={} is below {NOFILE_GOOD}", s.value),
                    ),
                    None => (
                        Status::Fail,
                        format!("LimitNOFILE={} is not a number", s.value),
                    ),
                };
                Finding::new("H1.unit_limitnofile", "H1", title, status, ev)
                    .at(s.file.clone(), Some(s.line))
                    .fix(fix)
            }
        },
    };
    out.push(f);
}

fn h2(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let path = "/proc/sys/net/ipv4/tcp_syncookies";
    let title = "SYN cookies (net.ipv4.tcp_syncookies = 1)";
    let fix = format!("sysctl -w net.ipv4.tcp_syncookies=1; persist it: install -m 0644 packaging/99-rampart.conf {SYSCTL_FILE}");
    let f = match cx.host.sysctl("net.ipv4.tcp_syncookies") {
        None => Finding::new(
            "H2.syncookies",
            "H2",
            title,
            Status::Warn,
            format!("cannot read {path}"),
        )
        .fix(fix),
        Some(v) => {
            let status = if v == "1" || v == "2" {
                Status::Pass
            } else {
                Status::Fail
            };
            Finding::new(
                "H2.syncookies",
                "H2",
                title,
                status,
                format!("net.ipv4.tcp_syncookies = {v}"),
            )
            .fix(fix)
        }
    }
    .at(path, None);
    out.push(f);

    let path = "/proc/sys/net/netfilter/nf_conntrack_max";
    let mut expected = cx.cfg.mqtt.effective_max_connections(cx.service_nofile());
    // When every listener has its own cap, their sum bounds the total too.
    let caps: Option<u64> = cx
        .cfg
        .listeners
        .iter()
        .map(|l| l.max_connections.map(u64::from))
        .sum();
    if let Some(sum) = caps {
        expected = expected.min(u32::try_from(sum).unwrap_or(u32::MAX));
    }
    let title = "connection-tracking table against the connection cap";
    let want = (u64::from(expected) * 2).next_power_of_two();
    let fix = format!("sysctl -w net.netfilter.nf_conntrack_max={want}; persist it in {SYSCTL_FILE} (packaging/99-rampart.conf)");
    let f = match cx.host.sysctl("net.netfilter.nf_conntrack_max").map(|v| v.parse::<u64>()) {
        None => Finding::new("H2.conntrack_max", "H2", title, Status::NotApplicable,
            "nf_conntrack is not loaded: there is no connection-tracking table to fill"),
        Some(Err(_)) => Finding::new("H2.conntrack_max", "H2", title, Status::Warn, "unreadable value").fix(fix),
        Some(Ok(v)) => {
            let status = if v >= u64::from(expected) * 2 {
                Status::Pass
            } else if v >= u64::from(expected) {
                Status::Warn
            } else {
                Status::Fail
            };
            Finding::new("H2.conntrack_max", "H2", title, status,
                format!("nf_conntrack_max = {v}; connection cap = {expected} (good: at least twice the cap)"))
                .fix(fix)
        }
    }
    .at(path, None);
    out.push(f);
}

fn h3(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    for (i, l) in cx.cfg.listeners.iter().enumerate() {
        let label = listener_label(i, l);
        let loc = cx.locate(Some(i), "listeners", "bind");
        let title = "client exposure of the listener";
        let f = if l.kind.is_tls() {
            Finding::new(
                "H3.listener",
                "H3",
                title,
                Status::Pass,
                format!("{label}: TLS"),
            )
        } else if is_loopback(l.bind.ip()) {
            Finding::new(
                "H3.listener",
                "H3",
                title,
                Status::Pass,
                format!("{label}: plaintext on loopback only"),
            )
        } else if is_private(l.bind.ip()) {
            Finding::new("H3.listener", "H3", title, Status::Warn,
                format!("{label}: plaintext on a private address; acceptable only on a trusted private network or VPN"))
                .fix(format!("kind = \"{}\" with a [listeners.tls] table, or bind = \"127.0.0.1:{}\"",
                    if l.kind.is_websocket() { "wss" } else { "tls" }, l.bind.port()))
        } else {
            Finding::new(
                "H3.listener",
                "H3",
                title,
                Status::Fail,
                format!("{label}: plaintext on a non-loopback address"),
            )
            .fix(format!(
                "kind = \"{}\" with a [listeners.tls] table, or bind = \"127.0.0.1:{}\"",
                if l.kind.is_websocket() { "wss" } else { "tls" },
                l.bind.port()
            ))
        };
        out.push(f.on(&l.name).at_loc(loc));
    }

    let dev = mode_of(cx.cfg) == Mode::Development;
    for (check, kind, title, port) in [
        (
            "H3.tls_listener",
            rampart_config::ListenerKind::Tls,
            "a TLS listener for MQTT clients",
            8883,
        ),
        (
            "H3.wss_listener",
            rampart_config::ListenerKind::Wss,
            "a secure WebSocket listener",
            8084,
        ),
    ] {
        let found: Vec<String> = cx
            .cfg
            .listeners
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| format!("\"{}\" on {}", l.name, l.bind))
            .collect();
        let f = if !found.is_empty() {
            Finding::new(check, "H3", title, Status::Pass, found.join(", "))
        } else if dev {
            Finding::new(
                check,
                "H3",
                title,
                Status::NotApplicable,
                format!("no {kind} listener (development mode)"),
            )
        } else if kind == rampart_config::ListenerKind::Wss {
            Finding::new(
                check,
                "H3",
                title,
                Status::NotApplicable,
                "no wss listener (needed only for browser clients)",
            )
        } else {
            Finding::new(check, "H3", title, Status::Warn, format!("no {kind} listener"))
                .fix(format!("[[listeners]] kind = \"{kind}\" bind = \"0.0.0.0:{port}\" with a [listeners.tls] table"))
        };
        out.push(f);
    }

    let d = cx.cfg.danger.allow_plaintext;
    let f = Finding::new(
        "H3.danger_allow_plaintext",
        "H3",
        "danger.allow_plaintext",
        if d { Status::Fail } else { Status::Pass },
        format!("danger.allow_plaintext = {d}"),
    )
    .at_loc(cx.locate(None, "danger", "allow_plaintext"))
    .fix("danger.allow_plaintext = false, and use tls/wss listeners for remote clients");
    out.push(f);
}

/// Mode and owner of one file or directory (C2).
fn file_check(
    cx: &Cx<'_>,
    check: &str,
    title: &str,
    path: &Path,
    secret: bool,
    is_dir: bool,
) -> Finding {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Finding::new(check, "C2", title, Status::Fail, format!("{shown}: {e}"))
                .on(&shown)
                .at(&shown, None)
                .fix(format!("create {shown} or correct its path in the config"));
        }
    };
    let mode = meta.mode() & 0o7777;
    let mut status = Status::Pass;
    let mut ev = format!("{shown}: mode {mode:04o}");
    let mut fixes = Vec::new();
    if secret && mode & 0o077 != 0 {
        status = Status::Fail;
        ev.push_str(", readable or writable by group/other");
        fixes.push(format!(
            "chmod {} {shown}",
            if is_dir { "0700" } else { "0600" }
        ));
    } else if !secret && mode & 0o022 != 0 {
        status = Status::Fail;
        ev.push_str(", writable by group/other");
        fixes.push(format!("chmod go-w {shown}"));
    }
    let owner = cx
        .host
        .user_name(meta.uid())
        .unwrap_or_else(|| meta.uid().to_string());
    ev.push_str(&format!(", owner {owner}"));
    match cx.service_user() {
        Some((uid, name)) if uid != meta.uid() && (secret || meta.uid() != 0) => {
            // Root-owned public files (certificates, CA bundles) are fine; secrets and the
            // data directory must belong to the service user.
            status = status.max(Status::Warn);
            ev.push_str(&format!(" (the service runs as {name})"));
            fixes.push(format!("chown {name}: {shown}"));
        }
        _ => {}
    }
    let f = Finding::new(check, "C2", title, status, ev)
        .on(&shown)
        .at(&shown, None);
    if fixes.is_empty() {
        f
    } else {
        f.fix(fixes.join(" && "))
    }
}

fn c2(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    match &cx.cfg.source {
        Some(p) => out.push(file_check(
            cx,
            "C2.config_file",
            "config file readable by its owner only",
            p,
            true,
            false,
        )),
        None => out.push(Finding::new(
            "C2.config_file",
            "C2",
            "config file readable by its owner only",
            Status::NotApplicable,
            "zero-config mode: no config file",
        )),
    }
    let mut files: Vec<(&str, &str, &Path, bool)> = Vec::new();
    for l in &cx.cfg.listeners {
        let Some(tls) = &l.tls else { continue };
        files.extend([
            (
                "C2.key_file",
                "TLS private key readable by its owner only",
                tls.key_file.as_path(),
                true,
            ),
            (
                "C2.cert_file",
                "TLS certificate not writable by others",
                tls.cert_file.as_path(),
                false,
            ),
        ]);
        if let Some(ca) = &tls.ca_file {
            files.push((
                "C2.ca_file",
                "client CA bundle not writable by others",
                ca,
                false,
            ));
        }
        for crl in &tls.crl_files {
            files.push(("C2.crl_file", "CRL not writable by others", crl, false));
        }
        for key in &tls.sni_key_files {
            files.push((
                "C2.key_file",
                "TLS private key readable by its owner only",
                key,
                true,
            ));
        }
        for cert in &tls.sni_cert_files {
            files.push((
                "C2.cert_file",
                "TLS certificate not writable by others",
                cert,
                false,
            ));
        }
    }
    for b in &cx.cfg.auth.backends {
        match &b.kind {
            BackendKind::Builtin {
                mosquitto_password_file: Some(p),
            } => {
                files.push((
                    "C2.secret_file",
                    "password file readable by its owner only",
                    p,
                    true,
                ));
            }
            BackendKind::Jwt(j) => {
                if let Some(p) = &j.secret_file {
                    files.push((
                        "C2.secret_file",
                        "JWT secret readable by its owner only",
                        p,
                        true,
                    ));
                }
                if let Some(p) = &j.public_key_file {
                    files.push((
                        "C2.auth_file",
                        "JWT public key not writable by others",
                        p,
                        false,
                    ));
                }
            }
            BackendKind::Http(h) => {
                if let Some(p) = &h.ca_file {
                    files.push((
                        "C2.auth_file",
                        "auth server CA bundle not writable by others",
                        p,
                        false,
                    ));
                }
            }
            BackendKind::Ldap(l) => {
                if let Some(p) = &l.ca_file {
                    files.push((
                        "C2.auth_file",
                        "LDAP CA bundle not writable by others",
                        p,
                        false,
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(p) = &cx.cfg.acl.file {
        // Whoever can write the ACL can grant themselves every topic.
        files.push(("C2.acl_file", "ACL file not writable by others", p, false));
    }
    let mut seen: Vec<&Path> = Vec::new();
    for (check, title, path, secret) in files {
        if seen.contains(&path) {
            continue;
        }
        seen.push(path);
        out.push(file_check(cx, check, title, path, secret, false));
    }
    let title = "data directory private to the service user";
    match cx.cfg.storage.backend {
        StorageBackend::Memory => out.push(Finding::new(
            "C2.data_dir",
            "C2",
            title,
            Status::NotApplicable,
            "storage.backend = \"memory\": nothing is written",
        )),
        StorageBackend::Redb => {
            let dir = &cx.cfg.node.data_dir;
            if dir.exists() {
                out.push(file_check(cx, "C2.data_dir", title, dir, true, true));
                let store = dir.join("rampart.redb");
                if store.exists() {
                    out.push(file_check(
                        cx,
                        "C2.store_file",
                        "store file private to the service user",
                        &store,
                        true,
                        false,
                    ));
                }
            } else {
                let user = cx
                    .service_user()
                    .map_or_else(|| "rampart".to_string(), |(_, n)| n);
                out.push(
                    Finding::new(
                        "C2.data_dir",
                        "C2",
                        title,
                        Status::Warn,
                        format!("{} does not exist yet", dir.display()),
                    )
                    .on(dir.display().to_string())
                    .fix(format!(
                        "install -d -m 0700 -o {user} -g {user} {}",
                        dir.display()
                    )),
                );
            }
        }
    }

    let title = "broker not running as root";
    let fix = "run as the dedicated user: User=rampart in the unit (packaging/rampart.service)";
    let f = match (cx.opts.role, &cx.unit) {
        (Role::Audit, Some(unit)) => {
            if unit
                .get("DynamicUser")
                .is_some_and(|s| s.value == "yes" || s.value == "true")
            {
                Finding::new("C2.not_root", "C2", title, Status::Pass, "DynamicUser=yes")
            } else {
                match unit.get("User") {
                    None => Finding::new(
                        "C2.not_root",
                        "C2",
                        title,
                        Status::Fail,
                        "the unit has no User=: it runs as root",
                    )
                    .at(unit.file.clone(), None),
                    Some(s) if s.value == "root" || s.value == "0" => Finding::new(
                        "C2.not_root",
                        "C2",
                        title,
                        Status::Fail,
                        format!("User={}", s.value),
                    )
                    .at(s.file.clone(), Some(s.line)),
                    Some(s) => Finding::new(
                        "C2.not_root",
                        "C2",
                        title,
                        Status::Pass,
                        format!("User={}", s.value),
                    )
                    .at(s.file.clone(), Some(s.line)),
                }
            }
        }
        (Role::Audit, None) => Finding::new(
            "C2.not_root",
            "C2",
            title,
            Status::Warn,
            format!(
                "no {} installed: cannot tell which user the broker runs as",
                host::UNIT_NAME
            ),
        ),
        (Role::Startup, _) => match cx.host.self_euid() {
            Some(0) => Finding::new(
                "C2.not_root",
                "C2",
                title,
                Status::Fail,
                "effective uid 0 (root)",
            ),
            Some(uid) => Finding::new(
                "C2.not_root",
                "C2",
                title,
                Status::Pass,
                format!(
                    "effective uid {uid} ({})",
                    cx.host.user_name(uid).unwrap_or_default()
                ),
            ),
            None => Finding::new(
                "C2.not_root",
                "C2",
                title,
                Status::Warn,
                "cannot read /proc/self/status",
            ),
        }
        .at("/proc/self/status", None),
    };
    out.push(f.fix(fix));
}

/// PEM or DER certificates from a file.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bytes = host::read_bytes_capped(path, MAX_PKI_FILE_BYTES).map_err(|e| e.to_string())?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes]);
    }
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes)
        .map(|c| c.map(|c| c.to_vec()))
        .collect();
    let certs = certs.map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block".to_string());
    }
    Ok(certs)
}

fn load_crl(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateRevocationListDer};
    let bytes = host::read_bytes_capped(path, MAX_PKI_FILE_BYTES).map_err(|e| e.to_string())?;
    if bytes.first() == Some(&0x30) {
        return Ok(bytes);
    }
    CertificateRevocationListDer::from_pem_slice(&bytes)
        .map(|c| c.to_vec())
        .map_err(|e| format!("not a PEM X509 CRL: {e}"))
}

/// Dates and order of a served or configured chain (T3): `(status, evidence)`.
pub(crate) fn judge_chain(chain: &[Vec<u8>], now: i64) -> (Status, String) {
    let mut infos = Vec::new();
    for (i, c) in chain.iter().enumerate() {
        match der::parse_cert(c) {
            Some(info) => infos.push(info),
            None => {
                return (
                    Status::Fail,
                    format!("certificate {i} of the chain cannot be parsed"),
                )
            }
        }
    }
    let Some(leaf) = infos.first() else {
        return (Status::Fail, "no certificate".to_string());
    };
    let mut status = Status::Pass;
    let mut notes = vec![format!(
        "{} certificate(s); leaf valid until {}",
        infos.len(),
        der::format_time(leaf.not_after)
    )];
    for (i, c) in infos.iter().enumerate() {
        let what = if i == 0 {
            "leaf".to_string()
        } else {
            format!("certificate {i}")
        };
        if c.not_after < now {
            status = Status::Fail;
            notes.push(format!("{what} expired {}", der::format_time(c.not_after)));
        } else if c.not_before > now {
            status = Status::Fail;
            notes.push(format!(
                "{what} not valid before {}",
                der::format_time(c.not_before)
            ));
        } else if c.not_after - now < CERT_EXPIRY_WARN_SECS {
            status = status.max(Status::Warn);
            notes.push(format!("{what} expires within 30 days"));
        }
        if let Some(next) = infos.get(i + 1) {
            if c.issuer != next.subject {
                status = Status::Fail;
                notes.push(format!(
                    "certificate {} does not issue {what}: chain out of order or incomplete",
                    i + 1
                ));
            }
        }
    }
    if infos.len() == 1 {
        if leaf.self_issued() {
            status = status.max(Status::Warn);
            notes.push(
                "self-signed: clients can only pin it, not verify it against a CA".to_string(),
            );
        } else {
            notes.push("leaf only: clients need its issuer as a trust anchor".to_string());
        }
    }
    (status, notes.join("; "))
}

fn transport(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let now = cx.opts.now;
    let tls_listeners: Vec<(usize, &ListenerConfig)> = cx
        .cfg
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.tls.is_some())
        .collect();
    if tls_listeners.is_empty() {
        for (check, id, title) in [
            ("T1.min_version", "T1", "TLS protocol versions"),
            ("T2.ciphers", "T2", "TLS cipher suites"),
            ("T3.certificate", "T3", "certificate chain and expiry"),
            ("T4.client_auth", "T4", "mutual TLS"),
            ("T5.crl", "T5", "certificate revocation lists"),
            ("T6.ocsp", "T6", "OCSP stapling"),
        ] {
            out.push(Finding::new(
                check,
                id,
                title,
                Status::NotApplicable,
                "no TLS listener",
            ));
        }
        return;
    }
    for (i, l) in tls_listeners {
        let Some(tls) = &l.tls else { continue };
        let label = listener_label(i, l);
        let loc = |key: &str| cx.locate(Some(i), "listeners.tls", key);

        out.push(
            Finding::new(
                "T1.min_version",
                "T1",
                "TLS protocol versions",
                Status::Pass,
                format!(
                    "{label}: min_version = {} (TLS 1.0 and 1.1 cannot be enabled)",
                    tls.min_version.as_str()
                ),
            )
            .on(&l.name)
            .at_loc(loc("min_version")),
        );

        let unknown: Vec<&String> = tls
            .ciphers
            .iter()
            .filter(|c| {
                !TLS13_CIPHERS.contains(&c.as_str()) && !TLS12_CIPHERS.contains(&c.as_str())
            })
            .collect();
        let groups = if tls.groups.is_empty() {
            String::new()
        } else {
            format!("; key exchange groups {}", tls.groups.join(", "))
        };
        let f = if !unknown.is_empty() {
            Finding::new(
                "T2.ciphers",
                "T2",
                "TLS cipher suites",
                Status::Fail,
                format!("{label}: not AEAD with forward secrecy: {unknown:?}"),
            )
            .fix("ciphers = [] (the library defaults are AEAD with forward secrecy)")
        } else if tls.ciphers.is_empty() {
            Finding::new(
                "T2.ciphers",
                "T2",
                "TLS cipher suites",
                Status::Pass,
                format!("{label}: library defaults (AEAD with forward secrecy only){groups}"),
            )
        } else {
            Finding::new(
                "T2.ciphers",
                "T2",
                "TLS cipher suites",
                Status::Pass,
                format!("{label}: {}{groups}", tls.ciphers.join(", ")),
            )
        };
        out.push(f.on(&l.name).at_loc(loc("ciphers")));

        let f = match load_certs(&tls.cert_file) {
            Err(e) => Finding::new(
                "T3.certificate",
                "T3",
                "certificate chain and expiry",
                Status::Fail,
                format!("{label}: {}: {e}", tls.cert_file.display()),
            )
            .fix(format!(
                "put the PEM chain, leaf first, in {}",
                tls.cert_file.display()
            )),
            Ok(chain) => {
                let (status, ev) = judge_chain(&chain, now);
                Finding::new(
                    "T3.certificate",
                    "T3",
                    "certificate chain and expiry",
                    status,
                    format!("{label}: {}: {ev}", tls.cert_file.display()),
                )
                .fix(format!(
                    "renew the certificate and put the whole chain, leaf first, in {}",
                    tls.cert_file.display()
                ))
            }
        };
        out.push(f.on(&l.name).at_loc(loc("cert_file")));
        for sni in &tls.sni_cert_files {
            let subject = format!("{}:{}", l.name, sni.display());
            let f = match load_certs(sni) {
                Err(e) => Finding::new(
                    "T3.certificate",
                    "T3",
                    "certificate chain and expiry",
                    Status::Fail,
                    format!("{label}: SNI certificate {}: {e}", sni.display()),
                ),
                Ok(chain) => {
                    let (status, ev) = judge_chain(&chain, now);
                    Finding::new(
                        "T3.certificate",
                        "T3",
                        "certificate chain and expiry",
                        status,
                        format!("{label}: SNI certificate {}: {ev}", sni.display()),
                    )
                }
            }
            .fix(format!(
                "renew the certificate and put the whole chain, leaf first, in {}",
                sni.display()
            ));
            out.push(f.on(subject).at_loc(loc("sni_cert_files")));
        }

        let f = if tls.client_auth == ClientAuth::None {
            Finding::new(
                "T3.verify_depth",
                "T3",
                "client certificate verification depth",
                Status::NotApplicable,
                format!("{label}: no client certificates (client_auth = none)"),
            )
        } else {
            Finding::new(
                "T3.verify_depth",
                "T3",
                "client certificate verification depth",
                Status::Pass,
                format!("{label}: verify_depth = {}", tls.verify_depth),
            )
        };
        out.push(f.on(&l.name).at_loc(loc("verify_depth")));

        let f = match tls.client_auth {
            ClientAuth::None => Finding::new("T4.client_auth", "T4", "mutual TLS", Status::NotApplicable,
                format!("{label}: client_auth = none: clients authenticate with MQTT credentials (M1)")),
            ClientAuth::Optional => Finding::new("T4.client_auth", "T4", "mutual TLS", Status::Warn,
                format!("{label}: client_auth = optional: a client without a certificate completes the handshake"))
                .fix("client_auth = \"required\""),
            ClientAuth::Required => match tls.ca_file.as_deref().map(load_certs) {
                Some(Ok(cas)) => Finding::new("T4.client_auth", "T4", "mutual TLS", Status::Pass,
                    format!("{label}: client_auth = required; {} CA certificate(s)", cas.len())),
                Some(Err(e)) => Finding::new("T4.client_auth", "T4", "mutual TLS", Status::Fail,
                    format!("{label}: client_auth = required but the CA bundle is unusable: {e}"))
                    .fix("ca_file = \"/etc/rampart/tls/clients-ca.pem\" (a PEM bundle)"),
                None => Finding::new("T4.client_auth", "T4", "mutual TLS", Status::Fail,
                    format!("{label}: client_auth = required without ca_file"))
                    .fix("ca_file = \"/etc/rampart/tls/clients-ca.pem\""),
            },
        };
        out.push(f.on(&l.name).at_loc(loc("client_auth")));

        let f = if tls.client_auth == ClientAuth::None {
            Finding::new(
                "T5.crl",
                "T5",
                "certificate revocation lists",
                Status::NotApplicable,
                format!("{label}: no client certificates"),
            )
        } else if tls.crl_files.is_empty() && !tls.crl_fetch {
            Finding::new(
                "T5.crl",
                "T5",
                "certificate revocation lists",
                Status::Warn,
                format!("{label}: no crl_files and crl_fetch = false: a revoked client certificate is still accepted"),
            )
            .fix("crl_files = [\"/etc/rampart/tls/clients-ca.crl\"] (or crl_fetch = true)")
        } else {
            let mut status = Status::Pass;
            let mut notes = Vec::new();
            let stale_effect = match tls.crl_expired {
                CrlExpired::Deny => {
                    "client certificates it covers are refused (crl_expired = deny)"
                }
                CrlExpired::Allow => "revocations since then are missed (crl_expired = allow)",
            };
            for p in &tls.crl_files {
                let shown = p.display();
                match load_crl(p).map(|d| der::parse_crl(&d)) {
                    Err(e) => {
                        status = Status::Fail;
                        notes.push(format!("{shown}: {e}"));
                    }
                    Ok(None) => {
                        status = Status::Fail;
                        notes.push(format!("{shown}: not a CRL"));
                    }
                    Ok(Some(crl)) => {
                        let age_days = (now - crl.this_update).max(0) / 86_400;
                        match crl.next_update {
                            Some(n) if n < now => {
                                status = Status::Fail;
                                notes.push(format!("{shown}: stale: nextUpdate {} has passed (issued {age_days} days ago): {stale_effect}", der::format_time(n)));
                            }
                            Some(n) => {
                                if n - now < CRL_NEXT_UPDATE_WARN_SECS {
                                    status = status.max(Status::Warn);
                                }
                                notes.push(format!(
                                    "{shown}: issued {age_days} days ago, nextUpdate {}",
                                    der::format_time(n)
                                ));
                            }
                            None => {
                                status = status.max(Status::Warn);
                                notes.push(format!(
                                    "{shown}: no nextUpdate, issued {age_days} days ago"
                                ));
                            }
                        }
                    }
                }
            }
            if tls.crl_fetch {
                notes.push(format!(
                    "CRLs also fetched from distribution points every {} s at most",
                    tls.crl_refresh_secs
                ));
            }
            if !tls.crl_files.is_empty() {
                notes.push(format!(
                    "files re-read every {} s and on SIGHUP, without a restart",
                    tls.reload_poll_secs
                ));
            }
            let mut fix = "fetch a fresh CRL from the CA into the configured crl_files (for example from a systemd timer)";
            if tls.crl_expired == CrlExpired::Allow {
                status = status.max(Status::Warn);
                notes.push("crl_expired = allow: an out-of-date CRL keeps being used".to_string());
                fix = "crl_expired = \"deny\", and refresh the CRLs before their nextUpdate";
            }
            Finding::new(
                "T5.crl",
                "T5",
                "certificate revocation lists",
                status,
                format!("{label}: {}", notes.join("; ")),
            )
            .fix(fix)
        };
        out.push(f.on(&l.name).at_loc(loc("crl_files")));

        let title = "OCSP stapling";
        let f = if !tls.ocsp_stapling {
            Finding::new(
                "T6.ocsp",
                "T6",
                title,
                Status::Warn,
                format!("{label}: ocsp_stapling = false"),
            )
            .fix("ocsp_stapling = true")
            .at_loc(loc("ocsp_stapling"))
        } else if let Some(url) = &tls.ocsp_url {
            if url.starts_with("https://") && tls.fetch_ca_file.is_none() && !tls.fetch_system_roots
            {
                Finding::new(
                    "T6.ocsp",
                    "T6",
                    title,
                    Status::Warn,
                    format!("{label}: responder {url} is https:// but no root is trusted for it (no fetch_ca_file, fetch_system_roots = false): nothing is stapled"),
                )
                .fix("fetch_ca_file = \"<PEM bundle of the responder's CA>\" or fetch_system_roots = true in [listeners.tls]")
                .at_loc(loc("fetch_system_roots"))
            } else {
                Finding::new(
                    "T6.ocsp",
                    "T6",
                    title,
                    Status::Pass,
                    format!("{label}: stapling on, responder {url} (ocsp_url)"),
                )
                .at_loc(loc("ocsp_url"))
            }
        } else {
            match load_certs(&tls.cert_file) {
                Err(_) => Finding::new(
                    "T6.ocsp",
                    "T6",
                    title,
                    Status::NotApplicable,
                    format!("{label}: the certificate is unreadable (see T3.certificate)"),
                ),
                Ok(chain) => {
                    let aia = chain.first().is_some_and(|c| der::has_ocsp_responder(c));
                    if aia && chain.len() >= 2 {
                        Finding::new("T6.ocsp", "T6", title, Status::Pass,
                            format!("{label}: stapling on, responder from the certificate's AIA extension"))
                    } else if aia {
                        Finding::new("T6.ocsp", "T6", title, Status::Warn,
                            format!("{label}: the certificate names an OCSP responder but cert_file holds no issuer certificate, so no OCSP request can be made"))
                            .fix(format!("append the issuing CA certificate to {}", tls.cert_file.display()))
                    } else {
                        Finding::new("T6.ocsp", "T6", title, Status::Warn,
                            format!("{label}: stapling on, but no responder is known (no OCSP URL in the certificate, no ocsp_url): nothing is stapled"))
                            .fix("ocsp_url = \"http://ocsp.example.org/\" in [listeners.tls], or a certificate whose AIA names its OCSP responder")
                    }
                }
            }
        };
        out.push(f.on(&l.name));
    }
}

fn mqtt(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let m = &cx.cfg.mqtt;
    let auth = &cx.cfg.auth;
    let anonymous = cx.cfg.danger.allow_anonymous;
    let exposed: Vec<&ListenerConfig> = cx
        .cfg
        .listeners
        .iter()
        .filter(|l| !is_loopback(l.bind.ip()))
        .collect();
    let title = "at least one authentication backend";
    let f = if !auth.backends.is_empty() {
        let list: Vec<String> = auth
            .backends
            .iter()
            .map(|b| format!("{} ({})", b.name, b.kind.as_str()))
            .collect();
        Finding::new(
            "M1.backends",
            "M1",
            title,
            Status::Pass,
            format!("auth.backends: {}", list.join(", ")),
        )
    } else if exposed.is_empty() {
        Finding::new(
            "M1.backends",
            "M1",
            title,
            Status::NotApplicable,
            "no backend; every listener is on loopback (anonymous loopback clients only)",
        )
    } else {
        Finding::new("M1.backends", "M1", title, Status::Fail,
            "no [[auth.backends]] while listeners are exposed: remote clients cannot authenticate")
            .fix("[[auth.backends]] name = \"users\" kind = \"builtin\" (users: rampart ctl users add), or kind = \"certificate\" on mTLS listeners")
    };
    out.push(f.at_loc(cx.locate(None, "auth", "backends")));

    let title = "authentication on every non-loopback listener";
    if exposed.is_empty() {
        out.push(Finding::new(
            "M1.authentication",
            "M1",
            title,
            Status::NotApplicable,
            "every listener is on loopback",
        ));
    }
    for l in &exposed {
        let serving: Vec<&rampart_config::BackendConfig> = auth
            .backends
            .iter()
            .filter(|b| b.listeners.is_empty() || b.listeners.contains(&l.name))
            .collect();
        let asks_cert = l
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth != ClientAuth::None);
        let usable: Vec<String> = serving
            .iter()
            .filter(|b| asks_cert || !matches!(b.kind, BackendKind::Certificate { .. }))
            .map(|b| format!("{} ({})", b.name, b.kind.as_str()))
            .collect();
        let f = if !usable.is_empty() {
            Finding::new(
                "M1.authentication",
                "M1",
                title,
                Status::Pass,
                format!(
                    "listener \"{}\" on {}: {}",
                    l.name,
                    l.bind,
                    usable.join(", ")
                ),
            )
        } else {
            let why = if serving.is_empty() {
                "no backend serves it".to_string()
            } else {
                "only a certificate backend serves it, and it asks for no client certificate"
                    .to_string()
            };
            let (status, effect) = if anonymous {
                (
                    Status::Fail,
                    "clients get in without credentials (danger.allow_anonymous)",
                )
            } else {
                (Status::Warn, "its clients cannot log in")
            };
            Finding::new("M1.authentication", "M1", title, status,
                format!("listener \"{}\" on {}: {why}: {effect}", l.name, l.bind))
                .fix(format!("listeners = [\"{}\"] on an [[auth.backends]] entry (or leave listeners empty: every listener)", l.name))
        };
        out.push(f.on(&l.name));
    }

    let bf = &auth.brute_force;
    let f = if exposed.is_empty() && auth.backends.is_empty() {
        Finding::new(
            "M1.brute_force",
            "M1",
            "brute-force protection",
            Status::NotApplicable,
            "no password backend",
        )
    } else if bf.enabled {
        Finding::new(
            "M1.brute_force",
            "M1",
            "brute-force protection",
            Status::Pass,
            format!(
                "delays after {} failures, lockout after {} for {} s",
                bf.free_failures, bf.lockout_after, bf.lockout_secs
            ),
        )
    } else {
        Finding::new(
            "M1.brute_force",
            "M1",
            "brute-force protection",
            Status::Warn,
            "auth.brute_force.enabled = false: password guessing is only slowed by the hash",
        )
        .fix("enabled = true in [auth.brute_force]")
        .at_loc(cx.locate(None, "auth.brute_force", "enabled"))
    };
    out.push(f);

    out.push(
        Finding::new(
            "M1.danger_allow_anonymous",
            "M1",
            "anonymous access off (danger.allow_anonymous)",
            if anonymous {
                Status::Fail
            } else {
                Status::Pass
            },
            format!("danger.allow_anonymous = {anonymous}"),
        )
        .at_loc(cx.locate(None, "danger", "allow_anonymous"))
        .fix("danger.allow_anonymous = false"),
    );

    let acl = &cx.cfg.acl;
    let sources: Vec<&str> = acl
        .sources
        .iter()
        .map(|s| match s {
            AclSource::Identity => "identity",
            AclSource::File => "file",
            AclSource::Http => "http",
        })
        .collect();
    let mut ev = format!("acl.sources = [{}]", sources.join(", "));
    if acl.sources.contains(&AclSource::File) {
        match &acl.file {
            Some(p) => ev.push_str(&format!(", file {}", p.display())),
            None => ev.push_str(", no acl.file"),
        }
    }
    let f = match acl.no_match {
        NoMatch::Deny => Finding::new(
            "M2.acl_final_deny",
            "M2",
            "ACL ending in deny-by-default",
            Status::Pass,
            format!("acl.no_match = deny: what no rule allows is denied; {ev}"),
        ),
        NoMatch::Allow => Finding::new(
            "M2.acl_final_deny",
            "M2",
            "ACL ending in deny-by-default",
            Status::Fail,
            format!("acl.no_match = allow: what no rule denies is allowed; {ev}"),
        )
        .fix("no_match = \"deny\" in [acl]"),
    };
    out.push(f.at_loc(cx.locate(None, "acl", "no_match")));

    let nofile = cx.service_nofile();
    let quota =
        |check: &str, key: &str, value: u64, good: u64, bad: Option<u64>, fix: &str| -> Finding {
            let status = if value <= good {
                Status::Pass
            } else if bad.is_some_and(|b| value > b) {
                Status::Fail
            } else {
                Status::Warn
            };
            Finding::new(
                check,
                "M3",
                format!("mqtt.{key} (good: at most {good})"),
                status,
                format!("mqtt.{key} = {value}"),
            )
            .at_loc(cx.locate(None, "mqtt", key))
            .fix(format!("{key} = {fix} in [mqtt]"))
        };
    out.push(quota(
        "M3.max_packet_size",
        "max_packet_size",
        u64::from(m.max_packet_size),
        1_048_576,
        Some(16 * 1_048_576),
        "1048576",
    ));
    out.push(quota(
        "M3.max_topic_levels",
        "max_topic_levels",
        u64::from(m.max_topic_levels),
        16,
        None,
        "10",
    ));
    out.push(quota(
        "M3.max_client_id_length",
        "max_client_id_length",
        u64::from(m.max_client_id_length),
        256,
        None,
        "128",
    ));
    out.push(quota(
        "M3.max_inflight",
        "max_inflight",
        u64::from(m.max_inflight),
        1024,
        None,
        "128",
    ));
    out.push(quota(
        "M3.receive_maximum",
        "receive_maximum",
        u64::from(m.receive_maximum),
        1024,
        None,
        "256",
    ));
    out.push(quota(
        "M3.max_queued_bytes",
        "max_queued_bytes",
        m.max_queued_bytes,
        64 * 1_048_576,
        Some(1024 * 1_048_576),
        "16777216",
    ));
    out.push(quota(
        "M3.connect_timeout_secs",
        "connect_timeout_secs",
        u64::from(m.connect_timeout_secs),
        30,
        None,
        "10",
    ));

    let title = "mqtt.max_connections within the open-file limit";
    let f = if m.max_connections == 0 {
        Finding::new(
            "M3.max_connections",
            "M3",
            title,
            Status::Pass,
            format!(
                "mqtt.max_connections = 0: derived from the open-file limit ({}): {}",
                nofile.map_or("unknown".to_string(), show_limit),
                m.effective_max_connections(nofile)
            ),
        )
    } else {
        match nofile {
            Some(n) if u64::from(m.max_connections) + rampart_config::RESERVED_FDS_MIN > n => {
                Finding::new("M3.max_connections", "M3", title, Status::Fail,
                    format!("mqtt.max_connections = {} but the open-file limit is {}: accept() fails with EMFILE before the cap", m.max_connections, show_limit(n)))
                    .fix("max_connections = 0 in [mqtt] (derive it), or raise LimitNOFILE")
            }
            _ => Finding::new("M3.max_connections", "M3", title, Status::Pass,
                format!("mqtt.max_connections = {}", m.max_connections)),
        }
    };
    out.push(f.at_loc(cx.locate(None, "mqtt", "max_connections")));
    out.push(Finding::new(
        "M3.rates",
        "M3",
        "connection-rate and message-rate limits",
        Status::NotApplicable,
        "the config has no rate limit settings yet",
    ));
}
