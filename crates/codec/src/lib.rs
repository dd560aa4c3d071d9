//! rampart-codec: MQTT 3.1, 3.1.1 and 5.0 control packets, properties and reason codes.
//!
//! Owns the wire format and its normative rules. It never performs I/O, never reads the clock
//! and never allocates more than the fixed header allowed.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod types;
pub use codec::{decode, encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use types::*;
