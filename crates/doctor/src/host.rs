//! The host as the checks see it: files under an injectable root that stands in for `/`, so
//! that `/proc`, `/sys`, `/etc/systemd` and `/etc/passwd` of a good or a bad host are test
//! fixtures. Only small text files are read, each capped at [`MAX_HOST_FILE_BYTES`].

use std::io::Read;
use std::path::{Path, PathBuf};

/// Cap on any host file read (sysctl values, limits, a unit file, passwd): a real one is a
/// few KiB; the cap bounds memory if a fixture or a FIFO is pointed at something huge.
pub const MAX_HOST_FILE_BYTES: u64 = 1024 * 1024;

/// The unit name looked for under the systemd directories.
pub const UNIT_NAME: &str = "rampart.service";

/// Where systemd looks for units, highest precedence first.
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// A view of a host rooted at `root` (`/` in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host::system()
    }
}

/// One `Key=Value` line of a unit file, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSetting {
    pub value: String,
    /// Path as shown to the operator (without the injected root).
    pub file: String,
    pub line: usize,
}

/// The installed unit, with drop-ins applied in systemd's order (later wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// Path of the main unit file as shown to the operator.
    pub file: String,
    /// `[Service]` settings, last assignment wins.
    pub service: Vec<(String, UnitSetting)>,
}

impl Unit {
    pub fn get(&self, key: &str) -> Option<&UnitSetting> {
        self.service
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl Host {
    pub fn system() -> Host {
        Host {
            root: PathBuf::from("/"),
        }
    }

    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` (such as `proc/sys/fs/nr_open`) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Reads a small text file under the root; `None` when missing or unreadable.
    pub fn read(&self, rel: &str) -> Option<String> {
        read_capped(&self.path(rel))
    }

    /// A sysctl by its dotted name (`fs.nr_open`), read from `/proc/sys`.
    pub fn sysctl(&self, name: &str) -> Option<String> {
        let rel = format!("proc/sys/{}", name.replace('.', "/"));
        self.read(&rel).map(|s| s.trim().to_string())
    }

    /// The soft open-file limit of this process from `/proc/self/limits`
    /// (`unlimited` reads as `u64::MAX`).
    pub fn self_nofile(&self) -> Option<u64> {
        let text = self.read("proc/self/limits")?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let soft = line
            .trim_start_matches("Max open files")
            .split_whitespace()
            .next()?;
        if soft == "unlimited" {
            return Some(u64::MAX);
        }
        soft.parse().ok()
    }

    /// The effective uid of this process from `/proc/self/status`.
    pub fn self_euid(&self) -> Option<u32> {
        let text = self.read("proc/self/status")?;
        let line = text.lines().find(|l| l.starts_with("Uid:"))?;
        // Uid: real effective saved fs
        line.split_whitespace().nth(2)?.parse().ok()
    }

    /// `name -> uid` from `/etc/passwd`.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        let text = self.read("etc/passwd")?;
        text.lines().find_map(|l| {
            let mut it = l.split(':');
            (it.next()? == name).then_some(())?;
            it.nth(1)?.parse().ok()
        })
    }

    /// `uid -> name` from `/etc/passwd`, for evidence.
    pub fn user_name(&self, uid: u32) -> Option<String> {
        let text = self.read("etc/passwd")?;
        text.lines().find_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let id: u32 = it.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
    }

    /// The installed `rampart.service` with its drop-ins, or `None` if no unit is installed.
    pub fn unit(&self) -> Option<Unit> {
        let (dir, text) = UNIT_DIRS.iter().find_map(|d| {
            let rel = format!("{d}/{UNIT_NAME}");
            self.read(&rel).map(|t| (*d, t))
        })?;
        let mut unit = Unit {
            file: format!("/{dir}/{UNIT_NAME}"),
            service: Vec::new(),
        };
        parse_unit_into(&text, &unit.file.clone(), &mut unit.service);
        // Drop-ins from every unit directory, applied in lexical order of file name.
        let mut dropins: Vec<(String, String)> = Vec::new();
        for d in UNIT_DIRS {
            let rel = format!("{d}/{UNIT_NAME}.d");
            if let Ok(rd) = std::fs::read_dir(self.path(&rel)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".conf") && !dropins.iter().any(|(n, _)| *n == name) {
                        dropins.push((name.clone(), format!("/{rel}/{name}")));
                    }
                }
            }
        }
        dropins.sort();
        for (_, shown) in dropins {
            if let Some(text) = self.read(&shown) {
                parse_unit_into(&text, &shown, &mut unit.service);
            }
        }
        Some(unit)
    }
}

/// Adds the `[Service]` assignments of one unit file.
fn parse_unit_into(text: &str, shown: &str, out: &mut Vec<(String, UnitSetting)>) {
    let mut in_service = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((
                k.trim().to_string(),
                UnitSetting {
                    value: v.trim().to_string(),
                    file: shown.to_string(),
                    line: i + 1,
                },
            ));
        }
    }
}

/// Reads at most [`MAX_HOST_FILE_BYTES`] of a text file.
pub(crate) fn read_capped(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_HOST_FILE_BYTES).read_to_end(&mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// Reads at most `cap` bytes of a file (certificates, CRLs).
pub(crate) fn read_bytes_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}
