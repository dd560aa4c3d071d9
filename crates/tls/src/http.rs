//! A minimal HTTP/1.0 client for OCSP responders and CRL distribution points, over http://
//! (both payloads are signed) or https:// (the server verified against the listener's fetch
//! roots), one request per connection, bounded in time and size.

use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most header bytes accepted from a server.
const MAX_HEADER_BYTES: usize = 16 * 1024;

struct Url<'a> {
    https: bool,
    host: &'a str,
    port: u16,
    path: &'a str,
}

/// True for the URLs [`fetch`] can fetch (http:// and https://).
pub fn fetchable(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn parse_url(url: &str) -> Result<Url<'_>, String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err(format!("{url}: only http:// and https:// URLs are fetched")),
    };
    let default_port = if https { 443 } else { 80 };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: bad IPv6 address"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
            None => default_port,
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() || path.contains(['\r', '\n', ' ']) || host.contains(['\r', '\n', ' ']) {
        return Err(format!("{url}: bad URL"));
    }
    Ok(Url {
        https,
        host,
        port,
        path,
    })
}

/// GET (no body) or POST (`body` with its content type) `url`; returns the 200 response body.
/// Fails past `timeout` or when the body would exceed `max_body` bytes. An https:// server
/// must present a certificate valid for the URL's host under `tls`'s roots.
pub async fn fetch(
    url: &str,
    body: Option<(&str, &[u8])>,
    max_body: usize,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, fetch_inner(url, body, max_body, tls))
        .await
        .map_err(|_| format!("{url}: no complete answer within {timeout:?}"))?
}

async fn fetch_inner(
    url: &str,
    body: Option<(&str, &[u8])>,
    max_body: usize,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let u = parse_url(url)?;
    let stream = tokio::net::TcpStream::connect((u.host, u.port))
        .await
        .map_err(|e| format!("{url}: connect: {e}"))?;
    if !u.https {
        return exchange(url, &u, stream, body, max_body).await;
    }
    let name = ServerName::try_from(u.host.to_string())
        .map_err(|_| format!("{url}: {} is not a DNS name or an IP address", u.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
        .map_err(|e| format!("{url}: TLS: {e}"))?;
    exchange(url, &u, stream, body, max_body).await
}

/// One request and its response on a connected stream.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    url: &str,
    u: &Url<'_>,
    mut stream: S,
    body: Option<(&str, &[u8])>,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    let host_header = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let mut req = match body {
        Some((ctype, b)) => format!(
            "POST {} HTTP/1.0\r\nHost: {host_header}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            u.path,
            b.len()
        )
        .into_bytes(),
        None => format!(
            "GET {} HTTP/1.0\r\nHost: {host_header}\r\nConnection: close\r\n\r\n",
            u.path
        )
        .into_bytes(),
    };
    if let Some((_, b)) = body {
        req.extend_from_slice(b);
    }
    stream
        .write_all(&req)
        .await
        .map_err(|e| format!("{url}: write: {e}"))?;
    let mut buf = Vec::new();
    let limit = (max_body + MAX_HEADER_BYTES) as u64;
    match (&mut stream).take(limit + 1).read_to_end(&mut buf).await {
        Ok(_) => {}
        // Many HTTPS servers close without a TLS close_notify; the Content-Length check below
        // still catches a truncated body (and both payloads are signed).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("{url}: read: {e}")),
    }
    if buf.len() as u64 > limit {
        return Err(format!("{url}: response larger than {max_body} bytes"));
    }
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{url}: malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{url}: malformed status line"))?;
    if status != 200 {
        return Err(format!("{url}: HTTP status {status}"));
    }
    let body = buf[head_end + 4..].to_vec();
    let declared = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    if let Some(n) = declared {
        if body.len() < n {
            return Err(format!(
                "{url}: body truncated ({} of {n} bytes)",
                body.len()
            ));
        }
        return Ok(body[..n].to_vec());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://ocsp.example.net:8080/a/b").expect("url");
        assert_eq!((u.host, u.port, u.path), ("ocsp.example.net", 8080, "/a/b"));
        assert!(!u.https);
        let u = parse_url("https://crl.example.net/ca.crl").expect("url");
        assert_eq!((u.https, u.host, u.port), (true, "crl.example.net", 443));
        let u = parse_url("https://[::1]:8443").expect("url");
        assert_eq!((u.host, u.port, u.path), ("::1", 8443, "/"));
        let u = parse_url("http://[::1]/").expect("url");
        assert_eq!((u.host, u.port, u.path), ("::1", 80, "/"));
        let u = parse_url("http://127.0.0.1").expect("url");
        assert_eq!((u.host, u.port, u.path), ("127.0.0.1", 80, "/"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("ldap://x/").is_err());
        assert!(parse_url("http://x/a b").is_err());
    }
}
