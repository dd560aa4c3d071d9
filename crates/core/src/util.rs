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

/// Longest level stored inline in a [`Key`] (no allocation): the key is then 24 bytes.
const INLINE_KEY: usize = 22;

/// One topic level as a trie edge: inline up to 22 bytes, boxed above.
#[derive(Clone)]
pub(crate) enum Key {
    Inline(u8, [u8; INLINE_KEY]),
    Heap(Box<str>),
}

impl Key {
    pub(crate) fn new(s: &str) -> Key {
        match u8::try_from(s.len()) {
            Ok(n) if s.len() <= INLINE_KEY => {
                let mut buf = [0; INLINE_KEY];
                buf[..s.len()].copy_from_slice(s.as_bytes());
                Key::Inline(n, buf)
            }
            _ => Key::Heap(Box::from(s)),
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(n, buf) => buf.get(..usize::from(*n)).unwrap_or(&[]),
            Key::Heap(s) => s.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Built from a whole `&str`, so always valid; checked to stay free of `unsafe`.
            Key::Inline(..) => std::str::from_utf8(self.as_bytes()).unwrap_or(""),
            Key::Heap(s) => s,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Hash for Key {
    // Must hash exactly like the `[u8]` it borrows as.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Children kept in a `Vec` (linear search) up to this many, then in a hash table.
const SMALL_MAX: usize = 8;

/// The children of a trie node by level. Most nodes have one or a few children: a `Vec` sized
/// exactly costs one allocation of `n * (24 + size_of::<N>())` bytes, where a hash table would
/// allocate at least four buckets.
pub(crate) enum Children<N> {
    Small(Vec<(Key, N)>),
    Large(Map<Key, N>),
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Children::Small(Vec::new())
    }
}

impl<N> Children<N> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Children::Small(v) => v.len(),
            Children::Large(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        self.get_key_value(level).map(|(_, n)| n)
    }

    #[inline]
    pub(crate) fn get_key_value(&self, level: &str) -> Option<(&str, &N)> {
        let b = level.as_bytes();
        match self {
            Children::Small(v) => v
                .iter()
                .find(|(k, _)| k.as_bytes() == b)
                .map(|(k, n)| (k.as_str(), n)),
            Children::Large(m) => m.get_key_value(b).map(|(k, n)| (k.as_str(), n)),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        let b = level.as_bytes();
        match self {
            Children::Small(v) => v
                .iter_mut()
                .find(|(k, _)| k.as_bytes() == b)
                .map(|(_, n)| n),
            Children::Large(m) => m.get_mut(b),
        }
    }

    /// The child for `level`, created empty if absent.
    pub(crate) fn get_or_default(&mut self, level: &str) -> &mut N
    where
        N: Default,
    {
        let b = level.as_bytes();
        if let Children::Small(v) = self {
            if v.len() >= SMALL_MAX && !v.iter().any(|(k, _)| k.as_bytes() == b) {
                let mut m = Map::default();
                m.reserve(v.len() + 1);
                m.extend(v.drain(..));
                *self = Children::Large(m);
            }
        }
        match self {
            Children::Small(v) => {
                let i = match v.iter().position(|(k, _)| k.as_bytes() == b) {
                    Some(i) => i,
                    None => {
                        // Exact growth: a node rarely gains many children one at a time, and
                        // the default doubling would leave most slots empty.
                        v.reserve_exact(1);
                        v.push((Key::new(level), N::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Large(m) => m.entry(Key::new(level)).or_default(),
        }
    }

    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let b = level.as_bytes();
        match self {
            Children::Small(v) => {
                let i = v.iter().position(|(k, _)| k.as_bytes() == b)?;
                let (_, n) = v.swap_remove(i);
                if v.capacity() > 2 * v.len() {
                    v.shrink_to_fit();
                }
                Some(n)
            }
            Children::Large(m) => {
                let n = m.remove(b);
                if m.len() <= SMALL_MAX / 2 {
                    let mut v = Vec::with_capacity(m.len());
                    v.extend(m.drain());
                    *self = Children::Small(v);
                } else if m.len() * 4 < m.capacity() {
                    m.shrink_to_fit();
                }
                n
            }
        }
    }

    pub(crate) fn iter(&self) -> ChildIter<'_, N> {
        match self {
            Children::Small(v) => ChildIter::Small(v.iter()),
            Children::Large(m) => ChildIter::Large(m.iter()),
        }
    }

    /// Move every child into `out` (iterative drops of deep tries).
    pub(crate) fn drain_into(&mut self, out: &mut Vec<N>) {
        match self {
            Children::Small(v) => out.extend(v.drain(..).map(|(_, n)| n)),
            Children::Large(m) => out.extend(m.drain().map(|(_, n)| n)),
        }
    }
}

pub(crate) enum ChildIter<'a, N> {
    Small(std::slice::Iter<'a, (Key, N)>),
    Large(std::collections::hash_map::Iter<'a, Key, N>),
}

impl<'a, N> Iterator for ChildIter<'a, N> {
    type Item = (&'a str, &'a N);
    #[inline]
    fn next(&mut self) -> Option<(&'a str, &'a N)> {
        match self {
            ChildIter::Small(it) => it.next().map(|(k, n)| (k.as_str(), n)),
            ChildIter::Large(it) => it.next().map(|(k, n)| (k.as_str(), n)),
        }
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
    fn children_small_large_and_back() {
        let mut c: Children<u32> = Children::default();
        let long = "x".repeat(40);
        let names: Vec<String> = (0..20)
            .map(|i| {
                if i == 7 {
                    long.clone()
                } else {
                    format!("l{i}")
                }
            })
            .collect();
        for (i, n) in names.iter().enumerate() {
            *c.get_or_default(n) = i as u32;
            assert_eq!(c.len(), i + 1);
            for (j, m) in names.iter().enumerate().take(i + 1) {
                assert_eq!(c.get(m), Some(&(j as u32)));
            }
        }
        assert!(matches!(c, Children::Large(_)));
        assert_eq!(c.get_key_value(&long).map(|(k, _)| k), Some(long.as_str()));
        assert_eq!(c.iter().count(), 20);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(c.remove(n), Some(i as u32));
            assert_eq!(c.remove(n), None);
            assert_eq!(c.get(n), None);
            for m in names.iter().skip(i + 1) {
                assert!(c.get(m).is_some());
            }
        }
        assert!(matches!(c, Children::Small(_)));
        assert!(c.is_empty());
        assert_eq!(Key::new("").as_str(), "");
        assert_eq!(Key::new("日本").as_str(), "日本");
        assert_eq!(Key::new(&"é".repeat(11)).as_str(), "é".repeat(11));
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
