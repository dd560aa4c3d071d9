//! rampart-codec: MQTT 3.1, 3.1.1 and 5.0 control packets, properties and reason codes.
//!
//! Owns the wire format and its normative rules. It never performs I/O, never reads the clock
//! and never allocates more than the fixed header allowed: a packet is only taken from the
//! read buffer once its whole length, already checked against the maximum packet size, is
//! there.
//!
//! Entry points: [`decode`], [`encode`], [`encoded_len`]. Every violation is a
//! [`DecodeErrorKind`] whose rule id and reason code come from [`DecodeError::rule`] and
//! [`DecodeError::reason_code`].
#![forbid(unsafe_code)]

mod codec;
mod error;
mod properties;
mod types;
mod wire;
pub use codec::{decode, encode, encoded_len, v3_connack_code, valid_reason_codes};
pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use types::*;
