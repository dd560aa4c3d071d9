//! Packet framing, decoding and encoding for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Decoding reads the fixed header first and rejects an oversize packet from it alone, then
//! takes the whole packet out of the read buffer as one frozen `Bytes` frame: every string and
//! payload of the decoded packet is a slice of that frame, never a copy.
//!
//! Encoding computes the exact remaining length first, reserves once and writes in one pass.
//! It does not re-validate what the caller built, with these deliberate exceptions:
//! - fields the target version cannot carry are left out: properties and v5-only fields when
//!   encoding 3.1/3.1.1 (so a v5 message can be forwarded to a v3 subscriber as it is), and
//!   properties that the packet type may not carry ([MQTT-§2.2.2.2]);
//! - DUP is not written for QoS 0 ([MQTT-3.3.1-2]) nor a packet identifier for QoS 0;
//! - a packet the version cannot express at all (AUTH before v5, a v5 CONNACK reason code
//!   with no 3.1.1 return code) is `EncodeError::Unsupported`;
//! - a field longer than its length prefix allows is `EncodeError::FieldTooLong`.
use crate::error::DecodeErrorKind as K;
use crate::properties as props;
use crate::wire::{field_len, put_field, put_vbi, read_vbi, vbi_len, Reader, MAX_VBI};
use crate::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, Packet, Properties,
    ProtocolVersion, PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
use bytes::{Buf, BufMut, BytesMut};

/// Decode one packet from the front of `buf`, consuming its bytes, if a whole packet is there.
///
/// `version` is the connection's negotiated version (use `V5` before CONNECT: CONNECT carries
/// its own level, which is used instead). `max_packet_size` bounds the whole packet (fixed
/// header included): a larger remaining length is rejected from the fixed header alone, before
/// the body is buffered (reason 0x95 PacketTooLarge), so at most 5 bytes are looked at.
/// Returns `Ok(None)` when more bytes are needed; `buf` is then untouched. On an error the
/// connection is to be closed; the bytes of a fully buffered bad packet have been consumed,
/// except for a CONNECT, which stays in `buf`. [`DecodeError::version`] tells which version
/// a bad CONNECT declared, and `DecodeErrorKind::UnsupportedProtocolLevel` its unknown level.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some((total, header_len)) = frame(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let packet_type = buf[0] >> 4;
    let flags = buf[0] & 0x0F;
    if let Some(packet) = decode_small(packet_type, &buf[header_len..total], version) {
        buf.advance(total);
        return Ok(Some(packet));
    }
    if packet_type == 1 {
        return decode_connect_frame(buf, total, header_len, version).map(Some);
    }
    let frame = buf.split_to(total).freeze();
    let r = Reader::new(frame, header_len);
    decode_body(packet_type, flags, r, version).map(Some)
}

/// A CONNECT that breaks a rule is left in `buf`, so that the caller can still look at what
/// the client sent (e.g. its protocol level) while choosing how to answer. Once per
/// connection, so the copy on that error path costs nothing that matters.
fn decode_connect_frame(
    buf: &mut BytesMut,
    total: usize,
    header_len: usize,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let frame = buf.split_to(total).freeze();
    match decode_connect(&mut Reader::new(frame.clone(), header_len), version) {
        Ok(c) => Ok(Packet::Connect(Box::new(c))),
        Err(e) => {
            let mut restored = BytesMut::with_capacity(frame.len() + buf.len());
            restored.extend_from_slice(&frame);
            restored.extend_from_slice(buf);
            *buf = restored;
            Err(e)
        }
    }
}

/// Total size (fixed header included) of the packet at the front of `buf`, as soon as its
/// fixed header is complete; `Ok(None)` before that. Applies the same fixed-header checks as
/// [`decode`] (flags, variable byte integer, maximum packet size), so a caller may reserve
/// the returned size: it is bounded by `max_packet_size`.
pub fn packet_len(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<usize>, DecodeError> {
    Ok(frame(buf, version, max_packet_size)?.map(|(total, _)| total))
}

/// Checks the fixed header: `(total packet size, fixed header size)` once it is complete.
#[inline]
fn frame(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<(usize, usize)>, DecodeError> {
    let err = |k| DecodeError::new(k, version);
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_flags(first >> 4, first & 0x0F, version).map_err(err)?;
    let Some((remaining, n)) = read_vbi(&buf[1..]).map_err(err)? else {
        return Ok(None);
    };
    let header_len = 1 + n;
    let total = header_len as u64 + u64::from(remaining);
    if total > u64::from(max_packet_size) {
        return Err(err(K::PacketTooLarge {
            size: total,
            max: max_packet_size,
        }));
    }
    // `total` is at most 5 + MAX_VBI: it fits usize.
    Ok(Some((total as usize, header_len)))
}

/// The valid forms of the packets without strings or properties (acknowledgements of
/// QoS 1/2 flows, pings, plain DISCONNECT), decoded straight from the buffer: taking a frame
/// out of a shared buffer costs atomic reference-count operations these do not need. Anything
/// else, including every invalid form, goes to the general decoder, which owns the errors.
#[inline]
fn decode_small(packet_type: u8, body: &[u8], v: ProtocolVersion) -> Option<Packet> {
    let resp = |reason| {
        let packet_id = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
        (packet_id != 0).then(|| PubResp {
            packet_id,
            reason,
            properties: Properties::default(),
        })
    };
    match (packet_type, body.len()) {
        (4, 2) => resp(R::Success).map(Packet::PubAck),
        (5, 2) => resp(R::Success).map(Packet::PubRec),
        (6, 2) => resp(R::Success).map(Packet::PubRel),
        (7, 2) => resp(R::Success).map(Packet::PubComp),
        (4, 3) | (5, 3) if v.is_v5() && body[2] == 0 => resp(R::Success).map(if packet_type == 4 {
            Packet::PubAck
        } else {
            Packet::PubRec
        }),
        (12, 0) => Some(Packet::PingReq),
        (13, 0) => Some(Packet::PingResp),
        (14, 0) => Some(Packet::Disconnect(Disconnect {
            reason: R::Success,
            properties: Properties::default(),
        })),
        _ => None,
    }
}

/// Fixed header flags (table 2-2): PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010, PUBLISH its
/// DUP/QoS/RETAIN bits, every other packet 0.
fn check_flags(packet_type: u8, flags: u8, version: ProtocolVersion) -> Result<(), K> {
    let expected = match packet_type {
        0 => return Err(K::ReservedPacketType),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(K::PublishQoS3);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(K::DupWithQoS0);
            }
            return Ok(());
        }
        15 if !version.is_v5() => return Err(K::AuthInV3),
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    // MQTT 3.1 set DUP on retried PUBREL/SUBSCRIBE/UNSUBSCRIBE and clients of that era still
    // do; 3.1.1 made the exact value mandatory.
    let v31_dup = version == ProtocolVersion::V31 && expected == 0b0010 && flags == 0b1010;
    if flags != expected && !v31_dup {
        return Err(K::InvalidFlags { packet_type, flags });
    }
    Ok(())
}

#[inline]
fn decode_body(
    packet_type: u8,
    flags: u8,
    mut r: Reader,
    v: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let err = |k| DecodeError::new(k, v);
    if packet_type == 3 {
        // PUBLISH takes the reader: its payload is the rest of the frame.
        return decode_publish(flags, r, v)
            .map(Packet::Publish)
            .map_err(err);
    }
    let r = &mut r;
    let packet = match packet_type {
        // Handled by decode_connect_frame; kept so that this match stays total.
        1 => return decode_connect(r, v).map(|c| Packet::Connect(Box::new(c))),
        2 => Packet::ConnAck(decode_connack(r, v).map_err(err)?),
        4 => Packet::PubAck(decode_pub_resp(r, v, props::PUBACK, PUBACK_CODES).map_err(err)?),
        5 => Packet::PubRec(decode_pub_resp(r, v, props::PUBREC, PUBACK_CODES).map_err(err)?),
        6 => Packet::PubRel(decode_pub_resp(r, v, props::PUBREL, PUBREL_CODES).map_err(err)?),
        7 => Packet::PubComp(decode_pub_resp(r, v, props::PUBCOMP, PUBREL_CODES).map_err(err)?),
        8 => Packet::Subscribe(decode_subscribe(r, v).map_err(err)?),
        9 => Packet::SubAck(decode_suback(r, v).map_err(err)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(r, v).map_err(err)?),
        11 => Packet::UnsubAck(decode_unsuback(r, v).map_err(err)?),
        12 => {
            r.finish("PINGREQ").map_err(err)?;
            Packet::PingReq
        }
        13 => {
            r.finish("PINGRESP").map_err(err)?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(decode_disconnect(r, v).map_err(err)?),
        // check_flags let type 15 through only for v5.
        15 => Packet::Auth(decode_auth(r).map_err(err)?),
        _ => return Err(err(K::ReservedPacketType)),
    };
    Ok(packet)
}

fn packet_id(r: &mut Reader) -> Result<u16, K> {
    match r.u16("packet identifier")? {
        0 => Err(K::ZeroPacketId),
        id => Ok(id),
    }
}

fn reason(r: &mut Reader, valid: &[ReasonCode], packet: &'static str) -> Result<ReasonCode, K> {
    let code = r.u8("reason code")?;
    match ReasonCode::from_u8(code) {
        Some(rc) if valid.contains(&rc) => Ok(rc),
        _ => Err(K::InvalidReasonCode { packet, code }),
    }
}

fn decode_connect(r: &mut Reader, v_in: ProtocolVersion) -> Result<Connect, DecodeError> {
    let name = r
        .binary("protocol name")
        .map_err(|k| DecodeError::new(k, v_in))?;
    let level = r
        .u8("protocol level")
        .map_err(|k| DecodeError::new(k, v_in))?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT" | b"MQIsdp", level) => {
            return Err(DecodeError::new(
                K::UnsupportedProtocolLevel { level },
                v_in,
            ))
        }
        _ => return Err(DecodeError::new(K::InvalidProtocolName, v_in)),
    };
    decode_connect_rest(r, version).map_err(|k| DecodeError::new(k, version))
}

fn decode_connect_rest(r: &mut Reader, version: ProtocolVersion) -> Result<Connect, K> {
    let v5 = version.is_v5();
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(K::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag {
        if will_qos != 0 {
            return Err(K::WillQoSWithoutWill);
        }
        if will_retain {
            return Err(K::WillRetainWithoutWill);
        }
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(K::WillQoS3)?;
    if !v5 && password_flag && !username_flag {
        return Err(K::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = if v5 {
        props::decode(r, props::CONNECT)?
    } else {
        Properties::default()
    };
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            props::decode(r, props::WILL)?
        } else {
            Properties::default()
        };
        let topic = r.topic_name("will topic")?;
        if topic.is_empty() {
            return Err(K::EmptyWillTopic);
        }
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    r.finish("CONNECT")?;
    Ok(Connect {
        protocol: version,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn decode_connack(r: &mut Reader, v: ProtocolVersion) -> Result<ConnAck, K> {
    let flags = r.u8("acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(K::ConnAckReservedFlags);
    }
    let session_present = flags & 0x01 != 0;
    let (reason, properties) = if v.is_v5() {
        let reason = reason(r, CONNACK_CODES, "CONNACK")?;
        (reason, props::decode(r, props::CONNACK)?)
    } else {
        let code = r.u8("return code")?;
        let reason = v3_connack_reason(code).ok_or(K::InvalidReasonCode {
            packet: "CONNACK",
            code,
        })?;
        (reason, Properties::default())
    };
    if session_present && reason != ReasonCode::Success {
        return Err(K::SessionPresentWithError);
    }
    r.finish("CONNACK")?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

#[inline]
fn decode_publish(flags: u8, mut r: Reader, v: ProtocolVersion) -> Result<Publish, K> {
    // check_flags rejected QoS 3 and DUP with QoS 0.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(K::PublishQoS3)?;
    let topic = r.topic_name("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(&mut r)?
    };
    let properties = if v.is_v5() {
        props::decode(&mut r, props::PUBLISH)?
    } else {
        Properties::default()
    };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(K::EmptyTopicName);
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.into_rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In v5 the reason code may be omitted (remaining length 2:
/// Success) and so may the property length (remaining length 3).
fn decode_pub_resp(
    r: &mut Reader,
    v: ProtocolVersion,
    ctx: props::Ctx,
    codes: &[ReasonCode],
) -> Result<PubResp, K> {
    let packet_id = packet_id(r)?;
    let mut resp = PubResp {
        packet_id,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    };
    if v.is_v5() && !r.is_empty() {
        resp.reason = reason(r, codes, ctx.name)?;
        if !r.is_empty() {
            resp.properties = props::decode(r, ctx)?;
        }
    }
    r.finish(ctx.name)?;
    Ok(resp)
}

fn decode_subscribe(r: &mut Reader, v: ProtocolVersion) -> Result<Subscribe, K> {
    let packet_id = packet_id(r)?;
    let properties = if v.is_v5() {
        props::decode(r, props::SUBSCRIBE)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        let o = r.u8("subscription options")?;
        let options = if v.is_v5() {
            if o & 0xC0 != 0 {
                return Err(K::SubscriptionOptionsReserved);
            }
            let retain_handling = (o >> 4) & 0b11;
            if retain_handling == 3 {
                return Err(K::RetainHandling3);
            }
            let no_local = o & 0x04 != 0;
            if no_local && filter.starts_with("$share/") {
                return Err(K::NoLocalOnSharedSubscription);
            }
            SubscriptionOptions {
                qos: QoS::from_u8(o & 0b11).ok_or(K::SubscriptionQoS3)?,
                no_local,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            }
        } else {
            if o & 0xFC != 0 {
                return Err(K::SubscriptionOptionsReserved);
            }
            SubscriptionOptions {
                qos: QoS::from_u8(o).ok_or(K::SubscriptionQoS3)?,
                ..SubscriptionOptions::default()
            }
        };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(K::NoTopicFilters);
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_suback(r: &mut Reader, v: ProtocolVersion) -> Result<SubAck, K> {
    let packet_id = packet_id(r)?;
    let mut ack = SubAck {
        packet_id,
        properties: Properties::default(),
        reasons: Vec::with_capacity(r.remaining().saturating_sub(1).min(64)),
    };
    if v.is_v5() {
        ack.properties = props::decode(r, props::SUBACK)?;
        while !r.is_empty() {
            ack.reasons.push(reason(r, SUBACK_CODES, "SUBACK")?);
        }
    } else {
        while !r.is_empty() {
            let code = r.u8("return code")?;
            let rc = match code {
                0x00 => ReasonCode::Success,
                0x01 => ReasonCode::GrantedQoS1,
                0x02 => ReasonCode::GrantedQoS2,
                0x80 => ReasonCode::UnspecifiedError,
                code => {
                    return Err(K::InvalidReasonCode {
                        packet: "SUBACK",
                        code,
                    })
                }
            };
            ack.reasons.push(rc);
        }
    }
    if ack.reasons.is_empty() {
        return Err(K::NoReasonCodes { packet: "SUBACK" });
    }
    Ok(ack)
}

fn decode_unsubscribe(r: &mut Reader, v: ProtocolVersion) -> Result<Unsubscribe, K> {
    let packet_id = packet_id(r)?;
    let properties = if v.is_v5() {
        props::decode(r, props::UNSUBSCRIBE)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(K::NoUnsubscribeFilters);
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_unsuback(r: &mut Reader, v: ProtocolVersion) -> Result<UnsubAck, K> {
    let packet_id = packet_id(r)?;
    let mut ack = UnsubAck {
        packet_id,
        properties: Properties::default(),
        reasons: Vec::new(),
    };
    if v.is_v5() {
        ack.properties = props::decode(r, props::UNSUBACK)?;
        while !r.is_empty() {
            ack.reasons.push(reason(r, UNSUBACK_CODES, "UNSUBACK")?);
        }
        if ack.reasons.is_empty() {
            return Err(K::NoReasonCodes { packet: "UNSUBACK" });
        }
    }
    r.finish("UNSUBACK")?;
    Ok(ack)
}

/// In v5 a remaining length of 0 means Normal disconnection without properties, and of 1 a
/// reason code without properties.
fn decode_disconnect(r: &mut Reader, v: ProtocolVersion) -> Result<Disconnect, K> {
    let mut d = Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    };
    if v.is_v5() && !r.is_empty() {
        d.reason = reason(r, DISCONNECT_CODES, "DISCONNECT")?;
        if !r.is_empty() {
            d.properties = props::decode(r, props::DISCONNECT)?;
        }
    }
    r.finish("DISCONNECT")?;
    Ok(d)
}

fn decode_auth(r: &mut Reader) -> Result<Auth, K> {
    let mut a = Auth {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    };
    if !r.is_empty() {
        a.reason = reason(r, AUTH_CODES, "AUTH")?;
        if !r.is_empty() {
            a.properties = props::decode(r, props::AUTH)?;
        }
    }
    r.finish("AUTH")?;
    Ok(a)
}

use ReasonCode as R;

/// Reason codes each packet may carry (MQTT 5 sections 3.2.2.2, 3.4.2.1 to 3.7.2.1, 3.9.3,
/// 3.11.3, 3.14.2.1, 3.15.2.1).
const CONNACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::UnsupportedProtocolVersion,
    R::ClientIdentifierNotValid,
    R::BadUserNameOrPassword,
    R::NotAuthorized,
    R::ServerUnavailable,
    R::ServerBusy,
    R::Banned,
    R::BadAuthenticationMethod,
    R::TopicNameInvalid,
    R::PacketTooLarge,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::ConnectionRateExceeded,
];
const PUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::NoMatchingSubscribers,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicNameInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
];
const PUBREL_CODES: &[ReasonCode] = &[R::Success, R::PacketIdentifierNotFound];
const SUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::GrantedQoS1,
    R::GrantedQoS2,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::SharedSubscriptionsNotSupported,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];
const UNSUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::NoSubscriptionExisted,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
];
const DISCONNECT_CODES: &[ReasonCode] = &[
    R::Success,
    R::DisconnectWithWill,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::ServerBusy,
    R::ServerShuttingDown,
    R::KeepAliveTimeout,
    R::SessionTakenOver,
    R::TopicFilterInvalid,
    R::TopicNameInvalid,
    R::ReceiveMaximumExceeded,
    R::TopicAliasInvalid,
    R::PacketTooLarge,
    R::MessageRateTooHigh,
    R::QuotaExceeded,
    R::AdministrativeAction,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::SharedSubscriptionsNotSupported,
    R::ConnectionRateExceeded,
    R::MaximumConnectTime,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];
const AUTH_CODES: &[ReasonCode] = &[R::Success, R::ContinueAuthentication, R::ReAuthenticate];

/// The MQTT 5 reason codes a packet type (1..=15) may carry; empty for packets without one.
pub fn valid_reason_codes(packet_type: u8) -> &'static [ReasonCode] {
    match packet_type {
        2 => CONNACK_CODES,
        4 | 5 => PUBACK_CODES,
        6 | 7 => PUBREL_CODES,
        9 => SUBACK_CODES,
        11 => UNSUBACK_CODES,
        14 => DISCONNECT_CODES,
        15 => AUTH_CODES,
        _ => &[],
    }
}

/// 3.1.1 CONNACK return codes (section 3.2.2.3) as reason codes.
fn v3_connack_reason(code: u8) -> Option<ReasonCode> {
    Some(match code {
        0 => R::Success,
        1 => R::UnsupportedProtocolVersion,
        2 => R::ClientIdentifierNotValid,
        3 => R::ServerUnavailable,
        4 => R::BadUserNameOrPassword,
        5 => R::NotAuthorized,
        _ => return None,
    })
}

/// The 3.1.1 return code for a CONNACK reason code: the exact ones from types.rs, plus the
/// v5-only refusals that have an obvious 3.1.1 meaning.
pub fn v3_connack_code(reason: ReasonCode) -> Option<u8> {
    Some(match reason {
        R::Success => 0,
        R::UnsupportedProtocolVersion => 1,
        R::ClientIdentifierNotValid => 2,
        R::ServerUnavailable
        | R::ServerBusy
        | R::ServerShuttingDown
        | R::UseAnotherServer
        | R::ServerMoved
        | R::ConnectionRateExceeded
        | R::QuotaExceeded => 3,
        R::BadUserNameOrPassword | R::BadAuthenticationMethod => 4,
        R::NotAuthorized | R::Banned => 5,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Encoding

/// Remaining length and, for packets with a property block, the length of its properties.
struct Lens {
    remaining: usize,
    props: usize,
}

/// Exact size `encode` would produce (fixed header included), without encoding. For a packet
/// `encode` rejects, the size it would have had.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let rl = lens(packet, version).remaining;
    1 + vbi_len(rl) + rl
}

fn props_len(p: &Properties, ctx: props::Ctx, v: ProtocolVersion) -> usize {
    if v.is_v5() {
        props::len(p, ctx)
    } else {
        0
    }
}

/// Property block (length prefix included) in v5, nothing before.
fn block(props_len: usize, v: ProtocolVersion) -> usize {
    if v.is_v5() {
        props::block_len(props_len)
    } else {
        0
    }
}

fn lens(packet: &Packet, v: ProtocolVersion) -> Lens {
    let v5 = v.is_v5();
    match packet {
        Packet::Connect(c) => {
            let p = props_len(&c.properties, props::CONNECT, v);
            let name = if v == ProtocolVersion::V31 { 6 } else { 4 };
            let mut n = 2 + name + 1 + 1 + 2 + block(p, v) + field_len(c.client_id.as_bytes());
            if let Some(w) = &c.will {
                n += block(props_len(&w.properties, props::WILL, v), v);
                n += field_len(w.topic.as_bytes()) + field_len(&w.payload);
            }
            if let Some(u) = &c.username {
                n += field_len(u.as_bytes());
            }
            if let Some(pw) = &c.password {
                n += field_len(pw);
            }
            Lens {
                remaining: n,
                props: p,
            }
        }
        Packet::ConnAck(a) => {
            let p = props_len(&a.properties, props::CONNACK, v);
            Lens {
                remaining: 2 + block(p, v),
                props: p,
            }
        }
        Packet::Publish(p) => {
            let pl = props_len(&p.properties, props::PUBLISH, v);
            let id = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
            Lens {
                remaining: field_len(p.topic.as_bytes()) + id + block(pl, v) + p.payload.len(),
                props: pl,
            }
        }
        Packet::PubAck(r) => pub_resp_lens(r, props::PUBACK, v),
        Packet::PubRec(r) => pub_resp_lens(r, props::PUBREC, v),
        Packet::PubRel(r) => pub_resp_lens(r, props::PUBREL, v),
        Packet::PubComp(r) => pub_resp_lens(r, props::PUBCOMP, v),
        Packet::Subscribe(s) => {
            let p = props_len(&s.properties, props::SUBSCRIBE, v);
            let filters: usize = s
                .filters
                .iter()
                .map(|(f, _)| field_len(f.as_bytes()) + 1)
                .sum();
            Lens {
                remaining: 2 + block(p, v) + filters,
                props: p,
            }
        }
        Packet::SubAck(a) => {
            let p = props_len(&a.properties, props::SUBACK, v);
            Lens {
                remaining: 2 + block(p, v) + a.reasons.len(),
                props: p,
            }
        }
        Packet::Unsubscribe(u) => {
            let p = props_len(&u.properties, props::UNSUBSCRIBE, v);
            let filters: usize = u.filters.iter().map(|f| field_len(f.as_bytes())).sum();
            Lens {
                remaining: 2 + block(p, v) + filters,
                props: p,
            }
        }
        Packet::UnsubAck(a) => {
            let p = props_len(&a.properties, props::UNSUBACK, v);
            let reasons = if v5 { a.reasons.len() } else { 0 };
            Lens {
                remaining: 2 + block(p, v) + reasons,
                props: p,
            }
        }
        Packet::PingReq | Packet::PingResp => Lens {
            remaining: 0,
            props: 0,
        },
        Packet::Disconnect(d) => {
            let p = props_len(&d.properties, props::DISCONNECT, v);
            Lens {
                remaining: reason_and_props_len(v5, d.reason, p, true),
                props: p,
            }
        }
        Packet::Auth(a) => {
            let p = props_len(&a.properties, props::AUTH, v);
            Lens {
                remaining: reason_and_props_len(v5, a.reason, p, false),
                props: p,
            }
        }
    }
}

/// DISCONNECT and AUTH: nothing for Success without properties; a lone reason code when there
/// are no properties and the packet allows omitting the property length (DISCONNECT).
fn reason_and_props_len(v5: bool, reason: ReasonCode, p: usize, bare_reason: bool) -> usize {
    if !v5 || (reason == ReasonCode::Success && p == 0) {
        0
    } else if p == 0 && bare_reason {
        1
    } else {
        1 + props::block_len(p)
    }
}

fn pub_resp_lens(r: &PubResp, ctx: props::Ctx, v: ProtocolVersion) -> Lens {
    let p = props_len(&r.properties, ctx, v);
    let remaining = if !v.is_v5() || (r.reason == ReasonCode::Success && p == 0) {
        2
    } else if p == 0 {
        3
    } else {
        3 + props::block_len(p)
    };
    Lens {
        remaining,
        props: p,
    }
}

/// Append the encoding of `packet` for `version` to `out`. On an error `out` is left as it was.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Auth(_) if !version.is_v5() => {
            return Err(EncodeError::Unsupported("AUTH exists only in MQTT 5"))
        }
        Packet::Connect(c) if c.protocol != version => {
            return Err(EncodeError::Unsupported(
                "CONNECT protocol differs from the encoding version",
            ))
        }
        _ => {}
    }
    let l = lens(packet, version);
    if l.remaining > MAX_VBI {
        return Err(EncodeError::TooLarge);
    }
    let start = out.len();
    let total = 1 + vbi_len(l.remaining) + l.remaining;
    out.reserve(total);
    let result = write(packet, version, &l, out);
    match result {
        Ok(()) => {
            debug_assert_eq!(
                out.len() - start,
                total,
                "encoded_len disagrees: {packet:?}"
            );
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

fn header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.put_u8(first);
    put_vbi(out, remaining);
}

fn write(
    packet: &Packet,
    v: ProtocolVersion,
    l: &Lens,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = v.is_v5();
    match packet {
        Packet::Connect(c) => write_connect(c, v, l, out)?,
        Packet::ConnAck(a) => {
            header(out, 0x20, l.remaining);
            out.put_u8(u8::from(a.session_present));
            if v5 {
                out.put_u8(a.reason.as_u8());
                props::encode(&a.properties, props::CONNACK, l.props, out)?;
            } else {
                let code = v3_connack_code(a.reason).ok_or(EncodeError::Unsupported(
                    "CONNACK reason code has no 3.1.1 return code",
                ))?;
                out.put_u8(code);
            }
        }
        Packet::Publish(p) => {
            let qos = p.qos as u8;
            let dup = p.dup && qos != 0;
            header(
                out,
                0x30 | u8::from(dup) << 3 | qos << 1 | u8::from(p.retain),
                l.remaining,
            );
            put_field(out, p.topic.as_bytes(), "topic name")?;
            if qos != 0 {
                out.put_u16(p.packet_id);
            }
            if v5 {
                props::encode(&p.properties, props::PUBLISH, l.props, out)?;
            }
            out.put_slice(&p.payload);
        }
        Packet::PubAck(r) => write_pub_resp(0x40, r, props::PUBACK, l, out)?,
        Packet::PubRec(r) => write_pub_resp(0x50, r, props::PUBREC, l, out)?,
        Packet::PubRel(r) => write_pub_resp(0x62, r, props::PUBREL, l, out)?,
        Packet::PubComp(r) => write_pub_resp(0x70, r, props::PUBCOMP, l, out)?,
        Packet::Subscribe(s) => {
            header(out, 0x82, l.remaining);
            out.put_u16(s.packet_id);
            if v5 {
                props::encode(&s.properties, props::SUBSCRIBE, l.props, out)?;
            }
            for (f, o) in &s.filters {
                put_field(out, f.as_bytes(), "topic filter")?;
                let mut b = o.qos as u8;
                if v5 {
                    b |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling & 0b11) << 4;
                }
                out.put_u8(b);
            }
        }
        Packet::SubAck(a) => {
            header(out, 0x90, l.remaining);
            out.put_u16(a.packet_id);
            if v5 {
                props::encode(&a.properties, props::SUBACK, l.props, out)?;
                for r in &a.reasons {
                    out.put_u8(r.as_u8());
                }
            } else {
                for r in &a.reasons {
                    out.put_u8(match r {
                        R::Success => 0,
                        R::GrantedQoS1 => 1,
                        R::GrantedQoS2 => 2,
                        r if r.is_error() => 0x80,
                        _ => {
                            return Err(EncodeError::Unsupported(
                                "SUBACK reason code has no 3.1.1 return code",
                            ))
                        }
                    });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            header(out, 0xA2, l.remaining);
            out.put_u16(u.packet_id);
            if v5 {
                props::encode(&u.properties, props::UNSUBSCRIBE, l.props, out)?;
            }
            for f in &u.filters {
                put_field(out, f.as_bytes(), "topic filter")?;
            }
        }
        Packet::UnsubAck(a) => {
            header(out, 0xB0, l.remaining);
            out.put_u16(a.packet_id);
            if v5 {
                props::encode(&a.properties, props::UNSUBACK, l.props, out)?;
                for r in &a.reasons {
                    out.put_u8(r.as_u8());
                }
            }
        }
        Packet::PingReq => header(out, 0xC0, 0),
        Packet::PingResp => header(out, 0xD0, 0),
        Packet::Disconnect(d) => {
            header(out, 0xE0, l.remaining);
            write_reason_and_props(d.reason, &d.properties, props::DISCONNECT, l, out)?;
        }
        Packet::Auth(a) => {
            header(out, 0xF0, l.remaining);
            write_reason_and_props(a.reason, &a.properties, props::AUTH, l, out)?;
        }
    }
    Ok(())
}

fn write_reason_and_props(
    reason: ReasonCode,
    p: &Properties,
    ctx: props::Ctx,
    l: &Lens,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if l.remaining >= 1 {
        out.put_u8(reason.as_u8());
    }
    if l.remaining >= 2 {
        props::encode(p, ctx, l.props, out)?;
    }
    Ok(())
}

fn write_pub_resp(
    first: u8,
    r: &PubResp,
    ctx: props::Ctx,
    l: &Lens,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    header(out, first, l.remaining);
    out.put_u16(r.packet_id);
    if l.remaining >= 3 {
        out.put_u8(r.reason.as_u8());
    }
    if l.remaining >= 4 {
        props::encode(&r.properties, ctx, l.props, out)?;
    }
    Ok(())
}

fn write_connect(
    c: &Connect,
    v: ProtocolVersion,
    l: &Lens,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = v.is_v5();
    header(out, 0x10, l.remaining);
    let name: &[u8] = if v == ProtocolVersion::V31 {
        b"MQIsdp"
    } else {
        b"MQTT"
    };
    put_field(out, name, "protocol name")?;
    out.put_u8(v.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        props::encode(&c.properties, props::CONNECT, l.props, out)?;
    }
    put_field(out, c.client_id.as_bytes(), "client identifier")?;
    if let Some(w) = &c.will {
        if v5 {
            let wl = props::len(&w.properties, props::WILL);
            props::encode(&w.properties, props::WILL, wl, out)?;
        }
        put_field(out, w.topic.as_bytes(), "will topic")?;
        put_field(out, &w.payload, "will payload")?;
    }
    if let Some(u) = &c.username {
        put_field(out, u.as_bytes(), "user name")?;
    }
    if let Some(pw) = &c.password {
        put_field(out, pw, "password")?;
    }
    Ok(())
}
