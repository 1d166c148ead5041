"""Draining nodes under pymilvus load (the drainable lifecycle, issue 11).

Starts its own multi-process cluster (an external nats-server and one `quiver run` process per
node: coordinator, two proxies, two data nodes, an index node, two query nodes); pymilvus talks
to the first proxy's gRPC port. While pymilvus searches and inserts without pause, it drains
the second proxy (`quiver ctl drain`), a query node (SIGTERM) and the data node consuming the
shard (`quiver ctl drain`). Nothing may fail, every search must be exact (a base row's own
vector finds that row first), and every acknowledged row must be there exactly once.

The proxy pymilvus is connected to is not drained here: a gRPC client with one address has
nowhere else to go (behind a load balancer it would be moved to another proxy); the Rust test
`tests/it/drain.rs` drains the proxy its NATS clients use.

Security is on, as by default: `quiver config nats-auth` generates the cluster's principals under
the data dir and the nats-server configuration enforcing them; the nodes connect as `node`,
`quiver ctl` and pymilvus as `admin`.

Skipped when `QUIVER_MILVUS_URI` points the suite at an external server.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from conftest import SECURE, _free_port, _quiver_bin, _set_pdeathsig
from pmutil import STRONG

DIM = 32
INITIAL = 3000
TOTAL = 6000

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("QUIVER_MILVUS_URI")), reason="starts its own cluster"),
    pytest.mark.skipif(SECURE, reason="secure mode: its own cluster has no TLS (the plain run covers it)"),
]


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="quiver-pymilvus-drain-")
        self.nats_port = _free_port()
        self.grpc_port = _free_port()
        self.name = f"pmdrain_{os.getpid()}"
        self.procs = {}

    def _spawn(self, name, args, env):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(
            args, env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_set_pdeathsig,
        )
        log.close()

    def env(self, node, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        env.update({
            "QUIVER_CLUSTER__NAME": self.name,
            "QUIVER_CLUSTER__DATA_DIR": os.path.join(self.dir, "data"),
            "QUIVER_NATS__URL": f"nats://127.0.0.1:{self.nats_port}",
            "QUIVER_NODE__ID": node,
            "QUIVER_METRICS__LISTEN": "",
            "QUIVER_PROXY__GRPC_PORT": "0",
            "QUIVER_PROXY__HTTP_PORT": "0",
            "QUIVER_DATANODE__SEGMENT_MAX_ROWS": "1500",
            "RUST_LOG": "info",
        })
        env.update(extra or {})
        return env

    def start(self):
        store = os.path.join(self.dir, "nats")
        auth = subprocess.run(
            [_quiver_bin(), "config", "nats-auth"], env=self.env("nats"), capture_output=True, text=True, timeout=60
        )
        assert auth.returncode == 0, f"quiver config nats-auth: {auth.stderr}"
        conf = os.path.join(self.dir, "nats-server.conf")
        with open(conf, "w") as f:
            f.write(auth.stdout)
        self._spawn(
            "nats", ["nats-server", "-c", conf, "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(self.nats_port)], None
        )
        time.sleep(0.5)
        nodes = [("coord", "coordinator"), ("p1", "proxy"), ("p2", "proxy"), ("dn1", "datanode"),
                 ("dn2", "datanode"), ("ix1", "indexnode"), ("qn1", "querynode"), ("qn2", "querynode")]
        for node, role in nodes:
            extra = {"QUIVER_PROXY__GRPC_PORT": str(self.grpc_port)} if node == "p1" else None
            self._spawn(node, [_quiver_bin(), "run", "--role", role], self.env(node, extra))
        return f"http://127.0.0.1:{self.grpc_port}"

    def ctl(self, *args):
        out = subprocess.run(
            [_quiver_bin(), "ctl", "--url", f"nats://127.0.0.1:{self.nats_port}", "--cluster", self.name,
             "--data-dir", os.path.join(self.dir, "data"), *args],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, f"quiver ctl {args}: {out.stdout}{out.stderr}"
        return out.stdout

    def admin_token(self):
        with open(os.path.join(self.dir, "data", "credentials", "admin.credentials")) as f:
            return f.read().strip()

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_exit(self, name, timeout=60):
        code = self.procs[name].wait(timeout=timeout)
        assert code == 0, f"{name} exited with {code} after draining:\n{self.log(name)[-3000:]}"

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
    rng = np.random.default_rng(7)
    v = rng.standard_normal((TOTAL, DIM), dtype=np.float32)
    return [{"id": i, "vector": v[i].tolist()} for i in range(n_from, n_to)]


def test_draining_nodes_under_pymilvus_load_loses_nothing(cluster):
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
            time.sleep(0.03)

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(2)] + [threading.Thread(target=inserter)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        # The second proxy leaves its queue group and stops.
        assert "p2-proxy: stopped" in c.ctl("drain", "p2-proxy", "--wait")
        c.wait_exit("p2")
        # A query node by SIGTERM: its work moves to the other one first.
        c.procs["qn1"].send_signal(signal.SIGTERM)
        c.wait_exit("qn1")
        assert not failures, failures[:5]
        # The data node consuming the shard: the other one resumes at its checkpoint.
        owner = next(dn for dn in ("dn1", "dn2") if "data node consuming shard" in c.log(dn))
        assert f"{owner}-datanode: stopped" in c.ctl("drain", f"{owner}-datanode", "--wait")
        c.wait_exit(owner)
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
    statuses = c.ctl("status")
    for gone in ("p2-proxy", "qn1-querynode", f"{owner}-datanode"):
        assert gone not in statuses, statuses
