//! Transport settings: TLS groups and timeouts, SNI certificates, CRL and OCSP options,
//! PROXY protocol trusted peers and the WebSocket Origin allow-list.

use rampart_config::*;

fn errs(text: &str) -> Vec<String> {
    match Config::from_str(text, "r.toml", &[]) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn ok(text: &str) -> Config {
    Config::from_str(text, "r.toml", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn tls(extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"mqtts\"\nkind = \"tls\"\nbind = \"127.0.0.1:8883\"\n[listeners.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n{extra}"
    )
}

#[test]
fn tls_defaults() {
    let cfg = ok(&tls(""));
    let t = cfg.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(t.handshake_timeout_secs, 10);
    assert_eq!(t.crl_expired, CrlExpired::Deny);
    assert!(!t.crl_fetch && t.ocsp_stapling && t.ocsp_url.is_none());
    assert!(t.fetch_ca_file.is_none() && t.fetch_system_roots);
    assert_eq!(t.reload_poll_secs, 5);
    assert!(t.groups.is_empty() && t.sni_cert_files.is_empty());
}

#[test]
fn tls_options_parse() {
    let cfg = ok(&tls(
        "groups = [\"secp384r1\", \"X25519\"]\nhandshake_timeout_secs = 3\nsni_cert_files = [\"b.pem\"]\nsni_key_files = [\"b.key\"]\nca_file = \"ca.pem\"\nclient_auth = \"required\"\ncrl_expired = \"allow\"\ncrl_fetch = true\ncrl_refresh_secs = 600\nocsp_url = \"https://ocsp.example.net/\"\nfetch_ca_file = \"fetch-ca.pem\"\nfetch_system_roots = false\nreload_poll_secs = 2\n",
    ));
    let t = cfg.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(t.groups, vec!["secp384r1", "X25519"]);
    assert_eq!(t.handshake_timeout_secs, 3);
    assert_eq!(t.sni_key_files.len(), 1);
    assert_eq!(t.crl_expired, CrlExpired::Allow);
    assert!(t.crl_fetch);
    assert_eq!(t.ocsp_url.as_deref(), Some("https://ocsp.example.net/"));
    assert_eq!(
        t.fetch_ca_file.as_deref(),
        Some(std::path::Path::new("fetch-ca.pem"))
    );
    assert!(!t.fetch_system_roots);
}

#[test]
fn tls_option_errors_say_why() {
    let e = errs(&tls("groups = [\"ffdhe2048\"]\n"));
    assert!(
        e[0].contains("listeners[0].tls.groups") && e[0].contains("ECDHE"),
        "{e:?}"
    );
    let e = errs(&tls("sni_cert_files = [\"b.pem\"]\n"));
    assert!(e[0].contains("each certificate needs its key"), "{e:?}");
    let e = errs(&tls("handshake_timeout_secs = 0\n"));
    assert!(e[0].contains("handshake_timeout_secs"), "{e:?}");
    let e = errs(&tls("ocsp_url = \"ftp://x/\"\n"));
    assert!(e[0].contains("http://"), "{e:?}");
    let e = errs(&tls("crl_fetch = true\n"));
    assert!(e[0].contains("client_auth"), "{e:?}");
    let e = errs(&tls("crl_expired = \"maybe\"\n"));
    assert!(e[0].contains("crl_expired"), "{e:?}");
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    let e = errs("[[listeners]]\nname = \"a\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\nproxy_protocol = true\n");
    assert!(
        e[0].contains("trusted_proxies") && e[0].contains("refused"),
        "{e:?}"
    );
    let e = errs("[[listeners]]\nname = \"a\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\ntrusted_proxies = [\"10.0.0.1\"]\n");
    assert!(e[0].contains("proxy_protocol = true"), "{e:?}");
    let e = errs("[[listeners]]\nname = \"a\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
    assert!(e[0].contains("prefix length"), "{e:?}");
    let cfg = ok("[[listeners]]\nname = \"a\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n");
    let l = &cfg.listeners[0];
    assert_eq!(l.trusted_proxies.len(), 2);
    assert!(l.trusted_proxies[0].contains("10.1.2.3".parse().expect("ip")));
    assert!(!l.trusted_proxies[0].contains("11.0.0.1".parse().expect("ip")));
    // An IPv4 peer seen on a dual-stack socket still matches an IPv4 range.
    assert!(l.trusted_proxies[0].contains("::ffff:10.9.9.9".parse().expect("ip")));
    assert!(l.trusted_proxies[1].contains("::1".parse().expect("ip")));
}

#[test]
fn ip_net_edges() {
    let all = IpNet::parse("0.0.0.0/0").expect("net");
    assert!(all.contains("203.0.113.9".parse().expect("ip")));
    assert!(!all.contains("2001:db8::1".parse().expect("ip")));
    let one = IpNet::parse("192.0.2.7").expect("net");
    assert_eq!(one.to_string(), "192.0.2.7/32");
    assert!(!one.contains("192.0.2.8".parse().expect("ip")));
    assert_eq!(
        IpNet::parse("10.1.2.3/8").expect("net"),
        IpNet::parse("10.0.0.0/8").expect("net")
    );
    assert_eq!(
        IpNet::parse("2001:db8::7/32").expect("net").to_string(),
        "2001:db8::/32"
    );
    assert!(IpNet::parse("not-an-ip").is_err());
    assert!(IpNet::parse("::/129").is_err());
}

#[test]
fn ws_origins_only_for_websocket_kinds() {
    let e = errs("[[listeners]]\nname = \"a\"\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\nws_allowed_origins = [\"https://x\"]\n");
    assert!(
        e[0].contains("ws_allowed_origins") && e[0].contains("\"ws\""),
        "{e:?}"
    );
    let cfg = ok("[[listeners]]\nname = \"a\"\nkind = \"ws\"\nbind = \"127.0.0.1:8083\"\nws_allowed_origins = [\"https://x\"]\n");
    assert_eq!(cfg.listeners[0].ws_allowed_origins, vec!["https://x"]);
}
