//! Readings from /proc: CPU time and resident memory of a process, and what machine this is.

use std::collections::BTreeMap;
use std::fs;

/// Linux reports utime/stime in clock ticks; USER_HZ is 100 on every mainstream architecture and
/// the tool avoids libc (and `unsafe`) to ask sysconf.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `pid` ("self" for this process), or None when it is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    cpu_split(pid).map(|(u, s)| u + s)
}

/// (user, system) CPU seconds of `pid`.
pub fn cpu_split(pid: &str) -> Option<(f64, f64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut / TICKS_PER_SEC, st / TICKS_PER_SEC))
}

/// Resident set size in KiB (VmRSS), or None when the process is gone.
pub fn rss_kb(pid: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A before/after CPU meter over one measurement window.
pub struct CpuMeter {
    broker: Option<String>,
    broker0: f64,
    tool0: f64,
    tool_user0: f64,
}

impl CpuMeter {
    pub fn start(broker_pid: Option<u32>) -> Self {
        let broker = broker_pid.map(|p| p.to_string());
        let broker0 = broker.as_deref().and_then(cpu_seconds).unwrap_or(0.0);
        let (u, s) = cpu_split("self").unwrap_or((0.0, 0.0));
        CpuMeter {
            broker,
            broker0,
            tool0: u + s,
            tool_user0: u,
        }
    }

    /// (broker CPU seconds, tool CPU seconds) since `start`; broker is NaN when unknown.
    pub fn finish(&self) -> (f64, f64) {
        let b = match self.broker.as_deref().and_then(cpu_seconds) {
            Some(v) => v - self.broker0,
            None => f64::NAN,
        };
        let t = cpu_seconds("self").unwrap_or(0.0) - self.tool0;
        (b, t)
    }

    /// The tool's user-space CPU seconds since `start` (the rest of its CPU is the kernel's).
    pub fn tool_user(&self) -> f64 {
        cpu_split("self").map(|(u, _)| u).unwrap_or(0.0) - self.tool_user0
    }
}

/// Nanoseconds each thread of `pid` ("self" for this process) has spent runnable but waiting
/// for a CPU, by thread id: the second field of each thread's `schedstat`. None when the kernel
/// does not report it.
pub fn run_queue_waits(pid: &str) -> Option<BTreeMap<u64, u64>> {
    let mut waits = BTreeMap::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(s) = fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(w) = s
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            waits.insert(tid, w);
        }
    }
    (!waits.is_empty()).then_some(waits)
}

/// How long the broker's and the tool's threads waited for a CPU over one window. On a shared
/// machine this is what other processes cost a latency measurement: a broker thread that is
/// woken while another process holds its core waits, and so does the tool's subscriber.
/// Counted per thread, so that a thread that starts or ends within the window does not skew
/// the others (what a thread that ended waited within the window is not counted).
pub struct WaitMeter {
    broker: Option<String>,
    broker0: Option<BTreeMap<u64, u64>>,
    tool0: Option<BTreeMap<u64, u64>>,
}

impl WaitMeter {
    pub fn start(broker_pid: Option<u32>) -> Self {
        let broker = broker_pid.map(|p| p.to_string());
        let broker0 = broker.as_deref().and_then(run_queue_waits);
        WaitMeter {
            broker,
            broker0,
            tool0: run_queue_waits("self"),
        }
    }

    /// (broker, tool) milliseconds spent waiting for a CPU since `start`; None when unknown.
    pub fn finish(&self) -> (Option<f64>, Option<f64>) {
        let ms = |before: &Option<BTreeMap<u64, u64>>, after: Option<BTreeMap<u64, u64>>| {
            let (before, after) = (before.as_ref()?, after?);
            let ns: u64 = after
                .iter()
                .map(|(tid, w)| w.saturating_sub(before.get(tid).copied().unwrap_or(0)))
                .sum();
            Some(ns as f64 / 1e6)
        };
        (
            ms(
                &self.broker0,
                self.broker.as_deref().and_then(run_queue_waits),
            ),
            ms(&self.tool0, run_queue_waits("self")),
        )
    }
}

/// A one-line description of the machine: CPU model, core count, memory, kernel.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Counted from cpuinfo, not from the affinity mask: with --pin the tool sees only one CPU.
    let cores = fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let mem_gb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem_gb:.0} GiB RAM, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").is_some());
        assert!(rss_kb("self").unwrap_or(0) > 0);
        assert!(machine().contains("cores"));
        // Kernels without schedstat report nothing; with it, our own threads have a figure.
        if std::path::Path::new("/proc/self/schedstat").exists() {
            assert!(run_queue_waits("self").is_some_and(|w| !w.is_empty()));
            let m = WaitMeter::start(Some(std::process::id()));
            let (b, t) = m.finish();
            assert!(b.is_some_and(|v| v >= 0.0) && t.is_some_and(|v| v >= 0.0));
        }
    }
}
