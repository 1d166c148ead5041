"""Chaos under pymilvus load: one process of every kind SIGKILLed in turn (issue 16).

A multi-process cluster with no single point of failure, on one machine: three nats-servers as
one NATS cluster (every stream and KV bucket with three replicas), two coordinators (one active,
one hot standby), two proxies behind a TCP balancer (`procs.TcpFront`, as a deployment puts an
L4 balancer in front of them), two data nodes, two index nodes, two query nodes serving the
collection as two in-memory replicas. pymilvus searches (two threads, default consistency) and
inserts (one thread, rows with their keys and a `client_request_id` per call, so a call that
pymilvus retries after its connection broke is stored once) through the balancer without pause.

Then, in turn: a query node, a data node, an index node, the active coordinator, the proxy the
client is connected to, and one nats-server are SIGKILLed, each started again after 2 s (what a
supervisor does) and the next one killed once the cluster is whole again. Nothing may fail:
every search exact (a base row's own vector finds that row first, 10 distinct hits), every insert
acknowledged, and at the end every acknowledged row counted once. For each kill the test prints
and keeps (`chaos.json` in the cluster's dir) how long the slowest search and insert around it
took and when the cluster was whole again.

Skipped when `QUIVER_MILVUS_URI` points the suite at an external server, in the secure run, and
with `QUIVER_PYMILVUS_CHAOS=0` (`scripts/test.sh` runs it once, with the pinned pymilvus).
"""

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from conftest import SECURE, _free_port
from pmutil import STRONG
from procs import ProcCluster, TcpFront, wait_port

DIM = 32
INITIAL = 3000
BATCH = 100
NLIST = 8
#: IVF searched with every list: exact answers.
EVERY_LIST = {"params": {"nprobe": NLIST}}

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("QUIVER_MILVUS_URI")), reason="starts its own cluster"),
    pytest.mark.skipif(SECURE, reason="secure mode: its own cluster has no TLS (the plain run covers it)"),
    # About 75 s: scripts/test.sh runs it with the pinned pymilvus only.
    pytest.mark.skipif(os.environ.get("QUIVER_PYMILVUS_CHAOS") == "0", reason="QUIVER_PYMILVUS_CHAOS=0"),
]

NODES = [("c1", "coordinator"), ("c2", "coordinator"), ("p1", "proxy"), ("p2", "proxy"), ("dn1", "datanode"),
         ("dn2", "datanode"), ("ix1", "indexnode"), ("ix2", "indexnode"), ("qn1", "querynode"), ("qn2", "querynode")]


def vectors(batch):
    """The vectors of insert batch `batch` (batch 0..: rows INITIAL + batch * BATCH ...)."""
    return np.random.default_rng(1000 + batch).standard_normal((BATCH, DIM), dtype=np.float32)


class ChaosLoad:
    """Two search threads and one insert thread, each call timed; inserts go on until stopped."""

    def __init__(self, uri, token, base):
        self.uri, self.token, self.base = uri, token, base
        self.failures, self.searches, self.batches = [], 0, 0
        # (start, seconds) of every successful call, per kind.
        self.calls = {"search": [], "insert": []}
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._search, args=(t,)) for t in range(2)]
        self.threads.append(threading.Thread(target=self._insert))

    def _client(self):
        return MilvusClient(uri=self.uri, token=self.token)

    def _search(self, offset):
        client = self._client()
        i = offset
        while not self.stop_flag.is_set():
            row = (i * 37) % INITIAL
            started = time.time()
            try:
                hits = client.search("docs", data=[self.base[row].tolist()], limit=10, search_params=EVERY_LIST)[0]
                ids = [h["id"] for h in hits]
                if len(ids) != 10 or len(set(ids)) != 10 or ids[0] != row:
                    self.failures.append(f"search row {row}: {ids}")
                else:
                    self.calls["search"].append((started, time.time() - started))
            except Exception as e:  # any error is a failure
                self.failures.append(f"search at {started:.1f}: {e}")
            self.searches += 1
            i += 2

    def _insert(self):
        client = self._client()
        while not self.stop_flag.is_set():
            b = self.batches
            first = INITIAL + b * BATCH
            rows = [{"id": first + j, "vector": v.tolist()} for j, v in enumerate(vectors(b))]
            started = time.time()
            try:
                client.insert("docs", rows, client_request_id=f"chaos-{b}")
                self.calls["insert"].append((started, time.time() - started))
                self.batches += 1
            except Exception as e:
                self.failures.append(f"insert at {started:.1f}: {e}")
            time.sleep(0.05)

    def slowest(self, kind, since, until):
        """The longest successful call of `kind` that was under way at some time in
        [`since`, `until`], in seconds."""
        return max((d for s, d in self.calls[kind] if s <= until and s + d >= since), default=0.0)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        return False


@pytest.fixture(scope="module")
def cluster():
    c = ProcCluster("chaos", {
        "QUIVER_NATS__REPLICAS": "3",
        "QUIVER_COORDINATOR__LEASE_TTL": "3s",
        "QUIVER_DATANODE__SEGMENT_MAX_ROWS": "3000",
    })
    c.start_nats_cluster(3)
    c.grpc = {"p1": c.grpc_port, "p2": _free_port()}
    for node, role in NODES:
        extra = {"QUIVER_PROXY__GRPC_PORT": str(c.grpc[node])} if node in c.grpc else None
        c.start_node(node, role, extra)
    front = TcpFront(c.grpc.values())
    yield c, front
    front.close()
    c.stop()
    if not os.environ.get("QUIVER_IT_KEEP"):
        shutil.rmtree(c.dir, ignore_errors=True)


def status(c):
    return {n["node_id"]: n for n in json.loads(c.ctl("status", "--json"))["nodes"]}


def wait_whole(c, node_id, old_pid, timeout=90):
    """Waits until `node_id` runs again in a new process (serving, or a coordinator's standby);
    seconds waited."""
    started = time.time()
    while True:
        try:
            n = status(c).get(node_id)
            if n and n["pid"] != old_pid and n["state"] in ("Serving", "Standby"):
                return time.time() - started
        except AssertionError:
            pass  # ctl itself can fail while a NATS server is down
        assert time.time() - started < timeout, f"{node_id} not back after {timeout} s: {c.ctl('status')}"
        time.sleep(0.25)


def wait_serving(c, node_id, timeout=60):
    """Waits until `node_id` serves (a standby coordinator: acts); seconds waited."""
    started = time.time()
    while True:
        try:
            if status(c).get(node_id, {}).get("state") == "Serving":
                return time.time() - started
        except AssertionError:
            pass
        assert time.time() - started < timeout, f"{node_id} does not serve after {timeout} s: {c.ctl('status')}"
        time.sleep(0.1)


def test_sigkill_of_each_kind_of_process_under_pymilvus_load_fails_nothing(cluster):
    c, front = cluster
    token = c.admin_token()
    uri = f"http://127.0.0.1:{front.port}"
    client = c.milvus_client(uri=uri)
    base = np.random.default_rng(7).standard_normal((INITIAL, DIM), dtype=np.float32)

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    # IVF_FLAT searched with every list: exact answers, and index builds that do real work.
    index.add_index("vector", index_type="IVF_FLAT", metric_type="L2", params={"nlist": NLIST})
    client.create_collection("docs", schema=schema)
    client.create_index("docs", index)
    for start in range(0, INITIAL, 1000):
        client.insert("docs", [{"id": i, "vector": base[i].tolist()} for i in range(start, start + 1000)])
    client.flush("docs")
    deadline = time.time() + 60
    while True:
        try:
            client.load_collection("docs", replica_number=2)
            break
        except Exception:
            assert time.time() < deadline, "the collection was not loaded on two replicas"
            time.sleep(0.5)

    # The process each kill picks: the query and data node holding the shard's work, the index
    # node, the active coordinator, the proxy behind the client's connection, a nats-server.
    def active_coordinator():
        """The acting coordinator's process name (waits while none acts)."""
        deadline = time.time() + 60
        while True:
            try:
                s = status(c)
                return next(n for n in ("c1", "c2") if s.get(f"{n}-coordinator", {}).get("state") == "Serving")
            except (AssertionError, StopIteration):
                assert time.time() < deadline, "no coordinator acts"
                time.sleep(0.2)

    def owner(candidates, text):
        return next((n for n in candidates if text in c.log(n)), candidates[0])

    victims = [
        ("query node", lambda: "qn1", "querynode"),
        ("data node", lambda: owner(["dn1", "dn2"], "data node consuming shard"), "datanode"),
        ("index node", lambda: "ix1", "indexnode"),
        ("coordinator", active_coordinator, "coordinator"),
        ("proxy", lambda: next(n for n, port in c.grpc.items() if port == front.busiest()), "proxy"),
        ("nats-server", lambda: "nats1", None),
    ]
    report = []
    with ChaosLoad(uri, token, base) as load:
        time.sleep(3)
        for kind, pick, role in victims:
            name = pick()
            node_id = f"{name}-{role}" if role else None
            old_pid = status(c)[node_id]["pid"] if node_id else None
            killed = time.time()
            c.kill(name)
            entry = {"killed": kind, "process": name}
            if kind == "coordinator":
                # Started again only once the standby acts: a coordinator that comes back while
                # its lease still holds takes it back at once.
                other = "c2" if name == "c1" else "c1"
                entry["standby_active_after_s"] = round(wait_serving(c, f"{other}-coordinator"), 2)
            else:
                time.sleep(2)
            c.restart(name)
            if node_id:
                wait_whole(c, node_id, old_pid)
            else:
                # Back: the server accepts connections and a coordinator acts (its metadata
                # bucket has a leader again).
                wait_port(c.nats_ports[int(name[-1])])
                active_coordinator()
            back = time.time() - killed
            time.sleep(6)  # the load goes on beside the restarted process
            until = time.time()
            entry |= {
                "slowest_search_s": round(load.slowest("search", killed, until), 3),
                "slowest_insert_s": round(load.slowest("insert", killed, until), 3),
                "back_after_s": round(back, 2),
                "failures_so_far": len(load.failures),
            }
            report.append(entry)
            print(f"chaos: {entry}", flush=True)
    with open(os.path.join(c.dir, "chaos.json"), "w") as f:
        json.dump({"report": report, "searches": load.searches, "rows": INITIAL + load.batches * BATCH}, f, indent=1)

    assert not load.failures, f"{len(load.failures)} failures: {load.failures[:5]}"
    assert load.searches > 100, load.searches
    total = INITIAL + load.batches * BATCH
    client.flush("docs")
    count = client.query("docs", filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"]
    assert count == total, f"{count} rows counted, {total} acknowledged"
    # Every acknowledged row once: the last batch's keys and a sample of the others.
    sample = list(range(0, total, 97)) + list(range(total - BATCH, total))
    found = client.query("docs", filter=f"id in {sample}", output_fields=["id"], **STRONG)
    assert sorted(r["id"] for r in found) == sorted(set(sample))
    print(f"chaos: {load.searches} searches, {total} rows, 0 failures", flush=True)
