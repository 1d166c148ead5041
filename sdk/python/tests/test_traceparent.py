"""A client's W3C trace context travels with its calls (``with_traceparent``), so that with
tracing on in the cluster the call's spans join the application's trace. Against a real
nats-server (no Quiver): a responder records the headers each call arrives with."""

from __future__ import annotations

import shutil
from typing import Any, List

import nats
import pytest

import quiver_client as quiver
from quiver_client import wire
from quiver_client.aio import HEADER_TRACEPARENT

from .test_resend import nats_url  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None, reason="needs nats-server on PATH")

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_calls_carry_the_clients_traceparent(nats_url: str) -> None:  # noqa: F811
    seen: List[Any] = []
    nc = await nats.connect(nats_url)

    async def handle(msg: Any) -> None:
        seen.append((msg.headers or {}).get(HEADER_TRACEPARENT))
        await msg.respond(wire.encode("CollectionList", {"names": ["docs"]}))

    await nc.subscribe("quiver.c.api.list_collections", cb=handle)
    await nc.flush()
    async with await quiver.AsyncClient.connect(nats_url, cluster="c", timeout=5.0) as client:
        assert await client.list_collections() == ["docs"]
        traced = client.with_traceparent(PARENT)
        assert await traced.list_collections() == ["docs"]
        # The deadline can change without losing the context, and the context can be dropped.
        assert await traced.with_timeout(3.0).list_collections() == ["docs"]
        assert await traced.with_traceparent(None).list_collections() == ["docs"]
    await nc.close()
    assert seen == [None, PARENT, PARENT, None]
