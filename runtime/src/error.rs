//! Errors of the runtime, and the status codes that travel in NATS reply headers.

use std::time::Duration;

pub use quiver_schemas::status::Code;

/// Everything that can go wrong in the runtime. Retryable cases have their own variants.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("no reply from {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("{0}")]
    Stale(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("malformed message: {0}")]
    Decode(#[from] quiver_schemas::DecodeError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The wire code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::Decode(_) | Error::Config(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Timeout { .. } | Error::DeadlineExceeded(_) => Code::Timeout,
            Error::Stale(_) => Code::Stale,
            Error::Internal(_) | Error::ObjectStore(_) | Error::Io(_) => Code::Internal,
        }
    }

    /// Rebuilds an error from a reply's status header.
    pub fn from_code(code: Code, message: String) -> Error {
        match code {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::Timeout => Error::Unavailable(format!("timeout: {message}")),
            Code::Stale => Error::Stale(message),
            Code::Internal => Error::Internal(message),
        }
    }

    /// Whether retrying (possibly on another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Timeout { .. } | Error::Stale(_) | Error::DeadlineExceeded(_))
    }

    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    pub fn unavailable(e: impl std::fmt::Display) -> Error {
        Error::Unavailable(e.to_string())
    }
}
