"""A batch bigger than the NATS server's max_payload is split into several inserts."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

import quiver_client as quiver
from quiver_client import Consistency, schema

from .conftest import random_vectors, retry

DIM = 512


async def test_big_insert_is_split_under_max_payload(client: quiver.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "big"
    n = 12_000  # 24.6 MB of vectors: three times the embedded server's 8 MB max_payload
    assert n * DIM * 4 > 2 * client.max_payload
    await retry("create_collection", lambda: client.create_collection(schema.simple(name, DIM)))
    base = random_vectors(n, DIM, seed=5)

    sizes: List[int] = []
    send = client._insert_one

    async def spy(method: str, collection: str, rows: quiver.RowBatch, partition: str) -> quiver.MutationResult:
        sizes.append(rows.num_rows)
        return await send(method, collection, rows, partition)

    monkeypatch.setattr(client, "_insert_one", spy)
    res = await client.insert(name, schema.rows(range(n), base))
    monkeypatch.undo()

    assert len(sizes) >= 3 and sum(sizes) == n, sizes
    assert max(sizes) * DIM * 4 < client.max_payload
    assert res.pks == list(range(n))
    # Rows at the seams of the split came through intact.
    seams = sorted({0, n - 1, *np.cumsum(sizes)[:-1].tolist(), *(np.cumsum(sizes)[:-1] - 1).tolist()})
    got = await client.get(name, seams, [], Consistency.STRONG)
    assert got.rows.pks == seams
    assert np.array_equal(got.rows.vectors, base[seams])
    await client.drop_collection(name)
