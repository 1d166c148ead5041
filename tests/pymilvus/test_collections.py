"""Collections: quick setup, schema-based creation, describe/list/has/drop, load state, flush,
statistics, replicas."""

import time

import pytest
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.types import LoadState

from pmutil import PYMILVUS, STRONG, rows, vectors

DIM = 32


def full_schema(pk_type=DataType.INT64, dynamic=True, dim=DIM):
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=dynamic)
    if pk_type == DataType.VARCHAR:
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    else:
        s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("flag", DataType.BOOL)
    s.add_field("age", DataType.INT64)
    s.add_field("score", DataType.FLOAT)
    s.add_field("ratio", DataType.DOUBLE)
    s.add_field("name", DataType.VARCHAR, max_length=128)
    s.add_field("info", DataType.JSON)
    return s


def hnsw_index(metric="L2"):
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="HNSW", metric_type=metric, params={"M": 16, "efConstruction": 64})
    return ip


def fields_by_name(desc):
    return {f["name"]: f for f in desc["fields"]}


def test_quick_setup_insert_search_query(client, name):
    client.create_collection(name, dimension=DIM, metric_type="L2", auto_id=True, **STRONG)
    assert client.has_collection(name)
    assert name in client.list_collections()
    assert client.get_load_state(name)["state"] == LoadState.Loaded

    desc = client.describe_collection(name)
    f = fields_by_name(desc)
    assert set(f) == {"id", "vector"}, desc["fields"]
    assert f["id"]["is_primary"] and f["id"]["type"] == DataType.INT64 and f["id"].get("auto_id")
    assert f["vector"]["type"] == DataType.FLOAT_VECTOR and int(f["vector"]["params"]["dim"]) == DIM
    assert desc["auto_id"] is True
    assert desc["enable_dynamic_field"] is True
    assert desc["collection_name"] == name

    data = rows(200, DIM, seed=1, with_id=False)  # extra keys go to the dynamic field
    res = client.insert(name, data)
    assert res["insert_count"] == 200
    ids = list(res["ids"])
    assert len(ids) == 200 and len(set(ids)) == 200 and all(isinstance(i, int) for i in ids)

    hits = client.search(name, data=[data[5]["vector"]], limit=3, output_fields=["color", "k"], **STRONG)
    assert len(hits) == 1 and len(hits[0]) == 3
    top = hits[0][0]
    assert top["id"] == ids[5]
    assert top["distance"] == pytest.approx(0.0, abs=1e-3)
    assert top["entity"]["color"] == data[5]["color"] and top["entity"]["k"] == data[5]["k"]

    got = client.query(name, filter=f"id == {ids[7]}", output_fields=["*"], **STRONG)
    assert len(got) == 1
    assert got[0]["id"] == ids[7] and got[0]["color"] == data[7]["color"] and got[0]["age"] == data[7]["age"]
    assert got[0]["vector"] == pytest.approx(data[7]["vector"], abs=1e-6)
    assert "$meta" not in got[0]


@pytest.mark.parametrize("pk", ["int64", "varchar"])
def test_schema_creation_and_describe(client, name, pk):
    pk_type = DataType.VARCHAR if pk == "varchar" else DataType.INT64
    client.create_collection(name, schema=full_schema(pk_type), index_params=hnsw_index(), **STRONG)
    assert client.get_load_state(name)["state"] == LoadState.Loaded

    desc = client.describe_collection(name)
    f = fields_by_name(desc)
    assert list(f) == ["id", "vector", "flag", "age", "score", "ratio", "name", "info"]  # order kept, no $meta
    assert all(x["field_id"] >= 100 for x in desc["fields"])  # no system fields (RowID/Timestamp)
    assert f["id"]["type"] == pk_type and f["id"]["is_primary"]
    assert not f["id"].get("auto_id", False) and desc["auto_id"] is False
    if pk == "varchar":
        assert int(f["id"]["params"]["max_length"]) == 64
    assert int(f["vector"]["params"]["dim"]) == DIM
    assert f["flag"]["type"] == DataType.BOOL
    assert f["age"]["type"] == DataType.INT64
    assert f["score"]["type"] == DataType.FLOAT
    assert f["ratio"]["type"] == DataType.DOUBLE
    assert f["name"]["type"] == DataType.VARCHAR and int(f["name"]["params"]["max_length"]) == 128
    assert f["info"]["type"] == DataType.JSON
    assert desc["enable_dynamic_field"] is True

    vec = vectors(50, DIM, seed=3)
    data = [
        {
            "id": (f"k{i}" if pk == "varchar" else i),
            "vector": vec[i].tolist(),
            "flag": i % 2 == 0,
            "age": i,
            "score": i / 4,
            "ratio": i / 3,
            "name": f"n{i}",
            "info": {"a": i},
            "extra": i * 10,
        }
        for i in range(50)
    ]
    res = client.insert(name, data)
    assert res["insert_count"] == 50
    assert list(res["ids"]) == [d["id"] for d in data]

    key = "k7" if pk == "varchar" else 7
    got = client.get(name, ids=[key], output_fields=["*"])
    assert len(got) == 1
    r = got[0]
    assert r["id"] == key and r["flag"] is False and r["age"] == 7
    assert r["score"] == pytest.approx(7 / 4) and r["ratio"] == pytest.approx(7 / 3)
    assert r["name"] == "n7" and r["info"] == {"a": 7} and r["extra"] == 70

    got = client.get(name, ids=[data[1]["id"], data[2]["id"], "zz" if pk == "varchar" else 99999])
    assert sorted(g["age"] for g in got) == [1, 2]

    hits = client.search(name, data=[vec[9].tolist()], limit=1, search_params={"params": {"ef": 64}}, **STRONG)
    assert hits[0][0]["id"] == data[9]["id"]


def test_schema_without_index_params_is_not_loaded(client, name):
    client.create_collection(name, schema=full_schema(), **STRONG)
    assert client.get_load_state(name)["state"] == LoadState.NotLoad
    assert client.list_indexes(name) == []
    client.create_index(name, hnsw_index("IP"))
    client.load_collection(name)
    assert client.get_load_state(name)["state"] == LoadState.Loaded


def test_list_has_drop(client, name):
    assert not client.has_collection(name)
    client.create_collection(name, dimension=8, **STRONG)
    assert client.has_collection(name)
    assert name in client.list_collections()
    client.drop_collection(name)
    assert not client.has_collection(name)
    assert name not in client.list_collections()
    # dropping a missing collection is not an error in Milvus 2.5
    client.drop_collection(name)


def test_load_release_state(client, name):
    client.create_collection(name, dimension=DIM, metric_type="IP", **STRONG)
    client.insert(name, rows(100, DIM, seed=4))
    assert client.get_load_state(name)["state"] == LoadState.Loaded
    client.release_collection(name)
    assert client.get_load_state(name)["state"] == LoadState.NotLoad
    with pytest.raises(MilvusException) as e:
        client.search(name, data=[vectors(1, DIM).tolist()[0]], limit=1, **STRONG)
    assert "load" in str(e.value).lower()
    # One query node in standalone: two replicas cannot be placed on disjoint nodes.
    with pytest.raises(MilvusException) as e:
        client.load_collection(name, replica_number=2)
    assert "needs at least 2 query nodes" in str(e.value), e.value
    assert client.get_load_state(name)["state"] == LoadState.NotLoad
    client.load_collection(name, replica_number=1)
    assert client.get_load_state(name)["state"] == LoadState.Loaded
    client.refresh_load(name)
    assert client.get_load_state(name)["state"] == LoadState.Loaded
    assert len(client.query(name, filter="id >= 0", limit=5, **STRONG)) == 5


def test_flush_and_stats(client, name):
    client.create_collection(name, dimension=DIM, **STRONG)
    client.insert(name, rows(300, DIM, seed=5))
    client.flush(name)
    deadline = time.time() + 30
    while True:
        stats = client.get_collection_stats(name)
        if stats.get("row_count") == 300 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert stats["row_count"] == 300, stats
    cnt = client.query(name, filter="", output_fields=["count(*)"], **STRONG)
    assert cnt[0]["count(*)"] == 300


def test_describe_replica(client, name):
    client.create_collection(name, dimension=DIM, **STRONG)
    reps = client.describe_replica(name)
    assert len(reps) == 1
    r = reps[0]
    assert isinstance(r.id, int)
    assert len(r.shards) >= 1 and all(s.channel_name for s in r.shards)
    assert len(r.group_nodes) >= 1
    assert r.resource_group == "__default_resource_group"


def test_server_answers_version(client):
    v = client.get_server_version()
    assert isinstance(v, str) and v


def test_create_again_with_same_schema_keeps_data_and_load_state(client, name):
    client.create_collection(name, dimension=8, **STRONG)
    client.insert(name, [{"id": i, "vector": [float(i)] * 8} for i in range(1, 6)])
    client.create_collection(name, dimension=8, **STRONG)  # same schema: a no-op, as in Milvus
    assert client.get_load_state(name)["state"] == LoadState.Loaded
    assert client.query(name, filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"] == 5
    assert len(client.search(name, data=[[1.0] * 8], limit=3, **STRONG)[0]) == 3
