//! rampart-auth: authentication chain, authorization sources, ACL rules.
#![forbid(unsafe_code)]
