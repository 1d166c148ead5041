"""Scalar-field indexes (STL_SORT, INVERTED, BITMAP, Trie, AUTOINDEX) beside the vector index,
as VectorDBBench's Milvus client defines them: create / list / describe / drop /
get_index_state / get_index_build_progress, Milvus' rules and error texts, filters answered the
same with and without them; and the segment listings (list_persistent_segments,
list_loaded_segments) and refresh_load."""

import time

import pytest
from pymilvus import DataType, MilvusClient, MilvusException

from pmutil import STRONG, vectors

DIM = 8
N = 3000


def make_collection(client, name):
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.INT64, is_primary=True)
    s.add_field("id", DataType.INT64)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("tag", DataType.VARCHAR, max_length=32)
    s.add_field("flag", DataType.BOOL)
    s.add_field("score", DataType.FLOAT)
    client.create_collection(name, schema=s, **STRONG)


def data(n=N, start=0):
    base = vectors(n, DIM, seed=5)
    return [
        {
            "pk": start + i,
            "id": start + i,
            "vector": base[i].tolist(),
            "tag": f"t{(start + i) % 23}",
            "flag": (start + i) % 3 == 0,
            "score": ((start + i) % 100) / 4.0,
        }
        for i in range(n)
    ]


def vdbbench_indexes(vector_type="HNSW"):
    """The index params VectorDBBench's `milvushnsw` case creates (plus one per scalar type)."""
    ip = MilvusClient.prepare_index_params()
    ip.add_index(
        field_name="vector", index_name="vector_idx", index_type=vector_type, metric_type="IP",
        params={"M": 16, "efConstruction": 64},
    )
    ip.add_index(field_name="id", index_name="id_sort_idx", index_type="STL_SORT")
    ip.add_index(field_name="tag", index_name="tag_idx", index_type="Trie")
    ip.add_index(field_name="flag", index_name="flag_idx", index_type="BITMAP")
    ip.add_index(field_name="score", index_name="score_idx", index_type="INVERTED")
    return ip


def error_of(call):
    with pytest.raises(MilvusException) as e:
        call()
    return str(e.value)


def test_scalar_indexes_are_kept_by_name_and_type(client, name):
    make_collection(client, name)
    client.create_index(name, vdbbench_indexes())  # waits on get_index_state per index
    assert sorted(client.list_indexes(name)) == ["flag_idx", "id_sort_idx", "score_idx", "tag_idx", "vector_idx"]
    assert client.list_indexes(name, field_name="id") == ["id_sort_idx"]
    d = client.describe_index(name, "id_sort_idx")
    assert d["index_type"] == "STL_SORT" and d["field_name"] == "id" and d["index_name"] == "id_sort_idx", d
    assert d["state"] == "Finished" and d["pending_index_rows"] == 0
    assert client.describe_index(name, "tag_idx")["index_type"] == "Trie"
    assert client.describe_index(name, "flag_idx")["index_type"] == "BITMAP"
    assert client.describe_index(name, "score_idx")["index_type"] == "INVERTED"
    v = client.describe_index(name, "vector_idx")
    assert v["index_type"] == "HNSW" and v["field_name"] == "vector"

    conn = client._get_connection()
    state, reason = conn.get_index_state(name, "id_sort_idx", timeout=10)
    assert state == 3 and not reason  # IndexState.Finished
    progress = conn.get_index_build_progress(name, "id_sort_idx", timeout=10)
    assert progress["state"] == "Finished" and progress["pending_index_rows"] == 0

    # the same definition again is a no-op; another index on the field is refused
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="id", index_name="id_sort_idx", index_type="STL_SORT")
    client.create_index(name, ip)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="id", index_name="other_idx", index_type="INVERTED")
    assert "at most one distinct index is allowed per field" in error_of(lambda: client.create_index(name, ip))

    # AUTOINDEX on a scalar field, default name = the field's
    s_name = name + "_auto"
    make_collection(client, s_name)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="tag", index_type="AUTOINDEX")
    client.create_index(s_name, ip)
    assert client.list_indexes(s_name) == ["tag"]
    assert client.describe_index(s_name, "tag")["index_type"] == "AUTOINDEX"
    client.drop_index(s_name, "tag")
    assert client.list_indexes(s_name) == []
    client.drop_collection(s_name)


@pytest.mark.parametrize(
    "field,index_type,expected",
    [
        ("pk", "BITMAP", "create bitmap index on primary key not supported"),
        ("id", "Trie", "TRIE are only supported on varchar field"),
        ("flag", "STL_SORT", "STL_SORT are only supported on numeric, varchar"),
        ("score", "BITMAP", "bitmap index are only supported on bool, int, string and array field"),
        ("id", "HNSW", "data type Int64 can't build with this index HNSW"),
        ("id", "NO_SUCH_INDEX", "invalid index type: NO_SUCH_INDEX"),
        ("vector", "STL_SORT", "STL_SORT are only supported on numeric, varchar"),
    ],
)
def test_invalid_scalar_index_combinations_get_milvus_errors(client, name, field, index_type, expected):
    make_collection(client, name)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name=field, index_type=index_type, **({"metric_type": "L2"} if field == "vector" else {}))
    assert expected in error_of(lambda: client.create_index(name, ip))
    assert client.list_indexes(name) == []


FILTERS = {
    "id >= 2900": lambda r: r["id"] >= 2900,
    "id == 17": lambda r: r["id"] == 17,
    "id in [1, 5, 2999, 5000]": lambda r: r["id"] in (1, 5, 2999, 5000),
    "100 <= id < 140": lambda r: 100 <= r["id"] < 140,
    "id < 10 or id > 2990": lambda r: r["id"] < 10 or r["id"] > 2990,
    "id != 3": lambda r: r["id"] != 3,
    'tag == "t3"': lambda r: r["tag"] == "t3",
    'tag in ["t1", "t22"]': lambda r: r["tag"] in ("t1", "t22"),
    'tag like "t1%"': lambda r: r["tag"].startswith("t1"),
    "flag == true": lambda r: r["flag"],
    "score > 20.5": lambda r: r["score"] > 20.5,
    "score == 0.25": lambda r: r["score"] == 0.25,
    'id >= 1000 and tag == "t4" and pk % 2 == 0': lambda r: r["id"] >= 1000 and r["tag"] == "t4" and r["pk"] % 2 == 0,
}


def check_filters(client, name, rows):
    for expr, keep in FILTERS.items():
        got = sorted(r["pk"] for r in client.query(name, filter=expr, output_fields=["pk"], limit=16384, **STRONG))
        assert got == sorted(r["pk"] for r in rows if keep(r)), expr
        hits = client.search(
            name, data=[rows[0]["vector"]], limit=20, filter=expr, output_fields=["pk"],
            search_params={"metric_type": "IP", "params": {"ef": 64}}, **STRONG,
        )[0]
        allowed = {r["pk"] for r in rows if keep(r)}
        assert all(h["pk"] in allowed for h in hits), expr  # as VectorDBBench reads hits
        assert len(hits) == min(20, len(allowed)), expr


def test_filters_answer_the_same_with_scalar_indexes(client, name):
    make_collection(client, name)
    client.create_index(name, vdbbench_indexes())
    client.load_collection(name)
    rows = data()
    client.insert(name, rows[: N // 2])
    client.flush(name)  # sealed segments: the query node builds the scalar indexes as it loads them
    client.insert(name, rows[N // 2 :])  # growing rows: filtered row by row
    check_filters(client, name, rows)

    # an index dropped and defined again on a loaded collection: Milvus' rule, release first
    assert "release" in error_of(lambda: client.drop_index(name, "id_sort_idx")).lower()
    client.release_collection(name)
    client.drop_index(name, "id_sort_idx")
    client.drop_index(name, "tag_idx")
    assert "id_sort_idx" not in client.list_indexes(name)
    client.load_collection(name)
    check_filters(client, name, rows)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="id", index_name="id_sort_idx", index_type="STL_SORT")
    client.create_index(name, ip)  # on the loaded collection: built by the query nodes meanwhile
    check_filters(client, name, rows)


def segments(client, name):
    """Persistent segments as (id, rows, state, level, is_sorted), whatever the pymilvus version."""
    if hasattr(client, "list_persistent_segments"):
        return [(s.segment_id, s.num_rows, s.state_name, s.level_name, s.is_sorted)
                for s in client.list_persistent_segments(name)]
    states = {3: "Sealed", 4: "Flushed"}
    levels = {2: "L1"}
    return [(s.segmentID, s.num_rows, states.get(s.state), levels.get(s.level), s.is_sorted)
            for s in client._get_connection().get_persistent_segment_infos(name)]


def loaded_segments(client, name):
    if hasattr(client, "list_loaded_segments"):
        return [(s.segment_id, s.num_rows, s.index_name, list(s.node_ids)) for s in client.list_loaded_segments(name)]
    return [(s.segmentID, s.num_rows, s.index_name, list(s.nodeIds))
            for s in client._get_connection().get_query_segment_info(name)]


def test_segment_listings_and_refresh_load(client, name):
    make_collection(client, name)
    client.create_index(name, vdbbench_indexes())
    assert segments(client, name) == []
    client.load_collection(name)
    rows = data()
    client.insert(name, rows[:1000])
    client.flush(name)
    client.insert(name, rows[1000:])
    client.flush(name)
    client.refresh_load(name)  # waits until refresh_progress is 100

    segs = segments(client, name)
    assert len(segs) >= 2 and sum(s[1] for s in segs) == N, segs
    assert all(s[2] == "Flushed" and s[3] == "L1" and s[4] for s in segs), segs
    loaded = loaded_segments(client, name)
    assert sorted(s[0] for s in loaded) == sorted(s[0] for s in segs), (loaded, segs)
    assert all(s[3] for s in loaded), loaded  # every served segment names its query node(s)
    assert sum(s[1] for s in loaded) == N
    # the vector index is named once a segment's build is in
    assert {s[2] for s in loaded} <= {"vector_idx", ""}

    client.release_collection(name)
    assert "not loaded" in error_of(lambda: client.refresh_load(name)).lower()
    assert "not loaded" in error_of(lambda: loaded_segments(client, name)).lower()
    assert sum(s[1] for s in segments(client, name)) == N  # persistent whatever the load state


def test_rows_flushed_but_not_indexed_are_pending(client, name):
    """VectorDBBench waits for `pending_index_rows == 0` before it compacts: a segment that has
    just been flushed counts (in total_rows, and as pending until its index is built), even
    before a query node serves it."""
    make_collection(client, name)
    client.create_index(name, vdbbench_indexes())
    client.load_collection(name)
    client.insert(name, data(2000))
    client.flush(name)
    d = client.describe_index(name, "vector_idx")
    assert d["total_rows"] == 2000, d
    assert d["indexed_rows"] + d["pending_index_rows"] == 2000, d
    for _ in range(300):
        d = client.describe_index(name, "vector_idx")
        if d["pending_index_rows"] == 0:
            break
        time.sleep(0.1)
    assert d["pending_index_rows"] == 0 and d["indexed_rows"] == 2000, d
