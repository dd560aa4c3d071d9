//! The retained-message index: topic name -> value (the broker stores `Arc` of its message).
//!
//! Owns: the set of retained topics and lookup by topic filter. It does not own expiry (the
//! broker keeps the expiry time in `V` and purges with [`RetainedIndex::retain`]), payload
//! limits or persistence (the broker exports with [`RetainedIndex::for_each`]).
//!
//! # Design
//! A trie by topic level, sharded by a hash of the first level into 64 tries, each behind a
//! `parking_lot::RwLock`. A filter whose first level is literal reads one shard; a filter
//! starting with `+` or `#` reads every shard in turn (never two locks at once) and skips
//! first-level `$` topics ([MQTT-4.7.2-1]). Retained publishes (writes) therefore contend only
//! with writers and readers of the same first-level hash. Walks, removals and drops are
//! iterative (no recursion per level).
//!
//! # Complexity
//! - insert / remove / get: O(topic levels).
//! - `for_each_match`: O(nodes visited): the filter's literal levels are followed by lookup;
//!   `+` visits the children of one node; `#` visits the whole subtree. Not a full scan unless
//!   the filter starts with `#`. The topic string given to the callback is rebuilt into one
//!   reused `String` (one allocation per call, not per match).
//! - `retain`: O(entries); collects the topics to drop under each shard's write lock.
//!
//! # Memory per entry (64-bit)
//! Per trie node: 40 bytes + `size_of::<Option<V>>()` (8 for an `Arc`) + its key in the
//! parent's map (16 bytes + the level's bytes + 1 control byte, at most 87.5% load). Topics
//! sharing prefixes share nodes. Empty nodes are freed on remove.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::topic::TopicFilter;
use crate::util::{hash_one, next_level, Children, WalkStack};

const SHARDS: usize = 64;

struct Node<V> {
    children: Children<Node<V>>,
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            value: None,
        }
    }
}

impl<V> Drop for Node<V> {
    // A derived drop recurses once per level; topic names may have 30,000 levels.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Node<V>> = Vec::new();
        self.children.drain_into(&mut pending);
        while let Some(mut n) = pending.pop() {
            n.children.drain_into(&mut pending);
        }
    }
}

impl<V> Node<V> {
    fn find(&self, topic: &str) -> Option<&Node<V>> {
        let mut node = self;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        Some(node)
    }

    fn find_mut(&mut self, topic: &str) -> Option<&mut Node<V>> {
        let mut node = self;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        Some(node)
    }

    fn find_or_create(&mut self, topic: &str) -> &mut Node<V> {
        let mut node = self;
        for level in topic.split('/') {
            node = node.children.get_or_default(level);
        }
        node
    }

    /// Take the value at `topic` and free the trailing chain of nodes left empty.
    fn remove(&mut self, topic: &str) -> Option<V> {
        let v = self.find_mut(topic)?.value.take()?;
        // Pass 1: the first edge of the trailing chain that carries nothing.
        let mut cut: Option<usize> = None;
        let mut node: &Node<V> = self;
        let mut levels = topic.split('/').peekable();
        let mut i = 0;
        while let Some(level) = levels.next() {
            let Some(child) = node.children.get(level) else {
                break;
            };
            let is_last = levels.peek().is_none();
            let keep = child.value.is_some()
                || child.children.len() >= 2
                || (is_last && !child.children.is_empty());
            if keep {
                cut = None;
            } else if cut.is_none() {
                cut = Some(i);
            }
            node = child;
            i += 1;
        }
        if let Some(cut) = cut {
            // Pass 2: drop that edge.
            let mut node: &mut Node<V> = self;
            for (j, level) in topic.split('/').enumerate() {
                if j == cut {
                    node.children.remove(level);
                    break;
                }
                match node.children.get_mut(level) {
                    Some(n) => node = n,
                    None => break,
                }
            }
        }
        Some(v)
    }
}

/// A pending node of a filter walk and how to rebuild its topic.
struct Frame<'a, V> {
    node: &'a Node<V>,
    /// The edge from the parent (this node's last level).
    key: &'a str,
    /// Length of the parent's topic in the buffer; `None` for a first-level node.
    parent_len: Option<usize>,
    /// Start of the next filter level; `> filter.len()` when the filter is consumed, and
    /// `SUBTREE` below a `#`.
    fpos: usize,
}

// Manual impls: a derive would require `V: Copy`.
impl<V> Clone for Frame<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Frame<'_, V> {}

impl<'a, V> Frame<'a, V> {
    fn child(key: &'a str, node: &'a Node<V>, parent_len: usize, fpos: usize) -> Self {
        Frame {
            node,
            key,
            parent_len: Some(parent_len),
            fpos,
        }
    }
}

const SUBTREE: usize = usize::MAX;

/// Call `f` for every value in `root`'s trie whose topic matches `filter`.
fn walk_filter<V>(root: &Node<V>, filter: &str, buf: &mut String, f: &mut impl FnMut(&str, &V)) {
    let flen = filter.len();
    // Expand the root by hand: it has no topic of its own, and first-level wildcards skip
    // `$` topics.
    let (level, next) = next_level(filter, 0);
    let first = |key: &str| !key.starts_with('$');
    let mut stack = WalkStack::empty(Frame {
        node: root,
        key: "",
        parent_len: None,
        fpos: SUBTREE,
    });
    match level {
        "#" | "+" => {
            let fpos = if level == "#" { SUBTREE } else { next };
            for (k, n) in root.children.iter().filter(|(k, _)| first(k)) {
                stack.push(Frame {
                    node: n,
                    key: k,
                    parent_len: None,
                    fpos,
                });
            }
        }
        lit => {
            if let Some((k, n)) = root.children.get_key_value(lit) {
                stack.push(Frame {
                    node: n,
                    key: k,
                    parent_len: None,
                    fpos: next,
                });
            }
        }
    }
    while let Some(fr) = stack.pop() {
        let my_len = match fr.parent_len {
            None => {
                buf.clear();
                buf.push_str(fr.key);
                buf.len()
            }
            Some(pl) => {
                buf.truncate(pl);
                buf.push('/');
                buf.push_str(fr.key);
                buf.len()
            }
        };
        let node = fr.node;
        if fr.fpos == SUBTREE {
            if let Some(v) = &node.value {
                f(buf, v);
            }
            for (k, n) in node.children.iter() {
                stack.push(Frame::child(k, n, my_len, SUBTREE));
            }
            continue;
        }
        if fr.fpos > flen {
            if let Some(v) = &node.value {
                f(buf, v);
            }
            continue;
        }
        let (level, next) = next_level(filter, fr.fpos);
        match level {
            "#" => {
                // `a/#` matches `a` itself, then everything below.
                if let Some(v) = &node.value {
                    f(buf, v);
                }
                for (k, n) in node.children.iter() {
                    stack.push(Frame::child(k, n, my_len, SUBTREE));
                }
            }
            "+" => {
                for (k, n) in node.children.iter() {
                    stack.push(Frame::child(k, n, my_len, next));
                }
            }
            lit => {
                if let Some((k, n)) = node.children.get_key_value(lit) {
                    stack.push(Frame::child(k, n, my_len, next));
                }
            }
        }
    }
}

/// Concurrent map of retained messages by topic; see the module documentation.
pub struct RetainedIndex<V> {
    shards: Box<[RwLock<Node<V>>]>,
    len: AtomicUsize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        RetainedIndex {
            shards: (0..SHARDS).map(|_| RwLock::new(Node::default())).collect(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<V> fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<V> RetainedIndex<V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, topic: &str) -> &RwLock<Node<V>> {
        let level0 = next_level(topic, 0).0;
        // The remainder is below SHARDS, so the cast cannot truncate.
        &self.shards[(hash_one(level0) % self.shards.len() as u64) as usize]
    }

    /// Store `value` as the retained message of `topic` (a valid topic name); returns the one
    /// it replaces.
    pub fn insert(&self, topic: &str, value: V) -> Option<V> {
        let prev = self
            .shard(topic)
            .write()
            .find_or_create(topic)
            .value
            .replace(value);
        if prev.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        prev
    }

    /// Like [`RetainedIndex::insert`], but a new topic is refused with `Err(value)` once
    /// `max_len` messages are retained; replacing an existing topic always succeeds. The bound
    /// is exact under concurrency (a slot is reserved atomically before the insertion).
    pub fn insert_bounded(&self, topic: &str, value: V, max_len: usize) -> Result<Option<V>, V> {
        let mut root = self.shard(topic).write();
        if let Some(node) = root.find_mut(topic) {
            if let Some(old) = node.value.as_mut() {
                return Ok(Some(std::mem::replace(old, value)));
            }
        }
        let reserved = self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max_len).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(value);
        }
        root.find_or_create(topic).value = Some(value);
        Ok(None)
    }

    /// Remove the retained message of `topic` (a retained PUBLISH with an empty payload).
    pub fn remove(&self, topic: &str) -> Option<V> {
        let v = self.shard(topic).write().remove(topic);
        if v.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        v
    }

    pub fn get(&self, topic: &str) -> Option<V>
    where
        V: Clone,
    {
        self.shard(topic).read().find(topic)?.value.clone()
    }

    /// Number of retained messages. O(1).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Call `f(topic, value)` for every retained message whose topic matches `filter`, honouring
    /// `#` matching its parent level and [MQTT-4.7.2-1]. Runs under shard read locks: keep `f`
    /// short and do not call into this index from it.
    pub fn for_each_match(&self, filter: &TopicFilter, mut f: impl FnMut(&str, &V)) {
        let mut buf = String::new();
        if filter.starts_with_wildcard() {
            for shard in self.shards.iter() {
                walk_filter(&shard.read(), filter, &mut buf, &mut f);
            }
        } else {
            walk_filter(&self.shard(filter).read(), filter, &mut buf, &mut f);
        }
    }

    /// Call `f(topic, value)` for every retained message, `$` topics included (export).
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut buf = String::new();
        for shard in self.shards.iter() {
            let root = shard.read();
            for_each_in(&root, &mut buf, &mut f);
        }
    }

    /// Keep only the messages for which `keep(topic, value)` is true (expiry purge); returns how
    /// many were removed. Each shard is write-locked while it is examined.
    pub fn retain(&self, mut keep: impl FnMut(&str, &V) -> bool) -> usize {
        let mut buf = String::new();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut root = shard.write();
            let mut doomed: Vec<String> = Vec::new();
            for_each_in(&root, &mut buf, &mut |t: &str, v: &V| {
                if !keep(t, v) {
                    doomed.push(t.to_owned());
                }
            });
            for t in &doomed {
                if root.remove(t).is_some() {
                    removed += 1;
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        removed
    }

    /// Whether every shard's trie is free of nodes (tests: remove cleans up).
    #[cfg(test)]
    fn is_structurally_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().children.is_empty())
    }
}

/// Every value of one shard, `$` topics included.
fn for_each_in<V>(root: &Node<V>, buf: &mut String, f: &mut impl FnMut(&str, &V)) {
    let mut stack = WalkStack::empty(Frame {
        node: root,
        key: "",
        parent_len: None,
        fpos: SUBTREE,
    });
    for (k, n) in root.children.iter() {
        stack.push(Frame {
            node: n,
            key: k,
            parent_len: None,
            fpos: SUBTREE,
        });
    }
    while let Some(fr) = stack.pop() {
        let my_len = match fr.parent_len {
            None => {
                buf.clear();
                buf.push_str(fr.key);
                buf.len()
            }
            Some(pl) => {
                buf.truncate(pl);
                buf.push('/');
                buf.push_str(fr.key);
                buf.len()
            }
        };
        if let Some(v) = &fr.node.value {
            f(buf, v);
        }
        for (k, n) in fr.node.children.iter() {
            stack.push(Frame {
                node: n,
                key: k,
                parent_len: Some(my_len),
                fpos: SUBTREE,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::try_from(s).unwrap()
    }

    fn matched(idx: &RetainedIndex<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        idx.for_each_match(&f(filter), |t, val| v.push((t.to_string(), *val)));
        v.sort();
        v
    }

    fn topics(idx: &RetainedIndex<u32>, filter: &str) -> Vec<String> {
        matched(idx, filter).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn insert_replace_remove() {
        let idx = RetainedIndex::new();
        assert_eq!(idx.insert("a/b", 1), None);
        assert_eq!(idx.insert("a/b", 2), Some(1));
        assert_eq!(idx.insert("a", 3), None);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get("a/b"), Some(2));
        assert_eq!(idx.get("a/c"), None);
        assert_eq!(idx.remove("a/b"), Some(2));
        assert_eq!(idx.remove("a/b"), None);
        assert_eq!(idx.get("a"), Some(3));
        assert_eq!(idx.remove("a"), Some(3));
        assert!(idx.is_empty());
        assert!(idx.is_structurally_empty());
    }

    #[test]
    fn bounded_insert() {
        let idx = RetainedIndex::new();
        assert_eq!(idx.insert_bounded("a", 1, 2), Ok(None));
        assert_eq!(idx.insert_bounded("b", 2, 2), Ok(None));
        assert_eq!(idx.insert_bounded("c", 3, 2), Err(3));
        assert_eq!(idx.insert_bounded("a", 4, 2), Ok(Some(1)));
        assert_eq!(idx.len(), 2);
        idx.remove("b");
        assert_eq!(idx.insert_bounded("c", 3, 2), Ok(None));
        assert_eq!(idx.get("c"), Some(3));
        assert_eq!(idx.insert_bounded("d", 5, 0), Err(5));

        // Exact under concurrency.
        let idx: Arc<RetainedIndex<u32>> = Arc::new(RetainedIndex::new());
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let idx = Arc::clone(&idx);
                std::thread::spawn(move || {
                    (0..500u32)
                        .filter(|i| idx.insert_bounded(&format!("{t}/{i}"), *i, 1_000).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 1_000);
        assert_eq!(idx.len(), 1_000);
    }

    #[test]
    fn wildcard_lookup() {
        let idx = RetainedIndex::new();
        let all = [
            "sport",
            "sport/tennis",
            "sport/tennis/p1",
            "sport/golf",
            "$SYS/uptime",
            "$SYS/a/b",
            "/x",
            "/",
            "a//b",
            "news/$x",
        ];
        for (i, t) in all.iter().enumerate() {
            idx.insert(t, i as u32);
        }
        assert_eq!(
            topics(&idx, "sport/#"),
            vec!["sport", "sport/golf", "sport/tennis", "sport/tennis/p1"]
        );
        assert_eq!(topics(&idx, "sport/+"), vec!["sport/golf", "sport/tennis"]);
        assert_eq!(topics(&idx, "sport/+/p1"), vec!["sport/tennis/p1"]);
        assert_eq!(topics(&idx, "sport"), vec!["sport"]);
        assert_eq!(topics(&idx, "+"), vec!["sport"]);
        assert_eq!(
            topics(&idx, "+/+"),
            vec!["/", "/x", "news/$x", "sport/golf", "sport/tennis"]
        );
        assert_eq!(topics(&idx, "$SYS/#"), vec!["$SYS/a/b", "$SYS/uptime"]);
        assert_eq!(topics(&idx, "a/+/b"), vec!["a//b"]);
        assert_eq!(topics(&idx, "/+"), vec!["/", "/x"]);
        assert_eq!(topics(&idx, "news/+"), vec!["news/$x"]);
        // [MQTT-4.7.2-1]: `#` everywhere but the `$` topics.
        let every = topics(&idx, "#");
        assert_eq!(every.len(), all.len() - 2);
        assert!(every.iter().all(|t| !t.starts_with('$')));
        assert_eq!(
            matched(&idx, "sport/tennis"),
            vec![("sport/tennis".into(), 1)]
        );

        let mut exported = Vec::new();
        idx.for_each(|t, _| exported.push(t.to_string()));
        exported.sort();
        let mut expected: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(exported, expected);
    }

    #[test]
    fn retain_purges_and_cleans() {
        let idx = RetainedIndex::new();
        for i in 0..100u32 {
            idx.insert(&format!("d/{}/s/{}", i % 7, i), i);
        }
        let removed = idx.retain(|_, v| v % 2 == 0);
        assert_eq!(removed, 50);
        assert_eq!(idx.len(), 50);
        assert_eq!(topics(&idx, "d/#").len(), 50);
        assert_eq!(idx.retain(|_, _| false), 50);
        assert!(idx.is_empty());
        assert!(idx.is_structurally_empty());
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let idx = RetainedIndex::new();
        let deep = vec!["x"; 30_000].join("/");
        idx.insert(&deep, 1);
        assert_eq!(topics(&idx, "#"), vec![deep.clone()]);
        assert_eq!(topics(&idx, "x/#"), vec![deep.clone()]);
        idx.insert("x", 2);
        assert_eq!(idx.remove(&deep), Some(1));
        assert_eq!(topics(&idx, "#"), vec!["x".to_string()]);
        idx.insert(&deep, 1);
        drop(idx);
    }

    #[test]
    fn concurrent_smoke() {
        let idx: Arc<RetainedIndex<u32>> = Arc::new(RetainedIndex::new());
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let idx = Arc::clone(&idx);
                std::thread::spawn(move || {
                    for i in 0..1_000u32 {
                        let topic = format!("t{t}/{}", i % 50);
                        idx.insert(&topic, i);
                        let mut seen = false;
                        idx.for_each_match(&f(&format!("t{t}/+")), |tp, _| seen |= tp == topic);
                        assert!(seen);
                        if i % 3 == 0 {
                            idx.remove(&topic);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut n = 0;
        idx.for_each(|_, _| n += 1);
        assert_eq!(n, idx.len());
    }

    fn topic_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "$x"]), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("non-empty", |s| !s.is_empty())
    }

    fn filter_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(
            proptest::sample::select(vec!["a", "b", "", "$x", "+", "#"]),
            1..5,
        )
        .prop_map(|levels| {
            let mut out: Vec<&str> = Vec::new();
            for l in levels {
                out.push(l);
                if l == "#" {
                    break;
                }
            }
            out.join("/")
        })
        .prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest::proptest! {
        #[test]
        fn retained_agrees_with_brute_force(
            inserts in proptest::collection::vec(topic_strategy(), 0..40),
            removes in proptest::collection::vec(topic_strategy(), 0..20),
            filters in proptest::collection::vec(filter_strategy(), 1..10),
        ) {
            let idx = RetainedIndex::new();
            let mut model = BTreeMap::new();
            for (i, t) in inserts.iter().enumerate() {
                proptest::prop_assert_eq!(idx.insert(t, i as u32), model.insert(t.clone(), i as u32));
            }
            for t in &removes {
                proptest::prop_assert_eq!(idx.remove(t), model.remove(t));
            }
            proptest::prop_assert_eq!(idx.len(), model.len());
            for fl in &filters {
                let expected: Vec<(String, u32)> = model
                    .iter()
                    .filter(|(t, _)| f(fl).matches(t))
                    .map(|(t, v)| (t.clone(), *v))
                    .collect();
                proptest::prop_assert_eq!(matched(&idx, fl), expected, "filter {}", fl);
            }
            idx.retain(|_, _| false);
            proptest::prop_assert!(idx.is_structurally_empty());
        }
    }
}
