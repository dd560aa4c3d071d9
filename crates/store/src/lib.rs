//! rampart-store: the persistence trait and its backends.
#![forbid(unsafe_code)]
