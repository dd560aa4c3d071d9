//! Decode and encode errors. STUB written by the lead: the codec owner replaces the body but
//! keeps the public surface used by the broker: `DecodeError::{reason_code, rule}`, Display.
use crate::ReasonCode;

/// A violation of the wire format. Display prints the normative statement id first, e.g.
/// "[MQTT-3.3.2-2] topic name contains a wildcard".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule} {message}")]
pub struct DecodeError {
    pub rule: &'static str,
    pub message: String,
    pub reason: ReasonCode,
}

impl DecodeError {
    /// The v5 reason code to send (CONNACK or DISCONNECT) before closing. For 3.1.1 the
    /// broker just closes the connection (except CONNACK return codes for CONNECT errors).
    pub fn reason_code(&self) -> ReasonCode {
        self.reason
    }
    /// The normative statement broken, e.g. "[MQTT-3.3.2-2]".
    pub fn rule(&self) -> &'static str {
        self.rule
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet is larger than the maximum packet size")]
    TooLarge,
    #[error("packet cannot be expressed in this protocol version: {0}")]
    Unsupported(&'static str),
}
