//! rampart-doctor: hardening checks as data: id, severity, evidence, remediation.
#![forbid(unsafe_code)]
