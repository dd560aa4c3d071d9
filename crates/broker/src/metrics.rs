//! Broker-wide counters. Connection tasks add their local counts in batches (once per read
//! or write burst), not per message, so these shared cache lines stay cool on the hot path.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    pub publish_dropped: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub clients_connected: AtomicI64,
    pub protocol_errors: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Per-connection tallies flushed into [`Metrics`] after each burst.
#[derive(Debug, Default)]
pub struct LocalCounts {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
}

impl LocalCounts {
    pub fn is_dirty(&self) -> bool {
        self.messages_received | self.messages_sent | self.bytes_received | self.bytes_sent != 0
            || self.publish_dropped != 0
    }

    pub fn flush(&mut self, m: &Metrics) {
        Metrics::add(&m.messages_received, self.messages_received);
        Metrics::add(&m.messages_sent, self.messages_sent);
        Metrics::add(&m.bytes_received, self.bytes_received);
        Metrics::add(&m.bytes_sent, self.bytes_sent);
        Metrics::add(&m.publish_received, self.publish_received);
        Metrics::add(&m.publish_sent, self.publish_sent);
        Metrics::add(&m.publish_dropped, self.publish_dropped);
        *self = LocalCounts::default();
    }
}
