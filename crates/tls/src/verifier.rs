//! Client-certificate verification: a path from the client's certificate to the CA bundle,
//! built by webpki within the configured verification depth, checked against the CRLs with
//! the expired-CRL policy; it also notes the CRL distribution points of the certificates it
//! sees (for `crl_fetch`). rustls' WebPKI verifier still does the handshake signatures and
//! the CA hints.

use parking_lot::Mutex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertRevocationListError, CertificateError, DigitallySignedStruct, DistinguishedName, Error,
    RootCertStore, SignatureScheme,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Most distinct CRL URLs remembered from client certificates: bounds what a stream of
/// clients with made-up distribution points can make the broker fetch.
pub const MAX_SEEN_CRL_URLS: usize = 64;

/// Most intermediates a client may present. Path building tries combinations of them, so
/// this bounds the work one handshake can cause before any path is found (webpki also caps
/// each path at 6 intermediates and each build at 100 signature checks).
pub const MAX_PRESENTED_INTERMEDIATES: usize = 32;

#[derive(Debug)]
pub struct DepthLimited {
    /// For the handshake signatures, the CA hints and whether a certificate is asked for.
    pub inner: Arc<dyn ClientCertVerifier>,
    /// The CA bundle as trust anchors.
    pub roots: Arc<RootCertStore>,
    /// Configured and fetched CRLs; every certificate of the path needs one from its issuer.
    pub crls: Vec<webpki::CertRevocationList<'static>>,
    /// Refuse certificates whose CRL is past its nextUpdate (`crl_expired = "deny"`).
    pub deny_expired_crl: bool,
    pub algs: WebPkiSupportedAlgorithms,
    /// Most intermediates on the verified path between the client's certificate and the
    /// trust anchor (a CA of the bundle), whatever the client presents.
    pub max_intermediates: usize,
    /// Where CRL URLs of verified client certificates are noted; `None` without `crl_fetch`.
    pub seen_crl_urls: Option<Arc<Mutex<BTreeSet<String>>>>,
    /// `crl_fetch` is on but no CRL is loaded or fetched yet: the revocation status of every
    /// certificate is unknown, so verified certificates are refused (fail closed) until one is.
    pub no_crl_yet: bool,
}

impl DepthLimited {
    /// Builds a path to the CA bundle no longer than `max_intermediates`: a path that is too
    /// long is rejected inside path building, so webpki goes on to try the others, and the
    /// certificate is accepted if any valid path is short enough (padding the presented chain
    /// changes nothing; a CA bundle that holds an intermediate shortens the path).
    fn verify_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), webpki::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)?;
        let crl_refs: Vec<&webpki::CertRevocationList<'static>> = self.crls.iter().collect();
        let revocation = match webpki::RevocationOptionsBuilder::new(&crl_refs) {
            Ok(b) => Some(
                b.with_depth(webpki::RevocationCheckDepth::Chain)
                    .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                    .with_expiration_policy(if self.deny_expired_crl {
                        webpki::ExpirationPolicy::Enforce
                    } else {
                        webpki::ExpirationPolicy::Ignore
                    })
                    .build(),
            ),
            // No CRL at all: nothing to check against.
            Err(_) => None,
        };
        let max = self.max_intermediates;
        let depth_ok = move |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > max {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        cert.verify_for_usage(
            self.algs.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            revocation,
            Some(&depth_ok),
        )
        .map(|_| ())
    }
}

/// webpki's verdict as a rustls error (the alert the client sees).
fn pki_error(e: webpki::Error) -> Error {
    use webpki::Error as W;
    let c = match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::CertExpired { .. } | W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        W::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::IssuerNotCrlSigner => {
            return Error::InvalidCertRevocationList(CertRevocationListError::IssuerInvalidForCrl)
        }
        W::InvalidCrlSignatureForPublicKey => {
            return Error::InvalidCertRevocationList(CertRevocationListError::BadSignature)
        }
        W::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        // Too deep, and everything else: refused without more detail to the peer.
        _ => CertificateError::ApplicationVerificationFailure,
    };
    Error::InvalidCertificate(c)
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
        if intermediates.len() > MAX_PRESENTED_INTERMEDIATES {
            tracing::info!(
                presented = intermediates.len(),
                max = MAX_PRESENTED_INTERMEDIATES,
                "client presented too many intermediate certificates"
            );
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        let mut r = self
            .verify_path(end_entity, intermediates, now)
            .map_err(|e| {
                if e == webpki::Error::MaximumPathDepthExceeded {
                    tracing::info!(
                        max = self.max_intermediates,
                        "client certificate chains to the CA bundle only through more intermediates than verify_depth allows"
                    );
                }
                pki_error(e)
            })
            .map(|()| ClientCertVerified::assertion());
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
                    if seen.len() < MAX_SEEN_CRL_URLS && crate::http::fetchable(&u) {
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
