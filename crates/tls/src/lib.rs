//! rampart-tls: TLS policy, certificate and CRL loading, OCSP stapling, live reload.
#![forbid(unsafe_code)]
