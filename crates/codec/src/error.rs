//! Decode and encode errors.
//!
//! Every violation the decoder detects is one [`DecodeErrorKind`] variant. The normative
//! statement it breaks ([`DecodeError::rule`]) and the reason code sent for it
//! ([`DecodeError::reason_code`]) are each mapped in exactly one `match` below, so a rule
//! cannot be answered with two different codes from two places.
//!
//! Rule ids are the MQTT 5.0 normative statement ids (`[MQTT-x.y.z-n]`), or the 3.1.1 id where
//! the rule only exists in, or is numbered differently in, 3.1.1 and the packet was decoded
//! as 3.1/3.1.1. Where the spec states a rule without a numbered statement, the id is the
//! section that states it, written `[MQTT-§x.y.z]`.
use crate::{ProtocolVersion, ReasonCode};
use std::fmt;

/// A violation of the wire format, with the protocol version whose rules were applied.
///
/// Display prints the rule id first, e.g. "[MQTT-3.3.2-2] topic name contains a wildcard".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    version: ProtocolVersion,
}

impl DecodeError {
    pub fn new(kind: DecodeErrorKind, version: ProtocolVersion) -> Self {
        DecodeError { kind, version }
    }

    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// The version whose rules were applied. For a CONNECT this is the version the CONNECT
    /// itself declared (once its protocol name and level were read and valid), so the broker
    /// knows which CONNACK layout to answer with; otherwise the version passed to `decode`.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The v5 reason code to send (CONNACK or DISCONNECT) before closing. For 3.1.1 the
    /// broker just closes the connection (except CONNACK return codes for CONNECT errors:
    /// `UnsupportedProtocolVersion` maps to return code 1).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeErrorKind::*;
        match self.kind {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            UnsupportedProtocolLevel { .. } => ReasonCode::UnsupportedProtocolVersion,
            TopicNameWildcard => ReasonCode::TopicNameInvalid,
            ZeroPacketId
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod
            | ResponseTopicWildcard
            | EmptyTopicName
            | EmptyWillTopic
            | SessionPresentWithError
            | NoTopicFilters
            | NoUnsubscribeFilters
            | NoReasonCodes { .. }
            | RetainHandling3
            | NoLocalOnSharedSubscription
            | AuthInV3 => ReasonCode::ProtocolError,
            VarIntTooLong
            | VarIntNotMinimal
            | ReservedPacketType
            | InvalidFlags { .. }
            | PublishQoS3
            | DupWithQoS0
            | Truncated { .. }
            | TrailingBytes { .. }
            | InvalidUtf8
            | NullCharacter
            | UnknownProperty { .. }
            | PropertyNotAllowed { .. }
            | InvalidReasonCode { .. }
            | InvalidProtocolName
            | ConnectReservedFlag
            | WillQoSWithoutWill
            | WillRetainWithoutWill
            | WillQoS3
            | PasswordWithoutUsername
            | ConnAckReservedFlags
            | SubscriptionOptionsReserved
            | SubscriptionQoS3 => ReasonCode::MalformedPacket,
        }
    }

    /// The normative statement broken, e.g. "[MQTT-3.3.2-2]".
    pub fn rule(&self) -> &'static str {
        use DecodeErrorKind::*;
        let v3 = !self.version.is_v5();
        match self.kind {
            PacketTooLarge { .. } => "[MQTT-§3.1.2.11.4]",
            VarIntTooLong | VarIntNotMinimal => "[MQTT-1.5.5-1]",
            ReservedPacketType | AuthInV3 => "[MQTT-§2.1.2]",
            InvalidFlags { .. } if v3 => "[MQTT-2.2.2-1]",
            InvalidFlags { .. } => "[MQTT-2.1.3-1]",
            PublishQoS3 => "[MQTT-3.3.1-4]",
            DupWithQoS0 => "[MQTT-3.3.1-2]",
            Truncated { .. } | TrailingBytes { .. } => "[MQTT-§2.1.4]",
            InvalidUtf8 if v3 => "[MQTT-1.5.3-1]",
            InvalidUtf8 => "[MQTT-1.5.4-1]",
            NullCharacter if v3 => "[MQTT-1.5.3-2]",
            NullCharacter => "[MQTT-1.5.4-2]",
            ZeroPacketId if v3 => "[MQTT-2.3.1-1]",
            ZeroPacketId => "[MQTT-2.2.1-3]",
            UnknownProperty { .. } | PropertyNotAllowed { .. } | DuplicateProperty { .. } => {
                "[MQTT-§2.2.2.2]"
            }
            InvalidPropertyValue { id, .. } => property_rule(id),
            AuthDataWithoutMethod => "[MQTT-§3.1.2.11.10]",
            ResponseTopicWildcard => "[MQTT-3.3.2-14]",
            InvalidReasonCode { packet, .. } => reason_code_rule(packet, v3),
            InvalidProtocolName => "[MQTT-3.1.2-1]",
            UnsupportedProtocolLevel { .. } => "[MQTT-3.1.2-2]",
            ConnectReservedFlag => "[MQTT-3.1.2-3]",
            WillQoSWithoutWill => "[MQTT-3.1.2-11]",
            WillQoS3 => "[MQTT-3.1.2-12]",
            WillRetainWithoutWill => "[MQTT-3.1.2-13]",
            PasswordWithoutUsername => "[MQTT-3.1.2-22]",
            TopicNameWildcard => "[MQTT-3.3.2-2]",
            EmptyTopicName if v3 => "[MQTT-4.7.3-1]",
            EmptyTopicName => "[MQTT-3.3.2-1]",
            EmptyWillTopic => "[MQTT-4.7.3-1]",
            ConnAckReservedFlags => "[MQTT-3.2.2-1]",
            SessionPresentWithError if v3 => "[MQTT-3.2.2-4]",
            SessionPresentWithError => "[MQTT-3.2.2-6]",
            NoTopicFilters if v3 => "[MQTT-3.8.3-3]",
            NoTopicFilters => "[MQTT-3.8.3-2]",
            NoUnsubscribeFilters => "[MQTT-3.10.3-2]",
            NoReasonCodes { packet: "UNSUBACK" } => "[MQTT-§3.11.3]",
            NoReasonCodes { .. } => "[MQTT-§3.9.3]",
            SubscriptionOptionsReserved if v3 => "[MQTT-3-8.3-4]",
            SubscriptionOptionsReserved => "[MQTT-3.8.3-5]",
            SubscriptionQoS3 if v3 => "[MQTT-3-8.3-4]",
            SubscriptionQoS3 | RetainHandling3 => "[MQTT-§3.8.3.1]",
            NoLocalOnSharedSubscription => "[MQTT-3.8.3-4]",
        }
    }
}

/// The section or statement that bounds a property's value.
fn property_rule(id: u8) -> &'static str {
    match id {
        0x23 => "[MQTT-3.3.2-8]",
        0x0B => "[MQTT-§3.3.2.3.8]",
        0x21 => "[MQTT-§3.1.2.11.3]",
        0x27 => "[MQTT-§3.1.2.11.4]",
        0x17 => "[MQTT-§3.1.2.11.7]",
        0x19 => "[MQTT-§3.1.2.11.6]",
        0x01 => "[MQTT-§3.3.2.3.2]",
        _ => "[MQTT-§3.2.2.3]",
    }
}

/// The statement that lists the reason codes a packet may carry.
fn reason_code_rule(packet: &str, v3: bool) -> &'static str {
    match packet {
        "CONNACK" if v3 => "[MQTT-§3.2.2.3]",
        "CONNACK" => "[MQTT-3.2.2-8]",
        "PUBACK" => "[MQTT-3.4.2-1]",
        "PUBREC" => "[MQTT-3.5.2-1]",
        "PUBREL" => "[MQTT-3.6.2-1]",
        "PUBCOMP" => "[MQTT-3.7.2-1]",
        "SUBACK" if v3 => "[MQTT-3.9.3-2]",
        "SUBACK" => "[MQTT-3.9.3-2]",
        "UNSUBACK" => "[MQTT-3.11.3-2]",
        "DISCONNECT" => "[MQTT-3.14.2-1]",
        "AUTH" => "[MQTT-3.15.2-1]",
        _ => "[MQTT-§2.4]",
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.rule(), self.kind)
    }
}

impl std::error::Error for DecodeError {}

/// One kind of wire-format violation. The reason code and rule id of each are given by
/// [`DecodeError::reason_code`] and [`DecodeError::rule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: u64, max: u32 },
    #[error("variable byte integer longer than 4 bytes")]
    VarIntTooLong,
    #[error("variable byte integer not in its minimal encoding")]
    VarIntNotMinimal,
    #[error("reserved control packet type 0")]
    ReservedPacketType,
    #[error("AUTH packet (type 15) is reserved before MQTT 5")]
    AuthInV3,
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidFlags { packet_type: u8, flags: u8 },
    #[error("PUBLISH with QoS 3")]
    PublishQoS3,
    #[error("PUBLISH with DUP set and QoS 0")]
    DupWithQoS0,
    #[error("remaining length ends inside {field}")]
    Truncated { field: &'static str },
    #[error("{packet} has bytes after its last field")]
    TrailingBytes { packet: &'static str },
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("string contains U+0000")]
    NullCharacter,
    #[error("packet identifier is 0")]
    ZeroPacketId,
    #[error("unknown property identifier {id:#04x}")]
    UnknownProperty { id: u32 },
    #[error("property {id:#04x} is not allowed in {packet}")]
    PropertyNotAllowed { id: u8, packet: &'static str },
    #[error("property {id:#04x} appears more than once")]
    DuplicateProperty { id: u8 },
    #[error("property {id:#04x} has invalid value {value}")]
    InvalidPropertyValue { id: u8, value: u32 },
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    #[error("response topic contains a wildcard")]
    ResponseTopicWildcard,
    #[error("reason code {code:#04x} is not valid in {packet}")]
    InvalidReasonCode { packet: &'static str, code: u8 },
    #[error("unknown protocol name")]
    InvalidProtocolName,
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocolLevel { level: u8 },
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    #[error("will QoS is not 0 while the will flag is 0")]
    WillQoSWithoutWill,
    #[error("will retain is set while the will flag is 0")]
    WillRetainWithoutWill,
    #[error("will QoS 3")]
    WillQoS3,
    #[error("password flag set without the user name flag")]
    PasswordWithoutUsername,
    #[error("topic name contains a wildcard")]
    TopicNameWildcard,
    #[error("empty topic name (without a topic alias)")]
    EmptyTopicName,
    #[error("empty will topic")]
    EmptyWillTopic,
    #[error("CONNACK acknowledge flags reserved bits are set")]
    ConnAckReservedFlags,
    #[error("CONNACK with session present and an error code")]
    SessionPresentWithError,
    #[error("SUBSCRIBE without a topic filter")]
    NoTopicFilters,
    #[error("UNSUBSCRIBE without a topic filter")]
    NoUnsubscribeFilters,
    #[error("{packet} without a reason code")]
    NoReasonCodes { packet: &'static str },
    #[error("subscription options reserved bits are set")]
    SubscriptionOptionsReserved,
    #[error("subscription options QoS 3")]
    SubscriptionQoS3,
    #[error("subscription options retain handling 3")]
    RetainHandling3,
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet is larger than the maximum packet size")]
    TooLarge,
    #[error("packet cannot be expressed in this protocol version: {0}")]
    Unsupported(&'static str),
    /// A string or binary field longer than 65,535 bytes, or a variable byte integer value
    /// above 268,435,455: the wire format cannot carry it.
    #[error("{0} is too long for its wire field")]
    FieldTooLong(&'static str),
}
