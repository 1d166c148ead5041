"""insert / upsert / delete / get / query / search through MilvusClient."""

import threading
import time

import pytest
from pymilvus import MilvusException

from pmutil import STRONG, brute_force, rows, vectors

DIM = 64
N = 2000


@pytest.fixture
def filled(client, name):
    client.create_collection(name, dimension=DIM, metric_type="L2", **STRONG)
    data = rows(N, DIM, seed=11)
    for i in range(0, N, 500):
        res = client.insert(name, data[i : i + 500])
        assert res["insert_count"] == 500
        assert list(res["ids"]) == list(range(i, i + 500))
    return name, data


def test_insert_single_dict_and_empty(client, name):
    client.create_collection(name, dimension=8, **STRONG)
    res = client.insert(name, {"id": 1, "vector": [0.1] * 8, "x": "y"})
    assert res["insert_count"] == 1 and list(res["ids"]) == [1]
    assert client.insert(name, []) == {"insert_count": 0, "ids": []}
    assert client.get(name, ids=1)[0]["x"] == "y"


def test_upsert(client, filled):
    name, data = filled
    new = [dict(data[i], age=1000 + i, color="purple") for i in range(10)]
    res = client.upsert(name, new)
    assert res["upsert_count"] == 10
    got = client.query(name, filter="id < 10", output_fields=["age", "color"], **STRONG)
    assert sorted((g["id"], g["age"], g["color"]) for g in got) == [(i, 1000 + i, "purple") for i in range(10)]
    cnt = client.query(name, filter="", output_fields=["count(*)"], **STRONG)
    assert cnt[0]["count(*)"] == N
    # upsert of a new key inserts it
    res = client.upsert(name, [dict(data[0], id=N + 5)])
    assert res["upsert_count"] == 1
    assert client.query(name, filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"] == N + 1


def test_an_upsert_is_seen_whole_by_concurrent_readers(client, name):
    """Each upsert replaces every row while a reader counts them: the count never drops (an
    upsert's delete and insert are one log batch, applied as one step by the query node; before,
    about 4 % of such reads counted 0)."""
    client.create_collection(name, dimension=8, consistency_level="Eventually")
    n = 200
    client.insert(name, rows(n, 8, seed=1))
    # The reads below are Eventually consistent: first wait until the rows are served (a shard
    # leader assigned moments ago may still be reading the log).
    assert client.query(name, filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"] == n
    counts, stop = [], threading.Event()

    def count():
        # The suite's client (gRPC calls from two threads share its channel); another
        # MilvusClient for the same server would share and close its connection.
        while not stop.is_set():
            got = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Eventually")
            counts.append(got[0]["count(*)"])

    t = threading.Thread(target=count)
    t.start()
    upserts, end = 0, time.time() + 5
    try:
        while time.time() < end:
            client.upsert(name, rows(n, 8, seed=upserts + 2))
            upserts += 1
    finally:
        stop.set()
        t.join()
    wrong = [c for c in counts if c != n]
    assert upserts > 50 and len(counts) > 100, (upserts, len(counts))
    assert not wrong, f"{len(wrong)} of {len(counts)} reads during {upserts} upserts counted {sorted(set(wrong))}"


def test_delete_by_ids_and_filter(client, filled):
    name, data = filled
    res = client.delete(name, ids=[0, 1, 2])
    assert isinstance(res, dict) and res["delete_count"] == 3, res
    assert client.get(name, ids=[0, 1, 2, 3])[0]["id"] == 3
    res = client.delete(name, filter="id in [10, 11]")
    assert res["delete_count"] == 2, res
    res = client.delete(name, filter="age == 49")  # ids 49, 99, ..., 1999
    assert res["delete_count"] == 40, res
    cnt = client.query(name, filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"]
    assert cnt == N - 45
    assert client.query(name, filter="age == 49", **STRONG) == []
    hits = client.search(name, data=[data[1]["vector"]], limit=5, **STRONG)
    assert 1 not in {h["id"] for h in hits[0]}


def test_search_exact_multi_query_output_fields(client, filled):
    name, data = filled
    base = [d["vector"] for d in data]
    q = vectors(5, DIM, seed=99).tolist()
    res = client.search(name, data=q, limit=10, output_fields=["age", "color"], **STRONG)
    assert len(res) == 5
    truth = brute_force(base, q, 10, "L2")
    for hits, t in zip(res, truth):
        assert len(hits) == 10
        ids = [h["id"] for h in hits]
        assert len(set(ids) & set(int(x) for x in t)) >= 9  # AUTOINDEX: approximate
        d = [h["distance"] for h in hits]
        assert d == sorted(d)  # L2: ascending squared distances
        for h in hits:
            assert h["entity"]["age"] == data[h["id"]]["age"]
            assert h["entity"]["color"] == data[h["id"]]["color"]
    # distances are squared L2
    h = res[0][0]
    import numpy as np

    exp = float(((np.array(q[0]) - np.array(base[h["id"]])) ** 2).sum())
    assert h["distance"] == pytest.approx(exp, rel=1e-3)


def test_search_output_star_and_filter(client, filled):
    name, data = filled
    q = data[123]["vector"]
    res = client.search(name, data=[q], limit=5, filter='color == "red" and age < 30', output_fields=["*"], **STRONG)
    assert len(res[0]) == 5
    for h in res[0]:
        r = data[h["id"]]
        assert r["color"] == "red" and r["age"] < 30
        e = h["entity"]
        assert e["color"] == r["color"] and e["k"] == r["k"] and e["info"] == r["info"]
        assert e["vector"] == pytest.approx(r["vector"], abs=1e-5)
    # default: no output fields -> entity carries nothing but (maybe) nothing at all
    res = client.search(name, data=[q], limit=3, **STRONG)
    assert res[0][0]["id"] == 123
    assert set(res[0][0]["entity"].keys()) <= {"id"}


def test_search_limit(client, filled):
    name, data = filled
    for k in (1, 7, 100):
        res = client.search(name, data=[data[0]["vector"]], limit=k, **STRONG)
        assert len(res[0]) == k
    res = client.search(name, data=[data[0]["vector"]], limit=5, filter="id in [1, 2, 3]", **STRONG)
    assert sorted(h["id"] for h in res[0]) == [1, 2, 3]


def test_query_filter_limit_offset_output(client, filled):
    name, data = filled
    got = client.query(name, filter="age == 3", output_fields=["age", "name"], **STRONG)
    assert sorted(g["id"] for g in got) == [i for i in range(N) if i % 50 == 3]
    assert all(set(g) == {"id", "age", "name"} for g in got)

    page = client.query(name, filter="id >= 100", limit=10, offset=5, output_fields=["id"], **STRONG)
    assert len(page) == 10
    assert all(g["id"] >= 100 for g in page)

    got = client.query(name, filter="id in [5, 6]", output_fields=["*"], **STRONG)
    assert len(got) == 2
    r = {g["id"]: g for g in got}[5]
    for key in ("age", "score", "name", "flag", "info", "color", "k", "vector"):
        assert key in r, r
    assert r["info"] == data[5]["info"] and r["color"] == data[5]["color"]

    # only the pk by default
    got = client.query(name, filter="id == 8", **STRONG)
    assert got[0]["id"] == 8

    assert client.query(name, filter="", output_fields=["count(*)"], **STRONG) == [{"count(*)": N}]
    assert client.query(name, filter="age < 10", output_fields=["count(*)"], **STRONG)[0]["count(*)"] == 400

    assert len(client.query(name, filter="", limit=7, **STRONG)) == 7


def test_get_by_ids(client, filled):
    name, data = filled
    got = client.get(name, ids=[3, 1, 2000000])
    assert sorted(g["id"] for g in got) == [1, 3]
    g = [x for x in got if x["id"] == 1][0]
    assert g["color"] == data[1]["color"] and g["vector"] == pytest.approx(data[1]["vector"], abs=1e-6)
    got = client.get(name, ids=4, output_fields=["age"])
    assert got == [{"id": 4, "age": 4}] or (len(got) == 1 and got[0]["age"] == 4)


def test_query_ids_param(client, filled):
    name, data = filled
    got = client.query(name, ids=[10, 20], output_fields=["age"])
    assert sorted((g["id"], g["age"]) for g in got) == [(10, 10), (20, 20)]


def test_empty_filter_query_without_limit_is_an_error(client, filled):
    name, _ = filled
    with pytest.raises(MilvusException) as e:
        client.query(name, filter="", output_fields=["id"], **STRONG)
    assert "limit" in str(e.value).lower()


def test_hybrid_search_rrf_and_weighted(client, filled):
    from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

    name, data = filled
    q = vectors(2, DIM, seed=31).tolist()
    plain = client.search(name, data=q, limit=10, **STRONG)
    reqs = [
        AnnSearchRequest(data=q, anns_field="vector", param={}, limit=10),
        AnnSearchRequest(data=q, anns_field="vector", param={}, limit=10, expr="age < 25"),
    ]
    for ranker in (RRFRanker(60), WeightedRanker(0.5, 0.5)):
        out = client.hybrid_search(name, reqs, ranker=ranker, limit=5, output_fields=["age"], **STRONG)
        assert len(out) == 2 and all(len(h) == 5 for h in out), out
        for qi, hits in enumerate(out):
            # the best plain hit that also passes the filter is in both lists: it must rank first
            both = [h["id"] for h in plain[qi] if data[h["id"]]["age"] < 25]
            if both:
                assert hits[0]["id"] == both[0], (ranker, hits, both)
            scores = [h["distance"] for h in hits]
            assert scores == sorted(scores, reverse=True)
            assert all("age" in h["entity"] for h in hits)
