//! rampart-config: the typed configuration schema.
#![forbid(unsafe_code)]
