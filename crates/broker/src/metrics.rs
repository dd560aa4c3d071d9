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

/// Per-connection tallies flushed into [`Metrics`] after each burst. 32-bit: every idle
/// connection carries them, and a burst (one read of at most 64 KiB, one write, one drain
/// of the queue up to the write high-water mark) is far below 2^32; byte counts saturate
/// rather than wrap all the same.
#[derive(Debug, Default)]
pub struct LocalCounts {
    pub messages_received: u32,
    pub messages_sent: u32,
    pub bytes_received: u32,
    pub bytes_sent: u32,
    pub publish_received: u32,
    pub publish_sent: u32,
    pub publish_dropped: u32,
}

impl LocalCounts {
    pub fn is_dirty(&self) -> bool {
        self.messages_received | self.messages_sent | self.bytes_received | self.bytes_sent != 0
            || self.publish_dropped != 0
    }

    pub fn flush(&mut self, m: &Metrics) {
        Metrics::add(&m.messages_received, self.messages_received.into());
        Metrics::add(&m.messages_sent, self.messages_sent.into());
        Metrics::add(&m.bytes_received, self.bytes_received.into());
        Metrics::add(&m.bytes_sent, self.bytes_sent.into());
        Metrics::add(&m.publish_received, self.publish_received.into());
        Metrics::add(&m.publish_sent, self.publish_sent.into());
        Metrics::add(&m.publish_dropped, self.publish_dropped.into());
        *self = LocalCounts::default();
    }

    /// `n` bytes added to a byte count, saturating.
    pub fn add_bytes(count: &mut u32, n: usize) {
        *count = count.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}
