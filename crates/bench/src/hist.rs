//! A fixed-size log-linear latency histogram (about 3% relative precision).
//!
//! Memory is fixed (`BUCKETS` u64 counters, under 20 KB) whatever the number of samples, so a
//! scenario can record every message without an unbounded sample vector.

/// Sub-buckets per power of two: 32 gives a worst-case relative error of 1/32.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 ns (about 18 minutes) are kept exactly in range; larger ones clamp.
const BUCKETS: usize = ((40 - SUB_BITS as usize) + 1) * SUB as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros() as u64;
        let shift = msb - SUB_BITS as u64;
        let idx = (shift + 1) * SUB + ((v >> shift) & (SUB - 1));
        (idx as usize).min(BUCKETS - 1)
    }

    /// The smallest value that falls into bucket `i` (what percentiles report).
    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        ((SUB + (i % SUB)) << shift) & !((1u64 << shift) - 1)
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), or 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::lower(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_precision() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000f64), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.quantile(0.0), 1);
    }

    #[test]
    fn bucket_lower_bound_is_consistent() {
        for v in [0u64, 1, 31, 32, 33, 63, 64, 1000, 1 << 20, 123_456_789] {
            let i = Hist::index(v);
            assert!(Hist::lower(i) <= v, "{v}");
            assert_eq!(Hist::index(Hist::lower(i)), i, "{v}");
        }
    }
}
