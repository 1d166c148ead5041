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
import time
import urllib.request

import pytest

from conftest import SECURE, _free_port
from procs import Load, ProcCluster, base_rows, create_docs

DIM = 32
INITIAL = 4000
TOTAL = 9000

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("QUIVER_MILVUS_URI")), reason="starts its own cluster"),
    pytest.mark.skipif(SECURE, reason="secure mode: its own cluster has no TLS (the plain run covers it)"),
]

ENV = {
    "QUIVER_DATANODE__SEGMENT_MAX_ROWS": "1000",
    "QUIVER_COORDINATOR__DEFAULT_SHARDS": "2",
    "QUIVER_SCALING__INTERVAL": "300ms",
    "QUIVER_PLUGINS__BALANCER": "row-count",
    "QUIVER_BALANCE__INTERVAL": "2s",
    "QUIVER_NODE__DRAIN_TIMEOUT": "60s",
}


class Cluster(ProcCluster):
    def __init__(self):
        super().__init__("scale", ENV)
        self.http_port = _free_port()

    def start(self):
        self.start_nats()
        for node, role in [("coord", "coordinator"), ("p1", "proxy"), ("dn1", "datanode"), ("ix1", "indexnode"),
                           ("qn1", "querynode")]:
            extra = None
            if node == "p1":
                extra = {"QUIVER_PROXY__GRPC_PORT": str(self.grpc_port), "QUIVER_PROXY__HTTP_PORT": str(self.http_port)}
            self.start_node(node, role, extra)
        self.start_host("h1")

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


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    c.start()
    client = c.milvus_client(lambda: c.http("GET", "/v1/roles"))
    yield c, client
    c.stop()
    if not os.environ.get("QUIVER_IT_KEEP"):
        shutil.rmtree(c.dir, ignore_errors=True)


def test_scaling_under_pymilvus_load_loses_nothing(cluster):
    c, client = cluster
    rows = base_rows(TOTAL, DIM, seed=11)
    create_docs(client, rows, INITIAL, DIM)

    with Load(client, rows, INITIAL, TOTAL, pause=0.05) as load:
        time.sleep(1)
        c.ctl("scale", "querynode", "--replicas", "3", "--wait")
        assert not load.failures, load.failures[:5]
        c.ctl("scale", "querynode", "--replicas", "1", "--wait")
        assert not load.failures, load.failures[:5]
        for role in ("datanode", "indexnode"):
            reply = c.http("PATCH", f"/v1/roles/{role}", {"replicas": 2})
            assert reply["replicas"] == 2, reply
            c.wait_role(role, 2)
            c.http("PATCH", f"/v1/roles/{role}", {"replicas": 1})
            c.wait_role(role, 1)
            assert not load.failures, load.failures[:5]
        load.wait_inserted()
    load.check(client)
    status = c.ctl("status")
    assert "qn1-querynode" in status, status
