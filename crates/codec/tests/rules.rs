//! One negative test per wire rule: the packet is rejected with the kind, the normative rule
//! id and the reason code listed next to it.
use bytes::BytesMut;
use rampart_codec::*;
use DecodeErrorKind as K;
use ProtocolVersion::{V31, V311, V5};
use ReasonCode as R;

#[track_caller]
fn reject(v: ProtocolVersion, wire: &[u8], kind: K, rule: &str, reason: ReasonCode) {
    let mut buf = BytesMut::from(wire);
    let e = decode(&mut buf, v, 1 << 20).expect_err("must be rejected");
    assert_eq!(e.kind(), &kind, "{e}");
    assert_eq!(e.rule(), rule, "{e}");
    assert_eq!(e.reason_code(), reason, "{e}");
    assert!(
        e.to_string().starts_with(rule),
        "display starts with the rule: {e}"
    );
}

/// A v5 CONNECT with the given flags byte and payload after the (empty) property block.
fn connect5(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 0, 0];
    body.extend_from_slice(rest);
    framed(0x10, &body)
}

fn connect311(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 0];
    body.extend_from_slice(rest);
    framed(0x10, &body)
}

fn framed(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut v = vec![first, body.len() as u8];
    v.extend_from_slice(body);
    v
}

/// A v5 PUBLISH QoS 0 to "t" with the given property block (length included).
fn publish5_props(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1, b't'];
    body.extend_from_slice(props);
    framed(0x30, &body)
}

#[test]
fn variable_byte_integer_at_most_4_bytes_mqtt_1_5_5_1() {
    reject(
        V5,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        K::VarIntTooLong,
        "[MQTT-1.5.5-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x30, 0x80, 0x00],
        K::VarIntNotMinimal,
        "[MQTT-1.5.5-1]",
        R::MalformedPacket,
    );
}

#[test]
fn huge_remaining_length_rejected_from_5_bytes_packet_too_large() {
    // 268,435,455 bytes announced; only the fixed header is buffered.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let e = decode(&mut buf, V5, 1 << 20).unwrap_err();
    assert_eq!(e.reason_code(), R::PacketTooLarge);
    assert_eq!(
        e.kind(),
        &K::PacketTooLarge {
            size: 268_435_460,
            max: 1 << 20
        }
    );
    // The limit covers the whole packet, fixed header included: 2 + 8 = 10 bytes.
    let mut buf = BytesMut::from(&[0x30, 8][..]);
    assert!(decode(&mut buf, V311, 9).is_err());
    let mut buf = BytesMut::from(&[0x30, 8][..]);
    assert_eq!(decode(&mut buf, V311, 10), Ok(None));
}

#[test]
fn reserved_packet_type_0() {
    reject(
        V5,
        &[0x00, 0],
        K::ReservedPacketType,
        "[MQTT-§2.1.2]",
        R::MalformedPacket,
    );
}

#[test]
fn auth_before_v5() {
    reject(
        V311,
        &[0xF0, 0],
        K::AuthInV3,
        "[MQTT-§2.1.2]",
        R::ProtocolError,
    );
}

#[test]
fn fixed_header_flags_mqtt_2_1_3_1() {
    for (first, v, rule) in [
        (0x11u8, V5, "[MQTT-2.1.3-1]"),
        (0x60, V5, "[MQTT-2.1.3-1]"),
        (0x80, V5, "[MQTT-2.1.3-1]"),
        (0xA0, V5, "[MQTT-2.1.3-1]"),
        (0x42, V5, "[MQTT-2.1.3-1]"),
        (0xC1, V5, "[MQTT-2.1.3-1]"),
        (0xE8, V5, "[MQTT-2.1.3-1]"),
        (0xF1, V5, "[MQTT-2.1.3-1]"),
        (0x63, V311, "[MQTT-2.2.2-1]"),
        (0x8A, V311, "[MQTT-2.2.2-1]"),
        (0x21, V311, "[MQTT-2.2.2-1]"),
    ] {
        reject(
            v,
            &[first, 0],
            K::InvalidFlags {
                packet_type: first >> 4,
                flags: first & 0x0F,
            },
            rule,
            R::MalformedPacket,
        );
    }
}

#[test]
fn mqtt_31_tolerates_dup_on_retried_subscribe() {
    let mut buf = BytesMut::from(&[0x8A, 6, 0, 1, 0, 1, b'a', 0][..]);
    assert!(matches!(
        decode(&mut buf, V31, 64),
        Ok(Some(Packet::Subscribe(_)))
    ));
}

#[test]
fn publish_qos_3_mqtt_3_3_1_4() {
    reject(
        V5,
        &[0x36, 0],
        K::PublishQoS3,
        "[MQTT-3.3.1-4]",
        R::MalformedPacket,
    );
}

#[test]
fn dup_with_qos_0_mqtt_3_3_1_2() {
    reject(
        V311,
        &[0x38, 0],
        K::DupWithQoS0,
        "[MQTT-3.3.1-2]",
        R::MalformedPacket,
    );
}

#[test]
fn utf8_well_formed_mqtt_1_5_4_1() {
    // Encoded surrogate U+D800 in a topic name.
    reject(
        V5,
        &[0x30, 6, 0, 3, 0xED, 0xA0, 0x80, 0],
        K::InvalidUtf8,
        "[MQTT-1.5.4-1]",
        R::MalformedPacket,
    );
    // Overlong encoding of '/' in a 3.1.1 topic.
    reject(
        V311,
        &[0x30, 4, 0, 2, 0xC0, 0xAF],
        K::InvalidUtf8,
        "[MQTT-1.5.3-1]",
        R::MalformedPacket,
    );
    // In a client identifier.
    reject(
        V5,
        &connect5(0, &[0, 1, 0xFF]),
        K::InvalidUtf8,
        "[MQTT-1.5.4-1]",
        R::MalformedPacket,
    );
    // In a user property.
    reject(
        V5,
        &publish5_props(&[6, 0x26, 0, 1, 0xFE, 0, 0]),
        K::InvalidUtf8,
        "[MQTT-1.5.4-1]",
        R::MalformedPacket,
    );
}

#[test]
fn no_null_character_mqtt_1_5_4_2() {
    reject(
        V5,
        &[0x30, 5, 0, 2, b'a', 0, 0],
        K::NullCharacter,
        "[MQTT-1.5.4-2]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &connect311(0x82, &[0, 1, b'c', 0, 2, b'u', 0]),
        K::NullCharacter,
        "[MQTT-1.5.3-2]",
        R::MalformedPacket,
    );
    // In a subscription's topic filter.
    reject(
        V311,
        &[0x82, 6, 0, 1, 0, 1, 0, 0],
        K::NullCharacter,
        "[MQTT-1.5.3-2]",
        R::MalformedPacket,
    );
}

#[test]
fn packet_identifier_non_zero_mqtt_2_2_1_3() {
    reject(
        V5,
        &[0x32, 5, 0, 1, b't', 0, 0],
        K::ZeroPacketId,
        "[MQTT-2.2.1-3]",
        R::ProtocolError,
    );
    reject(
        V5,
        &[0x40, 2, 0, 0],
        K::ZeroPacketId,
        "[MQTT-2.2.1-3]",
        R::ProtocolError,
    );
    reject(
        V311,
        &[0x82, 6, 0, 0, 0, 1, b'a', 0],
        K::ZeroPacketId,
        "[MQTT-2.3.1-1]",
        R::ProtocolError,
    );
    reject(
        V311,
        &[0xA2, 5, 0, 0, 0, 1, b'a'],
        K::ZeroPacketId,
        "[MQTT-2.3.1-1]",
        R::ProtocolError,
    );
}

#[test]
fn topic_name_without_wildcards_mqtt_3_3_2_2() {
    reject(
        V311,
        &[0x30, 5, 0, 3, b'a', b'/', b'+'],
        K::TopicNameWildcard,
        "[MQTT-3.3.2-2]",
        R::TopicNameInvalid,
    );
    reject(
        V5,
        &[0x30, 4, 0, 1, b'#', 0],
        K::TopicNameWildcard,
        "[MQTT-3.3.2-2]",
        R::TopicNameInvalid,
    );
    // The will topic is a topic name too.
    reject(
        V311,
        &connect311(0x06, &[0, 1, b'c', 0, 1, b'#', 0, 0]),
        K::TopicNameWildcard,
        "[MQTT-3.3.2-2]",
        R::TopicNameInvalid,
    );
}

#[test]
fn empty_topic_name() {
    // v5: only with a Topic Alias.
    reject(
        V5,
        &[0x30, 3, 0, 0, 0],
        K::EmptyTopicName,
        "[MQTT-3.3.2-1]",
        R::ProtocolError,
    );
    reject(
        V311,
        &[0x30, 2, 0, 0],
        K::EmptyTopicName,
        "[MQTT-4.7.3-1]",
        R::ProtocolError,
    );
    reject(
        V5,
        &connect5(0x04, &[0, 0, 0, 0, 0, 0, 0]),
        K::EmptyWillTopic,
        "[MQTT-4.7.3-1]",
        R::ProtocolError,
    );
    let mut ok = BytesMut::from(&[0x30, 6, 0, 0, 3, 0x23, 0, 1][..]);
    assert!(decode(&mut ok, V5, 64).unwrap().is_some());
}

#[test]
fn truncated_and_trailing_bytes() {
    // Remaining length ends inside the topic.
    reject(
        V311,
        &[0x30, 3, 0, 5, b'a'],
        K::Truncated {
            field: "topic name",
        },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0xC0, 1, 0],
        K::TrailingBytes { packet: "PINGREQ" },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0x40, 3, 0, 1, 0],
        K::TrailingBytes { packet: "PUBACK" },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0xE0, 1, 0],
        K::TrailingBytes {
            packet: "DISCONNECT",
        },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0xB0, 3, 0, 1, 0],
        K::TrailingBytes { packet: "UNSUBACK" },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &connect311(0, &[0, 1, b'c', 9]),
        K::TrailingBytes { packet: "CONNECT" },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
}

#[test]
fn connect_protocol_name_and_level() {
    let mut bad_name = connect311(0, &[0, 0]);
    bad_name[4] = b'X';
    reject(
        V5,
        &bad_name,
        K::InvalidProtocolName,
        "[MQTT-3.1.2-1]",
        R::MalformedPacket,
    );
    let mut level_6 = connect5(0, &[0, 0]);
    level_6[8] = 6;
    reject(
        V5,
        &level_6,
        K::UnsupportedProtocolLevel { level: 6 },
        "[MQTT-3.1.2-2]",
        R::UnsupportedProtocolVersion,
    );
    // "MQIsdp" is only level 3.
    let wire = framed(
        0x10,
        &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 4, 0, 0, 0, 0, 0],
    );
    reject(
        V5,
        &wire,
        K::UnsupportedProtocolLevel { level: 4 },
        "[MQTT-3.1.2-2]",
        R::UnsupportedProtocolVersion,
    );
}

#[test]
fn connect_errors_carry_the_connect_version() {
    let mut buf = BytesMut::from(&connect311(0x01, &[0, 0])[..]);
    let e = decode(&mut buf, V5, 1 << 20).unwrap_err();
    assert_eq!(
        e.version(),
        V311,
        "the broker answers with a 3.1.1 CONNACK layout"
    );
}

#[test]
fn connect_flags() {
    reject(
        V5,
        &connect5(0x01, &[0, 0]),
        K::ConnectReservedFlag,
        "[MQTT-3.1.2-3]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &connect5(0x08, &[0, 0]),
        K::WillQoSWithoutWill,
        "[MQTT-3.1.2-11]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &connect5(0x1C, &[0, 0]),
        K::WillQoS3,
        "[MQTT-3.1.2-12]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &connect5(0x20, &[0, 0]),
        K::WillRetainWithoutWill,
        "[MQTT-3.1.2-13]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &connect311(0x40, &[0, 0, 0, 0]),
        K::PasswordWithoutUsername,
        "[MQTT-3.1.2-22]",
        R::MalformedPacket,
    );
    // Flags promise a user name that is not there.
    reject(
        V311,
        &connect311(0x80, &[0, 0]),
        K::Truncated { field: "user name" },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
}

#[test]
fn property_not_allowed_in_packet() {
    // Session Expiry Interval in PUBLISH.
    reject(
        V5,
        &publish5_props(&[5, 0x11, 0, 0, 0, 1]),
        K::PropertyNotAllowed {
            id: 0x11,
            packet: "PUBLISH",
        },
        "[MQTT-§2.2.2.2]",
        R::MalformedPacket,
    );
    // Will Delay Interval in CONNECT properties.
    reject(
        V5,
        &framed(
            0x10,
            &[
                0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0, 5, 0x18, 0, 0, 0, 1, 0, 0,
            ],
        ),
        K::PropertyNotAllowed {
            id: 0x18,
            packet: "CONNECT",
        },
        "[MQTT-§2.2.2.2]",
        R::MalformedPacket,
    );
    // Topic Alias in the will properties.
    reject(
        V5,
        &connect5(0x04, &[0, 0, 3, 0x23, 0, 1, 0, 1, b'w', 0, 0]),
        K::PropertyNotAllowed {
            id: 0x23,
            packet: "will properties",
        },
        "[MQTT-§2.2.2.2]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &publish5_props(&[2, 0x7F, 0]),
        K::UnknownProperty { id: 0x7F },
        "[MQTT-§2.2.2.2]",
        R::MalformedPacket,
    );
}

#[test]
fn property_duplicated() {
    reject(
        V5,
        &publish5_props(&[6, 0x23, 0, 1, 0x23, 0, 2]),
        K::DuplicateProperty { id: 0x23 },
        "[MQTT-§2.2.2.2]",
        R::ProtocolError,
    );
    // Subscription Identifier repeats only in PUBLISH.
    reject(
        V5,
        &framed(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]),
        K::DuplicateProperty { id: 0x0B },
        "[MQTT-§2.2.2.2]",
        R::ProtocolError,
    );
    let mut ok = BytesMut::from(&publish5_props(&[4, 0x0B, 1, 0x0B, 2])[..]);
    assert!(decode(&mut ok, V5, 64).is_ok());
    // User Property repeats anywhere.
    let mut ok = BytesMut::from(&publish5_props(&[10, 0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0])[..]);
    assert!(decode(&mut ok, V5, 64).is_ok());
}

#[test]
fn property_values() {
    let inv = |id, value| K::InvalidPropertyValue { id, value };
    reject(
        V5,
        &publish5_props(&[3, 0x23, 0, 0]),
        inv(0x23, 0),
        "[MQTT-3.3.2-8]",
        R::ProtocolError,
    );
    reject(
        V5,
        &publish5_props(&[2, 0x0B, 0]),
        inv(0x0B, 0),
        "[MQTT-§3.3.2.3.8]",
        R::ProtocolError,
    );
    reject(
        V5,
        &publish5_props(&[2, 0x01, 2]),
        inv(0x01, 2),
        "[MQTT-§3.3.2.3.2]",
        R::ProtocolError,
    );
    let connect_props = |props: &[u8]| {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0];
        body.extend_from_slice(props);
        body.extend_from_slice(&[0, 0]);
        framed(0x10, &body)
    };
    reject(
        V5,
        &connect_props(&[3, 0x21, 0, 0]),
        inv(0x21, 0),
        "[MQTT-§3.1.2.11.3]",
        R::ProtocolError,
    );
    reject(
        V5,
        &connect_props(&[5, 0x27, 0, 0, 0, 0]),
        inv(0x27, 0),
        "[MQTT-§3.1.2.11.4]",
        R::ProtocolError,
    );
    reject(
        V5,
        &connect_props(&[2, 0x17, 2]),
        inv(0x17, 2),
        "[MQTT-§3.1.2.11.7]",
        R::ProtocolError,
    );
    reject(
        V5,
        &connect_props(&[2, 0x19, 7]),
        inv(0x19, 7),
        "[MQTT-§3.1.2.11.6]",
        R::ProtocolError,
    );
    reject(
        V5,
        &connect_props(&[4, 0x16, 0, 1, 1]),
        K::AuthDataWithoutMethod,
        "[MQTT-§3.1.2.11.10]",
        R::ProtocolError,
    );
    let connack_props = |props: &[u8]| {
        let mut body = vec![0, 0];
        body.extend_from_slice(props);
        framed(0x20, &body)
    };
    for id in [0x24, 0x25, 0x28, 0x29, 0x2A] {
        reject(
            V5,
            &connack_props(&[2, id, 2]),
            inv(id, 2),
            "[MQTT-§3.2.2.3]",
            R::ProtocolError,
        );
    }
    // Response Topic is a topic name.
    reject(
        V5,
        &publish5_props(&[4, 0x08, 0, 1, b'+']),
        K::ResponseTopicWildcard,
        "[MQTT-3.3.2-14]",
        R::ProtocolError,
    );
    // Property length longer than the packet.
    reject(
        V5,
        &publish5_props(&[9, 0x23, 0, 1]),
        K::Truncated {
            field: "properties",
        },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
    // A value running past the property block.
    reject(
        V5,
        &[0x30, 8, 0, 1, b't', 2, 0x23, 0, 1, 9],
        K::Truncated { field: "property" },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
}

#[test]
fn reason_codes_valid_per_packet() {
    let bad = |packet, code| K::InvalidReasonCode { packet, code };
    reject(
        V5,
        &[0x40, 3, 0, 1, 0x8E],
        bad("PUBACK", 0x8E),
        "[MQTT-3.4.2-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x50, 3, 0, 1, 0x92],
        bad("PUBREC", 0x92),
        "[MQTT-3.5.2-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x62, 3, 0, 1, 0x80],
        bad("PUBREL", 0x80),
        "[MQTT-3.6.2-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x70, 3, 0, 1, 0x10],
        bad("PUBCOMP", 0x10),
        "[MQTT-3.7.2-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x90, 4, 0, 1, 0, 0x11],
        bad("SUBACK", 0x11),
        "[MQTT-3.9.3-2]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0xB0, 4, 0, 1, 0, 0x02],
        bad("UNSUBACK", 0x02),
        "[MQTT-3.11.3-2]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0xE0, 1, 0x18],
        bad("DISCONNECT", 0x18),
        "[MQTT-3.14.2-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0xF0, 2, 0x04, 0],
        bad("AUTH", 0x04),
        "[MQTT-3.15.2-1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x20, 3, 0, 0x04, 0],
        bad("CONNACK", 0x04),
        "[MQTT-3.2.2-8]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0x20, 2, 0, 6],
        bad("CONNACK", 6),
        "[MQTT-§3.2.2.3]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0x90, 3, 0, 1, 0x87],
        bad("SUBACK", 0x87),
        "[MQTT-3.9.3-2]",
        R::MalformedPacket,
    );
    // An unassigned value.
    reject(
        V5,
        &[0x40, 3, 0, 1, 0x05],
        bad("PUBACK", 0x05),
        "[MQTT-3.4.2-1]",
        R::MalformedPacket,
    );
}

#[test]
fn connack_flags() {
    reject(
        V311,
        &[0x20, 2, 2, 0],
        K::ConnAckReservedFlags,
        "[MQTT-3.2.2-1]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0x20, 2, 1, 4],
        K::SessionPresentWithError,
        "[MQTT-3.2.2-4]",
        R::ProtocolError,
    );
    reject(
        V5,
        &[0x20, 3, 1, 0x87, 0],
        K::SessionPresentWithError,
        "[MQTT-3.2.2-6]",
        R::ProtocolError,
    );
}

#[test]
fn subscribe_rules() {
    reject(
        V311,
        &[0x82, 2, 0, 1],
        K::NoTopicFilters,
        "[MQTT-3.8.3-3]",
        R::ProtocolError,
    );
    reject(
        V5,
        &[0x82, 3, 0, 1, 0],
        K::NoTopicFilters,
        "[MQTT-3.8.3-2]",
        R::ProtocolError,
    );
    reject(
        V311,
        &[0x82, 6, 0, 1, 0, 1, b'a', 4],
        K::SubscriptionOptionsReserved,
        "[MQTT-3-8.3-4]",
        R::MalformedPacket,
    );
    reject(
        V311,
        &[0x82, 6, 0, 1, 0, 1, b'a', 3],
        K::SubscriptionQoS3,
        "[MQTT-3-8.3-4]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40],
        K::SubscriptionOptionsReserved,
        "[MQTT-3.8.3-5]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x03],
        K::SubscriptionQoS3,
        "[MQTT-§3.8.3.1]",
        R::MalformedPacket,
    );
    reject(
        V5,
        &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30],
        K::RetainHandling3,
        "[MQTT-§3.8.3.1]",
        R::ProtocolError,
    );
    let mut shared = vec![0, 1, 0, 0, 11];
    shared.extend_from_slice(b"$share/g/ab");
    shared.push(0x04);
    reject(
        V5,
        &framed(0x82, &shared),
        K::NoLocalOnSharedSubscription,
        "[MQTT-3.8.3-4]",
        R::ProtocolError,
    );
    // A filter without its options byte.
    reject(
        V311,
        &[0x82, 5, 0, 1, 0, 1, b'a'],
        K::Truncated {
            field: "subscription options",
        },
        "[MQTT-§2.1.4]",
        R::MalformedPacket,
    );
}

#[test]
fn unsubscribe_without_filters_mqtt_3_10_3_2() {
    reject(
        V311,
        &[0xA2, 2, 0, 1],
        K::NoUnsubscribeFilters,
        "[MQTT-3.10.3-2]",
        R::ProtocolError,
    );
    reject(
        V5,
        &[0xA2, 3, 0, 1, 0],
        K::NoUnsubscribeFilters,
        "[MQTT-3.10.3-2]",
        R::ProtocolError,
    );
}

#[test]
fn acknowledgements_without_reason_codes() {
    reject(
        V311,
        &[0x90, 2, 0, 1],
        K::NoReasonCodes { packet: "SUBACK" },
        "[MQTT-§3.9.3]",
        R::ProtocolError,
    );
    reject(
        V5,
        &[0xB0, 3, 0, 1, 0],
        K::NoReasonCodes { packet: "UNSUBACK" },
        "[MQTT-§3.11.3]",
        R::ProtocolError,
    );
}

#[test]
fn every_error_kind_maps_to_a_rule_and_an_error_reason() {
    // The mapping is total by construction (exhaustive matches); this checks its shape.
    let kinds = [
        K::PacketTooLarge { size: 1, max: 0 },
        K::VarIntTooLong,
        K::InvalidUtf8,
        K::NoReasonCodes { packet: "SUBACK" },
        K::UnsupportedProtocolLevel { level: 9 },
    ];
    for k in kinds {
        for v in [V31, V311, V5] {
            let e = DecodeError::new(k.clone(), v);
            assert!(e.rule().starts_with("[MQTT-"));
            assert!(e.reason_code().is_error());
        }
    }
}

#[test]
fn packet_len_reports_the_size_once_the_fixed_header_is_complete() {
    assert_eq!(packet_len(&[], V5, 100), Ok(None));
    assert_eq!(packet_len(&[0x30], V5, 100), Ok(None));
    assert_eq!(packet_len(&[0x30, 0x80], V5, 1000), Ok(None));
    assert_eq!(packet_len(&[0x30, 0x80, 0x01], V5, 1000), Ok(Some(131)));
    assert_eq!(
        packet_len(&[0x30, 0x80, 0x01], V5, 130)
            .unwrap_err()
            .reason_code(),
        R::PacketTooLarge
    );
    assert_eq!(
        packet_len(&[0x36], V5, 100).unwrap_err().kind(),
        &K::PublishQoS3,
        "flags are checked from the first byte"
    );
}
