//! Starting and stopping the brokers under test, each with an equivalent permissive config on its
//! own loopback port and its own temporary directory.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rampart,
    Mosquitto,
    Rumqttd,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        match s.trim() {
            "rampart" => Ok(Kind::Rampart),
            "mosquitto" => Ok(Kind::Mosquitto),
            "rumqttd" => Ok(Kind::Rumqttd),
            other => bail!("unknown broker {other:?} (rampart, mosquitto, rumqttd)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Rampart => "rampart",
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
        }
    }

    /// Each broker gets its own port pair so that a slow-closing predecessor never collides.
    fn port(self) -> u16 {
        match self {
            Kind::Rampart => 18830,
            Kind::Mosquitto => 18840,
            Kind::Rumqttd => 18850,
        }
    }
}

/// How brokers are started (shared by every scenario of a run).
#[derive(Clone, Debug)]
pub struct LaunchOpts {
    pub rampart_bin: PathBuf,
    /// A complete Rampart config with placeholders; None uses the built-in one.
    pub rampart_template: Option<String>,
    pub mosquitto_bin: String,
    pub rumqttd_bin: String,
    /// Run the broker under `taskset -c 0`.
    pub pin: bool,
    /// Append the permissive `[limits]` block to the built-in Rampart config.
    pub rampart_limits: bool,
    /// Rampart storage backend for the persistence scenario.
    pub persist_storage: String,
    /// Server certificate and key for TLS listeners (generated once per run).
    pub cert: Option<(PathBuf, PathBuf)>,
    pub mqtt_v5: bool,
    /// Password files for the authentication scenarios (made once per run).
    pub creds: Option<crate::auth::Credentials>,
    /// PostgreSQL holding the `bench_mqtt_user` table, for auth-postgres.
    pub pg_url: Option<String>,
}

/// How clients authenticate in the authentication scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Rampart: built-in users with argon2id hashes (default parameters) in its store, and
    /// `auth.verified_cache_secs` as given (0 is the default: every login is hashed).
    Argon2 { cache_secs: u64 },
    /// Rampart: built-in users imported from Mosquitto's password file (PBKDF2-SHA512), so
    /// that both brokers verify the same hashes.
    MosquittoHashes,
    /// Rampart: the PostgreSQL backend (salted SHA-256 rows).
    Postgres,
}

/// What a scenario needs from the broker it runs against.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub persistence: bool,
    pub tls: bool,
    /// Rampart with its production `[limits]` (no permissive block): the flood measures them.
    pub production_limits: bool,
    /// Clients log in (Mosquitto: password file; rumqttd: its plain-text table).
    pub auth: Option<Auth>,
}

/// Why `kind` cannot run a scenario with these needs (it is then reported as skipped).
pub fn unsupported(kind: Kind, needs: Needs, o: &LaunchOpts) -> Option<String> {
    match (kind, needs.auth) {
        (_, Some(_)) if o.creds.is_none() => {
            Some("no credentials (see the run's first notes)".into())
        }
        (Kind::Rampart, Some(Auth::Postgres)) if o.pg_url.is_none() => {
            Some("no PostgreSQL (pass --pg-url; scripts/bench.sh starts one)".into())
        }
        (Kind::Rumqttd, Some(Auth::Postgres)) => Some("rumqttd has no SQL backend".into()),
        _ => None,
    }
}

pub struct Running {
    pub kind: Kind,
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    /// Why TLS is not offered, when it is not.
    pub tls_note: Option<String>,
    dir: PathBuf,
}

const RAMPART_TEMPLATE: &str = r#"[node]
data_dir = "{data_dir}"

[[listeners]]
name = "bench"
kind = "tcp"
bind = "127.0.0.1:{port}"

[mqtt]
max_inflight = 1000
receive_maximum = 1000
max_queued_messages = 100000
# Above the 19,000 idle connections of the connect scenario (the derived default is the
# open-file limit minus 5%, which is just below it on a 20,000-file machine).
max_connections = 19500

[storage]
backend = "{storage}"

[log]
level = "warn"
"#;

/// Appended to the built-in template when the Rampart under test knows the `[limits]` section
/// (probed with `rampart check-config`): the admission and publish-rate limits that protect a
/// production broker would otherwise cap the load generator (1,000 msg/s per client, 1,000 new
/// connections/s, 10,000 connections per /24), and Mosquitto has none of them. Overload
/// protection is off for the same reason: it sheds QoS 0 when a tick runs late, which a broker
/// pinned to a shared core may see.
const RAMPART_LIMITS_BLOCK: &str = r#"
[limits]
accept_rate = 100000000
accept_burst = 100000000
per_address_rate = 100000000
per_address_burst = 100000000
per_address_max_connections = 10000000
per_network_rate = 100000000
per_network_burst = 100000000
per_network_max_connections = 10000000
flapping_max_connects = 10000
publish_rate = 100000000
publish_burst = 100000000
publish_byte_rate = 4294967295
publish_byte_burst = 4294967295
overload_protection = false
"#;

/// True when this Rampart binary accepts the `[limits]` block (older builds refuse unknown
/// sections, newer ones need it to be measured at all).
pub fn rampart_knows_limits(bin: &Path) -> bool {
    let Ok(dir) = temp_dir(Kind::Rampart) else {
        return false;
    };
    let conf = dir.join("probe.toml");
    let text = fill(
        &format!("{RAMPART_TEMPLATE}{RAMPART_LIMITS_BLOCK}"),
        &[
            ("data_dir", dir.join("data").display().to_string()),
            ("port", "1".into()),
            ("storage", "memory".into()),
        ],
    );
    let ok = fs::write(&conf, text).is_ok()
        && private(&conf).is_ok()
        && Command::new(bin)
            .arg("check-config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    fs::remove_dir_all(&dir).ok();
    ok
}

/// Appended to the built-in template for the authentication scenarios.
const RAMPART_AUTH_BUILTIN: &str = r#"
[auth]
verified_cache_secs = {cache_secs}

[[auth.backends]]
name = "users"
kind = "builtin"
"#;

const RAMPART_AUTH_POSTGRES: &str = r#"
[[auth.backends]]
name = "pg"
kind = "postgres"
url = "{pg_url}"
query = "SELECT password_hash, salt FROM bench_mqtt_user WHERE username = ${username}"
password_hash = "sha256-salt"
"#;

/// Imports the users of a `user:hash` file into a Rampart data directory (broker stopped).
fn rampart_import_users(bin: &Path, file: &Path, data_dir: &Path) -> Result<()> {
    let out = Command::new(bin)
        .args(["ctl", "users", "import"])
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .context("run rampart ctl users import")?;
    if !out.status.success() {
        bail!(
            "rampart ctl users import failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Appended to the built-in template when a scenario needs TLS.
const RAMPART_TLS_BLOCK: &str = r#"
[[listeners]]
name = "bench-tls"
kind = "tls"
bind = "127.0.0.1:{tls_port}"

[listeners.tls]
cert_file = "{cert}"
key_file = "{key}"
client_auth = "none"
min_version = "1.3"
"#;

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn temp_dir(kind: Kind) -> Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "rampart-bench-{}-{}-{n}",
        kind.name(),
        std::process::id()
    ));
    if dir.exists() {
        fs::remove_dir_all(&dir).ok();
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Removes terminal colour sequences (ESC [ ... letter) so that log tails read well in reports.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Generates a self-signed P-256 server certificate with the openssl CLI.
pub fn make_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir)?;
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "365", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .context("run openssl (needed for TLS scenarios)")?;
    if !out.status.success() {
        bail!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // A hardened broker rightly complains about a private key readable by others.
    private(&key)?;
    Ok((cert, key))
}

/// Owner-only permissions (0600) for generated configs and keys.
fn private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))
}

/// Starts the broker; when it will not start with a TLS listener (not implemented yet, say), it
/// is started without one and the TLS scenarios are skipped with the reason as a note.
pub fn start(kind: Kind, o: &LaunchOpts, needs: Needs) -> Result<Running> {
    match start_once(kind, o, needs) {
        Err(e) if needs.tls => {
            let plain = Needs {
                tls: false,
                ..needs
            };
            let mut r = start_once(kind, o, plain)?;
            let first = format!("{e:#}").replace('\n', " ");
            // The reason without timestamps, so that repeats give the same note.
            let why = first
                .split(" log:")
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>();
            let said = r.log_matching(0, "tls", 1);
            let said = said.split_once("WARN").map(|(_, w)| w.trim()).unwrap_or("");
            r.tls_note = Some(format!("no TLS listener ({why}; broker log: {said})"));
            Ok(r)
        }
        r => r,
    }
}

fn start_once(kind: Kind, o: &LaunchOpts, needs: Needs) -> Result<Running> {
    let dir = temp_dir(kind)?;
    let port = kind.port();
    let tls_port = port + 1;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut tls_addr = None;
    let mut tls_note = None;
    let log = dir.join("broker.log");
    let (program, args): (String, Vec<String>) = match kind {
        Kind::Mosquitto => {
            let mut c = format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
                 max_queued_messages 100000\nmax_inflight_messages 1000\n\
                 max_connections -1\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            );
            if needs.persistence {
                c.push_str(&format!(
                    "persistence true\npersistence_location {}/\n",
                    dir.display()
                ));
            }
            if let (Some(_), Some(cr)) = (needs.auth, &o.creds) {
                c = c.replace("allow_anonymous true", "allow_anonymous false");
                c.push_str(&format!("password_file {}\n", cr.mosquitto_file.display()));
            }
            if needs.tls {
                match &o.cert {
                    Some((cert, key)) => {
                        c.push_str(&format!(
                            "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n\
                             tls_version tlsv1.3\n",
                            cert.display(),
                            key.display()
                        ));
                        tls_addr = Some(([127, 0, 0, 1], tls_port).into());
                    }
                    None => tls_note = Some("no certificate (openssl missing?)".into()),
                }
            }
            let conf = dir.join("mosquitto.conf");
            fs::write(&conf, c)?;
            (
                o.mosquitto_bin.clone(),
                vec!["-c".into(), conf.display().to_string()],
            )
        }
        Kind::Rampart => {
            let builtin;
            let template = match o.rampart_template.as_deref() {
                Some(t) => t,
                None => {
                    builtin = format!(
                        "{RAMPART_TEMPLATE}{}{}{}",
                        if o.rampart_limits && !needs.production_limits {
                            RAMPART_LIMITS_BLOCK
                        } else {
                            ""
                        },
                        match needs.auth {
                            Some(Auth::Postgres) => RAMPART_AUTH_POSTGRES,
                            Some(_) => RAMPART_AUTH_BUILTIN,
                            None => "",
                        },
                        if needs.tls && o.cert.is_some() {
                            RAMPART_TLS_BLOCK
                        } else {
                            ""
                        }
                    );
                    &builtin
                }
            };
            let (cert, key) = o
                .cert
                .as_ref()
                .map(|(c, k)| (c.display().to_string(), k.display().to_string()))
                .unwrap_or_default();
            let storage = if needs.persistence {
                o.persist_storage.clone()
            } else if matches!(
                needs.auth,
                Some(Auth::Argon2 { .. } | Auth::MosquittoHashes)
            ) {
                // Built-in users live in the store.
                "redb".to_string()
            } else {
                "memory".to_string()
            };
            let cache_secs = match needs.auth {
                Some(Auth::Argon2 { cache_secs }) => cache_secs,
                _ => 0,
            };
            if let (Some(a), Some(cr)) = (needs.auth, &o.creds) {
                let file = match a {
                    Auth::Argon2 { .. } => Some(&cr.argon2_file),
                    Auth::MosquittoHashes => Some(&cr.mosquitto_file),
                    Auth::Postgres => None,
                };
                if let Some(f) = file {
                    rampart_import_users(&o.rampart_bin, f, &dir.join("data"))?;
                }
            }
            let conf_text = fill(
                template,
                &[
                    ("data_dir", dir.join("data").display().to_string()),
                    ("port", port.to_string()),
                    ("tls_port", tls_port.to_string()),
                    ("storage", storage),
                    ("cert", cert),
                    ("key", key),
                    ("cache_secs", cache_secs.to_string()),
                    ("pg_url", o.pg_url.clone().unwrap_or_default()),
                ],
            );
            if needs.tls {
                if template.contains("{tls_port}") && o.cert.is_some() {
                    tls_addr = Some(([127, 0, 0, 1], tls_port).into());
                } else {
                    tls_note = Some(
                        "rampart config has no TLS listener (pass --rampart-template with \
                         {tls_port}/{cert}/{key})"
                            .into(),
                    );
                }
            }
            let conf = dir.join("rampart.toml");
            fs::write(&conf, conf_text)?;
            private(&conf)?;
            (
                o.rampart_bin.display().to_string(),
                vec![
                    "serve".into(),
                    "--config".into(),
                    conf.display().to_string(),
                ],
            )
        }
        Kind::Rumqttd => {
            // rumqttd has one listener table per protocol version; only the one in use is opened.
            let (table, name) = if o.mqtt_v5 {
                ("v5", "v5-1")
            } else {
                ("v4", "v4-1")
            };
            let c = format!(
                "id = 0\n\n[router]\nid = 0\nmax_connections = 20010\n\
                 max_outgoing_packet_count = 1000\nmax_segment_size = 104857600\n\
                 max_segment_count = 10\n\n[{table}.1]\nname = \"{name}\"\n\
                 listen = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\n\
                 [{table}.1.connections]\nconnection_timeout_ms = 60000\n\
                 max_payload_size = 20480\nmax_inflight_count = 1000\ndynamic_filters = true\n"
            );
            let mut c = c;
            if let (Some(_), Some(cr)) = (needs.auth, &o.creds) {
                // rumqttd compares plain-text passwords from its config (no hashing).
                c.push_str(&format!("\n[{table}.1.connections.auth]\n"));
                for i in 0..cr.users {
                    c.push_str(&format!(
                        "\"{}\" = \"{}\"\n",
                        crate::auth::username(i),
                        crate::auth::PASSWORD
                    ));
                }
            }
            if needs.tls {
                tls_note = Some("TLS not configured for rumqttd by this harness".into());
            }
            let conf = dir.join("rumqttd.toml");
            fs::write(&conf, c)?;
            (
                o.rumqttd_bin.clone(),
                vec!["--config".into(), conf.display().to_string()],
            )
        }
    };
    let logf = fs::File::create(&log)?;
    let mut cmd = if o.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .current_dir(&dir);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {} ({program})", kind.name()))?;
    // taskset execs the broker in place, so the child's pid is the broker's.
    let pid = child.id();
    let mut r = Running {
        kind,
        child,
        pid,
        addr,
        tls_addr,
        tls_note,
        dir,
    };
    if let Err(e) = r.wait_ready(Duration::from_secs(15)) {
        // A broker that came up only partly must not hold its ports for the next attempt.
        r.child.kill().ok();
        r.child.wait().ok();
        fs::remove_dir_all(&r.dir).ok();
        return Err(e);
    }
    Ok(r)
}

impl Running {
    /// Waits for the plain port (up to `limit`), then for the TLS port (3 s more at most: a
    /// broker that serves plain MQTT but not TLS is told apart quickly).
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let mut t0 = Instant::now();
        let mut limit = limit;
        let mut want: Vec<SocketAddr> = self.tls_addr.into_iter().collect();
        want.push(self.addr);
        while let Some(a) = want.last().copied() {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "{} exited during startup ({st}); log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok() {
                want.pop();
                t0 = Instant::now();
                limit = Duration::from_secs(3);
                continue;
            }
            if t0.elapsed() > limit {
                bail!(
                    "{} did not listen on {a} within {limit:?}; log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The last lines of the broker's log, for error reports.
    pub fn log_tail(&self) -> String {
        let s = strip_ansi(&fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default());
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Bytes of log written so far (start-up chatter), to look only at what follows.
    pub fn log_len(&self) -> u64 {
        fs::metadata(self.dir.join("broker.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The last `n` warning or error lines of the broker's log after byte `from`, joined with
    /// " / ".
    pub fn log_warnings(&self, from: u64, n: usize) -> String {
        self.log_matching(from, "", n)
    }

    /// Like `log_warnings`, keeping only lines that contain `needle` (any case).
    pub fn log_matching(&self, from: u64, needle: &str, n: usize) -> String {
        let needle = needle.to_ascii_uppercase();
        let raw = fs::read(self.dir.join("broker.log")).unwrap_or_default();
        let tail = raw.get(from as usize..).unwrap_or_default();
        let s = strip_ansi(&String::from_utf8_lossy(tail));
        let lines: Vec<&str> = s
            .lines()
            .filter(|l| {
                let u = l.to_ascii_uppercase();
                (u.contains("WARN") || u.contains("ERROR")) && u.contains(&needle)
            })
            .collect();
        lines[lines.len().saturating_sub(n)..].join(" / ")
    }

    /// Some(description) when the broker has exited on its own.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(format!("broker exited ({st}): {}", self.log_tail())),
            _ => None,
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; removes the temp directory.
    pub fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let t0 = Instant::now();
            while self.child.try_wait()?.is_none() {
                if t0.elapsed() > Duration::from_secs(3) {
                    self.child.kill().ok();
                    self.child.wait().ok();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        fs::remove_dir_all(&self.dir)
            .map_err(|e| anyhow!("remove {}: {e}", self.dir.display()))
            .ok();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2mtime\u{1b}[0m WARN x"), "time WARN x");
    }

    #[test]
    fn template_placeholders_are_filled() {
        let s = fill(
            RAMPART_TEMPLATE,
            &[
                ("data_dir", "/tmp/x".into()),
                ("port", "1".into()),
                ("storage", "memory".into()),
            ],
        );
        assert!(s.contains("bind = \"127.0.0.1:1\""));
        assert!(s.contains("backend = \"memory\""));
        assert!(!s.contains('{'));
    }
}
