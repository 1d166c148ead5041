"""Manual compaction through the Milvus API, as VectorDBBench and Milvus' docs use it: compact,
get_compaction_state / wait for it, get_compaction_plans; small flushed segments are merged,
deleted rows dropped, and count(*), gets and searches answer the same before and after."""

import time

import pytest
from pymilvus import DataType, MilvusClient, MilvusException

from pmutil import STRONG, vectors

DIM = 8
FLUSHES = 6
PER_FLUSH = 200


def make_collection(client, name):
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(name, schema=s, **STRONG)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
    client.create_index(name, ip)
    client.load_collection(name)


def wait_completed(client, job, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = client.get_compaction_state(job)
        if state == "Completed":
            return
        time.sleep(0.2)
    pytest.fail(f"compaction {job} still {client.get_compaction_state(job)} after {timeout} s")


def plans_of(client, job):
    """(sources, target) of each plan (MilvusClient has no get_compaction_plans before 2.6)."""
    if hasattr(client, "get_compaction_plans"):
        plans = client.get_compaction_plans(job)
    else:
        plans = client._get_connection().get_compaction_plans(job)
    return [(list(p.sources), p.target) for p in plans.plans]


def persistent(client, name):
    if hasattr(client, "list_persistent_segments"):
        return [(s.segment_id, s.num_rows) for s in client.list_persistent_segments(name)]
    return [(s.segmentID, s.num_rows) for s in client._get_connection().get_persistent_segment_infos(name)]


def count(client, name):
    return client.query(name, filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"]


def test_compact_merges_flushed_segments_and_drops_deleted_rows(client, name):
    make_collection(client, name)
    base = vectors(FLUSHES * PER_FLUSH, DIM, seed=11)
    for f in range(FLUSHES):
        lo = f * PER_FLUSH
        client.insert(name, [{"pk": i, "vector": base[i].tolist()} for i in range(lo, lo + PER_FLUSH)])
        client.flush(name)
    deleted = [i for i in range(FLUSHES * PER_FLUSH) if i % 3 == 0]
    client.delete(name, ids=deleted)
    client.flush(name)
    client.refresh_load(name)
    before = persistent(client, name)
    assert len(before) >= FLUSHES, before
    live = FLUSHES * PER_FLUSH - len(deleted)
    assert count(client, name) == live
    probe = base[[1, 2, 4, 5]].tolist()
    expected = client.search(name, probe, limit=5, **STRONG)

    job = client.compact(name)
    assert isinstance(job, int) and job > 0
    wait_completed(client, job)
    plans = plans_of(client, job)
    assert plans, "six small segments make at least one plan"
    sources = {s for p, _ in plans for s in p}
    assert sources <= {s for s, _ in before}, (plans, before)

    # the merged segments replace their sources once query nodes hold them
    deadline = time.time() + 60
    while time.time() < deadline:
        after = persistent(client, name)
        if not sources & {s for s, _ in after}:
            break
        time.sleep(0.3)
    assert not sources & {s for s, _ in after}, (sources, after)
    assert len(after) < len(before), (before, after)
    assert sum(r for _, r in after) == live, after  # deleted rows are gone from the segments
    assert count(client, name) == live
    assert client.get(name, ids=[0, 1, 3, 4]) and {r["pk"] for r in client.get(name, ids=[0, 1, 3, 4])} == {1, 4}
    got = client.search(name, probe, limit=5, **STRONG)
    assert [[h["pk"] for h in q] for q in got] == [[h["pk"] for h in q] for q in expected]

    # nothing left to do: a new job completes without plans
    again = client.compact(name)
    wait_completed(client, again)
    assert plans_of(client, again) == []


def test_compaction_errors_name_the_problem(client, name):
    with pytest.raises(MilvusException) as e:
        client.compact("no_such_collection_here")
    assert "no_such_collection_here" in str(e.value)
    make_collection(client, name)
    with pytest.raises(MilvusException) as e:
        client.compact(name, is_clustering=True)
    assert "clustering" in str(e.value)
    with pytest.raises(MilvusException) as e:
        client.get_compaction_state(987654321)
    assert "987654321" in str(e.value)


def test_force_merge_merges_every_segment_as_vectordbbench_asks(client, name):
    """pymilvus >= 2.6 `compact(target_size=MB)`: every flushed segment of the shard is a source
    of a plan (VectorDBBench checks exactly this before its search runs), the merged segment
    replaces them, and a second force merge lists the lone segment as its own target."""
    import inspect

    if "target_size" not in inspect.signature(client.compact).parameters:
        pytest.skip("compact(target_size=...) came with pymilvus 2.6")
    make_collection(client, name)
    base = vectors(3 * PER_FLUSH, DIM, seed=12)
    for f in range(3):
        lo = f * PER_FLUSH
        client.insert(name, [{"pk": i, "vector": base[i].tolist()} for i in range(lo, lo + PER_FLUSH)])
        client.flush(name)
    client.refresh_load(name)
    before = {s for s, _ in persistent(client, name)}
    assert len(before) >= 3, before
    as_large_as_possible = ((1 << 63) - 1) // (1024**2)  # VectorDBBench's target_size
    job = client.compact(name, target_size=as_large_as_possible)
    wait_completed(client, job)
    sources = {s for p, _ in plans_of(client, job) for s in p}
    assert before <= sources, (before, plans_of(client, job))
    deadline = time.time() + 60
    while time.time() < deadline and len(persistent(client, name)) != 1:
        time.sleep(0.3)
    after = persistent(client, name)
    assert len(after) == 1 and after[0][1] == 3 * PER_FLUSH, after
    assert count(client, name) == 3 * PER_FLUSH

    # Once the merged segment's inputs are removed (a few seconds after readers moved to it;
    # until then it is not planned again), a force merge lists it as its own target.
    deadline = time.time() + 30
    while True:
        again = client.compact(name, target_size=as_large_as_possible)
        wait_completed(client, again)
        plans = plans_of(client, again)
        if plans or time.time() > deadline:
            break
        time.sleep(0.5)
    assert plans == [([after[0][0]], after[0][0])]
