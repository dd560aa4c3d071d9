//! OCSP for the broker's own certificate (T6): build the request, check the response enough
//! to know it is a "good" answer for this certificate and until when, and staple it as is.
//! The client verifies the responder's signature; the broker only refuses to staple an answer
//! that is not good, not for its certificate, or out of date.

use crate::der;
use x509_parser::prelude::*;

/// Largest OCSP response accepted from a responder.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// OID 1.3.14.3.2.26 (SHA-1), the hash every responder supports for CertID.
const SHA1_OID: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// OID 1.3.6.1.5.5.7.48.1.1 (id-pkix-ocsp-basic).
const BASIC_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

fn cert_id(leaf: &[u8], issuer: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (_, leaf) = parse_x509_certificate(leaf).map_err(|e| format!("leaf: {e}"))?;
    let (_, issuer) = parse_x509_certificate(issuer).map_err(|e| format!("issuer: {e}"))?;
    let sha1 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
            .as_ref()
            .to_vec()
    };
    let name_hash = sha1(issuer.subject().as_raw());
    let key_hash = sha1(&issuer.public_key().subject_public_key.data);
    let serial = leaf.raw_serial().to_vec();
    let alg = der::write(
        der::SEQUENCE,
        &[der::write(der::OID, SHA1_OID), der::write(der::NULL, &[])].concat(),
    );
    let id = der::write(
        der::SEQUENCE,
        &[
            alg,
            der::write(der::OCTET_STRING, &name_hash),
            der::write(der::OCTET_STRING, &key_hash),
            der::write(der::INTEGER, &serial),
        ]
        .concat(),
    );
    Ok((id, serial))
}

/// The DER OCSPRequest for `leaf` issued by `issuer`, and the leaf's serial.
pub fn request(leaf: &[u8], issuer: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (id, serial) = cert_id(leaf, issuer)?;
    let req = der::write(der::SEQUENCE, &id);
    let list = der::write(der::SEQUENCE, &req);
    let tbs = der::write(der::SEQUENCE, &list);
    Ok((der::write(der::SEQUENCE, &tbs), serial))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspAnswer {
    pub status: CertStatus,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// Reads the single response about `serial` from a DER OCSPResponse.
pub fn parse_response(resp: &[u8], serial: &[u8]) -> Result<OcspAnswer, String> {
    let bad = |what: &str| format!("malformed OCSP response: {what}");
    let (outer, _) = der::expect(resp, der::SEQUENCE).ok_or_else(|| bad("outer"))?;
    let (status, rest) = der::expect(outer, der::ENUMERATED).ok_or_else(|| bad("status"))?;
    if status != [0] {
        let name = match status.first() {
            Some(1) => "malformedRequest",
            Some(2) => "internalError",
            Some(3) => "tryLater",
            Some(5) => "sigRequired",
            Some(6) => "unauthorized",
            _ => "unknown",
        };
        return Err(format!("responder answered {name}"));
    }
    let (bytes, _) = der::expect(rest, 0xa0).ok_or_else(|| bad("responseBytes"))?;
    let (bytes, _) = der::expect(bytes, der::SEQUENCE).ok_or_else(|| bad("responseBytes"))?;
    let (oid, rest) = der::expect(bytes, der::OID).ok_or_else(|| bad("responseType"))?;
    if oid != BASIC_OID {
        return Err(bad("not a basic OCSP response"));
    }
    let (basic, _) = der::expect(rest, der::OCTET_STRING).ok_or_else(|| bad("response"))?;
    let (basic, _) = der::expect(basic, der::SEQUENCE).ok_or_else(|| bad("basic"))?;
    let (tbs, _) = der::expect(basic, der::SEQUENCE).ok_or_else(|| bad("tbsResponseData"))?;
    let mut rest = tbs;
    if let Some((0xa0, _, r)) = der::read(rest) {
        rest = r; // version
    }
    match der::read(rest) {
        Some((0xa1 | 0xa2, _, r)) => rest = r, // responderID
        _ => return Err(bad("responderID")),
    }
    let (_, rest) = der::expect(rest, der::GENERALIZED_TIME).ok_or_else(|| bad("producedAt"))?;
    let (mut responses, _) = der::expect(rest, der::SEQUENCE).ok_or_else(|| bad("responses"))?;
    while !responses.is_empty() {
        let (single, next) =
            der::expect(responses, der::SEQUENCE).ok_or_else(|| bad("singleResponse"))?;
        responses = next;
        let (id, rest) = der::expect(single, der::SEQUENCE).ok_or_else(|| bad("certID"))?;
        let (_, id_rest) = der::expect(id, der::SEQUENCE).ok_or_else(|| bad("hashAlgorithm"))?;
        let (_, id_rest) = der::expect(id_rest, der::OCTET_STRING).ok_or_else(|| bad("name"))?;
        let (_, id_rest) = der::expect(id_rest, der::OCTET_STRING).ok_or_else(|| bad("key"))?;
        let (their_serial, _) =
            der::expect(id_rest, der::INTEGER).ok_or_else(|| bad("serialNumber"))?;
        if their_serial != serial {
            continue;
        }
        let (tag, _, rest) = der::read(rest).ok_or_else(|| bad("certStatus"))?;
        let status = match tag {
            0x80 => CertStatus::Good,
            0xa1 => CertStatus::Revoked,
            _ => CertStatus::Unknown,
        };
        let (this, rest) =
            der::expect(rest, der::GENERALIZED_TIME).ok_or_else(|| bad("thisUpdate"))?;
        let this_update = der::generalized_time(this).ok_or_else(|| bad("thisUpdate time"))?;
        let next_update = match der::read(rest) {
            Some((0xa0, inner, _)) => {
                let (t, _) =
                    der::expect(inner, der::GENERALIZED_TIME).ok_or_else(|| bad("nextUpdate"))?;
                Some(der::generalized_time(t).ok_or_else(|| bad("nextUpdate time"))?)
            }
            _ => None,
        };
        return Ok(OcspAnswer {
            status,
            this_update,
            next_update,
        });
    }
    Err("the OCSP response does not cover this certificate".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::der::{write, GENERALIZED_TIME, INTEGER, OCTET_STRING, SEQUENCE};

    fn response(serial: &[u8], status: &[u8], next: Option<&str>) -> Vec<u8> {
        let cert_id = write(
            SEQUENCE,
            &[
                write(
                    SEQUENCE,
                    &[write(der::OID, SHA1_OID), write(der::NULL, &[])].concat(),
                ),
                write(OCTET_STRING, &[1; 20]),
                write(OCTET_STRING, &[2; 20]),
                write(INTEGER, serial),
            ]
            .concat(),
        );
        let mut single = [
            cert_id,
            status.to_vec(),
            write(GENERALIZED_TIME, b"20261130000000Z"),
        ]
        .concat();
        if let Some(n) = next {
            single.extend(write(0xa0, &write(GENERALIZED_TIME, n.as_bytes())));
        }
        let tbs = write(
            SEQUENCE,
            &[
                write(0xa2, &write(OCTET_STRING, &[3; 20])),
                write(GENERALIZED_TIME, b"20261130000000Z"),
                write(SEQUENCE, &write(SEQUENCE, &single)),
            ]
            .concat(),
        );
        let basic = write(
            SEQUENCE,
            &[tbs, write(SEQUENCE, &[]), write(0x03, &[0])].concat(),
        );
        let bytes = write(
            SEQUENCE,
            &[write(der::OID, BASIC_OID), write(OCTET_STRING, &basic)].concat(),
        );
        write(
            SEQUENCE,
            &[write(der::ENUMERATED, &[0]), write(0xa0, &bytes)].concat(),
        )
    }

    #[test]
    fn good_answer_with_next_update() {
        let r = response(&[0x20, 0x01], &[0x80, 0x00], Some("20261201000000Z"));
        let a = parse_response(&r, &[0x20, 0x01]).expect("parse");
        assert_eq!(a.status, CertStatus::Good);
        assert_eq!(a.this_update, 1_795_996_800);
        assert_eq!(a.next_update, Some(1_796_083_200));
    }

    #[test]
    fn revoked_other_serial_and_errors() {
        let revoked = write(0xa1, &write(GENERALIZED_TIME, b"20261101000000Z"));
        let r = response(&[7], &revoked, None);
        let a = parse_response(&r, &[7]).expect("parse");
        assert_eq!((a.status, a.next_update), (CertStatus::Revoked, None));
        assert!(parse_response(&r, &[8]).is_err());
        let try_later = write(SEQUENCE, &write(der::ENUMERATED, &[3]));
        assert!(parse_response(&try_later, &[7])
            .expect_err("refused")
            .contains("tryLater"));
        // Every truncation is an error, never a panic.
        for n in 0..r.len() {
            assert!(parse_response(&r[..n], &[7]).is_err());
        }
    }
}
