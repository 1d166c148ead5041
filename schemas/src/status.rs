//! The reply envelope of request/reply on the bus: a reply without a `Quiver-Status` header
//! is a success whose payload is the response message; otherwise the payload is empty, the
//! header holds a [`Code`] and `Quiver-Error` the human-readable reason.

pub const HEADER_STATUS: &str = "Quiver-Status";
pub const HEADER_ERROR: &str = "Quiver-Error";
/// Absolute deadline of a request, unix milliseconds (sent by older clients; depends on
/// synchronised clocks, so [`HEADER_TIMEOUT`] wins when both are present).
pub const HEADER_DEADLINE: &str = "Quiver-Deadline";
/// The caller's remaining time budget for a request, milliseconds, as it was sent. Relative,
/// so clocks need not agree; the receiver turns it into a local deadline on arrival.
pub const HEADER_TIMEOUT: &str = "Quiver-Timeout-Ms";
/// W3C trace context of the request.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// A client's id for one request, the same on every send of it: the proxy derives the log
/// message ids of a write from it, so a write sent again after a lost connection is stored
/// once (JetStream's duplicate window, 2 minutes). At most [`MAX_REQUEST_ID`] bytes of
/// `[A-Za-z0-9._-]`; anything else is ignored.
pub const HEADER_REQUEST_ID: &str = "Quiver-Request-Id";
/// Longest request id taken.
pub const MAX_REQUEST_ID: usize = 64;
/// On a request: the caller asks for word every this many milliseconds while the request is
/// worked on (calls that may take minutes: loads, index builds, compactions). On a message to
/// the reply subject: that word (empty payload), not the answer. NATS request/reply never
/// says that a request or its answer was lost with a server; the caller's silence limit does.
pub const HEADER_PROGRESS: &str = "Quiver-Progress-Ms";

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
    /// The named collection does not exist (a kind of `NotFound`).
    CollectionNotFound = 8,
    /// The collection has no vector index (a kind of `NotFound`).
    IndexNotFound = 9,
    /// The collection is released: load it before reading (a kind of `InvalidArgument`).
    NotLoaded = 10,
    /// The caller's deadline passed before the work was done (a kind of `Timeout`).
    DeadlineExceeded = 11,
    /// The node is at a limit (requests in flight, memory): back off and retry (a kind of
    /// `Unavailable`).
    ResourceExhausted = 12,
    /// Not answered by the service it was sent to: nothing serves the subject, or the node that
    /// got it no longer acts for the service (a coordinator that may have been replaced). It
    /// was not acted on: send it again (a kind of `Unavailable`).
    NotServed = 13,
}

impl Code {
    /// Every code, for exhaustive tests.
    pub const ALL: [Code; 13] = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::Unavailable,
        Code::Timeout,
        Code::Internal,
        Code::Stale,
        Code::CollectionNotFound,
        Code::IndexNotFound,
        Code::NotLoaded,
        Code::DeadlineExceeded,
        Code::ResourceExhausted,
        Code::NotServed,
    ];

    /// The code's name (snake case), for metric labels and span tags.
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::Unavailable => "unavailable",
            Code::Timeout => "timeout",
            Code::Internal => "internal",
            Code::Stale => "stale",
            Code::CollectionNotFound => "collection_not_found",
            Code::IndexNotFound => "index_not_found",
            Code::NotLoaded => "not_loaded",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::ResourceExhausted => "resource_exhausted",
            Code::NotServed => "not_served",
        }
    }

    pub fn from_u16(v: u16) -> Code {
        match v {
            1 => Code::InvalidArgument,
            2 => Code::NotFound,
            3 => Code::AlreadyExists,
            4 => Code::Unavailable,
            5 => Code::Timeout,
            7 => Code::Stale,
            8 => Code::CollectionNotFound,
            9 => Code::IndexNotFound,
            10 => Code::NotLoaded,
            11 => Code::DeadlineExceeded,
            12 => Code::ResourceExhausted,
            13 => Code::NotServed,
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
            Code::CollectionNotFound => "collection not found",
            Code::IndexNotFound => "index not found",
            Code::NotLoaded => "collection not loaded",
            Code::DeadlineExceeded => "deadline exceeded",
            Code::ResourceExhausted => "resource exhausted",
            Code::NotServed => "not served",
        }
    }

    /// The broad class of a code, for clients that know only the first seven.
    pub fn class(self) -> Code {
        match self {
            Code::CollectionNotFound | Code::IndexNotFound => Code::NotFound,
            Code::NotLoaded => Code::InvalidArgument,
            Code::DeadlineExceeded => Code::Timeout,
            Code::ResourceExhausted | Code::NotServed => Code::Unavailable,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_internal() {
        for code in Code::ALL {
            assert_eq!(Code::from_u16(code as u16), code);
            assert!(Code::ALL[..7].contains(&code.class()), "{code:?}");
        }
        assert_eq!(Code::from_u16(999), Code::Internal);
    }
}
