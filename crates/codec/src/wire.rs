//! Primitive wire types (section 1.5): integers, variable byte integers, strings, binary data.
//!
//! The reader works on the frozen frame of one packet, so strings and binary fields are
//! `Bytes` slices of it: decoding never copies a payload.
use crate::error::DecodeErrorKind as K;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

/// Largest value a variable byte integer can carry (4 bytes of 7 bits).
pub(crate) const MAX_VBI: usize = 268_435_455;

/// Reads fields of one packet body. `end` is the end of the region being read: the packet, or
/// while reading properties the end of the property block, so a field cannot overrun it.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
    end: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, pos: usize) -> Self {
        let end = buf.len();
        Reader { buf, pos, end }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Restricts reads to the next `len` bytes; returns the previous end for [`Self::unlimit`].
    pub(crate) fn limit(&mut self, len: usize, field: &'static str) -> Result<usize, K> {
        if len > self.remaining() {
            return Err(K::Truncated { field });
        }
        let old = self.end;
        self.end = self.pos + len;
        Ok(old)
    }

    pub(crate) fn unlimit(&mut self, old_end: usize) {
        self.end = old_end;
    }

    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, K> {
        if self.pos >= self.end {
            return Err(K::Truncated { field });
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, K> {
        if self.remaining() < 2 {
            return Err(K::Truncated { field });
        }
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, K> {
        if self.remaining() < 4 {
            return Err(K::Truncated { field });
        }
        let p = self.pos;
        let v = u32::from_be_bytes([
            self.buf[p],
            self.buf[p + 1],
            self.buf[p + 2],
            self.buf[p + 3],
        ]);
        self.pos += 4;
        Ok(v)
    }

    pub(crate) fn vbi(&mut self, field: &'static str) -> Result<u32, K> {
        match read_vbi(&self.buf[self.pos..self.end])? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(K::Truncated { field }),
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, K> {
        if self.remaining() < n {
            return Err(K::Truncated { field });
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Binary Data (1.5.6): two-byte length, then the bytes.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, K> {
        let n = self.u16(field)? as usize;
        self.take(n, field)
    }

    /// UTF-8 Encoded String (1.5.4): well-formed (which excludes encoded surrogates) and
    /// without U+0000.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<ByteString, K> {
        let b = self.binary(field)?;
        to_string(b)
    }

    /// A topic name: a string without the wildcard characters ([MQTT-3.3.2-2]).
    pub(crate) fn topic_name(&mut self, field: &'static str) -> Result<ByteString, K> {
        let b = self.binary(field)?;
        // One pass for the three forbidden bytes; '+', '#' and NUL never occur inside a
        // multi-byte UTF-8 sequence, so a byte scan is exact.
        let mut wildcard = false;
        for &c in b.iter() {
            match c {
                0 => return Err(K::NullCharacter),
                b'+' | b'#' => wildcard = true,
                _ => {}
            }
        }
        let s = ByteString::try_from(b).map_err(|_| K::InvalidUtf8)?;
        if wildcard {
            return Err(K::TopicNameWildcard);
        }
        Ok(s)
    }

    /// The rest of the frame (the payload), reusing the frame's reference instead of taking
    /// another one: two atomic reference-count operations fewer per PUBLISH.
    pub(crate) fn into_rest(self) -> Bytes {
        let mut b = self.buf;
        b.truncate(self.end);
        b.advance(self.pos);
        b
    }

    pub(crate) fn finish(&self, packet: &'static str) -> Result<(), K> {
        if self.pos == self.end {
            Ok(())
        } else {
            Err(K::TrailingBytes { packet })
        }
    }
}

pub(crate) fn to_string(b: Bytes) -> Result<ByteString, K> {
    if b.contains(&0) {
        return Err(K::NullCharacter);
    }
    ByteString::try_from(b).map_err(|_| K::InvalidUtf8)
}

/// Reads a variable byte integer from the front of `buf`: `Ok(None)` if `buf` ends first,
/// else the value and its length. Rejects a fifth byte and non-minimal encodings
/// ([MQTT-1.5.5-1]).
#[inline]
pub(crate) fn read_vbi(buf: &[u8]) -> Result<Option<(u32, usize)>, K> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(K::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(K::VarIntTooLong)
}

#[inline]
pub(crate) fn vbi_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[inline]
pub(crate) fn put_vbi(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            return;
        }
    }
}

/// Length of a string or binary field on the wire.
#[inline]
pub(crate) fn field_len(b: &[u8]) -> usize {
    2 + b.len()
}

/// Writes a two-byte length and the bytes of a string or binary field.
#[inline]
pub(crate) fn put_field(
    out: &mut BytesMut,
    b: &[u8],
    name: &'static str,
) -> Result<(), crate::EncodeError> {
    let n = u16::try_from(b.len()).map_err(|_| crate::EncodeError::FieldTooLong(name))?;
    out.put_u16(n);
    out.put_slice(b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vbi_spec_boundaries() {
        // Table 1.5.5 of the spec: the ranges of 1 to 4 byte encodings.
        for (v, bytes) in [
            (0usize, &[0x00u8][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            put_vbi(&mut out, v);
            assert_eq!(&out[..], bytes, "{v}");
            assert_eq!(vbi_len(v), bytes.len());
            assert_eq!(read_vbi(bytes), Ok(Some((v as u32, bytes.len()))));
        }
    }

    #[test]
    fn vbi_rejects_five_bytes_and_non_minimal() {
        assert_eq!(
            read_vbi(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(K::VarIntTooLong)
        );
        assert_eq!(read_vbi(&[0x80, 0x00]), Err(K::VarIntNotMinimal));
        assert_eq!(read_vbi(&[0x80, 0x80]), Ok(None));
    }

    #[test]
    fn strings_reject_nul_and_ill_formed() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03a\x00b"), 0);
        assert_eq!(r.string("s"), Err(K::NullCharacter));
        // An encoded surrogate (U+D800) is ill-formed UTF-8.
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03\xED\xA0\x80"), 0);
        assert_eq!(r.string("s"), Err(K::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(b"\x00\x02\xC0\x80"), 0);
        assert_eq!(r.string("s"), Err(K::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(b"\x00\x05a/+/b"), 0);
        assert_eq!(r.topic_name("t"), Err(K::TopicNameWildcard));
    }
}
