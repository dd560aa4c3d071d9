//! Client-certificate verification: rustls' WebPKI verifier (chain to the CA bundle, CRLs,
//! expired-CRL policy) wrapped to enforce the configured verification depth and to note the
//! CRL distribution points of the certificates it sees (for `crl_fetch`).

use parking_lot::Mutex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Most distinct CRL URLs remembered from client certificates: bounds what a stream of
/// clients with made-up distribution points can make the broker fetch.
pub const MAX_SEEN_CRL_URLS: usize = 64;

#[derive(Debug)]
pub struct DepthLimited {
    pub inner: Arc<dyn ClientCertVerifier>,
    /// Most intermediates a client may present between its certificate and the CA bundle.
    pub max_intermediates: usize,
    /// Where CRL URLs of verified client certificates are noted; `None` without `crl_fetch`.
    pub seen_crl_urls: Option<Arc<Mutex<BTreeSet<String>>>>,
    /// `crl_fetch` is on but no CRL is loaded or fetched yet: the revocation status of every
    /// certificate is unknown, so verified certificates are refused (fail closed) until one is.
    pub no_crl_yet: bool,
}

impl ClientCertVerifier for DepthLimited {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // The presented chain bounds the path length: a client cannot use more intermediates
        // than it sends, so counting them enforces the depth before any signature work.
        if intermediates.len() > self.max_intermediates {
            tracing::info!(
                presented = intermediates.len(),
                max = self.max_intermediates,
                "client certificate chain longer than verify_depth"
            );
            return Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        let mut r = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if self.no_crl_yet && r.is_ok() {
            r = Err(Error::InvalidCertificate(
                rustls::CertificateError::UnknownRevocationStatus,
            ));
        }
        // Only a certificate that chains to the CA bundle may point the broker at a URL:
        // verified, or refused only for want of a CRL (webpki checks revocation after the
        // signature of each step).
        let chained = matches!(
            &r,
            Ok(_)
                | Err(Error::InvalidCertificate(
                    rustls::CertificateError::UnknownRevocationStatus
                ))
        );
        if let (true, Some(seen)) = (chained, &self.seen_crl_urls) {
            if let Ok(facts) = crate::material::cert_facts(end_entity) {
                let mut seen = seen.lock();
                for u in facts.crl_urls {
                    if seen.len() < MAX_SEEN_CRL_URLS && u.starts_with("http://") {
                        seen.insert(u);
                    }
                }
            }
        }
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
