//! Write batches: the unit of atomicity. All ops of one batch are applied or none is.

use bytes::Bytes;

use crate::record::{MessageRecord, QueuedRecord, QueuedState, SessionRecord};

/// One mutation. Ops apply in order; an op on something absent is a no-op (so that a race
/// between, say, an acknowledgement and a session takeover never fails a whole group commit).
///
/// `Debug` never shows KV values (they hold password hashes, API key digests...).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Insert or replace a session record (queue entries and inbound ids are untouched).
    PutSession(SessionRecord),
    /// Remove a session with all its queue entries and inbound QoS 2 ids.
    DeleteSession {
        client_id: String,
    },
    /// Insert (or replace) the queue entry `(client_id, record.seq)`.
    AppendQueued {
        client_id: String,
        record: QueuedRecord,
    },
    /// Change the delivery state of an existing queue entry; no-op if it is absent.
    SetQueuedState {
        client_id: String,
        seq: u64,
        state: QueuedState,
    },
    RemoveQueued {
        client_id: String,
        seq: u64,
    },
    /// Insert or replace the retained message of `message.topic`.
    PutRetained(MessageRecord),
    DeleteRetained {
        topic: String,
    },
    /// Record that PUBREC was sent for this inbound QoS 2 packet id.
    PutInboundQos2 {
        client_id: String,
        packet_id: u16,
    },
    /// PUBREL received: the id may be reused.
    DeleteInboundQos2 {
        client_id: String,
        packet_id: u16,
    },
    PutKv {
        ns: String,
        key: Bytes,
        value: Bytes,
    },
    DeleteKv {
        ns: String,
        key: Bytes,
    },
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::PutSession(s) => f.debug_tuple("PutSession").field(s).finish(),
            Op::DeleteSession { client_id } => f
                .debug_struct("DeleteSession")
                .field("client_id", client_id)
                .finish(),
            Op::AppendQueued { client_id, record } => f
                .debug_struct("AppendQueued")
                .field("client_id", client_id)
                .field("record", record)
                .finish(),
            Op::SetQueuedState {
                client_id,
                seq,
                state,
            } => f
                .debug_struct("SetQueuedState")
                .field("client_id", client_id)
                .field("seq", seq)
                .field("state", state)
                .finish(),
            Op::RemoveQueued { client_id, seq } => f
                .debug_struct("RemoveQueued")
                .field("client_id", client_id)
                .field("seq", seq)
                .finish(),
            Op::PutRetained(m) => f.debug_tuple("PutRetained").field(m).finish(),
            Op::DeleteRetained { topic } => f
                .debug_struct("DeleteRetained")
                .field("topic", topic)
                .finish(),
            Op::PutInboundQos2 {
                client_id,
                packet_id,
            } => f
                .debug_struct("PutInboundQos2")
                .field("client_id", client_id)
                .field("packet_id", packet_id)
                .finish(),
            Op::DeleteInboundQos2 {
                client_id,
                packet_id,
            } => f
                .debug_struct("DeleteInboundQos2")
                .field("client_id", client_id)
                .field("packet_id", packet_id)
                .finish(),
            Op::PutKv { ns, key, value } => f
                .debug_struct("PutKv")
                .field("ns", ns)
                .field("key", key)
                .field("value", &format_args!("<{} bytes redacted>", value.len()))
                .finish(),
            Op::DeleteKv { ns, key } => f
                .debug_struct("DeleteKv")
                .field("ns", ns)
                .field("key", key)
                .finish(),
        }
    }
}

/// An ordered list of ops committed atomically. Builder methods keep call sites short.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    pub fn put_session(&mut self, s: SessionRecord) -> &mut Self {
        self.push(Op::PutSession(s))
    }

    pub fn delete_session(&mut self, client_id: impl Into<String>) -> &mut Self {
        self.push(Op::DeleteSession {
            client_id: client_id.into(),
        })
    }

    pub fn append_queued(
        &mut self,
        client_id: impl Into<String>,
        record: QueuedRecord,
    ) -> &mut Self {
        self.push(Op::AppendQueued {
            client_id: client_id.into(),
            record,
        })
    }

    pub fn set_queued_state(
        &mut self,
        client_id: impl Into<String>,
        seq: u64,
        state: QueuedState,
    ) -> &mut Self {
        self.push(Op::SetQueuedState {
            client_id: client_id.into(),
            seq,
            state,
        })
    }

    pub fn remove_queued(&mut self, client_id: impl Into<String>, seq: u64) -> &mut Self {
        self.push(Op::RemoveQueued {
            client_id: client_id.into(),
            seq,
        })
    }

    pub fn put_retained(&mut self, m: MessageRecord) -> &mut Self {
        self.push(Op::PutRetained(m))
    }

    pub fn delete_retained(&mut self, topic: impl Into<String>) -> &mut Self {
        self.push(Op::DeleteRetained {
            topic: topic.into(),
        })
    }

    pub fn put_inbound_qos2(&mut self, client_id: impl Into<String>, packet_id: u16) -> &mut Self {
        self.push(Op::PutInboundQos2 {
            client_id: client_id.into(),
            packet_id,
        })
    }

    pub fn delete_inbound_qos2(
        &mut self,
        client_id: impl Into<String>,
        packet_id: u16,
    ) -> &mut Self {
        self.push(Op::DeleteInboundQos2 {
            client_id: client_id.into(),
            packet_id,
        })
    }

    pub fn put_kv(
        &mut self,
        ns: impl Into<String>,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> &mut Self {
        self.push(Op::PutKv {
            ns: ns.into(),
            key: key.into(),
            value: value.into(),
        })
    }

    pub fn delete_kv(&mut self, ns: impl Into<String>, key: impl Into<Bytes>) -> &mut Self {
        self.push(Op::DeleteKv {
            ns: ns.into(),
            key: key.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_kv_values() {
        let mut b = WriteBatch::new();
        b.put_kv("users", &b"bob"[..], &b"$argon2id$secret-hash"[..]);
        let shown = format!("{b:?}");
        assert!(
            shown.contains("bob") && shown.contains("21 bytes redacted"),
            "{shown}"
        );
        assert!(!shown.contains("argon2"), "{shown}");
    }
}
