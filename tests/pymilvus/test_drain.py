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
import time

import pytest

from conftest import SECURE
from procs import Load, ProcCluster, base_rows, create_docs

DIM = 32
INITIAL = 3000
TOTAL = 6000

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("QUIVER_MILVUS_URI")), reason="starts its own cluster"),
    pytest.mark.skipif(SECURE, reason="secure mode: its own cluster has no TLS (the plain run covers it)"),
]


@pytest.fixture(scope="module")
def cluster():
    c = ProcCluster("drain", {"QUIVER_DATANODE__SEGMENT_MAX_ROWS": "1500"})
    c.start_nats()
    nodes = [("coord", "coordinator"), ("p1", "proxy"), ("p2", "proxy"), ("dn1", "datanode"),
             ("dn2", "datanode"), ("ix1", "indexnode"), ("qn1", "querynode"), ("qn2", "querynode")]
    for node, role in nodes:
        extra = {"QUIVER_PROXY__GRPC_PORT": str(c.grpc_port)} if node == "p1" else None
        c.start_node(node, role, extra)
    client = c.milvus_client()
    yield c, client
    c.stop()
    if not os.environ.get("QUIVER_IT_KEEP"):
        shutil.rmtree(c.dir, ignore_errors=True)


def test_draining_nodes_under_pymilvus_load_loses_nothing(cluster):
    c, client = cluster
    rows = base_rows(TOTAL, DIM, seed=7)
    create_docs(client, rows, INITIAL, DIM)

    with Load(client, rows, INITIAL, TOTAL) as load:
        time.sleep(1)
        # The second proxy leaves its queue group and stops.
        assert "p2-proxy: stopped" in c.ctl("drain", "p2-proxy", "--wait")
        c.wait_exit("p2")
        # A query node by SIGTERM: its work moves to the other one first.
        c.procs["qn1"].send_signal(signal.SIGTERM)
        c.wait_exit("qn1")
        assert not load.failures, load.failures[:5]
        # The data node consuming the shard: the other one resumes at its checkpoint.
        owner = next(dn for dn in ("dn1", "dn2") if "data node consuming shard" in c.log(dn))
        assert f"{owner}-datanode: stopped" in c.ctl("drain", f"{owner}-datanode", "--wait")
        c.wait_exit(owner)
        load.wait_inserted()
    load.check(client)
    statuses = c.ctl("status")
    for gone in ("p2-proxy", "qn1-querynode", f"{owner}-datanode"):
        assert gone not in statuses, statuses
