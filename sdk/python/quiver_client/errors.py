"""What a call can fail with; mirrors the Rust SDK's ``ClientError``.

Every exception derives from :class:`ClientError`. :class:`Unavailable` and :class:`Timeout`
are worth retrying (``err.is_retryable``); the others will fail the same way again.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "ClientError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "Unavailable",
    "Timeout",
    "Internal",
    "ConnectError",
    "DecodeError",
    "PermissionDenied",
    "error_from_status",
]


class ClientError(Exception):
    """Base class of every error the client raises."""

    #: Whether the same call may succeed if tried again later (or on another proxy).
    is_retryable: bool = False
    #: The prefix of ``str(err)``, as in the Rust SDK's messages.
    kind: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class InvalidArgument(ClientError):
    """The request is wrong (dimension, types, filter syntax, limits); the message says how."""

    kind = "invalid argument"


class NotFound(ClientError):
    """The collection (or other named thing) does not exist."""

    kind = "not found"


class AlreadyExists(ClientError):
    """A collection of that name exists already."""

    kind = "already exists"


class Unavailable(ClientError):
    """Nothing serves the request right now (no proxy, a node is down or not ready). Retryable."""

    kind = "unavailable"
    is_retryable = True


class Timeout(ClientError):
    """The call did not complete within its deadline. Retryable."""

    kind = "timed out"
    is_retryable = True


class Internal(ClientError):
    """The server failed; its log has the details."""

    kind = "server error"


class PermissionDenied(ClientError):
    """The NATS server refused the call for this connection's principal: its permissions do not
    cover the method (an admin method called as the app) or the cluster. Not retryable."""

    kind = "permission denied"


class ConnectError(ClientError):
    """The NATS server could not be reached."""

    kind = "cannot connect"


class DecodeError(ClientError):
    """A reply was not the message it should have been (version skew or corruption)."""

    kind = "malformed reply"


# Status codes of the `Quiver-Status` reply header (schemas/src/status.rs). 7 (`Stale`: the
# server's cached view was out of date) is retryable like `Unavailable`, as in the Rust SDK.
# 8-11 are finer kinds of the first ones: collection not found and index not found (NotFound),
# collection not loaded (InvalidArgument), the caller's deadline passed (Timeout); 12 is a
# node at one of its limits (Unavailable: back off and retry); 13 a request that no active
# node of the service got (Unavailable: send it again).
_BY_CODE: Dict[int, Type[ClientError]] = {
    1: InvalidArgument,
    2: NotFound,
    3: AlreadyExists,
    4: Unavailable,
    5: Timeout,
    6: Internal,
    7: Unavailable,
    8: NotFound,
    9: NotFound,
    10: InvalidArgument,
    11: Timeout,
    12: Unavailable,
    13: Unavailable,
}


def error_from_status(status: Optional[str], text: str) -> ClientError:
    """The exception for a reply's ``Quiver-Status`` / ``Quiver-Error`` headers."""
    try:
        code = int(status or "6")
    except ValueError:
        code = 6
    return _BY_CODE.get(code, Internal)(text)
