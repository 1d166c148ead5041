"""Every operation end to end against a real standalone server (async client)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

import quiver_client as quiver
from quiver_client import Consistency, DataType, IndexType, MetricType, SegmentState, schema

from .conftest import exact_top_k, random_vectors, retry, wait_segments

DIM = 32
N = 2_000
STRONG = Consistency.STRONG


def products(name: str) -> quiver.CollectionSchema:
    """`id`, `vector` of 32, `title` VarChar, `price` Double, dynamic fields on."""
    return schema.simple(
        name,
        DIM,
        schema.field("title", DataType.VARCHAR, max_length=32),
        schema.field("price", DataType.DOUBLE),
    )


def product_rows(ids: Sequence[int], vectors: np.ndarray) -> quiver.RowBatch:
    return schema.rows(
        ids,
        vectors,
        fields={"title": [f"item-{i}" for i in ids], "price": [i * 2 for i in ids]},  # ints coerced to Double
        dynamic=[{"tag": f"t{i % 7}", "n": i} for i in ids],
    )


async def test_every_operation(client: quiver.AsyncClient) -> None:
    name = "e2e"
    base = random_vectors(N, DIM, seed=1)
    await retry("create_collection", lambda: client.create_collection(products(name)))
    assert name in await client.list_collections()
    desc = await client.describe_collection(name)
    assert desc.info.schema.name == name and desc.info.dim == DIM and desc.info.index is None
    assert [f.name for f in desc.info.schema.fields] == ["id", "vector", "title", "price"]

    # Insert 2000 rows in two calls.
    for start in (0, N // 2):
        ids = range(start, start + N // 2)
        ack = await retry("insert", lambda: client.insert(name, product_rows(ids, base[ids.start : ids.stop])))
        assert ack.pks == list(ids) and ack.timestamp > 0

    # Get from growing data: request order, unknown keys skipped, vectors and fields back.
    got = await client.get(name, [1999, 0, 7, 123_456], ["title", "price", "tag", "n"], STRONG)
    assert got.rows.pks == [1999, 0, 7]
    assert np.array_equal(got.rows.vectors, base[[1999, 0, 7]])
    assert got.rows.column("title") == ["item-1999", "item-0", "item-7"]
    assert got.rows.column("price") == [3998.0, 0.0, 14.0]
    assert got.rows.column("tag") == ["t4", "t0", "t0"]
    assert got.rows.column("n") == [1999, 0, 7]
    assert len(got.seqs) == 3

    # Flush seals everything; the segment gets served.
    flushed = await retry("flush", lambda: client.flush(name))
    assert flushed.segments
    await wait_segments(client, name, N, SegmentState.FLUSHED)

    # Index it.
    params = schema.index(IndexType.HNSW, MetricType.L2, m=16, ef_construction=100)
    await client.create_index(name, params)
    dist = await wait_segments(client, name, N, SegmentState.INDEXED)
    assert dist.collection.index == params
    assert all(p.nodes for p in dist.segments) and dist.shards
    assert (await client.describe_collection(name)).info.index == params

    # Search: recall against brute force; output fields per hit.
    queries = base[:50] + random_vectors(50, DIM, seed=2) * 0.05
    req = schema.search(name, queries, 10, ef=64, output_fields=["title", "tag"], consistency=STRONG)
    res = await client.search(req)
    assert len(res) == 50
    truth = exact_top_k(base, queries, 10)
    found = sum(len(set(h.pks) & set(t.tolist())) for h, t in zip(res, truth))
    recall = found / (50 * 10)
    assert recall >= 0.9, f"recall@10 {recall:.3f}"
    for q, hits in enumerate(res):
        assert len(hits) == 10
        assert hits.scores == sorted(hits.scores), "L2 distances ascend"
        assert hits.column("title") == [f"item-{pk}" for pk in hits.pks]
        assert hits.column("tag") == [f"t{int(pk) % 7}" for pk in hits.pks]
    assert sum(1 for q, h in enumerate(res) if h.pks[0] == q) >= 45

    # Delete: gone from get and search.
    deleted = list(range(10))
    res_del = await client.delete(name, deleted)
    assert res_del.pks == deleted
    assert (await client.get(name, deleted + [10], [], STRONG)).rows.pks == [10]
    after = await client.search(schema.search(name, base[:10], 20, ef=64, consistency=STRONG))
    for hits in after:
        assert not set(hits.pks) & set(deleted), hits.pks

    # Upsert: the keys' rows replaced (vectors and fields), the count unchanged, a new key added.
    moved = random_vectors(3, DIM, seed=9)
    ack = await client.upsert(name, product_rows([10, 11, N + 1], moved))
    assert ack.pks == [10, 11, N + 1]
    got = await client.get(name, [10, 11, N + 1], ["title"], STRONG)
    assert got.rows.pks == [10, 11, N + 1] and np.array_equal(got.rows.vectors, moved)
    count = await client.query(schema.query(name, "", ["count(*)"], consistency=STRONG))
    assert count.count == N - len(deleted) + 1, count

    # Cluster views.
    status = await client.status()
    assert {n.role for n in status.nodes} == set(quiver.Role)
    assert all(n.healthy for n in status.nodes)
    assert all(n.cpu_cores > 0 for n in status.nodes), status.nodes
    assert all(n.faiss_simd in ("generic", "avx2", "avx512") for n in status.nodes), status.nodes
    assert {r.role for r in status.roles} == set(quiver.Role) - {quiver.Role.COORDINATOR}, status.roles

    # Scaling: the coordinator is refused; a standalone has no host agent, so a count is
    # accepted with a warning saying nothing can be started.
    with pytest.raises(quiver.InvalidArgument) as e:
        await client.scale("coordinator", 2)
    assert "S0.2" in e.value.message
    reply = await client.scale("querynode", 1)
    assert (reply.role, reply.replicas) == (quiver.Role.QUERY_NODE, 1)
    assert "no host agent" in reply.warning and "one querynode" in reply.warning, reply.warning
    roles = {r.role: r for r in await client.scaling()}
    assert roles[quiver.Role.QUERY_NODE].desired == 1 and roles[quiver.Role.QUERY_NODE].serving == 1, roles
    assert any(e["action"] == "requested" for e in (await client.events())["scaling"])

    # Drop.
    await client.drop_collection(name)
    assert name not in await client.list_collections()
    try:
        await client.describe_collection(name)
        raise AssertionError("describe after drop should fail")
    except quiver.NotFound as e:
        assert name in e.message


async def test_filters_query_and_delete_where(client: quiver.AsyncClient) -> None:
    """Milvus filter expressions: query (rows, `*`, `count(*)`, limit/offset), search with a
    filter, delete_where, and a bad filter. Needs a server with `api.query` (commit 4170b67's
    server side)."""
    name = "filters"
    await retry("create_collection", lambda: client.create_collection(products(name)))
    await retry("insert", lambda: client.insert(name, product_rows(range(100), random_vectors(100, DIM, seed=3))))

    res = await client.query(quiver.Query(name, "id < 10", ["*"], consistency=STRONG))
    assert res.rows.pks == list(range(10))
    assert res.rows.column("title") == [f"item-{i}" for i in range(10)]
    assert res.rows.column("price") == [float(i * 2) for i in range(10)]

    count = await client.query(schema.query(name, "price >= 100", ["count(*)"], consistency=STRONG))
    assert count.count == 50

    page = await client.query(schema.query(name, "", ["title"], limit=5, offset=10, consistency=STRONG))
    assert page.rows.pks == [10, 11, 12, 13, 14]

    q = random_vectors(3, DIM, seed=4)
    hits = await client.search(schema.search(name, q, 10, filter="id >= 50 and price < 180", consistency=STRONG))
    for h in hits:
        assert len(h) == 10 and all(50 <= int(pk) < 90 for pk in h.pks), h.pks

    for bad in ["id <", "nosuch > 3 and", "title = = 'x'"]:
        for call in (
            lambda: client.query(quiver.Query(name, bad, ["*"], limit=10)),
            lambda: client.search(schema.search(name, q, 5, filter=bad)),
            lambda: client.delete_where(name, bad),
        ):
            try:
                await call()
                raise AssertionError(f"filter {bad!r} should be rejected")
            except quiver.InvalidArgument:
                pass

    gone = await client.delete_where(name, "id < 5 or title == 'item-42'")
    # As in Milvus, a delete by filter counts the rows; it does not list their keys.
    assert (gone.count, gone.pks) == (6, [])
    left = await client.query(schema.query(name, "", ["count(*)"], consistency=STRONG))
    assert left.count == 94
    await client.drop_collection(name)


async def test_search_over_indexed_and_growing_rows_uses_the_index_metric(client: quiver.AsyncClient) -> None:
    name = "mixed"
    base = random_vectors(400, 8, seed=7) * 3
    await retry("create_collection", lambda: client.create_collection(schema.simple(name, 8)))
    await retry("insert", lambda: client.insert(name, schema.rows(range(200), base[:200])))
    await retry("flush", lambda: client.flush(name))
    await client.create_index(name, schema.index(IndexType.FLAT, MetricType.L2))
    await wait_segments(client, name, 200, SegmentState.INDEXED)
    await client.insert(name, schema.rows(range(200, 400), base[200:]))  # growing
    try:
        queries = base[[0, 300]]
        res = await client.search(schema.search(name, queries, 5, consistency=STRONG))
        truth = exact_top_k(base, queries, 5)
        assert [h.pks for h in res] == truth.tolist(), [(h.pks, h.scores) for h in res]
    finally:
        await client.drop_collection(name)


async def test_release_and_load(client: quiver.AsyncClient) -> None:
    name = "py_release_load"
    await client.create_collection(schema.simple(name, 8))
    try:
        rows = schema.rows(range(10), np.eye(10, 8, dtype=np.float32))
        await client.insert(name, rows)
        await client.release_collection(name)
        assert (await client.distribution(name)).released
        with pytest.raises(quiver.InvalidArgument) as e:
            await client.search(schema.search(name, np.ones((1, 8), dtype=np.float32), 3))
        assert "not loaded" in e.value.message
        await client.insert(name, schema.rows(range(10, 12), np.ones((2, 8), dtype=np.float32)))
        with pytest.raises(quiver.InvalidArgument) as e:
            await client.load_collection(name, replicas=2)
        assert "needs at least 2 query nodes" in e.value.message, e.value.message
        await client.load_collection(name)
        hits = await client.search(
            schema.search(name, np.ones((1, 8), dtype=np.float32), 3, consistency=quiver.Consistency.STRONG)
        )
        assert len(hits.results[0].pks) == 3
        d = await client.distribution(name)
        assert [len(g.nodes) for g in d.replicas] == [1] and d.shards[0].replica == 0, d
    finally:
        await client.drop_collection(name)


async def test_partitions(client: quiver.AsyncClient) -> None:
    name = "py_partitions"
    await client.create_collection(schema.simple(name, 8))
    try:
        await client.create_partition(name, "a")
        assert await client.list_partitions(name) == ["_default", "a"]
        await client.insert(name, schema.rows(range(5), np.eye(5, 8, dtype=np.float32)), partition="a")
        await client.insert(name, schema.rows(range(5, 8), np.eye(3, 8, k=5, dtype=np.float32)))

        async def count(partitions: Sequence[str] = ()) -> int:
            q = schema.query(name, output_fields=["count(*)"], consistency=STRONG, partitions=partitions)
            return (await client.query(q)).rows.columns[0].values[0]

        assert (await count(), await count(["a"]), await count(["_default"])) == (8, 5, 3)
        query = np.eye(1, 8, k=6, dtype=np.float32)
        hits = await client.search(schema.search(name, query, 3, consistency=STRONG, partitions=["a"]))
        assert 6 not in hits.results[0].pks and all(pk < 5 for pk in hits.results[0].pks)
        res = await client.delete_where(name, "id >= 0", partition="a")
        assert res.count == 5 and await count() == 3
        await client.release_partitions(name, ["a"])
        with pytest.raises(quiver.InvalidArgument) as e:
            await client.search(schema.search(name, query, 3, partitions=["a"]))
        assert "not loaded" in e.value.message
        await client.drop_partition(name, "a")
        assert await client.list_partitions(name) == ["_default"]
        with pytest.raises(quiver.InvalidArgument) as e:
            await client.insert(name, schema.rows([9], np.ones((1, 8), dtype=np.float32)), partition="a")
        assert "partition not found" in e.value.message
    finally:
        await client.drop_collection(name)
