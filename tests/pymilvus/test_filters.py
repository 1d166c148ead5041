"""Filter expressions, each checked against a Python reference over the inserted rows."""

import pytest
from pymilvus import DataType, MilvusClient

from pmutil import STRONG, rows

DIM = 16
N = 600

CASES = [
    ("age > 25", lambda r: r["age"] > 25),
    ("age >= 25", lambda r: r["age"] >= 25),
    ("age < 3", lambda r: r["age"] < 3),
    ("age <= 3", lambda r: r["age"] <= 3),
    ("age == 7", lambda r: r["age"] == 7),
    ("age != 7", lambda r: r["age"] != 7),
    ("score > 1.5", lambda r: r["score"] > 1.5),
    ("id in [1, 2, 3, 500, 9999]", lambda r: r["id"] in (1, 2, 3, 500, 9999)),
    ("id not in [1, 2, 3]", lambda r: r["id"] not in (1, 2, 3)),
    ('name in ["pre_3", "x_4"]', lambda r: r["name"] in ("pre_3", "x_4")),
    ("age > 10 and age < 20", lambda r: 10 < r["age"] < 20),
    ("age < 5 or age > 45", lambda r: r["age"] < 5 or r["age"] > 45),
    ("not (age < 25)", lambda r: not r["age"] < 25),
    ("(age < 5 or age > 45) and id % 2 == 0", lambda r: (r["age"] < 5 or r["age"] > 45) and r["id"] % 2 == 0),
    ("id % 2 == 0", lambda r: r["id"] % 2 == 0),
    ("10 <= age < 20", lambda r: 10 <= r["age"] < 20),
    ('name like "pre%"', lambda r: r["name"].startswith("pre")),
    ("flag == true", lambda r: r["flag"] is True),
    ('$meta["color"] == "red"', lambda r: r["color"] == "red"),
    ('color == "green"', lambda r: r["color"] == "green"),
    ("k > 7", lambda r: r["k"] > 7),
    ('color in ["red", "blue"] and k < 3', lambda r: r["color"] in ("red", "blue") and r["k"] < 3),
    ('info["a"] > 1', lambda r: r["info"]["a"] > 1),
    ('info["tag"] == "blue"', lambda r: r["info"]["tag"] == "blue"),
    ('info["a"] == 0 and name like "x%"', lambda r: r["info"]["a"] == 0 and r["name"].startswith("x")),
]


@pytest.fixture(scope="module")
def coll(client):
    import uuid

    name = "t_filters_" + uuid.uuid4().hex[:8]
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("age", DataType.INT64)
    s.add_field("score", DataType.FLOAT)
    s.add_field("name", DataType.VARCHAR, max_length=64)
    s.add_field("flag", DataType.BOOL)
    s.add_field("info", DataType.JSON)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=s, index_params=ip, **STRONG)
    data = rows(N, DIM, seed=31)
    assert client.insert(name, data)["insert_count"] == N
    yield name, data
    client.drop_collection(name)


@pytest.mark.parametrize("expr,ref", CASES, ids=[c[0] for c in CASES])
def test_query_filter(client, coll, expr, ref):
    name, data = coll
    got = client.query(name, filter=expr, output_fields=["id"], **STRONG)
    assert sorted(g["id"] for g in got) == [r["id"] for r in data if ref(r)]


@pytest.mark.parametrize("expr,ref", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_search_filter(client, coll, expr, ref):
    name, data = coll
    want = [r["id"] for r in data if ref(r)]
    res = client.search(name, data=[data[0]["vector"]], limit=50, filter=expr, **STRONG)
    got = [h["id"] for h in res[0]]
    assert len(got) == min(50, len(want))
    assert set(got) <= set(want)


def test_filter_count(client, coll):
    name, data = coll
    got = client.query(name, filter='color == "red" and age >= 10', output_fields=["count(*)"], **STRONG)
    assert got[0]["count(*)"] == sum(1 for r in data if r["color"] == "red" and r["age"] >= 10)
