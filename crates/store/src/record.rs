//! The stored record types and their on-disk encoding.
//!
//! These types are the store's own, not the broker's: the store must not depend on other
//! rampart crates (that would make a dependency cycle), so the broker converts at the edge.
//!
//! Encoding: every value is one schema byte ([`RECORD_SCHEMA`]) followed by the record in
//! postcard. Postcard was chosen over bincode because its wire format is specified and frozen
//! for 1.x (a store written today must decode in five years), it is compact (varints, so a
//! typical queued message costs a few bytes of framing), and it is maintained; bincode 1 is
//! frozen with fixed-width integers by default and bincode 2 changed its format. The schema
//! byte lets a later version migrate record by record; the store-wide format version lives in
//! the meta table.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::StoreError;

/// Schema of the encoded records; bumped whenever a record's serde layout changes.
pub const RECORD_SCHEMA: u8 = 1;

/// A persistent session: everything needed to resume it after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub client_id: String,
    /// Protocol level from CONNECT (3 = 3.1, 4 = 3.1.1, 5 = 5.0).
    pub protocol: u8,
    pub expiry_interval_secs: u32,
    /// `None` while the client is connected (its session cannot expire then).
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<SubscriptionRecord>,
    pub will: Option<MessageRecord>,
    pub will_delay_secs: u32,
    /// Authenticated identity the session belongs to, so a resumed session keeps its owner.
    pub identity: Option<String>,
    pub next_packet_id: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub filter: String,
    pub share_group: Option<String>,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// An application message as stored (queued, retained or a will). `Debug` shows sizes, not
/// payload or properties, which may be private and large.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties, encoded by the broker; opaque here so the store needs no codec.
    pub properties: Bytes,
    /// Absolute expiry (Unix ms) derived from the message expiry interval, if any.
    pub expiry_at_ms: Option<u64>,
    pub publisher: Option<String>,
    pub received_at_ms: u64,
}

impl std::fmt::Debug for MessageRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRecord")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("properties_len", &self.properties.len())
            .field("expiry_at_ms", &self.expiry_at_ms)
            .field("publisher", &self.publisher)
            .field("received_at_ms", &self.received_at_ms)
            .finish()
    }
}

/// Delivery state of one queued message toward its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueuedState {
    /// Not yet sent (or sent on a connection that died before the broker recorded it).
    Queued,
    /// PUBLISH sent with this packet id, PUBACK/PUBREC not yet received.
    Inflight { packet_id: u16 },
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP not yet received. The message must not be
    /// sent again as new after a restart; only the PUBREL is resent.
    PubrelPending { packet_id: u16 },
}

/// One entry of a session's queue, keyed by `(client_id, seq)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRecord {
    /// Per-session monotonic sequence number chosen by the broker; it orders the queue.
    /// After a restart the broker continues from the last restored entry's seq + 1 (or 0
    /// for an empty queue): only order among present entries matters.
    pub seq: u64,
    pub message: MessageRecord,
    pub state: QueuedState,
    pub subscription_ids: Vec<u32>,
    pub granted_qos: u8,
}

/// The stored value of a queue entry: the key carries client id and seq.
#[derive(Serialize, Deserialize)]
pub(crate) struct QueueValue {
    pub message: MessageRecord,
    pub state: QueuedState,
    pub subscription_ids: Vec<u32>,
    pub granted_qos: u8,
}

/// Borrowing twin of [`QueueValue`] so that appending does not clone the payload.
#[derive(Serialize)]
pub(crate) struct QueueValueRef<'a> {
    pub message: &'a MessageRecord,
    pub state: QueuedState,
    pub subscription_ids: &'a [u32],
    pub granted_qos: u8,
}

impl QueuedRecord {
    pub(crate) fn value_ref(&self) -> QueueValueRef<'_> {
        QueueValueRef {
            message: &self.message,
            state: self.state,
            subscription_ids: &self.subscription_ids,
            granted_qos: self.granted_qos,
        }
    }

    pub(crate) fn from_value(seq: u64, v: QueueValue) -> Self {
        QueuedRecord {
            seq,
            message: v.message,
            state: v.state,
            subscription_ids: v.subscription_ids,
            granted_qos: v.granted_qos,
        }
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![RECORD_SCHEMA]).map_err(|e| StoreError::Encode {
        what: e.to_string(),
    })
}

/// Decodes one stored value; `what` names the record in the error (never its contents).
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    let Some((&schema, body)) = bytes.split_first() else {
        return Err(StoreError::Corrupt {
            what: format!("{}: empty value", what()),
        });
    };
    if schema != RECORD_SCHEMA {
        return Err(StoreError::Corrupt {
            what: format!("{}: unknown record schema {schema}", what()),
        });
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(StoreError::Corrupt {
            what: format!("{}: {} trailing bytes", what(), rest.len()),
        }),
        Err(e) => Err(StoreError::Corrupt {
            what: format!("{}: {e}", what()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what() -> String {
        "test record".to_string()
    }

    #[test]
    fn round_trip_and_rejections() {
        let state = QueuedState::PubrelPending { packet_id: 65535 };
        let bytes = encode(&state).unwrap();
        assert_eq!(bytes[0], RECORD_SCHEMA);
        assert_eq!(decode::<QueuedState>(&bytes, &what).unwrap(), state);

        let err = |b: &[u8]| match decode::<QueuedState>(b, &what) {
            Err(StoreError::Corrupt { what }) => what,
            other => panic!("{other:?}"),
        };
        assert!(err(&[]).contains("empty"));
        let mut wrong = bytes.clone();
        wrong[0] = RECORD_SCHEMA + 1;
        assert!(err(&wrong).contains("schema"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(err(&long).contains("trailing"));
        assert!(err(&[RECORD_SCHEMA, 9]).contains("test record"));
    }
}
