//! PROXY protocol v1 (text) and v2 (binary) headers from trusted load balancers.
//!
//! A listener with `proxy_protocol = true` takes the client address from the header only when
//! the socket peer is in `trusted_proxies`; a header from any other peer is refused, so a
//! client cannot forge its address (nor, through it, anything keyed on the address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::AsyncReadExt;

/// v2 signature (12 bytes).
pub const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the spec's bound).
const V1_MAX: usize = 107;
/// Largest v2 address block plus TLVs accepted. Worst case: this much buffered per
/// connection while its header is read.
pub const V2_MAX_LEN: usize = 2048;

/// True if `first` can start a PROXY header ("PROXY " or the v2 signature): neither MQTT
/// CONNECT (0x10), a TLS record (0x16) nor an HTTP request line begins with these bytes.
pub fn looks_like_proxy(first: u8) -> bool {
    first == b'P' || first == b'\r'
}

/// Reads one header. Returns the client address it carries (`None` for v2 LOCAL, v1 UNKNOWN
/// or an address family other than TCP over IPv4/IPv6) and the bytes read past the header.
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Option<SocketAddr>, Vec<u8>), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(done) = parse(&buf)? {
            let (addr, used) = done;
            return Ok((addr, buf[used..].to_vec()));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading PROXY header: {e}"))?;
        if n == 0 {
            return Err("connection closed inside the PROXY header".to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `Ok(None)`: need more bytes. `Ok(Some((addr, header_len)))`: complete.
pub fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, String> {
    let n = buf.len().min(12);
    if buf[..n] == V2_SIG[..n] {
        if buf.len() < 16 {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
            if buf.len() >= V1_MAX {
                return Err("PROXY v1 header longer than 107 bytes".to_string());
            }
            return Ok(None);
        };
        if end + 2 > V1_MAX {
            return Err("PROXY v1 header longer than 107 bytes".to_string());
        }
        return parse_v1(&buf[..end]).map(|a| Some((a, end + 2)));
    }
    Err("expected a PROXY protocol header from the trusted proxy".to_string())
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "PROXY v1 header is not ASCII")?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| format!("PROXY v1: bad source address {src:?}"))?;
            if (*fam == "TCP4") != ip.is_ipv4() {
                return Err("PROXY v1: address does not match its family".to_string());
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| format!("PROXY v1: bad source port {sport:?}"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err("malformed PROXY v1 header".to_string()),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, String> {
    let ver_cmd = buf[12];
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err("PROXY v2: unsupported version".to_string());
    }
    if len > V2_MAX_LEN {
        return Err(format!(
            "PROXY v2: {len} header bytes is more than {V2_MAX_LEN}"
        ));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let addr = match (ver_cmd & 0x0f, fam) {
        (0, _) => None, // LOCAL: the proxy's own health check
        (1, 0x11) if len >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 0x21) if len >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x11 | 0x21) => return Err("PROXY v2: address block too short".to_string()),
        (1, _) => None,
        _ => return Err("PROXY v2: unknown command".to_string()),
    };
    Ok(Some((addr, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_and_leftover() {
        let mut data = b"PROXY TCP4 192.0.2.1 198.51.100.1 5000 1883\r\n".to_vec();
        data.extend_from_slice(&[0x10, 0x00]);
        let (addr, used) = parse(&data).expect("ok").expect("complete");
        assert_eq!(addr, Some("192.0.2.1:5000".parse().expect("addr")));
        assert_eq!(&data[used..], &[0x10, 0x00]);
    }

    #[test]
    fn v1_needs_more_then_unknown() {
        assert_eq!(parse(b"PROX").expect("ok"), None);
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").expect("ok"), Some((None, 15)));
        assert!(parse(&[b'P'; 200]).is_err());
        assert!(parse(b"PROXY TCP4 ::1 ::1 1 2\r\n").is_err());
    }

    #[test]
    fn v2_tcp6_and_local() {
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x21, 0, 36]);
        let mut body = [0u8; 36];
        body[15] = 1;
        body[32..34].copy_from_slice(&4242u16.to_be_bytes());
        h.extend_from_slice(&body);
        let (addr, used) = parse(&h).expect("ok").expect("complete");
        assert_eq!(addr, Some("[::1]:4242".parse().expect("addr")));
        assert_eq!(used, 52);
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).expect("ok"), Some((None, 16)));
        assert_eq!(parse(&local[..14]).expect("ok"), None);
    }

    #[test]
    fn not_a_header() {
        assert!(parse(&[0x10, 0x0c]).is_err());
        assert!(parse(&[0x16, 0x03]).is_err());
        assert!(looks_like_proxy(b'P') && looks_like_proxy(b'\r'));
        assert!(!looks_like_proxy(0x10) && !looks_like_proxy(0x16) && !looks_like_proxy(b'G'));
    }
}
