"""The synchronous client: same operations, its own loop thread."""

from __future__ import annotations

import threading
import time
from typing import Callable, List, TypeVar

import pytest

import quiver_client as quiver
from quiver_client import Consistency, IndexType, MetricType, SegmentState, schema

from .conftest import Server, exact_top_k, random_vectors

T = TypeVar("T")


def retry(call: Callable[[], T], limit: float = 20.0) -> T:
    """Calls until it succeeds, retrying retryable errors for at most `limit` seconds."""
    start = time.monotonic()
    while True:
        try:
            return call()
        except quiver.ClientError as e:
            if not e.is_retryable or time.monotonic() - start > limit:
                raise
        time.sleep(0.2)


def test_sync_client(server: Server) -> None:
    name = "sync"
    base = random_vectors(500, 16, seed=6)
    with quiver.Client.connect(
        server.url, cluster=server.cluster, timeout=20.0, credentials_file=server.credentials_file
    ) as client:
        assert client.cluster == server.cluster and client.max_payload > 0
        retry(lambda: client.create_collection(schema.simple(name, 16)))
        assert name in client.list_collections()
        assert client.insert(name, schema.rows(range(500), base)).pks == list(range(500))
        assert client.get(name, [3, 4], [], Consistency.STRONG).rows.pks == [3, 4]

        # Calls from several threads run concurrently on the client's loop.
        errors: List[BaseException] = []

        def search(i: int) -> None:
            try:
                hits = client.search(schema.search(name, base[i], 1, consistency=Consistency.STRONG))
                assert hits[0].pks == [i]
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=search, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

        assert retry(lambda: client.flush(name)).segments  # the new shard may not be consumed yet
        client.create_index(name, schema.index(IndexType.IVF_FLAT, MetricType.L2, nlist=8))
        for _ in range(300):
            d = client.distribution(name)
            if sum(s.segment.rows for s in d.segments) == 500 and all(s.segment.state == SegmentState.INDEXED for s in d.segments):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"not indexed: {client.distribution(name)}")
        res = client.search(schema.search(name, base[:20], 5, nprobe=8, consistency=Consistency.STRONG))
        truth = exact_top_k(base, base[:20], 5)
        assert [h.pks for h in res] == truth.tolist()

        assert client.delete(name, [0]).pks == [0]
        assert client.get(name, [0, 1], [], Consistency.STRONG).rows.pks == [1]
        assert {n.role for n in client.status().nodes} == set(quiver.Role)
        with pytest.raises(quiver.NotFound):
            client.with_timeout(5.0).describe_collection("nope")
        client.drop_collection(name)
    client.close()  # a second close is a no-op
    with pytest.raises(quiver.ConnectError, match="closed"):
        client.list_collections()
    with pytest.raises(quiver.ConnectError):
        quiver.Client.connect("nats://127.0.0.1:1", connect_timeout=0.5)
