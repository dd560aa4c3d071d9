//! MQTT 5 properties (section 2.2.2): which packet may carry which property, duplicates,
//! value ranges, and the encoding in identifier order.
use crate::error::DecodeErrorKind as K;
use crate::wire::{field_len, put_field, put_vbi, vbi_len, Reader, MAX_VBI};
use crate::{EncodeError, Properties};
use bytes::{BufMut, BytesMut};

/// The packet (or the will) a property block belongs to, as a bit for the allowed-in masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ctx {
    bit: u16,
    pub(crate) name: &'static str,
}

pub(crate) const CONNECT: Ctx = Ctx {
    bit: 1 << 0,
    name: "CONNECT",
};
pub(crate) const CONNACK: Ctx = Ctx {
    bit: 1 << 1,
    name: "CONNACK",
};
pub(crate) const PUBLISH: Ctx = Ctx {
    bit: 1 << 2,
    name: "PUBLISH",
};
pub(crate) const WILL: Ctx = Ctx {
    bit: 1 << 3,
    name: "will properties",
};
pub(crate) const PUBACK: Ctx = Ctx {
    bit: 1 << 4,
    name: "PUBACK",
};
pub(crate) const PUBREC: Ctx = Ctx {
    bit: 1 << 4,
    name: "PUBREC",
};
pub(crate) const PUBREL: Ctx = Ctx {
    bit: 1 << 4,
    name: "PUBREL",
};
pub(crate) const PUBCOMP: Ctx = Ctx {
    bit: 1 << 4,
    name: "PUBCOMP",
};
pub(crate) const SUBSCRIBE: Ctx = Ctx {
    bit: 1 << 5,
    name: "SUBSCRIBE",
};
pub(crate) const SUBACK: Ctx = Ctx {
    bit: 1 << 6,
    name: "SUBACK",
};
pub(crate) const UNSUBSCRIBE: Ctx = Ctx {
    bit: 1 << 7,
    name: "UNSUBSCRIBE",
};
pub(crate) const UNSUBACK: Ctx = Ctx {
    bit: 1 << 8,
    name: "UNSUBACK",
};
pub(crate) const DISCONNECT: Ctx = Ctx {
    bit: 1 << 9,
    name: "DISCONNECT",
};
pub(crate) const AUTH: Ctx = Ctx {
    bit: 1 << 10,
    name: "AUTH",
};

const C: u16 = CONNECT.bit;
const CA: u16 = CONNACK.bit;
const P: u16 = PUBLISH.bit;
const W: u16 = WILL.bit;
const PA: u16 = PUBACK.bit;
const S: u16 = SUBSCRIBE.bit;
const SA: u16 = SUBACK.bit;
const U: u16 = UNSUBSCRIBE.bit;
const UA: u16 = UNSUBACK.bit;
const D: u16 = DISCONNECT.bit;
const A: u16 = AUTH.bit;

// Property identifiers (table 2-4) and where each may appear.
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Packets that may carry each property, indexed by identifier; 0 = unknown identifier.
const ALLOWED: [u16; 0x2B] = {
    let mut t = [0u16; 0x2B];
    t[PAYLOAD_FORMAT_INDICATOR as usize] = P | W;
    t[MESSAGE_EXPIRY_INTERVAL as usize] = P | W;
    t[CONTENT_TYPE as usize] = P | W;
    t[RESPONSE_TOPIC as usize] = P | W;
    t[CORRELATION_DATA as usize] = P | W;
    t[SUBSCRIPTION_IDENTIFIER as usize] = P | S;
    t[SESSION_EXPIRY_INTERVAL as usize] = C | CA | D;
    t[ASSIGNED_CLIENT_IDENTIFIER as usize] = CA;
    t[SERVER_KEEP_ALIVE as usize] = CA;
    t[AUTHENTICATION_METHOD as usize] = C | CA | A;
    t[AUTHENTICATION_DATA as usize] = C | CA | A;
    t[REQUEST_PROBLEM_INFORMATION as usize] = C;
    t[WILL_DELAY_INTERVAL as usize] = W;
    t[REQUEST_RESPONSE_INFORMATION as usize] = C;
    t[RESPONSE_INFORMATION as usize] = CA;
    t[SERVER_REFERENCE as usize] = CA | D;
    t[REASON_STRING as usize] = CA | PA | SA | UA | D | A;
    t[RECEIVE_MAXIMUM as usize] = C | CA;
    t[TOPIC_ALIAS_MAXIMUM as usize] = C | CA;
    t[TOPIC_ALIAS as usize] = P;
    t[MAXIMUM_QOS as usize] = CA;
    t[RETAIN_AVAILABLE as usize] = CA;
    t[USER_PROPERTY as usize] = C | CA | P | W | PA | S | SA | U | UA | D | A;
    t[MAXIMUM_PACKET_SIZE as usize] = C | CA;
    t[WILDCARD_SUBSCRIPTION_AVAILABLE as usize] = CA;
    t[SUBSCRIPTION_IDENTIFIER_AVAILABLE as usize] = CA;
    t[SHARED_SUBSCRIPTION_AVAILABLE as usize] = CA;
    t
};

#[inline]
fn allowed(id: u8, ctx: Ctx) -> bool {
    ALLOWED.get(id as usize).is_some_and(|m| m & ctx.bit != 0)
}

/// A property byte whose only valid values are 0 and 1.
fn flag(r: &mut Reader, id: u8) -> Result<u8, K> {
    match r.u8("property")? {
        v @ (0 | 1) => Ok(v),
        v => Err(K::InvalidPropertyValue {
            id,
            value: u32::from(v),
        }),
    }
}

fn non_zero_u16(r: &mut Reader, id: u8) -> Result<u16, K> {
    match r.u16("property")? {
        0 => Err(K::InvalidPropertyValue { id, value: 0 }),
        v => Ok(v),
    }
}

/// Reads a property length and the properties it covers, checking each against `ctx`.
/// A zero length (the common case on the PUBLISH path) allocates nothing and stays inline so
/// that the empty `Properties` is built in place.
#[inline]
pub(crate) fn decode(r: &mut Reader, ctx: Ctx) -> Result<Properties, K> {
    let len = r.vbi("property length")? as usize;
    if len == 0 {
        return Ok(Properties::default());
    }
    decode_block(r, ctx, len)
}

#[inline(never)]
fn decode_block(r: &mut Reader, ctx: Ctx, len: usize) -> Result<Properties, K> {
    let mut p = Properties::default();
    let outer = r.limit(len, "properties")?;
    // Identifiers are below 64: one bit each records which have been seen.
    let mut seen: u64 = 0;
    while !r.is_empty() {
        let raw = r.vbi("property identifier")?;
        let id = match u8::try_from(raw) {
            Ok(id) if (id as usize) < ALLOWED.len() && ALLOWED[id as usize] != 0 => id,
            _ => return Err(K::UnknownProperty { id: raw }),
        };
        if !allowed(id, ctx) {
            return Err(K::PropertyNotAllowed {
                id,
                packet: ctx.name,
            });
        }
        let bit = 1u64 << id;
        let repeatable = id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && ctx == PUBLISH);
        if seen & bit != 0 && !repeatable {
            return Err(K::DuplicateProperty { id });
        }
        seen |= bit;
        match id {
            PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(flag(r, id)?),
            MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32("property")?),
            CONTENT_TYPE => p.content_type = Some(r.string("content type")?),
            RESPONSE_TOPIC => {
                p.response_topic = Some(r.topic_name("response topic").map_err(|e| match e {
                    K::TopicNameWildcard => K::ResponseTopicWildcard,
                    e => e,
                })?)
            }
            CORRELATION_DATA => p.correlation_data = Some(r.binary("correlation data")?),
            SUBSCRIPTION_IDENTIFIER => match r.vbi("subscription identifier")? {
                0 => return Err(K::InvalidPropertyValue { id, value: 0 }),
                v => p.subscription_identifiers.push(v),
            },
            SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32("property")?),
            ASSIGNED_CLIENT_IDENTIFIER => {
                p.assigned_client_identifier = Some(r.string("assigned client identifier")?)
            }
            SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16("property")?),
            AUTHENTICATION_METHOD => {
                p.authentication_method = Some(r.string("authentication method")?)
            }
            AUTHENTICATION_DATA => p.authentication_data = Some(r.binary("authentication data")?),
            REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(flag(r, id)?),
            WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32("property")?),
            REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(flag(r, id)?),
            RESPONSE_INFORMATION => {
                p.response_information = Some(r.string("response information")?)
            }
            SERVER_REFERENCE => p.server_reference = Some(r.string("server reference")?),
            REASON_STRING => p.reason_string = Some(r.string("reason string")?),
            RECEIVE_MAXIMUM => p.receive_maximum = Some(non_zero_u16(r, id)?),
            TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16("property")?),
            TOPIC_ALIAS => p.topic_alias = Some(non_zero_u16(r, id)?),
            MAXIMUM_QOS => p.maximum_qos = Some(flag(r, id)?),
            RETAIN_AVAILABLE => p.retain_available = Some(flag(r, id)?),
            USER_PROPERTY => {
                let k = r.string("user property")?;
                let v = r.string("user property")?;
                p.user_properties.push((k, v));
            }
            MAXIMUM_PACKET_SIZE => match r.u32("property")? {
                0 => return Err(K::InvalidPropertyValue { id, value: 0 }),
                v => p.maximum_packet_size = Some(v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(flag(r, id)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available = Some(flag(r, id)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = Some(flag(r, id)?),
            _ => return Err(K::UnknownProperty { id: raw }),
        }
    }
    r.unlimit(outer);
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(K::AuthDataWithoutMethod);
    }
    Ok(p)
}

/// Calls `f(id, value)` for every property set in `p` that `ctx` may carry, in identifier
/// order. Encoding and length share this one walk so they cannot disagree.
#[inline]
fn for_each(p: &Properties, ctx: Ctx, mut f: impl FnMut(u8, Val<'_>)) {
    macro_rules! one {
        ($id:expr, $kind:ident, $field:expr) => {
            if let Some(v) = &$field {
                if allowed($id, ctx) {
                    f($id, Val::$kind(v));
                }
            }
        };
    }
    one!(PAYLOAD_FORMAT_INDICATOR, Byte, p.payload_format_indicator);
    one!(MESSAGE_EXPIRY_INTERVAL, U32, p.message_expiry_interval);
    one!(CONTENT_TYPE, Str, p.content_type);
    one!(RESPONSE_TOPIC, Str, p.response_topic);
    one!(CORRELATION_DATA, Bin, p.correlation_data);
    if allowed(SUBSCRIPTION_IDENTIFIER, ctx) {
        for v in &p.subscription_identifiers {
            f(SUBSCRIPTION_IDENTIFIER, Val::Vbi(v));
        }
    }
    one!(SESSION_EXPIRY_INTERVAL, U32, p.session_expiry_interval);
    one!(
        ASSIGNED_CLIENT_IDENTIFIER,
        Str,
        p.assigned_client_identifier
    );
    one!(SERVER_KEEP_ALIVE, U16, p.server_keep_alive);
    one!(AUTHENTICATION_METHOD, Str, p.authentication_method);
    one!(AUTHENTICATION_DATA, Bin, p.authentication_data);
    one!(
        REQUEST_PROBLEM_INFORMATION,
        Byte,
        p.request_problem_information
    );
    one!(WILL_DELAY_INTERVAL, U32, p.will_delay_interval);
    one!(
        REQUEST_RESPONSE_INFORMATION,
        Byte,
        p.request_response_information
    );
    one!(RESPONSE_INFORMATION, Str, p.response_information);
    one!(SERVER_REFERENCE, Str, p.server_reference);
    one!(REASON_STRING, Str, p.reason_string);
    one!(RECEIVE_MAXIMUM, U16, p.receive_maximum);
    one!(TOPIC_ALIAS_MAXIMUM, U16, p.topic_alias_maximum);
    one!(TOPIC_ALIAS, U16, p.topic_alias);
    one!(MAXIMUM_QOS, Byte, p.maximum_qos);
    one!(RETAIN_AVAILABLE, Byte, p.retain_available);
    if allowed(USER_PROPERTY, ctx) {
        for v in &p.user_properties {
            f(USER_PROPERTY, Val::Pair(v));
        }
    }
    one!(MAXIMUM_PACKET_SIZE, U32, p.maximum_packet_size);
    one!(
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        Byte,
        p.wildcard_subscription_available
    );
    one!(
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        Byte,
        p.subscription_identifier_available
    );
    one!(
        SHARED_SUBSCRIPTION_AVAILABLE,
        Byte,
        p.shared_subscription_available
    );
}

enum Val<'a> {
    Byte(&'a u8),
    U16(&'a u16),
    U32(&'a u32),
    Vbi(&'a u32),
    Str(&'a bytestring::ByteString),
    Bin(&'a bytes::Bytes),
    Pair(&'a (bytestring::ByteString, bytestring::ByteString)),
}

impl Val<'_> {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Val::Byte(_) => 1,
            Val::U16(_) => 2,
            Val::U32(_) => 4,
            Val::Vbi(v) => vbi_len(**v as usize),
            Val::Str(s) => field_len(s.as_bytes()),
            Val::Bin(b) => field_len(b),
            Val::Pair((k, v)) => field_len(k.as_bytes()) + field_len(v.as_bytes()),
        }
    }
}

/// Length of the properties `ctx` may carry, without the property length prefix.
#[inline]
pub(crate) fn len(p: &Properties, ctx: Ctx) -> usize {
    if is_empty(p) {
        return 0;
    }
    let mut n = 0;
    // Every identifier is below 128: a one-byte variable byte integer.
    for_each(p, ctx, |_, val| n += 1 + val.len());
    n
}

/// Length of the property block including its length prefix.
#[inline]
pub(crate) fn block_len(props_len: usize) -> usize {
    vbi_len(props_len) + props_len
}

/// Writes the property length `props_len` (from [`len`]) and the properties.
pub(crate) fn encode(
    p: &Properties,
    ctx: Ctx,
    props_len: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_vbi(out, props_len);
    if props_len == 0 {
        return Ok(());
    }
    let mut result = Ok(());
    for_each(p, ctx, |id, val| {
        out.put_u8(id);
        let r = match val {
            Val::Byte(b) => {
                out.put_u8(*b);
                Ok(())
            }
            Val::U16(v) => {
                out.put_u16(*v);
                Ok(())
            }
            Val::U32(v) => {
                out.put_u32(*v);
                Ok(())
            }
            Val::Vbi(v) => {
                if *v as usize > MAX_VBI {
                    Err(EncodeError::FieldTooLong("subscription identifier"))
                } else {
                    put_vbi(out, *v as usize);
                    Ok(())
                }
            }
            Val::Str(s) => put_field(out, s.as_bytes(), "property string"),
            Val::Bin(b) => put_field(out, b, "property binary data"),
            Val::Pair((k, v)) => put_field(out, k.as_bytes(), "user property")
                .and_then(|()| put_field(out, v.as_bytes(), "user property")),
        };
        if r.is_err() && result.is_ok() {
            result = r;
        }
    });
    result
}

/// True when no property is set: lets the hot path skip the per-field walk.
#[inline]
pub(crate) fn is_empty(p: &Properties) -> bool {
    let Properties {
        payload_format_indicator,
        message_expiry_interval,
        content_type,
        response_topic,
        correlation_data,
        subscription_identifiers,
        session_expiry_interval,
        assigned_client_identifier,
        server_keep_alive,
        authentication_method,
        authentication_data,
        request_problem_information,
        will_delay_interval,
        request_response_information,
        response_information,
        server_reference,
        reason_string,
        receive_maximum,
        topic_alias_maximum,
        topic_alias,
        maximum_qos,
        retain_available,
        user_properties,
        maximum_packet_size,
        wildcard_subscription_available,
        subscription_identifier_available,
        shared_subscription_available,
    } = p;
    payload_format_indicator.is_none()
        && message_expiry_interval.is_none()
        && content_type.is_none()
        && response_topic.is_none()
        && correlation_data.is_none()
        && subscription_identifiers.is_empty()
        && session_expiry_interval.is_none()
        && assigned_client_identifier.is_none()
        && server_keep_alive.is_none()
        && authentication_method.is_none()
        && authentication_data.is_none()
        && request_problem_information.is_none()
        && will_delay_interval.is_none()
        && request_response_information.is_none()
        && response_information.is_none()
        && server_reference.is_none()
        && reason_string.is_none()
        && receive_maximum.is_none()
        && topic_alias_maximum.is_none()
        && topic_alias.is_none()
        && maximum_qos.is_none()
        && retain_available.is_none()
        && user_properties.is_empty()
        && maximum_packet_size.is_none()
        && wildcard_subscription_available.is_none()
        && subscription_identifier_available.is_none()
        && shared_subscription_available.is_none()
}
