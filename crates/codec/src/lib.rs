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
//!
//! # Memory
//! A decoded packet shares its strings and payload with the read buffer; what it allocates
//! is its `Vec`s, bounded by the packet size that `max_packet_size` already capped. The worst
//! case is a packet made only of minimal list entries: a user property of 5 wire bytes is a
//! 64-byte `Vec` element and a subscription of 3 wire bytes a 40-byte one, so one decoded
//! packet may hold about 13x its wire size (up to 26x while a `Vec` grows by doubling), e.g.
//! 26 MiB for a 1 MiB maximum packet size. A CONNECT is boxed; every other packet is inline.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod properties;
mod types;
mod wire;
pub use codec::{decode, encode, encoded_len, packet_len, v3_connack_code, valid_reason_codes};
pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use types::*;
