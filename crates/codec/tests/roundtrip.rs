//! Property tests: every valid packet of each version survives encode -> decode unchanged,
//! `encoded_len` is exact, every strict prefix is "incomplete" and consumes nothing, and no
//! input makes `decode` panic.
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use rampart_codec::*;
use ProtocolVersion::{V31, V311, V5};

fn text() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9/ $+#é€😀-]{0,12}".prop_map(ByteString::from)
}

fn topic() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9/ é€😀-]{1,12}".prop_map(ByteString::from)
}

fn filter() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/+#]{1,10}".prop_map(ByteString::from)
}

fn bin() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    of(0u8..=1)
}

fn nz16() -> impl Strategy<Value = u16> {
    1u16..=u16::MAX
}

/// Any combination of valid property values; [`restrict`] then keeps those a packet allows.
fn any_properties() -> impl Strategy<Value = Properties> {
    let a = (
        flag(),
        of(any::<u32>()),
        of(text()),
        of(topic()),
        of(bin()),
        vec(1u32..=268_435_455, 0..3),
        of(any::<u32>()),
        of(text()),
        of(any::<u16>()),
    );
    let b = (
        of(text()),
        of(bin()),
        flag(),
        of(any::<u32>()),
        flag(),
        of(text()),
        of(text()),
        of(text()),
        of(nz16()),
    );
    let c = (
        of(any::<u16>()),
        of(nz16()),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        of(1u32..),
        flag(),
        flag(),
        flag(),
    );
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: b.0,
        authentication_data: b.1,
        request_problem_information: b.2,
        will_delay_interval: b.3,
        request_response_information: b.4,
        response_information: b.5,
        server_reference: b.6,
        reason_string: b.7,
        receive_maximum: b.8,
        topic_alias_maximum: c.0,
        topic_alias: c.1,
        maximum_qos: c.2,
        retain_available: c.3,
        user_properties: c.4,
        maximum_packet_size: c.5,
        wildcard_subscription_available: c.6,
        subscription_identifier_available: c.7,
        shared_subscription_available: c.8,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Clears the properties `ctx` may not carry: an independent transcription of table 2-4
/// (section 2.2.2.2) of the MQTT 5 spec.
fn restrict(p: Properties, ctx: Ctx) -> Properties {
    use Ctx::*;
    let keep = |allowed: &[Ctx]| allowed.contains(&ctx);
    let mut p = p;
    macro_rules! only {
        ($field:ident, $($c:ident),+) => {
            if !keep(&[$($c),+]) {
                p.$field = Default::default();
            }
        };
    }
    only!(payload_format_indicator, Publish, Will);
    only!(message_expiry_interval, Publish, Will);
    only!(content_type, Publish, Will);
    only!(response_topic, Publish, Will);
    only!(correlation_data, Publish, Will);
    only!(subscription_identifiers, Publish, Subscribe);
    only!(session_expiry_interval, Connect, ConnAck, Disconnect);
    only!(assigned_client_identifier, ConnAck);
    only!(server_keep_alive, ConnAck);
    only!(authentication_method, Connect, ConnAck, Auth);
    only!(authentication_data, Connect, ConnAck, Auth);
    only!(request_problem_information, Connect);
    only!(will_delay_interval, Will);
    only!(request_response_information, Connect);
    only!(response_information, ConnAck);
    only!(server_reference, ConnAck, Disconnect);
    only!(
        reason_string,
        ConnAck,
        PubResp,
        SubAck,
        UnsubAck,
        Disconnect,
        Auth
    );
    only!(receive_maximum, Connect, ConnAck);
    only!(topic_alias_maximum, Connect, ConnAck);
    only!(topic_alias, Publish);
    only!(maximum_qos, ConnAck);
    only!(retain_available, ConnAck);
    only!(maximum_packet_size, Connect, ConnAck);
    only!(wildcard_subscription_available, ConnAck);
    only!(subscription_identifier_available, ConnAck);
    only!(shared_subscription_available, ConnAck);
    if ctx == Subscribe {
        p.subscription_identifiers.truncate(1);
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    p
}

fn props(v: ProtocolVersion, ctx: Ctx) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        any_properties().prop_map(move |p| restrict(p, ctx)).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn reason_in(v: ProtocolVersion, packet_type: u8) -> BoxedStrategy<ReasonCode> {
    let codes: Vec<ReasonCode> = if v.is_v5() {
        valid_reason_codes(packet_type).to_vec()
    } else {
        match packet_type {
            2 => vec![
                ReasonCode::Success,
                ReasonCode::UnsupportedProtocolVersion,
                ReasonCode::ClientIdentifierNotValid,
                ReasonCode::ServerUnavailable,
                ReasonCode::BadUserNameOrPassword,
                ReasonCode::NotAuthorized,
            ],
            9 => vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ],
            _ => vec![ReasonCode::Success],
        }
    };
    proptest::sample::select(codes).boxed()
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = of((topic(), bin(), qos(), any::<bool>(), props(v, Ctx::Will)));
    (
        any::<bool>(),
        any::<u16>(),
        props(v, Ctx::Connect),
        text(),
        will,
        of(text()),
        of(bin()),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                let mut username = username;
                if !v.is_v5() && password.is_some() && username.is_none() {
                    username = Some(ByteString::from_static("u"));
                }
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain, properties)| Will {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    }),
                    username,
                    password,
                }))
            },
        )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        nz16(),
        props(v, Ctx::Publish),
        bin(),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, properties, payload, alias_only)| {
                let alias_only = alias_only && properties.topic_alias.is_some();
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic: if alias_only { ByteString::new() } else { topic },
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
                    properties,
                    payload,
                })
            },
        )
}

fn pub_resp(v: ProtocolVersion, packet_type: u8) -> impl Strategy<Value = Packet> {
    (nz16(), reason_in(v, packet_type), props(v, Ctx::PubResp)).prop_map(
        move |(packet_id, reason, properties)| {
            let r = PubResp {
                packet_id,
                reason,
                properties,
            };
            match packet_type {
                4 => Packet::PubAck(r),
                5 => Packet::PubRec(r),
                6 => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        },
    )
}

fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(move |(qos, nl, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            }
        });
    let connack = (any::<bool>(), reason_in(v, 2), props(v, Ctx::ConnAck)).prop_map(
        |(sp, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && reason == ReasonCode::Success,
                reason,
                properties,
            })
        },
    );
    let subscribe = (
        nz16(),
        props(v, Ctx::Subscribe),
        vec((filter(), options), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        });
    let suback = (nz16(), props(v, Ctx::SubAck), vec(reason_in(v, 9), 1..4)).prop_map(
        |(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        },
    );
    let unsubscribe = (nz16(), props(v, Ctx::Unsubscribe), vec(filter(), 1..4)).prop_map(
        |(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        },
    );
    let unsuback = (nz16(), props(v, Ctx::UnsubAck), vec(reason_in(v, 11), 1..4)).prop_map(
        move |(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons: if v5 { reasons } else { Vec::new() },
            })
        },
    );
    let disconnect = (reason_in(v, 14), props(v, Ctx::Disconnect))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let common = prop_oneof![
        connect(v),
        connack,
        publish(v),
        publish(v),
        pub_resp(v, 4),
        pub_resp(v, 5),
        pub_resp(v, 6),
        pub_resp(v, 7),
        subscribe,
        suback,
        unsubscribe,
        unsuback,
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect,
    ];
    if v5 {
        let auth = (reason_in(v, 15), props(v, Ctx::Auth))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
        prop_oneof![14 => common, 1 => auth].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V311), Just(V5)]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity((v, p) in versioned_packet()) {
        let mut out = BytesMut::new();
        encode(&p, v, &mut out).unwrap();
        prop_assert_eq!(out.len(), encoded_len(&p, v));
        let mut buf = out.clone();
        let got = decode(&mut buf, v, u32::MAX).unwrap();
        prop_assert_eq!(got, Some(p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_strict_prefix_is_incomplete_and_consumes_nothing((v, p) in versioned_packet()) {
        let mut out = BytesMut::new();
        encode(&p, v, &mut out).unwrap();
        for k in 0..out.len() {
            let mut prefix = BytesMut::from(&out[..k]);
            prop_assert_eq!(decode(&mut prefix, v, u32::MAX), Ok(None), "prefix of {} bytes", k);
            prop_assert_eq!(&prefix[..], &out[..k]);
        }
    }

    #[test]
    fn back_to_back_packets_decode_in_order((v, a) in versioned_packet(), b in any::<u16>()) {
        let second = Packet::PubAck(PubResp {
            packet_id: b.max(1),
            reason: ReasonCode::Success,
            properties: Properties::default(),
        });
        let mut buf = BytesMut::new();
        encode(&a, v, &mut buf).unwrap();
        encode(&second, v, &mut buf).unwrap();
        prop_assert_eq!(decode(&mut buf, v, u32::MAX).unwrap(), Some(a));
        prop_assert_eq!(decode(&mut buf, v, u32::MAX).unwrap(), Some(second));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..256), v in version()) {
        let mut buf = BytesMut::from(&bytes[..]);
        // Bounded: each successful decode consumes at least 2 bytes.
        while let Ok(Some(p)) = decode(&mut buf, v, 1 << 16) {
            let ev = match &p { Packet::Connect(c) => c.protocol, _ => v };
            let mut out = BytesMut::new();
            encode(&p, ev, &mut out).unwrap();
            prop_assert_eq!(decode(&mut out, ev, u32::MAX).unwrap(), Some(p));
        }
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_packets(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut out = BytesMut::new();
        encode(&p, v, &mut out).unwrap();
        for (i, x) in flips {
            let i = i.index(out.len());
            out[i] ^= x;
        }
        if let Ok(Some(p)) = decode(&mut out, v, u32::MAX) {
            let ev = match &p { Packet::Connect(c) => c.protocol, _ => v };
            let mut again = BytesMut::new();
            encode(&p, ev, &mut again).unwrap();
            prop_assert_eq!(decode(&mut again, ev, u32::MAX).unwrap(), Some(p));
        }
    }
}
