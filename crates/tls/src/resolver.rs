//! Picks the server certificate by the SNI name a client sends.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
pub struct SniResolver {
    /// Served when no other certificate matches (or no SNI is sent).
    pub default: Arc<CertifiedKey>,
    /// Lower-case DNS names (`*.example.net` wildcards allowed) and their certificate; a few
    /// entries per listener, scanned linearly.
    pub by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl SniResolver {
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some((_, k)) = self.by_name.iter().find(|(n, _)| *n == name) {
            return k.clone();
        }
        let wildcard_match = |pattern: &str| {
            pattern.strip_prefix("*.").is_some_and(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|head| head.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
        };
        self.by_name
            .iter()
            .find(|(n, _)| wildcard_match(n))
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}
