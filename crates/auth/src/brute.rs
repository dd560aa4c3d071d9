//! Brute-force protection: failures per source address and per username are first answered
//! slowly, then locked out. Time is an argument so that tests run in virtual time.
//!
//! Worst-case memory: `max_tracked` entries of about 100 bytes (key plus counters). When the
//! table is full the entries outside the window are dropped, then the older half by last
//! failure: O(n log n) once per n/2 insertions, so amortised O(log n) per failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rampart_config::BruteForceConfig;

/// First delay after the free failures; doubled per further failure up to `max_delay_ms`.
const BASE_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    last: Instant,
    locked_until: Option<Instant>,
}

pub struct BruteForce {
    cfg: BruteForceConfig,
    map: Mutex<HashMap<Key, Entry>>,
}

/// What to do before answering a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Locked out until then.
    Locked(Instant),
}

impl BruteForce {
    pub fn new(cfg: BruteForceConfig) -> BruteForce {
        BruteForce {
            cfg,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: IpAddr, user: Option<&str>) -> impl Iterator<Item = Key> {
        // An IPv4-mapped IPv6 peer is the same address as its IPv4 form.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        std::iter::once(Key::Ip(ip)).chain(user.map(|u| Key::User(u.to_string())))
    }

    /// Is the address or the username locked out?
    pub fn gate(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Gate {
        if !self.cfg.enabled {
            return Gate::Open;
        }
        let map = self.map.lock();
        let mut until = None;
        for k in Self::keys(ip, user) {
            if let Some(e) = map.get(&k) {
                if let Some(t) = e.locked_until.filter(|t| *t > now) {
                    until = Some(until.map_or(t, |u: Instant| u.max(t)));
                }
            }
        }
        until.map_or(Gate::Open, Gate::Locked)
    }

    /// Records a failure; returns how long to wait before answering it.
    pub fn failure(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Duration {
        if !self.cfg.enabled {
            return Duration::ZERO;
        }
        let window = Duration::from_secs(self.cfg.window_secs);
        let mut map = self.map.lock();
        let mut worst = 0u32;
        for k in Self::keys(ip, user) {
            if !map.contains_key(&k) && map.len() >= self.cfg.max_tracked as usize {
                evict(&mut map, now, window, self.cfg.max_tracked as usize);
            }
            let e = map.entry(k).or_insert(Entry {
                failures: 0,
                window_start: now,
                last: now,
                locked_until: None,
            });
            if now.duration_since(e.window_start) > window {
                e.failures = 0;
                e.window_start = now;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            if e.failures >= self.cfg.lockout_after {
                e.locked_until = Some(now + Duration::from_secs(self.cfg.lockout_secs));
                // A fresh window after the lockout: the next failures count from zero.
                e.failures = 0;
                e.window_start = now;
            }
            worst = worst.max(e.failures);
        }
        let over = worst.saturating_sub(self.cfg.free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        let delay = BASE_DELAY.saturating_mul(1u32 << (over - 1).min(16));
        delay.min(Duration::from_millis(self.cfg.max_delay_ms))
    }

    /// A successful login clears the username's record (not the address's: one good account
    /// must not let an address keep guessing others).
    pub fn success(&self, user: Option<&str>) {
        if let Some(u) = user {
            let mut map = self.map.lock();
            if let Some(e) = map.get(&Key::User(u.to_string())) {
                if e.locked_until.is_none() {
                    map.remove(&Key::User(u.to_string()));
                }
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.map.lock().len()
    }
}

fn evict(map: &mut HashMap<Key, Entry>, now: Instant, window: Duration, max: usize) {
    map.retain(|_, e| {
        now.duration_since(e.last) <= window || e.locked_until.is_some_and(|t| t > now)
    });
    if map.len() < max {
        return;
    }
    let mut by_age: Vec<(Instant, Key)> = map.iter().map(|(k, e)| (e.last, k.clone())).collect();
    by_age.sort_by_key(|(t, _)| *t);
    for (_, k) in by_age.into_iter().take(map.len() / 2) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BruteForceConfig {
        BruteForceConfig {
            enabled: true,
            free_failures: 2,
            max_delay_ms: 1000,
            lockout_after: 6,
            lockout_secs: 60,
            window_secs: 120,
            max_tracked: 100,
        }
    }

    #[test]
    fn slows_down_then_locks_out_then_forgets() {
        let bf = BruteForce::new(cfg());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..5)
            .map(|_| bf.failure(ip, Some("alice"), t0).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 250, 500, 1000]);
        assert_eq!(bf.gate(ip, Some("alice"), t0), Gate::Open);
        bf.failure(ip, Some("alice"), t0);
        assert_eq!(
            bf.gate(ip, Some("alice"), t0),
            Gate::Locked(t0 + Duration::from_secs(60))
        );
        // The username is locked from any address, the address for any username.
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(matches!(bf.gate(other, Some("alice"), t0), Gate::Locked(_)));
        assert!(matches!(bf.gate(ip, Some("bob"), t0), Gate::Locked(_)));
        assert_eq!(bf.gate(other, Some("bob"), t0), Gate::Open);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(bf.gate(ip, Some("alice"), later), Gate::Open);
    }

    #[test]
    fn bounded_table() {
        let bf = BruteForce::new(cfg());
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            bf.failure(ip, None, t0 + Duration::from_millis(u64::from(i)));
            assert!(bf.tracked() <= 100);
        }
    }
}
