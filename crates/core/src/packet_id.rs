//! Outbound packet identifiers (1..=65535) for the QoS 1/2 messages a session sends.
//!
//! Owns: which identifiers are in flight, and the cap on how many may be. It does not own the
//! messages themselves (the session keeps them by id).
//!
//! Identifiers are handed out from a FIFO of freed ids, else from a cursor of never-used ids;
//! an id in use is never handed out. Reusing the least recently freed id first keeps a late
//! duplicate acknowledgement from matching a fresh message as long as possible.
//!
//! Complexity: `allocate` and `free` amortised O(1); `reserve` O(1).
//! Memory: grows with the highest id ever used (h), not with 65,535: a bitset of h/8 bytes and a
//! free list of 2 bytes per freed id, so at most 8 KiB + 128 KiB for a session that really had
//! 65,535 messages in flight, and about 2.1 bytes per id of `max_in_flight` otherwise.

use std::collections::VecDeque;
use std::num::NonZeroU16;

/// Allocator of outbound packet identifiers; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct PacketIdAllocator {
    /// Cap on ids in use at once: the peer's Receive Maximum [MQTT-4.9.0-1] or the broker's
    /// own in-flight limit, whichever is lower.
    max_in_flight: u16,
    in_flight: u16,
    /// Bit `id` set while `id` is in use; grown on demand.
    in_use: Vec<u64>,
    /// Freed ids, oldest first. May hold ids since taken by `reserve`; those are skipped.
    free: VecDeque<u16>,
    /// Smallest id never handed out (65,536 once all have been).
    next_fresh: u32,
}

impl PacketIdAllocator {
    /// An allocator allowing `max_in_flight` ids in use at once (0 allows none).
    pub fn new(max_in_flight: u16) -> Self {
        PacketIdAllocator {
            max_in_flight,
            in_flight: 0,
            in_use: Vec::new(),
            free: VecDeque::new(),
            next_fresh: 1,
        }
    }

    pub fn max_in_flight(&self) -> u16 {
        self.max_in_flight
    }

    /// Change the cap (a reconnect with a new Receive Maximum). Ids already in use stay valid;
    /// `allocate` refuses until the count falls below the new cap.
    pub fn set_max_in_flight(&mut self, max: u16) {
        self.max_in_flight = max;
    }

    /// Number of ids in use.
    pub fn in_flight(&self) -> usize {
        usize::from(self.in_flight)
    }

    /// Whether another id can be allocated now.
    pub fn has_capacity(&self) -> bool {
        self.in_flight < self.max_in_flight
    }

    pub fn is_in_use(&self, id: u16) -> bool {
        let (w, b) = (usize::from(id / 64), id % 64);
        self.in_use.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    fn set(&mut self, id: u16, on: bool) {
        let (w, b) = (usize::from(id / 64), id % 64);
        if self.in_use.len() <= w {
            self.in_use.resize(w + 1, 0);
        }
        if on {
            self.in_use[w] |= 1 << b;
        } else {
            self.in_use[w] &= !(1 << b);
        }
    }

    /// A free id, or `None` when `max_in_flight` ids are in use.
    pub fn allocate(&mut self) -> Option<NonZeroU16> {
        if !self.has_capacity() {
            return None;
        }
        while let Some(id) = self.free.pop_front() {
            if !self.is_in_use(id) {
                return self.take(id);
            }
        }
        while let Ok(id) = u16::try_from(self.next_fresh) {
            self.next_fresh += 1;
            if id != 0 && !self.is_in_use(id) {
                return self.take(id);
            }
        }
        // Unreachable while in_flight < max_in_flight <= 65,535: every id not in use is either
        // in the free list or above the cursor.
        None
    }

    fn take(&mut self, id: u16) -> Option<NonZeroU16> {
        let nz = NonZeroU16::new(id)?;
        self.set(id, true);
        self.in_flight += 1;
        Some(nz)
    }

    /// Mark `id` in use (restoring a persisted session's in-flight messages), even above the
    /// cap. Returns false if it was already in use or is 0.
    pub fn reserve(&mut self, id: u16) -> bool {
        if id == 0 || self.is_in_use(id) {
            return false;
        }
        self.set(id, true);
        self.in_flight = self.in_flight.saturating_add(1);
        true
    }

    /// Release `id` (its PUBACK, PUBCOMP or a PUBREC with an error arrived). Returns false if
    /// it was not in use: the peer acknowledged an id we never sent, a protocol error the
    /// session reports.
    pub fn free(&mut self, id: u16) -> bool {
        if id == 0 || !self.is_in_use(id) {
            return false;
        }
        self.set(id, false);
        self.in_flight -= 1;
        self.free.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn allocates_up_to_the_cap() {
        let mut a = PacketIdAllocator::new(3);
        let ids: Vec<u16> = (0..3).map(|_| a.allocate().unwrap().get()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(a.allocate(), None);
        assert!(a.free(2));
        assert!(!a.free(2), "double free is refused");
        assert_eq!(a.allocate().map(NonZeroU16::get), Some(2));
        assert_eq!(a.in_flight(), 3);
        assert!(!a.free(0));
        assert!(!a.free(999));
    }

    #[test]
    fn reuses_oldest_freed_first() {
        let mut a = PacketIdAllocator::new(10);
        for _ in 0..5 {
            a.allocate();
        }
        a.free(4);
        a.free(1);
        a.free(3);
        let next: Vec<u16> = (0..4).map(|_| a.allocate().unwrap().get()).collect();
        assert_eq!(next, vec![4, 1, 3, 6]);
    }

    #[test]
    fn reserve_is_skipped_by_allocate() {
        let mut a = PacketIdAllocator::new(5);
        assert!(a.reserve(2));
        assert!(!a.reserve(2));
        assert!(!a.reserve(0));
        let ids: Vec<u16> = (0..4).map(|_| a.allocate().unwrap().get()).collect();
        assert_eq!(ids, vec![1, 3, 4, 5]);
        assert_eq!(a.allocate(), None);
        // A freed id reserved again before reuse is not handed out twice.
        a.free(3);
        assert!(a.reserve(3));
        a.free(1);
        assert_eq!(a.allocate().map(NonZeroU16::get), Some(1));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn full_range_without_duplicates() {
        let mut a = PacketIdAllocator::new(u16::MAX);
        let mut seen = BTreeSet::new();
        while let Some(id) = a.allocate() {
            assert!(seen.insert(id.get()));
        }
        assert_eq!(seen.len(), 65_535);
        assert!(a.free(40_000));
        assert_eq!(a.allocate().map(NonZeroU16::get), Some(40_000));
    }

    #[test]
    fn shrinking_the_cap() {
        let mut a = PacketIdAllocator::new(4);
        for _ in 0..4 {
            a.allocate();
        }
        a.set_max_in_flight(2);
        a.free(1);
        assert_eq!(a.allocate(), None);
        a.free(2);
        a.free(3);
        assert!(a.allocate().is_some());
    }

    proptest::proptest! {
        #[test]
        fn never_hands_out_an_id_in_use(
            max in 1u16..40,
            ops in proptest::collection::vec((0u8..3, 0u16..60), 1..300),
        ) {
            let mut a = PacketIdAllocator::new(max);
            let mut model: BTreeSet<u16> = BTreeSet::new();
            for (op, x) in ops {
                match op {
                    0 => match a.allocate() {
                        Some(id) => {
                            proptest::prop_assert!(model.insert(id.get()));
                            proptest::prop_assert!(model.len() <= usize::from(max));
                        }
                        None => proptest::prop_assert!(model.len() >= usize::from(max)),
                    },
                    1 => proptest::prop_assert_eq!(a.free(x), model.remove(&x)),
                    _ => proptest::prop_assert_eq!(a.reserve(x), x != 0 && model.insert(x)),
                }
                proptest::prop_assert_eq!(a.in_flight(), model.len());
            }
        }
    }
}
