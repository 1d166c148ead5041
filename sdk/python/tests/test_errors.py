"""Bad input and unreachable servers raise the right exception, with a message naming the problem."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Type

import numpy as np
import pytest

import quiver_client as quiver
from quiver_client import Consistency, IndexType, MetricType, schema

from .conftest import Server, free_port, random_vectors, retry


async def raises(cls: Type[quiver.ClientError], call: Callable[[], Awaitable[Any]], *needles: str) -> quiver.ClientError:
    """Asserts that `call` raises `cls` whose message mentions every needle (case-insensitive)."""
    with pytest.raises(cls) as info:
        await call()
    text = info.value.message.lower()
    for n in needles:
        assert n.lower() in text, f"{info.value!r} should mention {n!r}"
    return info.value


async def test_unknown_collection_is_not_found(client: quiver.AsyncClient) -> None:
    v = random_vectors(1, 32, seed=0)
    for call in [
        lambda: client.describe_collection("nope"),
        lambda: client.drop_collection("nope"),
        lambda: client.insert("nope", schema.rows([1], v)),
        lambda: client.search(schema.search("nope", v, 5)),
        lambda: client.get("nope", [1], [], Consistency.STRONG),
        lambda: client.delete("nope", [1]),
        lambda: client.flush("nope"),
        lambda: client.distribution("nope"),
        lambda: client.create_index("nope", schema.index(IndexType.HNSW, MetricType.IP, m=16)),
    ]:
        err = await raises(quiver.NotFound, call, "nope")
        assert not err.is_retryable


async def test_bad_input_is_invalid_argument(client: quiver.AsyncClient) -> None:
    name = "errors"
    await retry("create_collection", lambda: client.create_collection(schema.simple(name, 32)))
    await retry("insert", lambda: client.insert(name, schema.rows(range(10), random_vectors(10, 32, seed=0))))

    # Wrong dimension, insert and search: the message names both dimensions.
    await raises(quiver.InvalidArgument, lambda: client.insert(name, schema.rows([1], np.ones((1, 16)))), "dimension", "32", "16")
    await raises(quiver.InvalidArgument, lambda: client.search(schema.search(name, np.ones(16), 5)), "dimension", "32", "16")
    # NaN, top_k, empty batch, wrong key type.
    bad = np.ones((1, 32), dtype=np.float32)
    bad[0, 7] = np.nan
    await raises(quiver.InvalidArgument, lambda: client.insert(name, schema.rows([1], bad)), "NaN", "element 7")
    await raises(quiver.InvalidArgument, lambda: client.search(schema.search(name, np.ones(32), 0)), "top_k")
    await raises(quiver.InvalidArgument, lambda: client.insert(name, schema.rows([], np.zeros((0, 32)))), "empty batch")
    await raises(quiver.InvalidArgument, lambda: client.get(name, ["x"]), "primary key")
    await raises(quiver.InvalidArgument, lambda: client.delete(name, []), "primary key")
    # A field the schema does not have (dynamic fields off).
    strict = schema.simple("errors_strict", 32)
    strict.enable_dynamic_field = False
    await client.create_collection(strict)
    rows = schema.rows([1], np.ones((1, 32)), fields={"color": ["red"]})
    await raises(quiver.InvalidArgument, lambda: client.insert("errors_strict", rows), "color", "not in the schema")
    # Same name, other schema.
    await raises(quiver.AlreadyExists, lambda: client.create_collection(schema.simple(name, 64)), name)
    # Bytes that are no message at all.
    await raises(quiver.InvalidArgument, lambda: client.call_raw("search", b"garbage"), "malformed")
    # A request over the NATS server's max_payload is refused before it is sent.
    too_big = b"\0" * (client.max_payload + 8)
    await raises(quiver.InvalidArgument, lambda: client.call_raw("insert", too_big), "max_payload")
    for n in (name, "errors_strict"):
        await client.drop_collection(n)


async def test_transport_errors(server: Server, client: quiver.AsyncClient) -> None:
    # Another cluster's subjects: the admin principal's permissions cover its own cluster only,
    # so the NATS server refuses the request with an error on the connection, not a reply:
    # PermissionDenied at once, naming the subject, not retryable. (Without security the same
    # call finds no proxy of that cluster: Unavailable, naming the cluster.)
    async with await quiver.AsyncClient.connect(
        server.url, cluster="no_such_cluster", timeout=10.0, credentials_file=server.credentials_file
    ) as other:
        started = time.monotonic()
        err = await raises(quiver.PermissionDenied, other.list_collections, "quiver.no_such_cluster.api")
        assert not err.is_retryable and time.monotonic() - started < 5.0, err
        # The connection goes on: the next refusal is told as well.
        await raises(quiver.PermissionDenied, other.with_timeout(5.0).status, "permissions violation")
    # A deadline too short to be met: Timeout, retryable.
    err = await raises(quiver.Timeout, lambda: client.with_timeout(1e-6).status())
    assert err.is_retryable
    # Nothing listens: ConnectError naming the address.
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(quiver.ConnectError) as info:
        await quiver.AsyncClient.connect(url, connect_timeout=1.0)
    assert url in str(info.value) and not info.value.is_retryable
