//! Just enough DER to read names and dates from X.509 certificates and CRLs: issuer, subject,
//! validity, thisUpdate and nextUpdate. Input may come from the network (the live probe), so
//! every read is bounds-checked and a malformed structure is `None`, never a panic.
//! Signatures are not checked here: the TLS library does that; doctor only reports dates and
//! chain order.

/// One TLV: tag, contents, and the whole encoding (for comparing names byte for byte).
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

fn read_tlv<'a>(data: &mut &'a [u8]) -> Option<Tlv<'a>> {
    let d: &'a [u8] = data;
    let tag = *d.first()?;
    let first = *d.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        // More than 4 length bytes is more than any certificate could hold.
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*d.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    let whole = d.get(..end)?;
    let content = d.get(hdr..end)?;
    *data = d.get(end..)?;
    Some(Tlv {
        tag,
        content,
        whole,
    })
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;

/// What doctor needs from one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DER of the issuer Name (compared byte for byte with the next certificate's subject).
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn self_issued(&self) -> bool {
        self.issuer == self.subject
    }
}

pub fn parse_cert(der: &[u8]) -> Option<CertInfo> {
    let mut top = der;
    let cert = read_tlv(&mut top)?;
    if cert.tag != SEQUENCE {
        return None;
    }
    let mut c = cert.content;
    let tbs = read_tlv(&mut c)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut t = tbs.content;
    let mut next = read_tlv(&mut t)?;
    if next.tag == VERSION_TAG {
        next = read_tlv(&mut t)?;
    }
    if next.tag != INTEGER {
        return None;
    }
    let _sig_alg = read_tlv(&mut t)?;
    let issuer = read_tlv(&mut t)?;
    let validity = read_tlv(&mut t)?;
    let subject = read_tlv(&mut t)?;
    if issuer.tag != SEQUENCE || validity.tag != SEQUENCE || subject.tag != SEQUENCE {
        return None;
    }
    let mut v = validity.content;
    let not_before = parse_time(&read_tlv(&mut v)?)?;
    let not_after = parse_time(&read_tlv(&mut v)?)?;
    Some(CertInfo {
        issuer: issuer.whole.to_vec(),
        subject: subject.whole.to_vec(),
        not_before,
        not_after,
    })
}

/// What doctor needs from one CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    pub issuer: Vec<u8>,
    pub this_update: i64,
    /// Optional in the format; a CRL without it never says when it goes stale.
    pub next_update: Option<i64>,
}

pub fn parse_crl(der: &[u8]) -> Option<CrlInfo> {
    let mut top = der;
    let crl = read_tlv(&mut top)?;
    if crl.tag != SEQUENCE {
        return None;
    }
    let mut c = crl.content;
    let tbs = read_tlv(&mut c)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut t = tbs.content;
    let mut next = read_tlv(&mut t)?;
    if next.tag == INTEGER {
        next = read_tlv(&mut t)?;
    }
    // `next` is the signature algorithm.
    if next.tag != SEQUENCE {
        return None;
    }
    let issuer = read_tlv(&mut t)?;
    let this_update = parse_time(&read_tlv(&mut t)?)?;
    let mut rest = t;
    let next_update = match read_tlv(&mut rest) {
        Some(tlv) if tlv.tag == UTC_TIME || tlv.tag == GENERALIZED_TIME => Some(parse_time(&tlv)?),
        _ => None,
    };
    Some(CrlInfo {
        issuer: issuer.whole.to_vec(),
        this_update,
        next_update,
    })
}

fn parse_time(tlv: &Tlv<'_>) -> Option<i64> {
    let s = std::str::from_utf8(tlv.content).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tlv.tag {
        UTC_TIME => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            // RFC 5280 4.1.2.5.1: YY >= 50 is 19YY.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        GENERALIZED_TIME => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi, se) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The DER of the OID id-ad-ocsp (1.3.6.1.5.5.7.48.1), the access method of an OCSP
/// responder in the Authority Information Access extension.
const ID_AD_OCSP: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];

/// Whether a certificate names an OCSP responder (AIA). A byte search for the OID is enough
/// to tell presence: the OID's encoding cannot occur by accident inside the other fields
/// that matter here, and a false positive only turns a warning into a pass that the live
/// probe (T6.live_ocsp) then checks.
pub fn has_ocsp_responder(cert: &[u8]) -> bool {
    cert.windows(ID_AD_OCSP.len()).any(|w| w == ID_AD_OCSP)
}

/// `2027-03-01T12:00:00Z` for evidence.
pub fn format_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for t in [0i64, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let s = format_time(t);
            let tlv = Tlv {
                tag: GENERALIZED_TIME,
                content: format!(
                    "{}{}{}{}{}{}Z",
                    &s[0..4],
                    &s[5..7],
                    &s[8..10],
                    &s[11..13],
                    &s[14..16],
                    &s[17..19]
                )
                .leak()
                .as_bytes(),
                whole: &[],
            };
            assert_eq!(parse_time(&tlv), Some(t), "{s}");
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn truncated_input_is_none() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x02],
        ] {
            assert!(parse_cert(bad).is_none());
            assert!(parse_crl(bad).is_none());
        }
    }
}
