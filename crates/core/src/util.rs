//! Small shared helpers for the tries: a process-wide seeded hasher and a walk stack that does
//! not allocate for ordinary topic depths.

use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;

/// The process-wide hash seed: random per process (HashDoS resistance for peer-chosen keys such
/// as topic levels and client ids), shared by every map so that each map does not carry its
/// own 32-byte `ahash::RandomState`.
fn seed() -> &'static ahash::RandomState {
    static SEED: OnceLock<ahash::RandomState> = OnceLock::new();
    SEED.get_or_init(ahash::RandomState::new)
}

/// Zero-sized `BuildHasher` over the process-wide seed.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct GlobalHasher;

impl BuildHasher for GlobalHasher {
    type Hasher = ahash::AHasher;
    fn build_hasher(&self) -> ahash::AHasher {
        seed().build_hasher()
    }
}

/// Hash a value with the process-wide seed (shard choice, shared-subscription choice).
pub(crate) fn hash_one<T: Hash + ?Sized>(v: &T) -> u64 {
    seed().hash_one(v)
}

pub(crate) type Map<K, V> = std::collections::HashMap<K, V, GlobalHasher>;

/// Frames held inline before the stack spills to the heap. A trie walk keeps at most one
/// pending frame per level plus two, so topics of up to 14 levels never allocate.
const INLINE: usize = 16;

/// LIFO stack of `Copy` frames: inline first, then a `Vec`.
pub(crate) struct WalkStack<T: Copy> {
    inline: [T; INLINE],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy> WalkStack<T> {
    /// A stack holding `first`.
    pub(crate) fn new(first: T) -> Self {
        WalkStack {
            inline: [first; INLINE],
            len: 1,
            spill: Vec::new(),
        }
    }

    /// An empty stack; `filler` only initialises the unused inline slots.
    pub(crate) fn empty(filler: T) -> Self {
        WalkStack {
            inline: [filler; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, v: T) {
        // The spill only receives frames while the inline part is full, so it is always the
        // top of the stack and LIFO order holds.
        if self.len < INLINE {
            self.inline[self.len] = v;
            self.len += 1;
        } else {
            self.spill.push(v);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if let Some(v) = self.spill.pop() {
            return Some(v);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.inline[self.len])
    }
}

/// Split the level starting at byte `pos` of `topic`: the level and the start of the next one,
/// which is `topic.len() + 1` when this was the last level. `pos` must be at most `topic.len()`
/// and at a level start.
#[inline]
pub(crate) fn next_level(topic: &str, pos: usize) -> (&str, usize) {
    let rest = topic.get(pos..).unwrap_or("");
    match rest.find('/') {
        Some(i) => (&rest[..i], pos + i + 1),
        None => (rest, topic.len() + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_is_lifo_across_spill() {
        let mut s = WalkStack::new(0u32);
        for i in 1..100 {
            s.push(i);
        }
        for i in (0..100).rev() {
            assert_eq!(s.pop(), Some(i));
        }
        assert_eq!(s.pop(), None);
        s.push(7);
        assert_eq!(s.pop(), Some(7));
    }

    #[test]
    fn levels_split() {
        assert_eq!(next_level("a/b", 0), ("a", 2));
        assert_eq!(next_level("a/b", 2), ("b", 4));
        assert_eq!(next_level("a/", 2), ("", 3));
        assert_eq!(next_level("/", 0), ("", 1));
        assert_eq!(next_level("/", 1), ("", 2));
    }
}
