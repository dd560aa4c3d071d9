//! Feeds arbitrary bytes to the codec as each protocol version, decoding packets until the
//! input is used up or rejected; every packet that decodes must re-encode and decode to
//! itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rampart_codec::{decode, encode, encoded_len, Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        // Terminates: every decoded packet consumes at least two bytes.
        while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
            // A CONNECT is encoded in the version it declared.
            let v = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let mut out = BytesMut::new();
            encode(&packet, v, &mut out).expect("a decoded packet encodes");
            assert_eq!(out.len(), encoded_len(&packet, v));
            let again = decode(&mut out, v, u32::MAX).expect("re-decodes");
            assert_eq!(again.as_ref(), Some(&packet));
            assert!(out.is_empty());
        }
    }
});
