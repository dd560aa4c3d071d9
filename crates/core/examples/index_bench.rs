//! Rough throughput of the subscription and retained indexes (not part of the test suite).
//!
//! `cargo run --release -p rampart-core --example index_bench`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_core::index::{SharedStrategy, SubscriptionIndex};
use rampart_core::retained::RetainedIndex;
use rampart_core::topic::TopicFilter;

fn f(s: &str) -> TopicFilter {
    TopicFilter::try_from(s).expect("valid filter")
}

/// Run `op` for about `budget`, in batches; returns operations per second.
fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1_000 {
            op(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Resident set size in bytes (Linux), for a rough memory-per-entry figure.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn memory() {
    let filters: Vec<TopicFilter> = (0..1_000_000u64)
        .map(|i| f(&format!("devices/{i:07}/cmd")))
        .collect();
    let before = rss();
    let idx: SubscriptionIndex<Arc<str>, [u64; 3]> = SubscriptionIndex::new();
    for (i, fl) in filters.iter().enumerate() {
        idx.subscribe(fl, None, Arc::from(format!("client-{i:07}")), [0; 3]);
    }
    let after = rss();
    println!(
        "memory: 1M subscriptions devices/{{id}}/cmd (K = Arc<str> client id, V = 24 bytes): {:.0} bytes each (incl. the key's Arc)",
        (after - before) as f64 / 1e6
    );
    let before = rss();
    let ret: RetainedIndex<Arc<u64>> = RetainedIndex::new();
    for i in 0..1_000_000u64 {
        ret.insert(&format!("sensors/{}/{i:07}/temp", i % 1000), Arc::new(i));
    }
    println!(
        "memory: 1M retained sensors/{{n}}/{{id}}/temp (V = Arc<u64>): {:.0} bytes each (incl. the Arc)",
        (rss() - before) as f64 / 1e6
    );
}

fn main() {
    memory();
    let budget = Duration::from_millis(700);
    let idx: Arc<SubscriptionIndex<u64, u32>> = Arc::new(SubscriptionIndex::new());
    // Background population: 100k device command filters and a few wildcards elsewhere.
    for i in 0..100_000u64 {
        idx.subscribe(&f(&format!("devices/{i}/cmd")), None, i, 1);
    }
    for i in 0..100u64 {
        idx.subscribe(&f(&format!("app/{i}/+/state")), None, 200_000 + i, 1);
    }
    // Fan-in: one subscriber to bench/#, publishers on bench/{n}.
    idx.subscribe(&f("bench/#"), None, 1_000_000, 1);
    let topics: Vec<String> = (0..10_000).map(|i| format!("bench/{i}")).collect();
    let mut hits = 0u64;
    let r = rate(budget, |n| {
        idx.for_each_match(&topics[(n % 10_000) as usize], |k, _| hits += *k);
    });
    println!(
        "fan-in match (1 sub bench/#, 100k other subs): {:.2} M matches/s",
        r / 1e6
    );

    // Device commands: exact filter among 100k.
    let dev: Vec<String> = (0..100_000).map(|i| format!("devices/{i}/cmd")).collect();
    let r = rate(budget, |n| {
        idx.for_each_match(&dev[(n % 100_000) as usize], |k, _| hits += *k);
    });
    println!("exact match among 100k filters: {:.2} M matches/s", r / 1e6);

    // Fan-out: 1000 subscribers of one topic.
    for i in 0..1_000u64 {
        idx.subscribe(&f("fan/out"), None, 2_000_000 + i, 1);
    }
    let r = rate(budget, |_| {
        idx.for_each_match("fan/out", |k, _| hits += *k);
    });
    println!(
        "fan-out match (1000 subs): {:.0} k matches/s = {:.1} M deliveries/s",
        r / 1e3,
        r * 1_000.0 / 1e6
    );

    // Shared group choice.
    for i in 0..10u64 {
        idx.subscribe(&f("jobs/+"), Some("workers"), 3_000_000 + i, 1);
    }
    let r = rate(budget, |_| {
        idx.for_each_shared_match("jobs/1", |m| {
            if let Some((k, _)) = m.choose(SharedStrategy::RoundRobin, "c", |_, _| true) {
                hits += *k;
            }
        });
    });
    println!("shared match + round-robin choice: {:.2} M/s", r / 1e6);

    // Two threads matching at once (fan-in pattern).
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let idx = &idx;
                let topics = &topics;
                s.spawn(move || {
                    let mut h = 0u64;
                    let r = rate(budget, |n| {
                        idx.for_each_match(&topics[(n % 10_000) as usize], |k, _| h += *k);
                    });
                    black_box(h);
                    r
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
    });
    println!(
        "fan-in match, 2 threads: {:.2} M matches/s total",
        per_thread.iter().sum::<f64>() / 1e6
    );

    // Subscribe / unsubscribe churn.
    let churn: Vec<TopicFilter> = (0..10_000).map(|i| f(&format!("churn/{i}/+/x"))).collect();
    let r = rate(budget, |n| {
        let fl = &churn[(n % 10_000) as usize];
        idx.subscribe(fl, None, n, 1);
        idx.unsubscribe(fl, None, &n);
    });
    println!("subscribe+unsubscribe pairs: {:.2} M/s", r / 1e6);

    // Retained.
    let ret: RetainedIndex<u32> = RetainedIndex::new();
    for i in 0..100_000u32 {
        ret.insert(&format!("sensors/{}/{}", i % 100, i), i);
    }
    let r = rate(budget, |n| {
        ret.insert(&format!("sensors/{}/{}", n % 100, n % 100_000), 1);
    });
    println!(
        "retained insert (replace, incl. format!): {:.2} M/s",
        r / 1e6
    );
    let sub = f("sensors/7/+");
    let start = Instant::now();
    let mut count = 0;
    for _ in 0..100 {
        ret.for_each_match(&sub, |_, _| count += 1);
    }
    println!(
        "retained sensors/7/+ (1000 of 100k): {:.0} us per lookup",
        start.elapsed().as_secs_f64() * 1e6 / 100.0
    );
    println!("{}", black_box(hits) % 2 + black_box(count) % 2);
}
