"""Every index type x metric: create_index / describe_index / list_indexes / drop_index and
recall@10 against numpy brute force."""

import pytest
from pymilvus import DataType, MilvusClient, MilvusException

from pmutil import STRONG, brute_force, recall, vectors

DIM = 64
N = 2000
NQ = 20

INDEXES = {
    # type: (build params, search params, minimum recall@10)
    "FLAT": ({}, {}, 0.99),
    "IVF_FLAT": ({"nlist": 16}, {"nprobe": 16}, 0.99),  # nprobe == nlist: exact
    "IVF_SQ8": ({"nlist": 16}, {"nprobe": 16}, 0.85),
    "IVF_PQ": ({"nlist": 16, "m": 16, "nbits": 8}, {"nprobe": 16}, 0.3),
    "HNSW": ({"M": 16, "efConstruction": 128}, {"ef": 64}, 0.9),
    "AUTOINDEX": ({}, {}, 0.9),
}


def make_collection(client, name, index_type=None, metric="L2", params=None):
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("age", DataType.INT64)
    ip = None
    if index_type:
        ip = MilvusClient.prepare_index_params()
        ip.add_index(field_name="vector", index_type=index_type, metric_type=metric, params=params or {})
    client.create_collection(name, schema=s, index_params=ip, **STRONG)


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
@pytest.mark.parametrize("index_type", list(INDEXES))
def test_index_recall(client, name, index_type, metric):
    build, search, min_recall = INDEXES[index_type]
    make_collection(client, name, index_type, metric, build)
    base = vectors(N, DIM, seed=21)
    res = client.insert(name, [{"id": i, "vector": base[i].tolist(), "age": i % 50} for i in range(N)])
    assert res["insert_count"] == N
    client.flush(name)  # sealed segments get the index

    desc = client.describe_index(name, index_name="vector")
    assert desc["index_type"] == index_type and desc["metric_type"] == metric, desc
    assert desc["field_name"] == "vector"

    q = vectors(NQ, DIM, seed=22)
    sp = {"metric_type": metric, "params": search}
    out = client.search(name, data=q.tolist(), limit=10, search_params=sp, **STRONG)
    assert len(out) == NQ and all(len(h) == 10 for h in out)
    r = recall(out, brute_force(base, q, 10, metric))
    assert r >= min_recall, f"{index_type}/{metric}: recall@10 {r:.3f} < {min_recall}"
    d = [h["distance"] for h in out[0]]
    assert d == (sorted(d) if metric == "L2" else sorted(d, reverse=True))
    if metric == "COSINE":
        assert all(-1.0001 <= x <= 1.0001 for x in d)


def test_index_lifecycle(client, name):
    make_collection(client, name)
    assert client.list_indexes(name) == []
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64})
    client.create_index(name, ip)
    assert client.list_indexes(name) == ["vector"]
    assert client.list_indexes(name, field_name="vector") == ["vector"]
    assert client.list_indexes(name, field_name="age") == []
    d = client.describe_index(name, "vector")
    assert d["index_type"] == "HNSW" and d["metric_type"] == "IP"
    assert int(d["M"]) == 8 and int(d["efConstruction"]) == 64, d
    assert d["field_name"] == "vector" and d["index_name"] == "vector"
    assert d["state"] == "Finished"
    assert client.describe_index(name, "nope") is None

    client.load_collection(name)
    with pytest.raises(MilvusException) as e:
        client.drop_index(name, "vector")  # Milvus: release first
    assert "release" in str(e.value).lower() or "loaded" in str(e.value).lower()
    client.release_collection(name)
    client.drop_index(name, "vector")
    assert client.list_indexes(name) == []

    # a named index
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="IVF_FLAT", index_name="vec_idx", metric_type="L2", params={"nlist": 8})
    client.create_index(name, ip)
    assert client.list_indexes(name) == ["vec_idx"]
    d = client.describe_index(name, "vec_idx")
    assert d["index_type"] == "IVF_FLAT" and int(d["nlist"]) == 8 and d["field_name"] == "vector"


def test_load_without_index_fails(client, name):
    make_collection(client, name)
    with pytest.raises(MilvusException) as e:
        client.load_collection(name)
    assert "index" in str(e.value).lower()
    client.list_collections()
