//! The hot path allocates nothing: decoding a PUBLISH without properties (or an
//! acknowledgement) out of a shared read buffer, and encoding one into a buffer with room.
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rampart_codec::*;

fn publish(v5_props: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from_static("a/b/c"),
        packet_id: 7,
        properties: if v5_props {
            Properties {
                message_expiry_interval: Some(5),
                topic_alias: Some(2),
                ..Properties::default()
            }
        } else {
            Properties::default()
        },
        payload: Bytes::from_static(&[1; 100]),
    })
}

fn wire(packets: &[Packet], v: ProtocolVersion, copies: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..copies {
        for p in packets {
            encode(p, v, &mut buf).unwrap();
        }
    }
    buf
}

#[test]
fn decoding_publish_and_acks_allocates_nothing() {
    let ack = Packet::PubAck(PubResp {
        packet_id: 7,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    });
    for (v, props) in [
        (ProtocolVersion::V311, false),
        (ProtocolVersion::V5, false),
        // Scalar properties need no Vec either.
        (ProtocolVersion::V5, true),
    ] {
        let mut buf = wire(&[publish(props), ack.clone()], v, 11);
        // The first packet taken out turns the buffer into a shared one: that is the one
        // allocation per read buffer, not per packet.
        let first = decode(&mut buf, v, 1 << 20).unwrap();
        assert!(first.is_some());
        let mut decoded = 0;
        let info = allocation_counter::measure(|| {
            while let Ok(Some(p)) = decode(&mut buf, v, 1 << 20) {
                std::hint::black_box(&p);
                decoded += 1;
            }
        });
        assert_eq!(decoded, 21);
        assert_eq!(info.count_total, 0, "{v:?} props={props}: {info:?}");
    }
}

#[test]
fn encoding_publish_allocates_nothing_when_the_buffer_has_room() {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let p = publish(v.is_v5());
        let mut out = BytesMut::with_capacity(64 * 1024);
        let info = allocation_counter::measure(|| {
            for _ in 0..100 {
                encode(&p, v, &mut out).unwrap();
                std::hint::black_box(encoded_len(&p, v));
            }
        });
        assert_eq!(info.count_total, 0, "{v:?}: {info:?}");
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the two tests above against a counter that silently counts nothing.
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(10));
    });
    assert_eq!(info.count_total, 1);
    let mut buf = wire(&[publish(false)], ProtocolVersion::V5, 2);
    let info = allocation_counter::measure(|| {
        std::hint::black_box(decode(&mut buf, ProtocolVersion::V5, 1 << 20).unwrap());
    });
    assert_eq!(info.count_total, 1, "the first split of a buffer shares it");
}
