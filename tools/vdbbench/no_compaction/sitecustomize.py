"""Loaded by every Python process of a VectorDBBench run when `run.sh` is given
VDB_SKIP_COMPACTION=1 (this directory on PYTHONPATH; VectorDBBench spawns worker processes, so a
patch in the parent alone would not reach them).

Until Quiver serves Milvus' compaction RPCs (Compact, GetCompactionState,
GetCompactionStateWithPlans), VectorDBBench's Milvus client stops at its optimize step; this
lets the rest of the case (refresh_load, serial and concurrent search, recall) run against
Quiver: `compact` returns 0 (Milvus' answer when there is nothing to compact, which the client
skips waiting on) and the force-merge loop, which would retry a 0 ten times, is skipped."""

import os

if os.environ.get("VDB_SKIP_COMPACTION") == "1":
    try:
        from pymilvus import MilvusClient
        from vectordb_bench.backend.clients.milvus import milvus as vdb_milvus

        MilvusClient.compact = lambda self, *args, **kwargs: 0
        vdb_milvus.Milvus._force_merge = lambda self, *args, **kwargs: None
    except ImportError:  # not the VectorDBBench venv
        pass
