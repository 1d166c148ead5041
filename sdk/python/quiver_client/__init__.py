"""Python client for Quiver over NATS.

Talks only to the public API subjects (``quiver.<cluster>.api.<method>``), which every proxy
serves in one queue group, so a client needs no load balancer: NATS picks a proxy per request.

Layout:

* :mod:`.aio` — :class:`AsyncClient`, the asyncio client (nats-py); every operation.
* :mod:`.sync` — :class:`Client`, the same operations for synchronous code (its own loop thread).
* :mod:`.types` — the plain types (dataclasses and enums, mirroring ``schemas/src/types.rs``).
* :mod:`.schema` — helpers: ``simple(name, dim)``, ``field``, ``index``, ``rows``, ``search``, ``query``.
* :mod:`.errors` — :class:`ClientError` and its subclasses; ``err.is_retryable``.
* :mod:`.wire` — Cap'n Proto encoding (``quiver.capnp``, a copy of ``schemas/quiver.capnp``).

>>> import quiver_client as quiver
>>> client = quiver.Client.connect("nats://127.0.0.1:4222", cluster="quiver")  # doctest: +SKIP
>>> client.create_collection(quiver.schema.simple("docs", 384))                # doctest: +SKIP
"""

from . import schema
from .aio import AsyncClient
from .errors import (
    AlreadyExists,
    ClientError,
    ConnectError,
    DecodeError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Timeout,
    Unavailable,
)
from .sync import Client
from .types import *  # noqa: F401,F403
from .types import __all__ as _types_all

__version__ = "0.1.0"

__all__ = [
    "schema",
    "AsyncClient",
    "Client",
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
    *_types_all,
]
