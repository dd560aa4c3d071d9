//! The store's one error type.

/// Every failure of the store. `Clone` because one group commit resolves many waiters with
/// the same outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was written by a format this build cannot read. It is left untouched.
    #[error("store format version {found} is not supported (this build reads version {expected}); the store was not modified")]
    IncompatibleVersion { found: u32, expected: u32 },
    /// The file or a record in it is damaged. It is left untouched; `rampart store check`
    /// gives details. Never wiped automatically.
    #[error("store is damaged: {what}; the store was not modified")]
    Corrupt { what: String },
    /// Another process (or another handle in this one) has the store open.
    #[error("store {path} is already open by another process or handle")]
    Locked { path: String },
    /// An I/O error from the operating system.
    #[error("store I/O error during {what}: {message}")]
    Io {
        what: String,
        kind: std::io::ErrorKind,
        message: String,
    },
    /// Any other failure reported by the storage engine.
    #[error("storage engine error during {what}: {message}")]
    Backend { what: String, message: String },
    /// A record could not be encoded (should not happen for well-formed records).
    #[error("cannot encode record: {what}")]
    Encode { what: String },
    /// Too many batches are waiting for the writer: the caller must shed load (for MQTT,
    /// withhold the acknowledgement / answer quota exceeded) rather than queue without bound.
    #[error("store overloaded: {pending} batches already pending (limit {limit})")]
    Overloaded { pending: usize, limit: usize },
    /// The writer thread has stopped (store dropped, or it failed fatally).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> Self {
        StoreError::Backend {
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn io(what: &str, e: &std::io::Error) -> Self {
        StoreError::Io {
            what: what.to_string(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
