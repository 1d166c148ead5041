"""Partitions through MilvusClient: create / list / has / drop, inserts, upserts and deletes into
one, searches, queries and gets that name some, partitions released and loaded, statistics."""

import pytest
from pymilvus import Collection, MilvusException, Partition, connections

from conftest import CLIENT_ARGS
from pmutil import STRONG, rows

DIM = 16


def count(client, name, partitions=None):
    got = client.query(name, filter="", output_fields=["count(*)"], partition_names=partitions, **STRONG)
    return got[0]["count(*)"]


@pytest.fixture
def parted(client, name):
    """`_default` holds ids 200..299, `p1` 0..99, `p2` 100..199."""
    client.create_collection(name, dimension=DIM, metric_type="L2", **STRONG)
    client.create_partition(name, "p1")
    client.create_partition(name, "p2")
    client.create_partition(name, "p1")  # again: succeeds, changes nothing
    data = rows(300, DIM, seed=5)
    assert client.insert(name, data[0:100], partition_name="p1")["insert_count"] == 100
    assert client.insert(name, data[100:200], partition_name="p2")["insert_count"] == 100
    assert client.insert(name, data[200:300])["insert_count"] == 100
    return name, data


def test_partitions_are_listed_and_reads_cover_those_named(client, parted):
    name, data = parted
    assert client.list_partitions(name) == ["_default", "p1", "p2"]
    assert client.has_partition(name, "p2") and not client.has_partition(name, "p3")
    assert count(client, name) == 300
    assert count(client, name, ["p1"]) == 100
    assert count(client, name, ["p1", "p2"]) == 200
    assert count(client, name, ["_default"]) == 100

    # A search in p2 finds only p2's rows; p1's own vector is not found there.
    hits = client.search(name, [data[150]["vector"], data[7]["vector"]], limit=5, partition_names=["p2"], **STRONG)
    assert hits[0][0]["id"] == 150
    assert all(100 <= h["id"] < 200 for q in hits for h in q), hits
    hits = client.search(name, [data[7]["vector"]], limit=1, partition_names=["p1", "_default"], **STRONG)
    assert hits[0][0]["id"] == 7
    # Filters and partitions together.
    got = client.query(name, filter="age < 5", output_fields=["id"], partition_names=["p1"], **STRONG)
    assert sorted(g["id"] for g in got) == [i for i in range(100) if i % 50 < 5]
    got = client.get(name, ids=[5, 150, 250], partition_names=["p2"], **STRONG)
    assert [g["id"] for g in got] == [150]

    with pytest.raises(MilvusException, match="partition not found"):
        client.search(name, [data[0]["vector"]], limit=1, partition_names=["nope"])
    with pytest.raises(MilvusException, match="partition not found"):
        client.insert(name, data[0:1], partition_name="nope")
    assert client.get_partition_stats(name, "p1")["row_count"] == 100


def test_writes_into_a_partition_stay_in_it(client, parted):
    name, data = parted
    res = client.delete(name, filter="age >= 0", partition_name="p2")
    assert res["delete_count"] == 100
    assert count(client, name, ["p2"]) == 0 and count(client, name) == 200
    client.delete(name, ids=[1, 2, 250], partition_name="p1")
    assert count(client, name, ["p1"]) == 98 and count(client, name, ["_default"]) == 100
    client.upsert(name, [dict(data[3], age=777)], partition_name="p2")
    got = client.query(name, filter="id == 3", output_fields=["age"], partition_names=["p2"], **STRONG)
    assert [(g["id"], g["age"]) for g in got] == [(3, 777)]
    assert count(client, name, ["p1"]) == 97, "an upsert replaces the key wherever it was"


def test_released_partitions_are_not_read_and_dropped_ones_never_again(client, parted):
    name, data = parted
    client.release_partitions(name, ["p1"])
    assert count(client, name) == 200, "reads without names cover the loaded partitions"
    state = client.get_load_state(name, partition_name="p1")["state"]
    assert "NotLoad" in str(state), state
    with pytest.raises(MilvusException, match="not loaded"):
        client.search(name, [data[0]["vector"]], limit=1, partition_names=["p1"], **STRONG)
    with pytest.raises(MilvusException, match="release it first"):
        client.drop_partition(name, "p2")
    with pytest.raises(MilvusException, match="cannot be deleted"):
        client.drop_partition(name, "_default")

    client.drop_partition(name, "p1")
    client.drop_partition(name, "p1")  # again: succeeds
    assert client.list_partitions(name) == ["_default", "p2"]
    assert count(client, name) == 200
    # A new partition of the same name starts empty: the dropped one's rows stay unread.
    client.create_partition(name, "p1")
    assert count(client, name, ["p1"]) == 0 and count(client, name) == 200
    client.insert(name, rows(3, DIM, seed=9, start=1000), partition_name="p1")
    assert count(client, name, ["p1"]) == 3 and count(client, name) == 203

    # Loading one partition of a released collection reads it alone.
    client.release_collection(name)
    client.load_partitions(name, ["p2"])
    assert count(client, name) == 100
    client.load_collection(name)
    assert count(client, name) == 203
    # Releasing every partition releases the collection.
    client.release_partitions(name, ["_default", "p1", "p2"])
    assert "NotLoad" in str(client.get_load_state(name)["state"])


def test_orm_partitions(client, name, uri):
    """pymilvus' ORM `Partition` objects (has, create, insert, num_entities, search, drop)."""
    client.create_collection(name, dimension=DIM, metric_type="L2", **STRONG)
    alias = f"orm_{name}"
    connections.connect(alias=alias, uri=uri, **CLIENT_ARGS)
    try:
        collection = Collection(name, using=alias)
        part = Partition(collection, "tenant_a")
        assert collection.has_partition("tenant_a")
        assert [p.name for p in collection.partitions] == ["_default", "tenant_a"]
        data = rows(20, DIM, seed=3)
        part.insert([{k: r[k] for k in ("id", "vector")} for r in data])
        assert part.num_entities == 20
        res = part.search([data[4]["vector"]], "vector", {"metric_type": "L2"}, limit=1, consistency_level="Strong")
        assert res[0][0].id == 4
        part.release()
        collection.drop_partition("tenant_a")
        assert not collection.has_partition("tenant_a")
    finally:
        connections.disconnect(alias)
