//! The SNI name of a ClientHello, read from the connection's first records before rustls
//! processes them: rustls's unbuffered server connection does not expose the name it
//! received, and the broker drives TLS through that API (no deframing buffer per connection).
//!
//! Only the name is read here; rustls still parses and validates the whole ClientHello, and
//! refuses the handshake whenever this parser would be confused by a malformed one.

use rustls_pki_types::ServerName;

/// What the leading bytes of a connection say about its SNI name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// The ClientHello is not complete yet: read more.
    Incomplete,
    /// The name as rustls records it (a DNS name, lower-cased), or `None`: no name, an IP
    /// literal (ignored by rustls), or not a ClientHello at all (rustls refuses those).
    Done(Option<String>),
}

/// Largest handshake message rustls accepts (a 16-bit length plus its header): past it the
/// parser gives up and lets rustls refuse the message.
const MAX_HELLO: usize = 0xffff + 4;

/// Records a ClientHello may be split into before the parser stops looking for its name.
/// The caller parses again after every read until the hello is complete, so each parse must
/// stay bounded: a peer trickling a hello as thousands of one-byte records would otherwise
/// cost quadratic time. Real clients send one record, a few with a small fragment length.
const MAX_HELLO_RECORDS: usize = 32;

/// Reads the SNI name of the ClientHello at the start of `records` (TLS records as received,
/// the ClientHello possibly split across several of them). A hello split into more than
/// `MAX_HELLO_RECORDS` records gives no name (rustls still handles the handshake).
pub fn client_hello_sni(records: &[u8]) -> Sni {
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    for _ in 0..MAX_HELLO_RECORDS {
        let Some(h) = records.get(pos..pos + 5) else {
            return Sni::Incomplete;
        };
        // Handshake records only: anything else is no ClientHello, and rustls says so.
        if h[0] != 22 {
            return Sni::Done(None);
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let Some(payload) = records.get(pos + 5..pos + 5 + len) else {
            return Sni::Incomplete;
        };
        pos += 5 + len;
        hs.extend_from_slice(payload);
        if hs.len() < 4 {
            continue;
        }
        if hs[0] != 1 {
            return Sni::Done(None);
        }
        let body = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
        if body + 4 > MAX_HELLO {
            return Sni::Done(None);
        }
        if let Some(b) = hs.get(4..4 + body) {
            return Sni::Done(hello_sni(b));
        }
    }
    Sni::Done(None)
}

/// A cursor over length-prefixed TLS vectors; `None` when the input is too short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The server_name extension of a ClientHello body (RFC 6066 section 3), normalised as rustls
/// does: a DNS name lower-cased, an IP literal ignored.
fn hello_sni(body: &[u8]) -> Option<String> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        if typ != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        if list.u8()? != 0 {
            return None;
        }
        return match ServerName::try_from(list.vec16()?) {
            Ok(ServerName::DnsName(d)) => Some(d.to_lowercase_owned().as_ref().to_string()),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with the given extensions, as one handshake message.
    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(exts);
        let mut m = vec![1];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(&body);
        m
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        let mut e = vec![0, 0];
        e.extend_from_slice(&(list.len() as u16).to_be_bytes());
        e.extend_from_slice(&list);
        e
    }

    /// `msg` cut into records of at most `max` payload bytes.
    fn records(msg: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in msg.chunks(max) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    #[test]
    fn reads_the_name_lower_cased() {
        let mut exts = vec![0, 10, 0, 2, 0, 29]; // another extension first
        exts.extend_from_slice(&sni_ext(b"Broker.Example.NET"));
        let wire = records(&hello(&exts), 1 << 14);
        assert_eq!(
            client_hello_sni(&wire),
            Sni::Done(Some("broker.example.net".into()))
        );
    }

    #[test]
    fn joins_a_hello_split_across_records_and_waits_for_the_rest() {
        let wire = records(&hello(&sni_ext(b"localhost")), 7);
        for cut in 0..wire.len() {
            assert_eq!(client_hello_sni(&wire[..cut]), Sni::Incomplete, "cut {cut}");
        }
        assert_eq!(client_hello_sni(&wire), Sni::Done(Some("localhost".into())));
    }

    #[test]
    fn a_hello_in_too_many_records_gives_no_name_at_once() {
        let wire = records(&hello(&sni_ext(b"localhost")), 1);
        assert!(wire.len() / 6 > MAX_HELLO_RECORDS);
        assert_eq!(client_hello_sni(&wire), Sni::Done(None));
        // Even while the later records are still missing: the parse stops at the cap.
        assert_eq!(
            client_hello_sni(&wire[..6 * (MAX_HELLO_RECORDS + 1)]),
            Sni::Done(None)
        );
    }

    #[test]
    fn no_name_ip_literals_and_garbage_give_none() {
        let wire = records(&hello(&[]), 1 << 14);
        assert_eq!(client_hello_sni(&wire), Sni::Done(None));
        let wire = records(&hello(&sni_ext(b"127.0.0.1")), 1 << 14);
        assert_eq!(client_hello_sni(&wire), Sni::Done(None));
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), Sni::Done(None));
        // A truncated body inside a complete message.
        let mut m = hello(&sni_ext(b"localhost"));
        m.truncate(20);
        m[3] = 16;
        assert_eq!(client_hello_sni(&records(&m, 1 << 14)), Sni::Done(None));
    }
}
