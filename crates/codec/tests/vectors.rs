//! Byte-exact vectors for every packet type in 3.1.1 (and 3.1 where it differs) and 5.0: each
//! vector decodes to the given packet and the packet encodes back to exactly the vector.
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rampart_codec::*;
use ProtocolVersion::{V31, V311, V5};

fn s(v: &'static str) -> ByteString {
    ByteString::from_static(v)
}

fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

/// Decodes `wire` as `version`, compares with `packet`, and encodes `packet` back to `wire`.
#[track_caller]
fn check(version: ProtocolVersion, wire: &[u8], packet: Packet) {
    let mut buf = BytesMut::from(wire);
    let got = decode(&mut buf, version, 1 << 20)
        .expect("decodes")
        .expect("complete");
    assert_eq!(got, packet);
    assert!(buf.is_empty(), "decode consumed the whole packet");
    let mut out = BytesMut::new();
    encode(&packet, version, &mut out).expect("encodes");
    assert_eq!(&out[..], wire, "encoding of {packet:?}");
    assert_eq!(encoded_len(&packet, version), wire.len());
}

fn no_props() -> Properties {
    Properties::default()
}

#[test]
fn connect_311_all_fields() {
    // Flags 0xCE: user name, password, will QoS 1, will flag, clean session (spec 3.1.2.10).
    let wire = [
        0x10, 25, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xCE, 0, 10, 0, 1, b'c', 0, 1, b'w', 0, 1, b'm',
        0, 1, b'u', 0, 1, b'p',
    ];
    let c = Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 10,
        properties: no_props(),
        client_id: s("c"),
        will: Some(Will {
            topic: s("w"),
            payload: b(b"m"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: no_props(),
        }),
        username: Some(s("u")),
        password: Some(b(b"p")),
    };
    check(V311, &wire, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_31_mqisdp() {
    let wire = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'x',
    ];
    let c = Connect {
        protocol: V31,
        clean_start: true,
        keep_alive: 60,
        properties: no_props(),
        client_id: s("x"),
        will: None,
        username: None,
        password: None,
    };
    check(V31, &wire, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_decodes_its_own_level_whatever_the_connection_version() {
    let wire = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'x',
    ];
    let mut buf = BytesMut::from(&wire[..]);
    match decode(&mut buf, V5, 1 << 20) {
        Ok(Some(Packet::Connect(c))) => assert_eq!(c.protocol, V311),
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_5_with_properties_and_will_properties() {
    // Spec 3.1.2.11 example: Session Expiry Interval 10; flags 0xC6 user name, password,
    // will, clean start. Will properties: Will Delay Interval 5.
    let wire = [
        0x10, 37, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xC6, 0, 10, // variable header
        5, 0x11, 0, 0, 0, 10, // properties
        0, 1, b'c', // client id
        5, 0x18, 0, 0, 0, 5, // will properties
        0, 1, b'w', 0, 1, b'm', // will topic, payload
        0, 1, b'u', 0, 1, b'p',
    ];
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        properties: Properties {
            session_expiry_interval: Some(10),
            ..no_props()
        },
        client_id: s("c"),
        will: Some(Will {
            topic: s("w"),
            payload: b(b"m"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(5),
                ..no_props()
            },
        }),
        username: Some(s("u")),
        password: Some(b(b"p")),
    };
    check(V5, &wire, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_5_password_without_user_name_is_allowed() {
    let wire = [
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x40, 0, 0, 0, 0, 0, 0, 2, b'p', b'w',
    ];
    let c = Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 0,
        properties: no_props(),
        client_id: s(""),
        will: None,
        username: None,
        password: Some(b(b"pw")),
    };
    check(V5, &wire, Packet::Connect(Box::new(c)));
}

#[test]
fn connack_311() {
    for (wire, sp, reason) in [
        ([0x20, 2, 0, 0], false, ReasonCode::Success),
        ([0x20, 2, 1, 0], true, ReasonCode::Success),
        (
            [0x20, 2, 0, 1],
            false,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        ([0x20, 2, 0, 2], false, ReasonCode::ClientIdentifierNotValid),
        ([0x20, 2, 0, 3], false, ReasonCode::ServerUnavailable),
        ([0x20, 2, 0, 4], false, ReasonCode::BadUserNameOrPassword),
        ([0x20, 2, 0, 5], false, ReasonCode::NotAuthorized),
    ] {
        let a = ConnAck {
            session_present: sp,
            reason,
            properties: no_props(),
        };
        check(V311, &wire, Packet::ConnAck(a));
    }
}

#[test]
fn connack_v5_reasons_without_v3_meaning_are_mapped_or_refused() {
    let mut out = BytesMut::new();
    let a = |reason| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: no_props(),
        })
    };
    encode(&a(ReasonCode::Banned), V311, &mut out).unwrap();
    assert_eq!(&out[..], [0x20, 2, 0, 5]);
    out.clear();
    encode(&a(ReasonCode::ServerBusy), V311, &mut out).unwrap();
    assert_eq!(&out[..], [0x20, 2, 0, 3]);
    out.clear();
    assert!(matches!(
        encode(&a(ReasonCode::MalformedPacket), V311, &mut out),
        Err(EncodeError::Unsupported(_))
    ));
    assert!(
        out.is_empty(),
        "a failed encode leaves the buffer as it was"
    );
}

#[test]
fn connack_5() {
    check(
        V5,
        &[0x20, 3, 0, 0, 0],
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: no_props(),
        }),
    );
    // Receive Maximum 20, Maximum QoS 1, Assigned Client Identifier "id".
    check(
        V5,
        &[
            0x20, 13, 1, 0, 10, 0x12, 0, 2, b'i', b'd', 0x21, 0, 20, 0x24, 1,
        ],
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::Success,
            properties: Properties {
                receive_maximum: Some(20),
                maximum_qos: Some(1),
                assigned_client_identifier: Some(s("id")),
                ..no_props()
            },
        }),
    );
    check(
        V5,
        &[0x20, 3, 0, 0x86, 0],
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::BadUserNameOrPassword,
            properties: no_props(),
        }),
    );
}

#[test]
fn publish_311() {
    let wire = [0x32, 10, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'e', b'y'];
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: 10,
        properties: no_props(),
        payload: b(b"hey"),
    };
    check(V311, &wire, Packet::Publish(p));
    let wire = [0x3D, 7, 0, 1, b't', 0, 1, b'x', b'y'];
    let p = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("t"),
        packet_id: 1,
        properties: no_props(),
        payload: b(b"xy"),
    };
    check(V311, &wire, Packet::Publish(p));
    // QoS 0, empty payload.
    let wire = [0x30, 3, 0, 1, b't'];
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("t"),
        packet_id: 0,
        properties: no_props(),
        payload: Bytes::new(),
    };
    check(V311, &wire, Packet::Publish(p));
}

#[test]
fn publish_5() {
    let wire = [0x30, 6, 0, 3, b'a', b'/', b'b', 0];
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: 0,
        properties: no_props(),
        payload: Bytes::new(),
    };
    check(V5, &wire, Packet::Publish(p));
    // Empty topic with Topic Alias 3, two subscription identifiers, payload format 1.
    let wire = [
        0x33, 16, 0, 0, 0, 7, 10, 0x01, 1, 0x0B, 5, 0x0B, 0x80, 0x01, 0x23, 0, 3, b'!',
    ];
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: s(""),
        packet_id: 7,
        properties: Properties {
            payload_format_indicator: Some(1),
            subscription_identifiers: vec![5, 128],
            topic_alias: Some(3),
            ..no_props()
        },
        payload: b(b"!"),
    };
    check(V5, &wire, Packet::Publish(p));
}

#[test]
fn publish_v5_properties_are_dropped_for_v3() {
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("t"),
        packet_id: 0,
        properties: Properties {
            message_expiry_interval: Some(9),
            user_properties: vec![(s("k"), s("v"))],
            ..no_props()
        },
        payload: b(b"z"),
    };
    let mut out = BytesMut::new();
    encode(&Packet::Publish(p.clone()), V311, &mut out).unwrap();
    assert_eq!(&out[..], [0x30, 4, 0, 1, b't', b'z']);
    assert_eq!(encoded_len(&Packet::Publish(p), V311), 6);
}

#[test]
fn publish_payload_shares_the_read_buffer() {
    let mut buf = BytesMut::from(&[0x30, 8, 0, 1, b't', b'p', b'a', b'y', b'l', b'd'][..]);
    let base = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V311, 1024) else {
        panic!("decodes")
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        base + 5,
        "payload is not a copy"
    );
    assert_eq!(
        p.topic.as_bytes().as_ptr() as usize,
        base + 4,
        "topic is not a copy"
    );
}

fn resp(packet_id: u16, reason: ReasonCode, properties: Properties) -> PubResp {
    PubResp {
        packet_id,
        reason,
        properties,
    }
}

#[test]
fn pub_responses_311() {
    check(
        V311,
        &[0x40, 2, 0, 1],
        Packet::PubAck(resp(1, ReasonCode::Success, no_props())),
    );
    check(
        V311,
        &[0x50, 2, 1, 0],
        Packet::PubRec(resp(256, ReasonCode::Success, no_props())),
    );
    check(
        V311,
        &[0x62, 2, 0, 9],
        Packet::PubRel(resp(9, ReasonCode::Success, no_props())),
    );
    check(
        V311,
        &[0x70, 2, 0xFF, 0xFF],
        Packet::PubComp(resp(65535, ReasonCode::Success, no_props())),
    );
}

#[test]
fn pub_responses_5() {
    check(
        V5,
        &[0x40, 2, 0, 1],
        Packet::PubAck(resp(1, ReasonCode::Success, no_props())),
    );
    check(
        V5,
        &[0x40, 3, 0, 1, 0x10],
        Packet::PubAck(resp(1, ReasonCode::NoMatchingSubscribers, no_props())),
    );
    check(
        V5,
        &[0x50, 8, 0, 2, 0x87, 4, 0x1F, 0, 1, b'x'],
        Packet::PubRec(resp(
            2,
            ReasonCode::NotAuthorized,
            Properties {
                reason_string: Some(s("x")),
                ..no_props()
            },
        )),
    );
    check(
        V5,
        &[0x62, 3, 0, 3, 0x92],
        Packet::PubRel(resp(3, ReasonCode::PacketIdentifierNotFound, no_props())),
    );
    check(
        V5,
        &[0x70, 2, 0, 4],
        Packet::PubComp(resp(4, ReasonCode::Success, no_props())),
    );
}

#[test]
fn pub_response_5_accepts_explicit_success_and_empty_properties() {
    for wire in [&[0x40u8, 3, 0, 1, 0][..], &[0x40, 4, 0, 1, 0, 0][..]] {
        let mut buf = BytesMut::from(wire);
        assert_eq!(
            decode(&mut buf, V5, 1024),
            Ok(Some(Packet::PubAck(resp(
                1,
                ReasonCode::Success,
                no_props()
            ))))
        );
    }
}

#[test]
fn subscribe() {
    let wire = [0x82, 8, 0, 10, 0, 3, b'a', b'/', b'#', 1];
    let sub = Subscribe {
        packet_id: 10,
        properties: no_props(),
        filters: vec![(
            s("a/#"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    };
    check(V311, &wire, Packet::Subscribe(sub));
    // v5: Subscription Identifier 1, options QoS 1 + no local + retain as published +
    // retain handling 2 = 0x2D; second filter QoS 2.
    let wire = [
        0x82, 15, 0, 10, 2, 0x0B, 1, 0, 1, b'a', 0x2D, 0, 3, b'b', b'/', b'+', 2,
    ];
    let sub = Subscribe {
        packet_id: 10,
        properties: Properties {
            subscription_identifiers: vec![1],
            ..no_props()
        },
        filters: vec![
            (
                s("a"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
            ),
            (
                s("b/+"),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            ),
        ],
    };
    check(V5, &wire, Packet::Subscribe(sub));
}

#[test]
fn suback() {
    let wire = [0x90, 5, 0, 10, 0, 2, 0x80];
    let ack = SubAck {
        packet_id: 10,
        properties: no_props(),
        reasons: vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    };
    check(V311, &wire, Packet::SubAck(ack));
    let wire = [0x90, 5, 0, 10, 0, 1, 0x87];
    let ack = SubAck {
        packet_id: 10,
        properties: no_props(),
        reasons: vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
    };
    check(V5, &wire, Packet::SubAck(ack.clone()));
    // Any v5 failure is 0x80 in 3.1.1.
    let mut out = BytesMut::new();
    encode(&Packet::SubAck(ack), V311, &mut out).unwrap();
    assert_eq!(&out[..], [0x90, 4, 0, 10, 1, 0x80]);
}

#[test]
fn unsubscribe_and_unsuback() {
    let wire = [0xA2, 7, 0, 10, 0, 3, b'a', b'/', b'b'];
    let u = Unsubscribe {
        packet_id: 10,
        properties: no_props(),
        filters: vec![s("a/b")],
    };
    check(V311, &wire, Packet::Unsubscribe(u.clone()));
    let wire = [0xA2, 8, 0, 10, 0, 0, 3, b'a', b'/', b'b'];
    check(V5, &wire, Packet::Unsubscribe(u));
    let ack = UnsubAck {
        packet_id: 10,
        properties: no_props(),
        reasons: vec![],
    };
    check(V311, &[0xB0, 2, 0, 10], Packet::UnsubAck(ack));
    let ack = UnsubAck {
        packet_id: 10,
        properties: no_props(),
        reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
    };
    check(
        V5,
        &[0xB0, 5, 0, 10, 0, 0, 0x11],
        Packet::UnsubAck(ack.clone()),
    );
    // 3.1.1 UNSUBACK has no payload: the v5 reason codes are dropped.
    let mut out = BytesMut::new();
    encode(&Packet::UnsubAck(ack), V311, &mut out).unwrap();
    assert_eq!(&out[..], [0xB0, 2, 0, 10]);
}

#[test]
fn ping() {
    for v in [V31, V311, V5] {
        check(v, &[0xC0, 0], Packet::PingReq);
        check(v, &[0xD0, 0], Packet::PingResp);
    }
}

#[test]
fn disconnect() {
    let normal = Disconnect {
        reason: ReasonCode::Success,
        properties: no_props(),
    };
    check(V311, &[0xE0, 0], Packet::Disconnect(normal.clone()));
    check(V5, &[0xE0, 0], Packet::Disconnect(normal));
    check(
        V5,
        &[0xE0, 1, 0x8E],
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::SessionTakenOver,
            properties: no_props(),
        }),
    );
    check(
        V5,
        &[0xE0, 7, 0x04, 5, 0x11, 0, 0, 0, 0],
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::DisconnectWithWill,
            properties: Properties {
                session_expiry_interval: Some(0),
                ..no_props()
            },
        }),
    );
    // Explicit Normal disconnection with an empty property block is accepted.
    let mut buf = BytesMut::from(&[0xE0, 2, 0, 0][..]);
    assert!(matches!(
        decode(&mut buf, V5, 64),
        Ok(Some(Packet::Disconnect(_)))
    ));
}

#[test]
fn auth() {
    check(
        V5,
        &[0xF0, 0],
        Packet::Auth(Auth {
            reason: ReasonCode::Success,
            properties: no_props(),
        }),
    );
    check(
        V5,
        &[0xF0, 11, 0x18, 9, 0x15, 0, 2, b'm', b'1', 0x16, 0, 1, 7],
        Packet::Auth(Auth {
            reason: ReasonCode::ContinueAuthentication,
            properties: Properties {
                authentication_method: Some(s("m1")),
                authentication_data: Some(b(&[7])),
                ..no_props()
            },
        }),
    );
    let mut out = BytesMut::new();
    let a = Packet::Auth(Auth {
        reason: ReasonCode::Success,
        properties: no_props(),
    });
    assert!(matches!(
        encode(&a, V311, &mut out),
        Err(EncodeError::Unsupported(_))
    ));
}

#[test]
fn every_property_round_trips_in_its_packet() {
    // CONNACK carries most server properties; PUBLISH the message ones.
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties {
            session_expiry_interval: Some(u32::MAX),
            assigned_client_identifier: Some(s("auto-1")),
            server_keep_alive: Some(30),
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(b"\x00\x01")),
            response_information: Some(s("resp/")),
            server_reference: Some(s("other:1883")),
            reason_string: Some(s("ok")),
            receive_maximum: Some(100),
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![(s("a"), s("1")), (s("a"), s("2"))],
            maximum_packet_size: Some(1 << 20),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..no_props()
        },
    });
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("t"),
        packet_id: 0,
        properties: Properties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(60),
            content_type: Some(s("text/plain")),
            response_topic: Some(s("reply/to")),
            correlation_data: Some(b(b"corr")),
            subscription_identifiers: vec![268_435_455],
            topic_alias: Some(65535),
            user_properties: vec![(s("k"), s("é"))],
            ..no_props()
        },
        payload: b(b"p"),
    });
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 0,
        properties: Properties {
            session_expiry_interval: Some(1),
            authentication_method: Some(s("m")),
            request_problem_information: Some(0),
            request_response_information: Some(1),
            receive_maximum: Some(1),
            topic_alias_maximum: Some(0),
            maximum_packet_size: Some(1),
            ..no_props()
        },
        client_id: s("c"),
        will: None,
        username: None,
        password: None,
    }));
    for p in [connack, publish, connect] {
        let mut out = BytesMut::new();
        encode(&p, V5, &mut out).unwrap();
        assert_eq!(out.len(), encoded_len(&p, V5));
        assert_eq!(decode(&mut out, V5, 1 << 20), Ok(Some(p)));
    }
}
