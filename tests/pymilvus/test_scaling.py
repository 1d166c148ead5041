"""Scaling under pymilvus load (elastic scaling, issue 13).

Starts its own multi-process cluster: an external nats-server, one `quiver run` process per
node started by hand (coordinator, proxy with the gRPC port pymilvus uses, data node, index
node, query node) and a host agent (`quiver host`) for the scaler to start and stop nodes on.
While pymilvus searches and inserts without pause, query nodes go 1 -> 3 -> 1 (`quiver ctl scale
--wait`), data nodes 1 -> 2 -> 1 and index nodes 1 -> 2 -> 1 through the HTTP admin API
(`PATCH /v1/roles/{role}`). Nothing may fail, every search must be exact, and every
acknowledged row must be there exactly once.

Skipped when `QUIVER_MILVUS_URI` points the suite at an external server.
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from conftest import SECURE, _free_port, _quiver_bin, _set_pdeathsig
from pmutil import STRONG

DIM = 32
INITIAL = 4000
TOTAL = 9000

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("QUIVER_MILVUS_URI")), reason="starts its own cluster"),
    pytest.mark.skipif(SECURE, reason="secure mode: its own cluster has no TLS (the plain run covers it)"),
]


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="quiver-pymilvus-scaling-")
        self.nats_port = _free_port()
        self.grpc_port = _free_port()
        self.http_port = _free_port()
        self.name = f"pmscale_{os.getpid()}"
        self.procs = {}

    def _spawn(self, name, args, env):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(
            args, env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_set_pdeathsig,
        )
        log.close()

    def env(self, node=None, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        env.update({
            "QUIVER_CLUSTER__NAME": self.name,
            "QUIVER_CLUSTER__DATA_DIR": os.path.join(self.dir, "data"),
            "QUIVER_NATS__URL": f"nats://127.0.0.1:{self.nats_port}",
            "QUIVER_METRICS__LISTEN": "",
            "QUIVER_PROXY__GRPC_PORT": "0",
            "QUIVER_PROXY__HTTP_PORT": "0",
            "QUIVER_DATANODE__SEGMENT_MAX_ROWS": "1000",
            "QUIVER_COORDINATOR__DEFAULT_SHARDS": "2",
            "QUIVER_SCALING__INTERVAL": "300ms",
            "QUIVER_PLUGINS__BALANCER": "row-count",
            "QUIVER_BALANCE__INTERVAL": "2s",
            "QUIVER_NODE__DRAIN_TIMEOUT": "60s",
            "RUST_LOG": "info",
        })
        if node:
            env["QUIVER_NODE__ID"] = node
        env.update(extra or {})
        return env

    def start(self):
        store = os.path.join(self.dir, "nats")
        auth = subprocess.run(
            [_quiver_bin(), "config", "nats-auth"], env=self.env(), capture_output=True, text=True, timeout=60
        )
        assert auth.returncode == 0, f"quiver config nats-auth: {auth.stderr}"
        conf = os.path.join(self.dir, "nats-server.conf")
        with open(conf, "w") as f:
            f.write(auth.stdout)
        self._spawn(
            "nats", ["nats-server", "-c", conf, "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(self.nats_port)], None
        )
        time.sleep(0.5)
        nodes = [("coord", "coordinator"), ("p1", "proxy"), ("dn1", "datanode"), ("ix1", "indexnode"),
                 ("qn1", "querynode")]
        for node, role in nodes:
            extra = None
            if node == "p1":
                extra = {"QUIVER_PROXY__GRPC_PORT": str(self.grpc_port), "QUIVER_PROXY__HTTP_PORT": str(self.http_port)}
            self._spawn(node, [_quiver_bin(), "run", "--role", role], self.env(node, extra))
        self._spawn("h1", [_quiver_bin(), "host", "--id", "h1"], self.env())
        return f"http://127.0.0.1:{self.grpc_port}"

    def ctl(self, *args, timeout=240):
        out = subprocess.run(
            [_quiver_bin(), "ctl", "--url", f"nats://127.0.0.1:{self.nats_port}", "--cluster", self.name,
             "--data-dir", os.path.join(self.dir, "data"), *args],
            capture_output=True, text=True, timeout=timeout,
        )
        assert out.returncode == 0, f"quiver ctl {args}: {out.stdout}{out.stderr}"
        return out.stdout

    def admin_token(self):
        with open(os.path.join(self.dir, "data", "credentials", "admin.credentials")) as f:
            return f.read().strip()

    def http(self, method, path, body=None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin_token()}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_role(self, role, n, timeout=180):
        deadline = time.time() + timeout
        while True:
            r = self.http("GET", f"/v1/roles/{role}")
            if r["converged"] and r["serving"] == n and r["desired"] == n:
                return
            assert time.time() < deadline, f"{role} did not converge on {n}: {r}"
            time.sleep(0.5)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    uri = c.start()
    deadline = time.time() + 60
    while True:
        try:
            client = MilvusClient(uri=uri, timeout=5, token=c.admin_token())
            client.list_collections()
            c.http("GET", "/v1/roles")
            break
        except Exception:
            if time.time() > deadline:
                c.stop()
                raise
            time.sleep(0.5)
    yield c, client
    c.stop()
    shutil.rmtree(c.dir, ignore_errors=True)


def base(n_from, n_to):
    rng = np.random.default_rng(11)
    v = rng.standard_normal((TOTAL, DIM), dtype=np.float32)
    return [{"id": i, "vector": v[i].tolist()} for i in range(n_from, n_to)]


def test_scaling_under_pymilvus_load_loses_nothing(cluster):
    c, client = cluster
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    client.create_collection("docs", schema=schema, index_params=index)
    for start in range(0, INITIAL, 1000):
        client.insert("docs", base(start, start + 1000))
    client.flush("docs")
    client.load_collection("docs")

    failures, searches, inserted = [], [0], [INITIAL]
    stop = threading.Event()
    rows = base(0, TOTAL)

    def searcher(offset):
        i = offset
        while not stop.is_set():
            row = (i * 37) % INITIAL
            try:
                hits = client.search("docs", data=[rows[row]["vector"]], limit=10, **STRONG)[0]
                ids = [h["id"] for h in hits]
                if len(ids) != 10 or len(set(ids)) != 10 or ids[0] != row:
                    failures.append(f"row {row}: {ids}")
            except Exception as e:  # any error is a failure
                failures.append(f"search: {e}")
            searches[0] += 1
            i += 1

    def inserter():
        at = INITIAL
        while at < TOTAL and not stop.is_set():
            try:
                client.insert("docs", rows[at:at + 100])
                at += 100
                inserted[0] = at
            except Exception as e:
                failures.append(f"insert: {e}")
            time.sleep(0.05)

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(2)] + [threading.Thread(target=inserter)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        c.ctl("scale", "querynode", "--replicas", "3", "--wait")
        assert not failures, failures[:5]
        c.ctl("scale", "querynode", "--replicas", "1", "--wait")
        assert not failures, failures[:5]
        for role in ("datanode", "indexnode"):
            reply = c.http("PATCH", f"/v1/roles/{role}", {"replicas": 2})
            assert reply["replicas"] == 2, reply
            c.wait_role(role, 2)
            c.http("PATCH", f"/v1/roles/{role}", {"replicas": 1})
            c.wait_role(role, 1)
            assert not failures, failures[:5]
        deadline = time.time() + 90
        while inserted[0] < TOTAL and time.time() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert inserted[0] == TOTAL, f"only {inserted[0]} rows inserted; failures: {failures[:5]}"
    assert not failures, f"{len(failures)} failures: {failures[:5]}"
    assert searches[0] > 20, searches[0]
    count = client.query("docs", filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"]
    assert count == TOTAL, f"{count} rows counted, {TOTAL} acknowledged"
    status = c.ctl("status")
    assert "qn1-querynode" in status, status
