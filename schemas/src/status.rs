//! The reply envelope of request/reply on the bus: a reply without a `Quiver-Status` header
//! is a success whose payload is the response message; otherwise the payload is empty, the
//! header holds a [`Code`] and `Quiver-Error` the human-readable reason.

pub const HEADER_STATUS: &str = "Quiver-Status";
pub const HEADER_ERROR: &str = "Quiver-Error";
/// Absolute deadline of a request, unix milliseconds.
pub const HEADER_DEADLINE: &str = "Quiver-Deadline";
/// W3C trace context of the request.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// Status code carried in the `Quiver-Status` reply header. Stable: clients branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 1,
    NotFound = 2,
    AlreadyExists = 3,
    /// The target is down or not ready; retry elsewhere or later.
    Unavailable = 4,
    Timeout = 5,
    Internal = 6,
    /// The caller's cached view is out of date; refresh and retry.
    Stale = 7,
}

impl Code {
    pub fn from_u16(v: u16) -> Code {
        match v {
            1 => Code::InvalidArgument,
            2 => Code::NotFound,
            3 => Code::AlreadyExists,
            4 => Code::Unavailable,
            5 => Code::Timeout,
            7 => Code::Stale,
            _ => Code::Internal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid argument",
            Code::NotFound => "not found",
            Code::AlreadyExists => "already exists",
            Code::Unavailable => "unavailable",
            Code::Timeout => "timeout",
            Code::Internal => "internal error",
            Code::Stale => "stale view",
        }
    }
}
