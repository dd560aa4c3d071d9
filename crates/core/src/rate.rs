//! Rate limits in virtual time: a token bucket and a sliding-window event counter.
//!
//! Owns: the arithmetic of rate limiting. Time is always an argument in milliseconds from any
//! fixed origin the caller chooses (for example `Instant` elapsed since broker start); nothing
//! here reads a clock. A `now_ms` earlier than the last one seen is treated as the last one
//! (no refill, no negative elapsed time), so a caller mixing origins cannot mint tokens.
//!
//! Both types take `&mut self`: they belong to one connection or one listener task. Share one
//! across tasks behind a `parking_lot::Mutex` (the critical section is a few integer ops).
//!
//! Memory: `TokenBucket` 32 bytes; `SlidingWindowCounter` 16 bytes, plus 4 bytes per event
//! it remembers beyond the newest (at most its `cap - 1`) and a 32-byte `VecDeque` once it
//! has two events in its window.

use std::collections::VecDeque;

/// Fixed-point scale: tokens are counted in thousandths so that a rate in tokens per second
/// is exactly the refill in thousandths per millisecond.
const MILLI: i64 = 1000;

/// A token bucket: `rate_per_sec` tokens per second, holding at most `burst`. Starts full.
///
/// Exact integer arithmetic; `try_take` and `time_until` are O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate_per_sec: u32,
    burst: u32,
    /// Thousandths of a token; negative after [`TokenBucket::force_take`] (debt).
    level: i64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`. A `rate_per_sec` of 0 never refills.
    pub fn new(rate_per_sec: u32, burst: u32, now_ms: u64) -> Self {
        TokenBucket {
            rate_per_sec,
            burst,
            level: i64::from(burst) * MILLI,
            last_ms: now_ms,
        }
    }

    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Change the rate and burst (configuration reload), keeping the tokens already earned up
    /// to the new burst.
    pub fn set_rate(&mut self, now_ms: u64, rate_per_sec: u32, burst: u32) {
        self.refill(now_ms);
        self.rate_per_sec = rate_per_sec;
        self.burst = burst;
        self.level = self.level.min(self.capacity());
    }

    fn capacity(&self) -> i64 {
        i64::from(self.burst) * MILLI
    }

    fn refill(&mut self, now_ms: u64) {
        if now_ms <= self.last_ms {
            return;
        }
        let elapsed = now_ms - self.last_ms;
        self.last_ms = now_ms;
        // u128: elapsed (u64) times rate (u32) cannot overflow; the result is capped below.
        let earned = u128::from(elapsed) * u128::from(self.rate_per_sec);
        let room = (self.capacity() - self.level).max(0);
        let add = i64::try_from(earned.min(room as u128)).unwrap_or(room);
        self.level += add;
    }

    /// Whole tokens available at `now_ms` (0 while in debt).
    pub fn available(&mut self, now_ms: u64) -> u32 {
        self.refill(now_ms);
        u32::try_from((self.level / MILLI).max(0)).unwrap_or(u32::MAX)
    }

    /// Take `n` tokens if there are that many. A request above `burst` never succeeds.
    pub fn try_take(&mut self, now_ms: u64, n: u32) -> bool {
        self.refill(now_ms);
        let need = i64::from(n) * MILLI;
        if self.level >= need {
            self.level -= need;
            true
        } else {
            false
        }
    }

    /// Take `n` tokens even if that leaves the bucket in debt (for example, bytes of a message
    /// already read); later takes wait until the debt is repaid. The debt is bounded at
    /// `u32::MAX` tokens per call.
    pub fn force_take(&mut self, now_ms: u64, n: u32) {
        self.refill(now_ms);
        self.level = self.level.saturating_sub(i64::from(n) * MILLI);
    }

    /// Milliseconds until `try_take(_, n)` would succeed: 0 if it would now, `u64::MAX` if it
    /// never can (`n > burst`, or no refill).
    pub fn time_until(&mut self, now_ms: u64, n: u32) -> u64 {
        self.refill(now_ms);
        let need = i64::from(n) * MILLI;
        if self.level >= need {
            return 0;
        }
        if n > self.burst || self.rate_per_sec == 0 {
            return u64::MAX;
        }
        let missing = (need - self.level).unsigned_abs();
        missing.div_ceil(u64::from(self.rate_per_sec))
    }
}

/// Counts events within a sliding window (flapping detection: "more than N connects of one
/// client id within a minute"). Exact up to `cap`: it remembers the times of the last `cap`
/// events within the window and saturates at `cap`, which should be the threshold the caller
/// checks plus one.
///
/// Sized for a table with one counter per recently seen key: the window and the cap are the
/// table's, passed to each call rather than repeated per counter. A counter with one event
/// in the window, the common case, is 16 bytes and allocates nothing; earlier events within
/// the window are kept on the heap as the low 32 bits of their times (4 bytes each, at most
/// `cap - 1`). A window must be below 2^32 ms (49 days). `record` is amortised O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlidingWindowCounter {
    /// Time of the newest event, which is always counted while within the window.
    newest: u64,
    /// Earlier events, oldest first, as `time as u32`. Every one is within the window at
    /// `newest`, so `newest - time` is below the window; the distance from any `now` less than
    /// a window after `newest` is then below 2^32 and the wrapping difference is exact.
    /// Boxed: 8 bytes in every counter instead of a 32-byte `VecDeque`.
    #[allow(clippy::box_collection)]
    older: Option<Box<VecDeque<u32>>>,
}

impl SlidingWindowCounter {
    /// A counter holding one event at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        SlidingWindowCounter {
            newest: now_ms,
            older: None,
        }
    }

    /// Record one event at `now_ms` (an earlier time than the newest counts as the newest);
    /// returns the events within the last `window_ms`, this one included, at most `cap` (a
    /// `cap` of 0 counts as 1).
    pub fn record(&mut self, now_ms: u64, window_ms: u64, cap: u32) -> u32 {
        let now = now_ms.max(self.newest);
        let kept = if now - self.newest >= window_ms {
            // The newest has left the window, and everything older with it.
            self.older = None;
            0
        } else {
            let older = self.older.get_or_insert_with(Default::default);
            while let Some(&t) = older.front() {
                if u64::from((now as u32).wrapping_sub(t)) >= window_ms {
                    older.pop_front();
                } else {
                    break;
                }
            }
            older.push_back(self.newest as u32);
            while older.len() + 1 > cap.max(1) as usize {
                older.pop_front();
            }
            older.len()
        };
        self.newest = now;
        u32::try_from(kept + 1).unwrap_or(u32::MAX)
    }

    /// Whether no event is within the window at `now_ms`: the owner may then drop the counter.
    pub fn is_idle(&self, now_ms: u64, window_ms: u64) -> bool {
        now_ms.saturating_sub(self.newest) >= window_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_full_and_refills() {
        let mut b = TokenBucket::new(10, 5, 1_000);
        for _ in 0..5 {
            assert!(b.try_take(1_000, 1));
        }
        assert!(!b.try_take(1_000, 1));
        // 10 tokens/s: one token per 100 ms.
        assert_eq!(b.time_until(1_000, 1), 100);
        assert!(!b.try_take(1_099, 1));
        assert!(b.try_take(1_100, 1));
        assert_eq!(b.time_until(1_100, 3), 300);
        // Refill is capped at the burst.
        assert_eq!(b.available(100_000), 5);
        assert!(!b.try_take(100_000, 6));
        assert_eq!(b.time_until(100_000, 6), u64::MAX);
        assert!(b.try_take(100_000, 5));
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 3 tokens/s: a token every 333.33 ms.
        let mut b = TokenBucket::new(3, 1, 0);
        assert!(b.try_take(0, 1));
        assert_eq!(b.time_until(0, 1), 334);
        assert!(!b.try_take(333, 1));
        assert!(b.try_take(334, 1));
        // 3000 tokens over 1000 s plus the initial burst, however the time is sliced (the
        // bucket never fills up here, so nothing is clipped at the cap).
        let mut b = TokenBucket::new(3, 10, 0);
        let mut taken = 0;
        for t in 0..=1_000_000u64 {
            if b.try_take(t, 1) {
                taken += 1;
            }
        }
        assert_eq!(taken, 3_010);
    }

    #[test]
    fn clock_going_back_mints_nothing() {
        let mut b = TokenBucket::new(1_000, 1, 10_000);
        assert!(b.try_take(10_000, 1));
        assert!(!b.try_take(5_000, 1));
        assert!(!b.try_take(10_000, 1));
        assert!(b.try_take(10_001, 1));
    }

    #[test]
    fn zero_rate_and_debt() {
        let mut b = TokenBucket::new(0, 2, 0);
        assert!(b.try_take(0, 2));
        assert_eq!(b.time_until(1_000_000, 1), u64::MAX);
        let mut b = TokenBucket::new(100, 10, 0);
        b.force_take(0, 30);
        assert_eq!(b.available(0), 0);
        // 20 tokens of debt plus 1 at 100/s: 210 ms.
        assert_eq!(b.time_until(0, 1), 210);
        assert!(!b.try_take(209, 1));
        assert!(b.try_take(210, 1));
        // Huge elapsed times and rates do not overflow.
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, 0);
        b.force_take(0, u32::MAX);
        assert_eq!(b.available(u64::MAX), u32::MAX);
    }

    #[test]
    fn set_rate_caps_level() {
        let mut b = TokenBucket::new(10, 100, 0);
        b.set_rate(0, 10, 5);
        assert_eq!(b.available(0), 5);
        assert_eq!(b.burst(), 5);
        assert_eq!(b.rate_per_sec(), 10);
    }

    #[test]
    fn window_counts_recent_events() {
        let (window, cap) = (60_000, 10);
        let mut w = SlidingWindowCounter::new(0);
        assert_eq!(w.record(10_000, window, cap), 2);
        assert_eq!(w.record(59_999, window, cap), 3);
        // The event at 0 leaves the window at 60,000.
        assert_eq!(w.record(65_000, window, cap), 3);
        assert!(!w.is_idle(124_999, window));
        assert!(w.is_idle(125_000, window));
        assert_eq!(w.record(200_000, window, cap), 1);
    }

    #[test]
    fn window_saturates_at_cap() {
        let mut w = SlidingWindowCounter::new(0);
        for t in 1..100 {
            assert_eq!(w.record(t, 1_000, 3), (t as u32 + 1).min(3));
        }
        let mut z = SlidingWindowCounter::new(0);
        assert_eq!(z.record(5, 1_000, 0), 1);
    }

    #[test]
    fn window_ignores_time_going_back() {
        let mut w = SlidingWindowCounter::new(1_000);
        assert_eq!(w.record(500, 100, 10), 2);
        assert!(!w.is_idle(1_099, 100));
        assert!(w.is_idle(1_100, 100));
        assert_eq!(w.record(1_099, 100, 10), 3);
    }

    /// The plain definition: every event's time kept, clamped like the counter's (an earlier
    /// time counts as the latest), and counted while `now - t < window`, up to `cap`.
    struct Model {
        events: Vec<u64>,
    }

    impl Model {
        fn record(&mut self, now_ms: u64, window_ms: u64, cap: u32) -> u32 {
            let now = self.events.last().map_or(now_ms, |&l| now_ms.max(l));
            self.events.push(now);
            let n = self.events.iter().filter(|&&t| now - t < window_ms).count();
            u32::try_from(n).unwrap_or(u32::MAX).min(cap.max(1))
        }

        fn is_idle(&self, now_ms: u64, window_ms: u64) -> bool {
            self.events
                .iter()
                .all(|&t| now_ms.saturating_sub(t) >= window_ms)
        }
    }

    /// The compact counter against the plain definition, on random event times across the
    /// 2^32 ms wrap of its stored times and after long silences.
    #[test]
    fn window_counts_like_the_plain_definition() {
        // One per recently seen key (BENCHMARKS.md, idle memory per connection).
        assert!(std::mem::size_of::<SlidingWindowCounter>() <= 16);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (window, cap, start) in [
            (10_000, 4, 0),
            (60_000, 501, 5),
            (1_000, 2, u64::from(u32::MAX) - 5_000),
            (86_400_000, 3, u64::from(u32::MAX) - 1),
            (1, 1, 7),
        ] {
            let mut model = Model {
                events: vec![start],
            };
            let mut t = start;
            let mut w = SlidingWindowCounter::new(t);
            // The model is quadratic: its events are kept short.
            for _ in 0..2_000 {
                t += match next() % 8 {
                    0 => window,
                    1 => window - 1,
                    2 => 3 * window + next() % 1_000,
                    3 => 0,
                    _ => next() % (window / 4 + 1),
                };
                // Now and then a time earlier than the newest (a caller mixing clocks).
                let at = if next() % 16 == 0 {
                    t.saturating_sub(next() % 100)
                } else {
                    t
                };
                assert_eq!(
                    w.record(at, window, cap),
                    model.record(at, window, cap),
                    "at {at}"
                );
                for probe in [t + window - 1, t + window] {
                    assert_eq!(w.is_idle(probe, window), model.is_idle(probe, window));
                }
                if model.events.len() > 600 {
                    // Only the events within the window matter from here on.
                    let now = *model.events.last().unwrap_or(&t);
                    model.events.retain(|&e| now - e < window);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn window_matches_the_plain_definition(
            window in 1u64..200_000,
            cap in 0u32..12,
            start in proptest::prop_oneof![0u64..1_000, u64::from(u32::MAX) - 400_000..u64::from(u32::MAX) + 10],
            steps in proptest::collection::vec((0u8..6, 0u64..1_000_000), 1..300),
        ) {
            let mut model = Model { events: vec![start] };
            let mut w = SlidingWindowCounter::new(start);
            let mut t = start;
            for (kind, r) in steps {
                let at = match kind {
                    0 => { t += window; t }
                    1 => { t += window - 1; t }
                    2 => { t += r % (4 * window); t }
                    // Earlier than the newest: counts as the newest.
                    3 => t.saturating_sub(r % 1_000),
                    _ => { t += r % (window / 4 + 1); t }
                };
                proptest::prop_assert_eq!(w.record(at, window, cap), model.record(at, window, cap));
                for probe in [t + window - 1, t + window] {
                    proptest::prop_assert_eq!(w.is_idle(probe, window), model.is_idle(probe, window));
                }
            }
        }

        #[test]
        fn bucket_never_exceeds_rate(rate in 1u32..500, burst in 1u32..50, steps in proptest::collection::vec((0u64..50, 1u32..5), 1..200)) {
            let mut b = TokenBucket::new(rate, burst, 0);
            let mut now = 0u64;
            let mut taken = 0u64;
            for (dt, n) in steps {
                now += dt;
                let wait = b.time_until(now, n);
                let ok = b.try_take(now, n);
                proptest::prop_assert_eq!(ok, wait == 0);
                if ok {
                    taken += u64::from(n);
                } else if wait != u64::MAX {
                    // Waiting exactly the advertised time is enough, one ms less is not.
                    let mut probe = b.clone();
                    if wait > 1 {
                        proptest::prop_assert!(!probe.clone().try_take(now + wait - 1, n));
                    }
                    proptest::prop_assert!(probe.try_take(now + wait, n));
                }
            }
            // Never more than the burst plus what the rate allows.
            proptest::prop_assert!(taken * 1000 <= u64::from(burst) * 1000 + now * u64::from(rate));
        }
    }
}
