//! The routed message: one `Arc<Message>` is shared by every subscriber it reaches, so the
//! payload and topic are never copied per subscriber.

use bytes::Bytes;
use bytestring::ByteString;
use rampart_codec::{encode, Packet, ProtocolVersion, Publish};
use rampart_codec::{Properties, QoS};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

#[derive(Debug)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS as published; each subscriber gets min(this, granted).
    pub qos: QoS,
    /// Retain flag as published (for retain-as-published and the retained store).
    pub retain: bool,
    /// The properties forwarded unchanged to subscribers: payload format indicator, content
    /// type, response topic, correlation data, user properties. Never topic alias, message
    /// expiry (recomputed per delivery) or subscription identifiers (per subscriber).
    pub properties: Properties,
    /// Absolute expiry from the Message Expiry Interval, if any.
    pub expires_at: Option<Instant>,
    /// Publishing client id, for No Local ([MQTT-3.8.3-3]); `None` for broker-made messages.
    pub publisher: Option<Arc<str>>,
    /// Encodings shared by every subscriber that sees the message the same way; see
    /// [`Message::encoded`].
    pub encoded: EncodedCache,
}

/// One wire encoding per (v3 or v5) x (QoS 0, or QoS 1/2 with a packet id to patch). Built on
/// first use by whichever subscriber task needs it; a fan-out to N subscribers encodes once.
#[derive(Debug, Default)]
pub struct EncodedCache {
    slots: [OnceLock<Option<Bytes>>; 4],
}

/// Offset of the packet identifier in a cached QoS 1/2 encoding.
pub fn packet_id_offset(encoded: &[u8]) -> usize {
    // Fixed header: 1 byte + remaining-length varint; then topic length (2) + topic.
    let mut i = 1;
    while i < encoded.len() && encoded[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let topic_len = if i + 1 < encoded.len() {
        usize::from(u16::from_be_bytes([encoded[i], encoded[i + 1]]))
    } else {
        0
    };
    i + 2 + topic_len
}

impl Message {
    /// The PUBLISH encoding for a subscriber that gets this message with no per-subscriber
    /// fields (no subscription identifiers, no expiry countdown), with DUP, RETAIN and QoS
    /// flags 0 and, for QoS 1/2, packet id 0: the caller patches the first byte and the id.
    pub fn encoded(&self, v5: bool, with_packet_id: bool) -> Option<&Bytes> {
        let slot = usize::from(v5) * 2 + usize::from(with_packet_id);
        self.encoded.slots[slot]
            .get_or_init(|| {
                let p = Packet::Publish(Publish {
                    dup: false,
                    qos: if with_packet_id {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    },
                    retain: false,
                    topic: self.topic.clone(),
                    packet_id: u16::from(with_packet_id),
                    properties: if v5 {
                        self.properties.clone()
                    } else {
                        Properties::default()
                    },
                    payload: self.payload.clone(),
                });
                let version = if v5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                };
                let mut out = bytes::BytesMut::new();
                encode(&p, version, &mut out).ok().map(|_| out.freeze())
            })
            .as_ref()
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        matches!(self.expires_at, Some(t) if t <= now)
    }

    /// Remaining whole seconds of the message expiry interval, for forwarding ([MQTT-3.3.2-6]).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            // Round up so that a message forwarded with time left never shows 0 (= no expiry).
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            secs.clamp(1, u64::from(u32::MAX)) as u32
        })
    }

    /// Approximate memory held, for queue byte caps.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + 128
    }

    /// Keep only the properties a subscriber may see.
    pub fn forwarded_properties(p: &Properties) -> Properties {
        Properties {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            ..Properties::default()
        }
    }
}

/// One message on its way to one session, with that subscriber's view of it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(published QoS, granted QoS) over all matching subscriptions of this session.
    pub qos: QoS,
    /// Retain flag to send: set for retained messages sent at subscribe, or kept from the
    /// publisher when the subscription asked for Retain As Published.
    pub retain: bool,
    /// Subscription identifiers of every matching subscription (v5).
    pub subscription_ids: Vec<u32>,
    /// Set when the delivery came through a shared subscription, so it can be handed to
    /// another member if this session goes away before acknowledging it.
    pub shared_group: Option<Arc<str>>,
    /// Position in the session's stored queue; 0 when the delivery is not persisted.
    pub seq: u64,
    /// Sent with DUP the first time too: a QoS 1 message restored after a restart may have
    /// been sent before it (whether it was is not stored, to avoid a write per send), and a
    /// re-delivery must carry DUP ([MQTT-3.3.1-1]); DUP means "might be a re-delivery", so
    /// one that never went out loses nothing by it. Fits the struct's padding.
    pub dup: bool,
}
