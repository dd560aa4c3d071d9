//! rampart-broker: the tokio shell around the sans-IO core.
#![forbid(unsafe_code)]
