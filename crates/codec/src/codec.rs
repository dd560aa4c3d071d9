//! STUB written by the lead: signatures the broker compiles against. The codec owner
//! implements them (and may split into modules), keeping these signatures.
use crate::{DecodeError, EncodeError, Packet, ProtocolVersion};
use bytes::BytesMut;

/// Decode one packet from the front of `buf`, consuming its bytes, if a whole packet is there.
///
/// `version` is the connection's negotiated version (use `V5` before CONNECT: CONNECT carries
/// its own level). `max_packet_size` bounds the whole packet (fixed header included): a larger
/// remaining length is rejected from the fixed header alone, before the body is buffered
/// (reason 0x95 PacketTooLarge). Returns `Ok(None)` when more bytes are needed.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    unimplemented!("codec owner implements")
}

/// Append the encoding of `packet` for `version` to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, out);
    unimplemented!("codec owner implements")
}

/// Exact size `encode` would produce (fixed header included), without encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    unimplemented!("codec owner implements")
}
