//! Errors of the runtime and the roles, and the status codes that travel in NATS reply
//! headers. Every error a caller can branch on is its own variant, and [`Error::code`] maps
//! each one to a wire [`Code`] exhaustively; nothing is classified by its message text.

use std::time::Duration;

pub use quiver_schemas::status::Code;

/// Everything that can go wrong. Retryable cases have their own variants
/// ([`Error::is_retryable`]); internal failures are never reported as the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's request is wrong; the message says what to change.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named collection does not exist ([`Error::collection_not_found`]).
    #[error("{0}")]
    CollectionNotFound(String),
    /// The collection has no vector index ([`Error::index_not_found`]).
    #[error("{0}")]
    IndexNotFound(String),
    /// The collection is released; reads need it loaded ([`Error::not_loaded`]).
    #[error("{0}")]
    NotLoaded(String),
    /// Something else the caller named does not exist (a plugin, a database).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The target is down, not ready or draining; retry elsewhere or later.
    #[error("{0}")]
    Unavailable(String),
    /// Nothing subscribes to the subject (its node or service is down, or between a failed
    /// active and its standby): the request was not delivered, so any request may be sent again.
    #[error("{0}")]
    NotServed(String),
    /// One try got no reply in time; another try (or replica) may.
    #[error("no reply from {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    /// The caller's cached view is out of date; refresh and retry.
    #[error("{0}")]
    Stale(String),
    /// The caller's whole budget is spent: nothing more is tried for it.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The node is at one of its limits (requests in flight, memory); the message names the
    /// limit. Back off and retry; not retried on another node automatically.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A failure inside Quiver (a bug, faiss, a malformed reply from another node).
    #[error("{0}")]
    Internal(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request that could not be decoded (the sender's fault).
    #[error("malformed message: {0}")]
    Decode(#[from] quiver_schemas::DecodeError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The named collection does not exist.
    pub fn collection_not_found(name: &str) -> Error {
        Error::CollectionNotFound(format!("collection {name:?} does not exist"))
    }

    /// The collection has no vector index (Milvus' wording, which clients match).
    pub fn index_not_found(collection: &str) -> Error {
        Error::IndexNotFound(format!("index not found[collection={collection}]"))
    }

    /// The collection is released.
    pub fn not_loaded(collection: &str) -> Error {
        Error::NotLoaded(format!("collection {collection:?} is not loaded; load it first (LoadCollection)"))
    }

    /// The wire code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::Decode(_) | Error::Config(_) => Code::InvalidArgument,
            Error::CollectionNotFound(_) => Code::CollectionNotFound,
            Error::IndexNotFound(_) => Code::IndexNotFound,
            Error::NotLoaded(_) => Code::NotLoaded,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unavailable(_) => Code::Unavailable,
            Error::NotServed(_) => Code::NotServed,
            Error::Timeout { .. } => Code::Timeout,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Stale(_) => Code::Stale,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Internal(_) | Error::ObjectStore(_) | Error::Io(_) => Code::Internal,
        }
    }

    /// Rebuilds an error from a reply's status header.
    pub fn from_code(code: Code, message: String) -> Error {
        match code {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::CollectionNotFound => Error::CollectionNotFound(message),
            Code::IndexNotFound => Error::IndexNotFound(message),
            Code::NotLoaded => Error::NotLoaded(message),
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::Unavailable => Error::Unavailable(message),
            // A node that timed out on its own sub-request: worth a try elsewhere.
            Code::Timeout => Error::Unavailable(format!("timeout: {message}")),
            Code::DeadlineExceeded => Error::DeadlineExceeded(message),
            Code::Stale => Error::Stale(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::NotServed => Error::NotServed(message),
            Code::Internal => Error::Internal(message),
        }
    }

    /// Whether retrying (possibly on another node) may succeed. A spent deadline is final:
    /// nobody waits for the answer any more.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::NotServed(_) | Error::Timeout { .. } | Error::Stale(_))
    }

    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    pub fn unavailable(e: impl std::fmt::Display) -> Error {
        Error::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_rebuilds_an_error_of_that_code() {
        for code in Code::ALL {
            let rebuilt = Error::from_code(code, "x".into());
            match code {
                // A remote node's timeout is retried here, so it becomes `Unavailable`.
                Code::Timeout => assert_eq!(rebuilt.code(), Code::Unavailable),
                _ => assert_eq!(rebuilt.code(), code, "{code:?}"),
            }
        }
    }

    #[test]
    fn typed_errors_keep_their_wording() {
        assert_eq!(Error::index_not_found("c").to_string(), "index not found[collection=c]");
        assert_eq!(Error::collection_not_found("c").code(), Code::CollectionNotFound);
        assert!(!Error::DeadlineExceeded("x".into()).is_retryable());
        assert!(Error::Stale("x".into()).is_retryable());
    }
}
