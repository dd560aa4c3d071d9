//! Record builders shared by the store's integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use rampart_store::{MessageRecord, QueuedRecord, QueuedState, SessionRecord, SubscriptionRecord};

pub fn message(topic: &str, payload: &[u8]) -> MessageRecord {
    MessageRecord {
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        retain: false,
        properties: Bytes::from_static(&[0x01, 0x01]),
        expiry_at_ms: Some(1_700_000_000_000),
        publisher: Some("pub-1".to_string()),
        received_at_ms: 1_699_999_999_000,
    }
}

pub fn session(client_id: &str) -> SessionRecord {
    SessionRecord {
        client_id: client_id.to_string(),
        protocol: 5,
        expiry_interval_secs: 3600,
        disconnected_at_ms: Some(42),
        subscriptions: vec![
            SubscriptionRecord {
                filter: "a/+/c".to_string(),
                share_group: None,
                qos: 2,
                no_local: true,
                retain_as_published: false,
                retain_handling: 1,
                subscription_id: Some(7),
            },
            SubscriptionRecord {
                filter: "jobs/#".to_string(),
                share_group: Some("workers".to_string()),
                qos: 1,
                no_local: false,
                retain_as_published: true,
                retain_handling: 0,
                subscription_id: None,
            },
        ],
        will: Some(message("wills/x", b"gone")),
        will_delay_secs: 5,
        identity: Some("alice".to_string()),
        next_packet_id: 17,
    }
}

pub fn queued(seq: u64, payload: &[u8]) -> QueuedRecord {
    QueuedRecord {
        seq,
        message: message("a/b/c", payload),
        state: QueuedState::Queued,
        subscription_ids: vec![7, 9],
        granted_qos: 1,
    }
}
