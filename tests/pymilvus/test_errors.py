"""Errors come back as pymilvus.MilvusException with a helpful message; the server keeps
answering afterwards."""

import pytest
from pymilvus import DataType, MilvusClient, MilvusException

from pmutil import STRONG

DIM = 16


@pytest.fixture
def coll(client, name):
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("age", DataType.INT64)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=s, index_params=ip, **STRONG)
    client.insert(name, [{"id": i, "vector": [float(i)] * DIM, "age": i} for i in range(10)])
    return name


def still_alive(client, name=None):
    assert isinstance(client.list_collections(), list)
    if name:
        assert client.has_collection(name)


def raises(fn, *substrings):
    with pytest.raises(MilvusException) as e:
        fn()
    msg = str(e.value).lower()
    assert any(s.lower() in msg for s in substrings), msg
    return e.value


def test_wrong_dimension_on_insert(client, coll):
    raises(lambda: client.insert(coll, [{"id": 100, "vector": [0.1] * (DIM + 3), "age": 1}]), "dim")
    still_alive(client, coll)


def test_wrong_dimension_on_search(client, coll):
    raises(lambda: client.search(coll, data=[[0.1] * (DIM - 1)], limit=3, **STRONG), "dim")
    still_alive(client, coll)


@pytest.mark.parametrize("op", ["describe", "search", "insert", "query", "get", "load", "stats"])
def test_unknown_collection(client, op):
    missing = "no_such_collection_xyz"
    calls = {
        "describe": lambda: client.describe_collection(missing),
        "search": lambda: client.search(missing, data=[[0.1] * DIM], limit=1),
        "insert": lambda: client.insert(missing, [{"id": 1, "vector": [0.1] * DIM}]),
        "query": lambda: client.query(missing, filter="id > 0", limit=1),
        "get": lambda: client.get(missing, ids=[1]),
        "load": lambda: client.load_collection(missing),
        "stats": lambda: client.get_collection_stats(missing),
    }
    e = raises(calls[op], missing, "not found", "not exist")
    assert e.code == 100, (e.code, e.message)  # collection not found
    assert not client.has_collection(missing)
    still_alive(client)


def test_bad_filter_syntax(client, coll):
    raises(lambda: client.query(coll, filter="age >", output_fields=["id"], **STRONG), "age >", "parse", "expr")
    raises(lambda: client.search(coll, data=[[0.1] * DIM], filter="age >", limit=1, **STRONG), "age >", "parse", "expr")
    still_alive(client, coll)


def test_filter_on_missing_field_without_dynamic(client, coll):
    raises(lambda: client.query(coll, filter="nosuch == 1", output_fields=["id"], **STRONG), "nosuch")
    raises(lambda: client.query(coll, filter="id > 0", output_fields=["nosuch"], **STRONG), "nosuch")
    still_alive(client, coll)


def test_missing_required_field_on_insert(client, coll):
    # pymilvus checks this client-side (DataNotMatchException is a MilvusException)
    raises(lambda: client.insert(coll, [{"id": 100, "vector": [0.1] * DIM}]), "age")
    still_alive(client, coll)


def test_wrong_type_for_field(client, coll):
    raises(lambda: client.insert(coll, [{"id": 100, "vector": [0.1] * DIM, "age": "old"}]), "age", "int64", "type")
    still_alive(client, coll)


def test_limit_out_of_range(client, coll):
    raises(lambda: client.search(coll, data=[[0.1] * DIM], limit=100000, **STRONG), "topk", "limit")
    still_alive(client, coll)


def test_create_existing_collection_with_other_schema(client, coll):
    raises(lambda: client.create_collection(coll, dimension=DIM + 1), "exist", "schema")
    still_alive(client, coll)
