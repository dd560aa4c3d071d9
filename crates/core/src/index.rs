//! The subscription index: which subscriptions match a published topic.
//!
//! Owns: every (filter, share group, subscriber key) -> value entry of the broker, and the choice
//! of one member of a shared-subscription group. It does not know sessions, QoS merging or
//! queues: the broker merges overlapping matches per subscriber (max QoS, every subscription
//! identifier) itself.
//!
//! # Design
//! A trie by topic level, split into shards so that the publish path takes no global lock:
//! - 64 *literal* shards, chosen by a hash of the filter's first level, hold every filter whose
//!   first level is not a wildcard;
//! - one *wildcard* shard holds filters starting with `+` or `#`.
//!
//! Each shard is a `parking_lot::RwLock` around its root, padded to its own cache lines. A match
//! read-locks the one literal shard of the topic's first level, then (separately, never nested)
//! the wildcard shard; a topic starting with `$` skips the wildcard shard altogether
//! ([MQTT-4.7.2-1]), and an empty shard is skipped without touching its lock (an atomic load of
//! its count). Subscription changes write-lock one shard only.
//!
//! Why not copy-on-write snapshots (`arc-swap`)? Subscribing would copy the shard's changed path
//! including each node's child map; a fleet of 100k devices subscribing `devices/{id}/cmd` at
//! startup would copy the 100k-entry `devices` map once per subscription (quadratic). Read locks
//! cost one atomic increment and one decrement per shard per publish and never block while no
//! subscription of that shard is changing.
//!
//! Matching walks the topic with byte offsets (no `Vec` of levels) and a pending-node stack held
//! inline for topics of up to 14 levels: no allocation per match. Every walk, insertion, removal
//! and drop is iterative, so a filter of 30,000 levels cannot overflow a worker's stack.
//!
//! Callbacks run while a shard's read lock is held: they must be short and must not call back
//! into the same index (a writer queued in between would deadlock them).
//!
//! # Complexity
//! - subscribe / unsubscribe: O(filter levels), plus O(1) expected in the leaf's maps.
//! - match: O(topic levels × matching wildcard branches + matches reported).
//! - shared choice: O(1), or O(group size) when the `available` predicate rejects members.
//!
//! # Memory per entry (64-bit)
//! - per trie node: 56 bytes + the key in the parent's map (16 bytes `Box<str>` + the level's
//!   bytes) + hash-table overhead (1 control byte per bucket, buckets at most 87.5% full);
//! - per filter end with subscribers: one boxed leaf of `max(size_of::<(K, V)>(), 32)` + 32
//!   bytes; a single non-shared subscriber is stored inline in it (the common case of a
//!   device's own topic), two or more in a hash table of `size_of::<(K, V)>()` per entry;
//! - per shared group: ~120 bytes + its name + the `TopicFilter` (32 bytes, sharing the parsed
//!   buffer); per member `size_of::<(K, V)>()` plus `size_of::<(K, usize)>()` in its position
//!   map (for O(1) removal).
//!
//! Nodes are freed as soon as they carry no subscription and no children; maps shrink when they
//! fall under a quarter of their capacity.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::topic::TopicFilter;
use crate::util::{hash_one, next_level, Children, Map, WalkStack};

/// Number of literal shards (a power of two). Enough that unrelated first levels rarely share
/// a lock; each costs 128 bytes when empty.
const LITERAL_SHARDS: usize = 64;

/// How a shared-subscription group picks the member that receives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SharedStrategy {
    /// Members in turn (one atomic counter per group).
    #[default]
    RoundRobin,
    /// A pseudo-random member (the group counter hashed with the process seed).
    Random,
    /// A member chosen by a hash of the publisher's client id: one publisher, one consumer.
    HashClientId,
    /// A member chosen by a hash of the topic: one topic, one consumer (ordering per topic).
    HashTopic,
    /// The first member until it leaves the group.
    Sticky,
}

/// The non-shared subscribers of one filter. Most filters have exactly one subscriber (a
/// device's own command topic), so that case is stored inline without a hash table.
enum Plain<K, V> {
    Empty,
    One(K, V),
    Many(Map<K, V>),
}

impl<K: Eq + Hash, V> Plain<K, V> {
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Plain::Empty => {
                *self = Plain::One(key, value);
                None
            }
            Plain::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Plain::One(..) => {
                let mut map = Map::default();
                if let Plain::One(k, v) = std::mem::replace(self, Plain::Empty) {
                    map.insert(k, v);
                }
                map.insert(key, value);
                *self = Plain::Many(map);
                None
            }
            Plain::Many(map) => map.insert(key, value),
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Plain::Empty => None,
            Plain::One(k, _) if k != key => None,
            Plain::One(..) => match std::mem::replace(self, Plain::Empty) {
                Plain::One(_, v) => Some(v),
                _ => None,
            },
            Plain::Many(map) => {
                let v = map.remove(key);
                if map.len() <= 1 {
                    // Back to the inline form: frees the table.
                    let rest = std::mem::take(map);
                    *self = Plain::Empty;
                    for (k, v) in rest {
                        *self = Plain::One(k, v);
                    }
                } else {
                    shrink_map(map);
                }
                v
            }
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        match self {
            Plain::Empty => None,
            Plain::One(k, v) => (k == key).then_some(v),
            Plain::Many(map) => map.get(key),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Plain::Empty)
    }

    #[inline]
    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            Plain::Empty => {}
            Plain::One(k, v) => f(k, v),
            Plain::Many(map) => {
                for (k, v) in map {
                    f(k, v);
                }
            }
        }
    }
}

/// Subscriptions that end at one trie position: plain ones by key, and shared groups.
struct Leaf<K, V> {
    plain: Plain<K, V>,
    /// Usually zero or one group per filter: a `Vec` searched by name.
    shared: Vec<SharedGroup<K, V>>,
}

impl<K, V> Default for Leaf<K, V> {
    fn default() -> Self {
        Leaf {
            plain: Plain::Empty,
            shared: Vec::new(),
        }
    }
}

impl<K: Eq + Hash, V> Leaf<K, V> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }
}

/// One shared subscription `$share/{name}/{filter}` and its members.
struct SharedGroup<K, V> {
    /// An `Arc` so the broker can tag each delivery with its group without allocating.
    name: Arc<str>,
    filter: TopicFilter,
    /// Dense so that a choice is an index; reordered by `swap_remove` on leave.
    members: Vec<(K, V)>,
    /// Key -> index in `members`, for O(1) replace and leave.
    positions: Map<K, usize>,
    /// Round-robin / random cursor. Relaxed: it only spreads load.
    counter: AtomicUsize,
}

impl<K: Eq + Hash + Clone, V> SharedGroup<K, V> {
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(&i) = self.positions.get(&key) {
            if let Some(slot) = self.members.get_mut(i) {
                return Some(std::mem::replace(&mut slot.1, value));
            }
        }
        self.positions.insert(key.clone(), self.members.len());
        self.members.push((key, value));
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.positions.remove(key)?;
        if i >= self.members.len() {
            return None;
        }
        let (_, v) = self.members.swap_remove(i);
        if let Some((moved, _)) = self.members.get(i) {
            if let Some(p) = self.positions.get_mut(moved) {
                *p = i;
            }
        }
        shrink_vec(&mut self.members);
        shrink_map(&mut self.positions);
        Some(v)
    }
}

/// One trie node. `#` subscriptions live in the node of their parent level (`multi`), so that
/// `a/#` is found both for `a` and below it.
struct Node<K, V> {
    children: Children<Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    exact: Option<Box<Leaf<K, V>>>,
    multi: Option<Box<Leaf<K, V>>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            plus: None,
            exact: None,
            multi: None,
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    // The derived drop would recurse once per level; a filter may have 30,000 levels.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut pending: Vec<Node<K, V>> = Vec::new();
        self.children.drain_into(&mut pending);
        pending.extend(self.plus.take().map(|b| *b));
        while let Some(mut n) = pending.pop() {
            n.children.drain_into(&mut pending);
            pending.extend(n.plus.take().map(|b| *b));
            // `n` now has no children: its own drop returns at once.
        }
    }
}

impl<K, V> Node<K, V> {
    fn out_degree(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn has_leaves(&self) -> bool {
        self.exact.is_some() || self.multi.is_some()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.out_degree() == 0 && !self.has_leaves()
    }

    fn edge(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    /// The leaf slot of `filter`, creating the path.
    fn slot_or_create(&mut self, filter: &str) -> &mut Option<Box<Leaf<K, V>>> {
        let mut node = self;
        for level in filter.split('/') {
            match level {
                // `#` is always the last level of a valid filter.
                "#" => return &mut node.multi,
                "+" => node = node.plus.get_or_insert_with(Box::default),
                lit => node = node.children.get_or_default(lit),
            }
        }
        &mut node.exact
    }

    /// The leaf slot of `filter` if its path exists.
    fn slot(&mut self, filter: &str) -> Option<&mut Option<Box<Leaf<K, V>>>> {
        let mut node = self;
        for level in filter.split('/') {
            match level {
                "#" => return Some(&mut node.multi),
                "+" => node = node.plus.as_deref_mut()?,
                lit => node = node.children.get_mut(lit)?,
            }
        }
        Some(&mut node.exact)
    }

    fn leaf(&self, filter: &str) -> Option<&Leaf<K, V>> {
        let mut node = self;
        for level in filter.split('/') {
            if level == "#" {
                return node.multi.as_deref();
            }
            node = node.edge(level)?;
        }
        node.exact.as_deref()
    }

    /// Remove the longest chain of nodes at the end of `filter`'s path that carry nothing.
    fn prune(&mut self, filter: &str) {
        // Pass 1: find the first edge of the trailing removable chain.
        let mut cut: Option<usize> = None;
        let mut node: &Node<K, V> = self;
        let mut levels = filter.split('/').filter(|l| *l != "#").peekable();
        let mut i = 0;
        while let Some(level) = levels.next() {
            let Some(child) = node.edge(level) else {
                return;
            };
            let is_last = levels.peek().is_none();
            let keep = child.has_leaves()
                || child.out_degree() >= 2
                || (is_last && child.out_degree() >= 1);
            if keep {
                cut = None;
            } else if cut.is_none() {
                cut = Some(i);
            }
            node = child;
            i += 1;
        }
        let Some(cut) = cut else { return };
        // Pass 2: walk to the parent of that edge and drop the chain.
        let mut node: &mut Node<K, V> = self;
        for (j, level) in filter.split('/').enumerate() {
            if j == cut {
                if level == "+" {
                    node.plus = None;
                } else {
                    node.children.remove(level);
                }
                return;
            }
            node = match level {
                "+" => match node.plus.as_deref_mut() {
                    Some(n) => n,
                    None => return,
                },
                lit => match node.children.get_mut(lit) {
                    Some(n) => n,
                    None => return,
                },
            };
        }
    }

    /// Call `visit` with every leaf whose filter matches `topic`, from this node as the root.
    /// The caller applies the `$` rule by choosing which roots to walk.
    fn walk<'a>(&'a self, topic: &str, mut visit: impl FnMut(&'a Leaf<K, V>)) {
        let end = topic.len();
        let mut stack = WalkStack::new((self, 0usize));
        while let Some((node, pos)) = stack.pop() {
            if pos > end {
                // The topic ends at this node: exact filters, and `#` matching its parent.
                if let Some(l) = node.exact.as_deref() {
                    visit(l);
                }
                if let Some(l) = node.multi.as_deref() {
                    visit(l);
                }
                continue;
            }
            if let Some(l) = node.multi.as_deref() {
                visit(l);
            }
            let (level, next) = next_level(topic, pos);
            if let Some(p) = node.plus.as_deref() {
                stack.push((p, next));
            }
            if let Some(c) = node.children.get(level) {
                stack.push((c, next));
            }
        }
    }
}

fn shrink_map<K: Eq + Hash, V>(m: &mut Map<K, V>) {
    if m.capacity() > 16 && m.len() * 4 < m.capacity() {
        m.shrink_to_fit();
    }
}

fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > 16 && v.len() * 4 < v.capacity() {
        v.shrink_to_fit();
    }
}

/// A shard on its own cache lines, so that readers of one shard do not slow another.
#[repr(align(128))]
struct Shard<K, V> {
    root: RwLock<Node<K, V>>,
    /// Subscriptions in this shard; lets a match skip an empty shard without locking it.
    count: AtomicUsize,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Shard {
            root: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
        }
    }
}

/// One matching shared subscription, exposed so the broker can choose a member.
pub struct SharedGroupMatch<'a, K, V> {
    group: &'a SharedGroup<K, V>,
    topic: &'a str,
}

impl<'a, K, V> SharedGroupMatch<'a, K, V> {
    /// The share name (`{group}` in `$share/{group}/{filter}`).
    pub fn group(&self) -> &'a str {
        &self.group.name
    }

    /// The share name as a shared `Arc` (clone it instead of allocating a copy).
    pub fn group_arc(&self) -> &'a Arc<str> {
        &self.group.name
    }

    /// The filter of this shared subscription (a group name with two filters is two shared
    /// subscriptions, each delivering its own copy).
    pub fn filter(&self) -> &'a TopicFilter {
        &self.group.filter
    }

    /// All members, in an unspecified but stable order between changes. Never empty.
    pub fn members(&self) -> &'a [(K, V)] {
        &self.group.members
    }

    /// Pick one member by `strategy`, preferring one for which `available` returns true
    /// (connected and with room in its queue), and falling back to the strategy's first pick
    /// if none is available. `publisher_client_id` is only used by
    /// [`SharedStrategy::HashClientId`]. `None` only if the group is empty, which the index
    /// never exposes.
    pub fn choose(
        &self,
        strategy: SharedStrategy,
        publisher_client_id: &str,
        mut available: impl FnMut(&K, &V) -> bool,
    ) -> Option<(&'a K, &'a V)> {
        let members: &'a [(K, V)] = &self.group.members;
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = match strategy {
            SharedStrategy::RoundRobin => self.group.counter.fetch_add(1, Ordering::Relaxed) % n,
            SharedStrategy::Random => {
                let c = self.group.counter.fetch_add(1, Ordering::Relaxed);
                reduce(hash_one(&c), n)
            }
            SharedStrategy::HashClientId => reduce(hash_one(publisher_client_id), n),
            SharedStrategy::HashTopic => reduce(hash_one(self.topic), n),
            SharedStrategy::Sticky => 0,
        };
        for i in 0..n {
            let (k, v) = &members[(start + i) % n];
            if available(k, v) {
                return Some((k, v));
            }
        }
        members.get(start).map(|(k, v)| (k, v))
    }
}

impl<K: fmt::Debug, V> fmt::Debug for SharedGroupMatch<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedGroupMatch")
            .field("group", &self.group.name)
            .field("filter", &self.group.filter)
            .field("members", &self.group.members.len())
            .finish()
    }
}

/// Map a hash to `0..n` (n > 0).
fn reduce(h: u64, n: usize) -> usize {
    // `usize` is at most 64 bits on supported targets; the remainder is below `n`.
    (h % n as u64) as usize
}

/// The broker's subscription index; see the module documentation. All methods take `&self` and
/// may be called from any thread.
pub struct SubscriptionIndex<K, V> {
    literal: Box<[Shard<K, V>]>,
    wildcard: Shard<K, V>,
    len: AtomicUsize,
}

impl<K, V> Default for SubscriptionIndex<K, V> {
    fn default() -> Self {
        SubscriptionIndex {
            literal: (0..LITERAL_SHARDS).map(|_| Shard::default()).collect(),
            wildcard: Shard::default(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<K, V> fmt::Debug for SubscriptionIndex<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionIndex<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn shard_of_first_level(&self, level0: &str) -> &Shard<K, V> {
        let i = reduce(hash_one(level0), self.literal.len());
        &self.literal[i]
    }

    fn shard_for_filter(&self, filter: &str) -> &Shard<K, V> {
        let level0 = next_level(filter, 0).0;
        if level0 == "+" || level0 == "#" {
            &self.wildcard
        } else {
            self.shard_of_first_level(level0)
        }
    }

    /// Add or replace the subscription of `key` to `filter` (shared when `share_group` is
    /// `Some`). Returns the previous value when `key` already had this exact subscription: the
    /// caller must then treat it as a replacement [MQTT-3.8.4-3] (for example for Retain
    /// Handling 1).
    pub fn subscribe(
        &self,
        filter: &TopicFilter,
        share_group: Option<&str>,
        key: K,
        value: V,
    ) -> Option<V> {
        let shard = self.shard_for_filter(filter);
        let mut root = shard.root.write();
        let leaf = root.slot_or_create(filter).get_or_insert_with(Box::default);
        let prev = match share_group {
            None => leaf.plain.insert(key, value),
            Some(name) => {
                let group = match leaf.shared.iter().position(|g| &*g.name == name) {
                    Some(i) => &mut leaf.shared[i],
                    None => {
                        leaf.shared.push(SharedGroup {
                            name: Arc::from(name),
                            filter: filter.clone(),
                            members: Vec::new(),
                            positions: Map::default(),
                            counter: AtomicUsize::new(0),
                        });
                        let last = leaf.shared.len() - 1;
                        &mut leaf.shared[last]
                    }
                };
                group.insert(key, value)
            }
        };
        if prev.is_none() {
            shard.count.fetch_add(1, Ordering::Relaxed);
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        prev
    }

    /// Remove the subscription of `key` to `filter` / `share_group`; returns its value, or
    /// `None` if there was none (UNSUBACK 0x11). Frees the trie nodes it leaves empty.
    pub fn unsubscribe(
        &self,
        filter: &TopicFilter,
        share_group: Option<&str>,
        key: &K,
    ) -> Option<V> {
        let shard = self.shard_for_filter(filter);
        let mut root = shard.root.write();
        let slot = root.slot(filter)?;
        let leaf = slot.as_deref_mut()?;
        let removed = match share_group {
            None => leaf.plain.remove(key),
            Some(name) => {
                let i = leaf.shared.iter().position(|g| &*g.name == name)?;
                let v = leaf.shared[i].remove(key);
                if leaf.shared[i].members.is_empty() {
                    leaf.shared.swap_remove(i);
                }
                v
            }
        }?;
        if leaf.is_empty() {
            *slot = None;
            root.prune(filter);
        }
        shard.count.fetch_sub(1, Ordering::Relaxed);
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(removed)
    }

    /// Remove every listed subscription of `key` (a session's subscription list, when it ends).
    /// Returns how many existed. Each entry write-locks its own shard briefly, so publishes are
    /// not held up for the whole list.
    pub fn remove_all<'f, I>(&self, key: &K, subscriptions: I) -> usize
    where
        I: IntoIterator<Item = (&'f TopicFilter, Option<&'f str>)>,
    {
        subscriptions
            .into_iter()
            .filter(|(f, g)| self.unsubscribe(f, *g, key).is_some())
            .count()
    }

    /// The value of one subscription, if present.
    pub fn get(&self, filter: &TopicFilter, share_group: Option<&str>, key: &K) -> Option<V>
    where
        V: Clone,
    {
        let shard = self.shard_for_filter(filter);
        let root = shard.root.read();
        let leaf = root.leaf(filter)?;
        match share_group {
            None => leaf.plain.get(key).cloned(),
            Some(name) => {
                let g = leaf.shared.iter().find(|g| &*g.name == name)?;
                let i = *g.positions.get(key)?;
                g.members.get(i).map(|(_, v)| v.clone())
            }
        }
    }

    /// Number of subscriptions (plain ones plus shared-group memberships). O(1).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visit the leaves matching `topic` in the topic's literal shard, then in the wildcard
    /// shard. Locks are taken one after the other, never nested.
    fn walk_matches(&self, topic: &str, mut visit: impl FnMut(&Leaf<K, V>)) {
        let literal = self.shard_of_first_level(next_level(topic, 0).0);
        if literal.count.load(Ordering::Relaxed) != 0 {
            let root = literal.root.read();
            root.walk(topic, &mut visit);
        }
        // [MQTT-4.7.2-1]: filters starting with a wildcard never match `$` topics.
        if !topic.starts_with('$') && self.wildcard.count.load(Ordering::Relaxed) != 0 {
            let root = self.wildcard.root.read();
            root.walk(topic, &mut visit);
        }
    }

    /// Call `f` for every non-shared subscription whose filter matches `topic` (a valid topic
    /// name). A key with several overlapping matching filters is reported once per filter.
    /// `f` runs under a read lock: keep it short and do not call into this index from it.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        self.walk_matches(topic, |leaf| {
            leaf.plain.for_each(&mut f);
        });
    }

    /// Call `f` once for every shared subscription (group, filter) matching `topic`; the broker
    /// picks one member with [`SharedGroupMatch::choose`] or its own logic.
    pub fn for_each_shared_match(
        &self,
        topic: &str,
        mut f: impl FnMut(&SharedGroupMatch<'_, K, V>),
    ) {
        self.walk_matches(topic, |leaf| {
            for group in &leaf.shared {
                f(&SharedGroupMatch { group, topic });
            }
        });
    }

    /// Both kinds of match in one walk (one lock acquisition per shard): `plain` for every
    /// non-shared subscription, `shared` for every matching shared subscription.
    pub fn for_each_match_all(
        &self,
        topic: &str,
        mut plain: impl FnMut(&K, &V),
        mut shared: impl FnMut(&SharedGroupMatch<'_, K, V>),
    ) {
        self.walk_matches(topic, |leaf| {
            leaf.plain.for_each(&mut plain);
            for group in &leaf.shared {
                shared(&SharedGroupMatch { group, topic });
            }
        });
    }

    /// Both kinds of match, with the member of each shared subscription already chosen by
    /// `strategy` (see [`SharedGroupMatch::choose`]): `deliver(key, value, shared)` is called
    /// for every plain match (`shared` = `None`) and for each chosen member (`shared` =
    /// `Some(group name)`).
    pub fn for_each_delivery(
        &self,
        topic: &str,
        strategy: SharedStrategy,
        publisher_client_id: &str,
        mut available: impl FnMut(&K, &V) -> bool,
        mut deliver: impl FnMut(&K, &V, Option<&Arc<str>>),
    ) {
        self.walk_matches(topic, |leaf| {
            leaf.plain.for_each(|k, v| deliver(k, v, None));
            for group in &leaf.shared {
                let m = SharedGroupMatch { group, topic };
                if let Some((k, v)) = m.choose(strategy, publisher_client_id, &mut available) {
                    deliver(k, v, Some(&group.name));
                }
            }
        });
    }

    /// Whether every shard's trie is free of nodes (tests: unsubscribe cleans up).
    #[cfg(test)]
    fn is_structurally_empty(&self) -> bool {
        self.literal.iter().all(|s| s.root.read().is_empty())
            && self.wildcard.root.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::try_from(s).unwrap()
    }

    fn plain_matches(idx: &SubscriptionIndex<u32, u32>, topic: &str) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        idx.for_each_match(topic, |k, val| v.push((*k, *val)));
        v.sort_unstable();
        v
    }

    fn keys(idx: &SubscriptionIndex<u32, u32>, topic: &str) -> Vec<u32> {
        plain_matches(idx, topic)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn wildcard_semantics() {
        let idx = SubscriptionIndex::new();
        let filters = [
            "sport/#",        // 0
            "sport/+",        // 1
            "sport",          // 2
            "#",              // 3
            "+",              // 4
            "+/+",            // 5
            "$SYS/#",         // 6
            "+/tennis/#",     // 7
            "a//b",           // 8
            "a/+/b",          // 9
            "/+",             // 10
            "sport/tennis/+", // 11
        ];
        for (i, fl) in filters.iter().enumerate() {
            assert!(idx.subscribe(&f(fl), None, i as u32, 0).is_none());
        }
        assert_eq!(idx.len(), filters.len());
        assert_eq!(keys(&idx, "sport"), vec![0, 2, 3, 4]);
        assert_eq!(keys(&idx, "sport/"), vec![0, 1, 3, 5]);
        assert_eq!(keys(&idx, "sport/tennis"), vec![0, 1, 3, 5, 7]);
        assert_eq!(keys(&idx, "sport/tennis/x"), vec![0, 3, 7, 11]);
        assert_eq!(keys(&idx, "$SYS/x"), vec![6]);
        assert_eq!(keys(&idx, "$SYS"), vec![6]);
        assert_eq!(keys(&idx, "a//b"), vec![3, 8, 9]);
        assert_eq!(keys(&idx, "/x"), vec![3, 5, 10]);
        assert_eq!(keys(&idx, "x"), vec![3, 4]);
        assert_eq!(keys(&idx, "x/tennis"), vec![3, 5, 7]);
        for t in ["sport", "sport/tennis/x", "$SYS/x", "a//b", "/x", "/", "//"] {
            let brute: Vec<u32> = filters
                .iter()
                .enumerate()
                .filter(|(_, fl)| f(fl).matches(t))
                .map(|(i, _)| i as u32)
                .collect();
            assert_eq!(keys(&idx, t), brute, "{t}");
        }
    }

    #[test]
    fn plus_at_every_position() {
        let idx = SubscriptionIndex::new();
        for (i, fl) in ["+/b/c", "a/+/c", "a/b/+", "+/+/+", "+/+/c"]
            .iter()
            .enumerate()
        {
            idx.subscribe(&f(fl), None, i as u32, 0);
        }
        assert_eq!(keys(&idx, "a/b/c"), vec![0, 1, 2, 3, 4]);
        assert_eq!(keys(&idx, "x/b/c"), vec![0, 3, 4]);
        assert_eq!(keys(&idx, "a/b"), Vec::<u32>::new());
        assert_eq!(keys(&idx, "a/b/c/d"), Vec::<u32>::new());
        assert_eq!(keys(&idx, "//"), vec![3]);
    }

    #[test]
    fn overlapping_filters_report_each() {
        let idx = SubscriptionIndex::new();
        idx.subscribe(&f("a/#"), None, 1, 10);
        idx.subscribe(&f("a/+"), None, 1, 11);
        idx.subscribe(&f("a/b"), None, 1, 12);
        idx.subscribe(&f("a/b"), None, 2, 20);
        assert_eq!(
            plain_matches(&idx, "a/b"),
            vec![(1, 10), (1, 11), (1, 12), (2, 20)]
        );
    }

    #[test]
    fn one_to_many_subscribers_and_back() {
        let idx = SubscriptionIndex::new();
        for order in [[1, 2, 3], [3, 2, 1], [2, 1, 3]] {
            for k in 1..=3 {
                assert_eq!(idx.subscribe(&f("x/y"), None, k, k * 10), None);
            }
            assert_eq!(idx.subscribe(&f("x/y"), None, 2, 21), Some(20));
            assert_eq!(keys(&idx, "x/y"), vec![1, 2, 3]);
            let mut left = vec![1, 2, 3];
            for k in order {
                assert!(idx.unsubscribe(&f("x/y"), None, &k).is_some());
                assert!(idx.unsubscribe(&f("x/y"), None, &k).is_none());
                left.retain(|&x| x != k);
                assert_eq!(keys(&idx, "x/y"), left);
                for &l in &left {
                    assert!(idx.get(&f("x/y"), None, &l).is_some());
                }
            }
            assert!(idx.is_structurally_empty());
        }
    }

    #[test]
    fn replace_and_unsubscribe() {
        let idx = SubscriptionIndex::new();
        assert_eq!(idx.subscribe(&f("a/b"), None, 1, 1), None);
        assert_eq!(idx.subscribe(&f("a/b"), None, 1, 2), Some(1));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.get(&f("a/b"), None, &1), Some(2));
        assert_eq!(plain_matches(&idx, "a/b"), vec![(1, 2)]);
        // A shared subscription with the same filter is a different subscription.
        assert_eq!(idx.subscribe(&f("a/b"), Some("g"), 1, 3), None);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.unsubscribe(&f("a/b"), None, &2), None);
        assert_eq!(idx.unsubscribe(&f("a/c"), None, &1), None);
        assert_eq!(idx.unsubscribe(&f("a/b"), Some("h"), &1), None);
        assert_eq!(idx.unsubscribe(&f("a/b"), None, &1), Some(2));
        assert_eq!(idx.unsubscribe(&f("a/b"), None, &1), None);
        assert_eq!(idx.unsubscribe(&f("a/b"), Some("g"), &1), Some(3));
        assert!(idx.is_empty());
        assert!(idx.is_structurally_empty());
    }

    #[test]
    fn unsubscribe_cleans_empty_nodes() {
        let idx = SubscriptionIndex::new();
        let filters = [
            "a/b/c/d",
            "a/b",
            "a/+/c/#",
            "+/x",
            "#",
            "a/b/c/d/#",
            "a//",
            "/",
        ];
        for (i, fl) in filters.iter().enumerate() {
            idx.subscribe(&f(fl), None, i as u32, 0);
            idx.subscribe(&f(fl), Some("g"), i as u32, 0);
        }
        // Remove in an order that exercises keeping and cutting inner nodes.
        for (i, fl) in filters.iter().enumerate().rev() {
            assert!(idx.unsubscribe(&f(fl), None, &(i as u32)).is_some());
            assert!(idx.unsubscribe(&f(fl), Some("g"), &(i as u32)).is_some());
            // Remaining filters still match.
            for (j, other) in filters.iter().enumerate().take(i) {
                let topic = other.replace(['+', '#'], "z");
                assert!(
                    keys(&idx, &topic).contains(&(j as u32)),
                    "{other} after removing {fl}"
                );
            }
        }
        assert!(idx.is_structurally_empty());
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        let idx = SubscriptionIndex::new();
        let deep = vec!["x"; 30_000].join("/");
        let fl = f(&deep);
        idx.subscribe(&fl, None, 1, 0);
        idx.subscribe(&f(&format!("{deep}/#")), None, 2, 0);
        let plus = vec!["+"; 30_000].join("/");
        idx.subscribe(&f(&plus), None, 3, 0);
        assert_eq!(keys(&idx, &deep), vec![1, 2, 3]);
        assert_eq!(idx.unsubscribe(&fl, None, &1), Some(0));
        assert_eq!(keys(&idx, &deep), vec![2, 3]);
        // Dropping the index with deep tries must not recurse.
        drop(idx);
    }

    #[test]
    fn shared_groups_choose_one_member() {
        let idx: SubscriptionIndex<u32, u32> = SubscriptionIndex::new();
        for k in 0..3 {
            idx.subscribe(&f("job/+"), Some("workers"), k, k * 10);
        }
        idx.subscribe(&f("job/#"), Some("workers"), 9, 90);
        idx.subscribe(&f("job/+"), Some("audit"), 7, 70);
        idx.subscribe(&f("job/+"), None, 5, 50);

        let mut groups = Vec::new();
        idx.for_each_shared_match("job/1", |m| {
            groups.push((
                m.group().to_string(),
                m.filter().to_string(),
                m.members().len(),
            ))
        });
        groups.sort();
        assert_eq!(
            groups,
            vec![
                ("audit".into(), "job/+".into(), 1),
                ("workers".into(), "job/#".into(), 1),
                ("workers".into(), "job/+".into(), 3),
            ]
        );
        assert_eq!(keys(&idx, "job/1"), vec![5]);

        // Round robin visits every member in turn.
        let mut seen = Vec::new();
        for _ in 0..6 {
            idx.for_each_shared_match("job/1", |m| {
                if m.filter().as_str() == "job/+" && m.group() == "workers" {
                    let (k, _) = m
                        .choose(SharedStrategy::RoundRobin, "pub", |_, _| true)
                        .unwrap();
                    seen.push(*k);
                }
            });
        }
        let first: BTreeSet<u32> = seen[..3].iter().copied().collect();
        assert_eq!(first, BTreeSet::from([0, 1, 2]));
        assert_eq!(seen[..3], seen[3..]);

        // Unavailable members are skipped; if none is available one is still chosen.
        idx.for_each_shared_match("job/1", |m| {
            if m.filter().as_str() == "job/+" && m.group() == "workers" {
                for s in [
                    SharedStrategy::RoundRobin,
                    SharedStrategy::Random,
                    SharedStrategy::HashClientId,
                    SharedStrategy::HashTopic,
                    SharedStrategy::Sticky,
                ] {
                    let (k, _) = m.choose(s, "pub", |k, _| *k == 2).unwrap();
                    assert_eq!(*k, 2, "{s:?}");
                    assert!(m.choose(s, "pub", |_, _| false).is_some());
                }
            }
        });

        // Deterministic strategies are stable.
        let pick = |s: SharedStrategy, client: &str, topic: &str| {
            let mut out = None;
            idx.for_each_shared_match(topic, |m| {
                if m.filter().as_str() == "job/+" && m.group() == "workers" {
                    out = m.choose(s, client, |_, _| true).map(|(k, _)| *k);
                }
            });
            out.unwrap()
        };
        for _ in 0..5 {
            assert_eq!(
                pick(SharedStrategy::HashClientId, "c1", "job/1"),
                pick(SharedStrategy::HashClientId, "c1", "job/2")
            );
            assert_eq!(
                pick(SharedStrategy::HashTopic, "c1", "job/1"),
                pick(SharedStrategy::HashTopic, "c2", "job/1")
            );
        }
        // Sticky keeps the first member until it leaves.
        let sticky = pick(SharedStrategy::Sticky, "c", "job/1");
        assert_eq!(pick(SharedStrategy::Sticky, "d", "job/3"), sticky);
        idx.unsubscribe(&f("job/+"), Some("workers"), &sticky);
        let next = pick(SharedStrategy::Sticky, "c", "job/1");
        assert_ne!(next, sticky);
        assert_eq!(pick(SharedStrategy::Sticky, "c", "job/9"), next);

        // Random spreads over members.
        let mut spread = BTreeSet::new();
        for _ in 0..200 {
            spread.insert(pick(SharedStrategy::Random, "c", "job/1"));
        }
        assert_eq!(spread.len(), 2);

        // for_each_delivery: plain matches plus one member per shared subscription.
        let mut deliveries = Vec::new();
        idx.for_each_delivery(
            "job/1",
            SharedStrategy::RoundRobin,
            "c",
            |_, _| true,
            |k, _, g| deliveries.push((g.map(|g| g.to_string()), *k)),
        );
        assert_eq!(deliveries.len(), 4);
        assert!(deliveries.contains(&(None, 5)));
        assert!(deliveries.contains(&(Some("audit".into()), 7)));
        assert!(deliveries.contains(&(Some("workers".into()), 9)));

        // Replacing a member keeps one membership.
        assert_eq!(idx.subscribe(&f("job/+"), Some("audit"), 7, 71), Some(70));
        assert_eq!(idx.get(&f("job/+"), Some("audit"), &7), Some(71));
    }

    #[test]
    fn shared_group_membership_survives_swap_remove() {
        let idx: SubscriptionIndex<u32, u32> = SubscriptionIndex::new();
        for k in 0..10 {
            idx.subscribe(&f("t"), Some("g"), k, k);
        }
        for k in [3, 0, 9, 5] {
            assert_eq!(idx.unsubscribe(&f("t"), Some("g"), &k), Some(k));
        }
        for k in [1, 2, 4, 6, 7, 8] {
            assert_eq!(idx.get(&f("t"), Some("g"), &k), Some(k));
        }
        let mut members = Vec::new();
        idx.for_each_shared_match("t", |m| members.extend(m.members().iter().map(|(k, _)| *k)));
        members.sort_unstable();
        assert_eq!(members, vec![1, 2, 4, 6, 7, 8]);
        assert_eq!(idx.len(), 6);
    }

    #[test]
    fn remove_all_by_list() {
        let idx: SubscriptionIndex<Arc<str>, u8> = SubscriptionIndex::new();
        let me: Arc<str> = Arc::from("client-1");
        let other: Arc<str> = Arc::from("client-2");
        let subs = [(f("a/#"), None), (f("b"), Some("g")), (f("c/+"), None)];
        for (fl, g) in &subs {
            idx.subscribe(fl, *g, me.clone(), 1);
        }
        idx.subscribe(&f("a/#"), None, other.clone(), 2);
        let n = idx.remove_all(&me, subs.iter().map(|(fl, g)| (fl, *g)));
        assert_eq!(n, 3);
        assert_eq!(idx.len(), 1);
        let mut got = Vec::new();
        idx.for_each_match("a/x", |k, _| got.push(k.clone()));
        assert_eq!(got, vec![other]);
    }

    #[test]
    fn concurrent_smoke() {
        let idx: Arc<SubscriptionIndex<u32, u32>> = Arc::new(SubscriptionIndex::new());
        // A stable subscription that every reader must always see.
        idx.subscribe(&f("s/+/x"), None, u32::MAX, 0);
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let idx = Arc::clone(&idx);
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        let fl = f(&format!("s/{}/x", (i + t) % 17));
                        let key = t * 10_000 + i;
                        idx.subscribe(&fl, None, key, i);
                        idx.subscribe(&f("#"), Some("g"), key, i);
                        let mut saw_stable = false;
                        idx.for_each_match("s/3/x", |k, _| saw_stable |= *k == u32::MAX);
                        assert!(saw_stable);
                        let mut shared = 0;
                        idx.for_each_shared_match("s/3/x", |m| {
                            assert!(m
                                .choose(SharedStrategy::RoundRobin, "", |_, _| true)
                                .is_some());
                            shared += 1;
                        });
                        assert_eq!(shared, 1);
                        assert_eq!(idx.unsubscribe(&fl, None, &key), Some(i));
                        if i % 2 == 0 {
                            assert_eq!(idx.unsubscribe(&f("#"), Some("g"), &key), Some(i));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(idx.len(), 1 + 4 * 1_000);
        for t in 0..4u32 {
            for i in (1..2_000u32).step_by(2) {
                assert_eq!(
                    idx.unsubscribe(&f("#"), Some("g"), &(t * 10_000 + i)),
                    Some(i)
                );
            }
        }
        assert_eq!(idx.unsubscribe(&f("s/+/x"), None, &u32::MAX), Some(0));
        assert!(idx.is_empty());
        assert!(idx.is_structurally_empty());
    }

    fn level() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec!["a", "b", "", "$x", "+", "#"])
    }

    fn filter_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(level(), 1..5)
            .prop_map(|levels| {
                // Keep `#` only as the last level.
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

    fn topic_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "$x"]), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("non-empty", |s| !s.is_empty())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Sub(usize, Option<&'static str>, u32, u32),
        Unsub(usize, Option<&'static str>, u32),
        Match(String),
    }

    fn op_strategy(filters: usize) -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let group = proptest::sample::select(vec![None, Some("g"), Some("h")]);
        prop_oneof![
            (0..filters, group.clone(), 0u32..4, 0u32..100)
                .prop_map(|(f, g, k, v)| Op::Sub(f, g, k, v)),
            (0..filters, group, 0u32..4).prop_map(|(f, g, k)| Op::Unsub(f, g, k)),
            topic_strategy().prop_map(Op::Match),
        ]
    }

    proptest::proptest! {
        /// Random operation sequences against a model map of (filter, group, key) -> value.
        #[test]
        fn index_agrees_with_model(
            filters in proptest::collection::vec(filter_strategy(), 1..8),
            ops in proptest::collection::vec(op_strategy(8), 1..120),
        ) {
            use std::collections::BTreeMap;
            let idx: SubscriptionIndex<u32, u32> = SubscriptionIndex::new();
            let parsed: Vec<TopicFilter> = filters.iter().map(|s| f(s)).collect();
            let mut model: BTreeMap<(String, Option<&str>, u32), u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Sub(fi, g, k, v) => {
                        let fl = &parsed[fi % parsed.len()];
                        let prev = model.insert((fl.to_string(), g, k), v);
                        proptest::prop_assert_eq!(idx.subscribe(fl, g, k, v), prev);
                    }
                    Op::Unsub(fi, g, k) => {
                        let fl = &parsed[fi % parsed.len()];
                        let prev = model.remove(&(fl.to_string(), g, k));
                        proptest::prop_assert_eq!(idx.unsubscribe(fl, g, &k), prev);
                    }
                    Op::Match(t) => {
                        let mut expected_plain: Vec<(u32, u32)> = Vec::new();
                        let mut expected_shared: BTreeMap<(String, String), Vec<(u32, u32)>> =
                            BTreeMap::new();
                        for ((fl, g, k), v) in &model {
                            if !f(fl).matches(&t) {
                                continue;
                            }
                            match g {
                                None => expected_plain.push((*k, *v)),
                                Some(g) => expected_shared
                                    .entry((g.to_string(), fl.clone()))
                                    .or_default()
                                    .push((*k, *v)),
                            }
                        }
                        expected_plain.sort_unstable();
                        proptest::prop_assert_eq!(plain_matches(&idx, &t), expected_plain);
                        let mut got_shared: BTreeMap<(String, String), Vec<(u32, u32)>> =
                            BTreeMap::new();
                        idx.for_each_shared_match(&t, |m| {
                            let mut members = m.members().to_vec();
                            members.sort_unstable();
                            let prev = got_shared.insert((m.group().to_string(), m.filter().to_string()), members);
                            assert!(prev.is_none(), "a shared subscription reported twice");
                        });
                        proptest::prop_assert_eq!(got_shared, expected_shared);
                    }
                }
                proptest::prop_assert_eq!(idx.len(), model.len());
            }
            for ((fl, g, k), _) in std::mem::take(&mut model) {
                proptest::prop_assert!(idx.unsubscribe(&f(&fl), g, &k).is_some());
            }
            proptest::prop_assert!(idx.is_structurally_empty());
        }
    }

    proptest::proptest! {
        #[test]
        fn index_agrees_with_brute_force(
            filters in proptest::collection::vec(filter_strategy(), 1..40),
            topics in proptest::collection::vec(topic_strategy(), 1..20),
            removals in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let idx: SubscriptionIndex<u32, u32> = SubscriptionIndex::new();
            let parsed: Vec<TopicFilter> = filters.iter().map(|s| f(s)).collect();
            for (i, fl) in parsed.iter().enumerate() {
                idx.subscribe(fl, None, i as u32, 0);
                idx.subscribe(fl, Some("g"), i as u32, 0);
            }
            let mut live: Vec<bool> = vec![true; parsed.len()];
            for (i, fl) in parsed.iter().enumerate() {
                if removals[i] {
                    proptest::prop_assert!(idx.unsubscribe(fl, None, &(i as u32)).is_some());
                    proptest::prop_assert!(idx.unsubscribe(fl, Some("g"), &(i as u32)).is_some());
                    live[i] = false;
                }
            }
            for t in &topics {
                let expected: Vec<u32> = parsed
                    .iter()
                    .enumerate()
                    .filter(|(i, fl)| live[*i] && fl.matches(t))
                    .map(|(i, _)| i as u32)
                    .collect();
                proptest::prop_assert_eq!(keys(&idx, t), expected.clone(), "topic {}", t);
                // Shared groups: one (group, filter) per distinct matching filter string.
                let mut shared: Vec<u32> = Vec::new();
                idx.for_each_shared_match(t, |m| {
                    shared.extend(m.members().iter().map(|(k, _)| *k));
                });
                shared.sort_unstable();
                proptest::prop_assert_eq!(shared, expected);
            }
            for (i, fl) in parsed.iter().enumerate() {
                if live[i] {
                    idx.unsubscribe(fl, None, &(i as u32));
                    idx.unsubscribe(fl, Some("g"), &(i as u32));
                }
            }
            proptest::prop_assert!(idx.is_empty());
            proptest::prop_assert!(idx.is_structurally_empty());
        }
    }
}
