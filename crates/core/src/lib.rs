//! rampart-core: topic names and filters, the subscription index, the retained-message index,
//! token buckets and the per-connection session engine.
//!
//! rampart-core never performs I/O and never reads the clock: time is always an argument.
#![forbid(unsafe_code)]

pub mod conn_info;
pub mod index;
pub mod packet_id;
pub mod rate;
pub mod retained;
pub mod topic;
mod util;
