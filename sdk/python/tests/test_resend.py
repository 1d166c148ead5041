"""Calls sent again when their answer does not come: core NATS delivers at most once, and a
request (or its answer) on its way through a nats-server that died is lost without a trace.

Against a real nats-server (no Quiver): a responder on the API subject drops the first request
it gets and answers the next, as a proxy whose server died mid-request would look to a client
connected elsewhere. Reads and keyed inserts are sent again after 2 s of silence under one
request id; inserts whose keys the cluster assigns are not (they have no id to be stored once
under) and time out.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import Any, List

import nats
import numpy as np
import pytest

import quiver_client as quiver
from quiver_client import wire
from quiver_client.aio import HEADER_REQUEST_ID

from .conftest import free_port

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None, reason="needs nats-server on PATH")


@pytest.fixture()
async def nats_url() -> Any:
    port = free_port()
    proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nats-server did not start"
            await asyncio.sleep(0.05)
    yield f"nats://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


async def _responder(url: str, method: str, reply: str, body: dict, seen: List[Any]) -> Any:
    """Subscribes to `method` of cluster `c`; drops the first request, answers later ones."""
    nc = await nats.connect(url)

    async def handle(msg: Any) -> None:
        seen.append((time.monotonic(), (msg.headers or {}).get(HEADER_REQUEST_ID)))
        if len(seen) > 1:
            await msg.respond(wire.encode(reply, body))

    await nc.subscribe(f"quiver.c.api.{method}", cb=handle)
    await nc.flush()
    return nc


async def test_a_read_whose_request_was_lost_is_sent_again(nats_url: str) -> None:
    seen: List[Any] = []
    responder = await _responder(nats_url, "list_collections", "CollectionList", {"names": ["docs"]}, seen)
    async with await quiver.AsyncClient.connect(nats_url, cluster="c", timeout=10.0) as client:
        started = time.monotonic()
        assert await client.list_collections() == ["docs"]
        waited = time.monotonic() - started
    await responder.close()
    assert len(seen) == 2, seen
    assert 1.9 <= waited < 4.0, waited


async def test_a_keyed_insert_is_sent_again_under_one_request_id(nats_url: str) -> None:
    seen: List[Any] = []
    answer = {"pks": [], "timestamp": 1, "count": 2}
    responder = await _responder(nats_url, "insert", "MutationResult", answer, seen)
    rows = quiver.RowBatch(pks=[1, 2], vectors=np.zeros((2, 4), dtype=np.float32))
    async with await quiver.AsyncClient.connect(nats_url, cluster="c", timeout=10.0) as client:
        result = await client.insert("docs", rows)
    await responder.close()
    assert result.count == 2
    assert len(seen) == 2, seen
    ids = {rid for _, rid in seen}
    assert len(ids) == 1 and None not in ids, seen


async def test_an_insert_without_keys_is_not_sent_again(nats_url: str) -> None:
    seen: List[Any] = []
    responder = await _responder(nats_url, "insert", "MutationResult", {"pks": [], "timestamp": 1, "count": 2}, seen)
    rows = quiver.RowBatch(vectors=np.zeros((2, 4), dtype=np.float32))
    async with await quiver.AsyncClient.connect(nats_url, cluster="c", timeout=3.0) as client:
        with pytest.raises(quiver.Timeout):
            await client.insert("docs", rows)
    await responder.close()
    assert len(seen) == 1, seen
