//! Sizing the process's file-descriptor table once, at start-up, for every connection the
//! broker may hold.
//!
//! Why: Linux grows a process's descriptor table by doubling it (64, 128, ..., 2^20 slots),
//! and in a process with more than one thread every growth waits for an RCU grace period
//! (`synchronize_rcu` in `expand_fdtable`) while holding up every thread that allocates a
//! descriptor. A multi-threaded broker that fills up its connections therefore stops
//! accepting at each power of two for one grace period: 8-17 ms each on the benchmark
//! machine, seven stalls on the way to 10,000 connections. That was a fifth of the wall
//! clock of the connect scenario (a `perf` trace of `accept4` during `rampart-bench run
//! --scenario connect` shows no accept at all for 8-17 ms after descriptors 255, 511, 1023,
//! 2047, 4095 and 8191, and the worker thread in uninterruptible sleep meanwhile).
//! Single-threaded brokers such as Mosquitto never pay it. Growing the table once, before
//! the runtime starts its threads, pays it at most once and before any client waits.
//!
//! The table is kernel memory, not counted in the process's RSS: 8 bytes per slot plus
//! three bitmaps, about 8.3 MiB for a million descriptors, which is small next to the
//! kernel's own few kilobytes per socket at that scale.

use std::io;

/// Upper bound on the slots reserved, whatever the limits say (a hard `LimitNOFILE` of
/// 2^30 must not turn into gigabytes of kernel memory).
pub const MAX_RESERVED: usize = 1 << 22;

/// The process's soft open-file limit, when it has one below `usize::MAX`.
pub fn soft_nofile() -> Option<usize> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .and_then(|n| usize::try_from(n).ok())
}

/// Grows the descriptor table so that descriptors `0..slots` need no further growth (capped
/// at the soft open-file limit and [`MAX_RESERVED`]). Returns the number of slots asked for.
///
/// It duplicates a descriptor onto the highest number wanted (`F_DUPFD_CLOEXEC`, which
/// grows the table to cover it) and closes the copy; the table never shrinks.
pub fn reserve(slots: usize) -> io::Result<usize> {
    let limit = soft_nofile().unwrap_or(MAX_RESERVED);
    let slots = slots.min(limit).min(MAX_RESERVED);
    if slots <= 64 {
        // Every process starts with 64 slots.
        return Ok(slots);
    }
    let highest = i32::try_from(slots - 1).map_err(|_| io::ErrorKind::InvalidInput)?;
    let anchor = std::fs::File::open("/dev/null")?;
    let copy = rustix::io::fcntl_dupfd_cloexec(&anchor, highest)?;
    drop(copy);
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of this process's descriptor table (`FDSize` in `/proc/self/status`).
    fn table_size() -> Option<usize> {
        std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn reserve_grows_the_table_once_and_it_stays() {
        let limit = soft_nofile().unwrap_or(1024);
        // Below the limit of any machine the suite runs on, above the 64 slots a process
        // starts with and above what the test harness has opened.
        let want = 1000.min(limit);
        let before = table_size().expect("FDSize in /proc/self/status");
        let got = reserve(want).expect("reserve");
        assert_eq!(got, want);
        let after = table_size().expect("FDSize");
        assert!(
            after >= want,
            "FDSize {after} after reserving {want} (was {before})"
        );
        // Descriptors opened afterwards take the lowest free numbers, not the reserved top.
        let f = std::fs::File::open("/dev/null").expect("open");
        use std::os::fd::AsRawFd;
        assert!((f.as_raw_fd() as usize) < want);
    }

    #[test]
    fn reserve_is_capped_by_the_open_file_limit() {
        let limit = soft_nofile().expect("a finite soft limit");
        let got = reserve(usize::MAX).expect("reserve");
        assert_eq!(got, limit.min(MAX_RESERVED));
    }
}
