#!/usr/bin/env python3
"""Loads a Milvus server through pymilvus for `quiver-bench standalone --milvus` (the Milvus 2.3.5
standalone leg), and times insert → searchable with the index.

Started by tools/bench/src/standalone/milvus_server.rs with the pymilvus venv's python (the one
bench-pymilvus.py runs with). Steps, each with `MilvusClient` as a user would call it:

1. create collection --collection: `id` INT64 primary key (no auto id), `vector` FLOAT_VECTOR of
   the base's dim, --shards shards (Quiver's bench collection has 1);
2. insert the first --rows vectors of --base (.fvecs) in batches of --batch, ids 0..rows;
3. flush (waits until the segments are sealed and persisted);
4. create_index HNSW (M, efConstruction, metric as given; waits until state Finished);
5. load_collection (waits until loaded);
6. search the first query (Eventually, ef as given) until it answers k hits.

pymilvus' own wait loops (flush, index, load) poll every 0.5 s / 0.5 s / 0.2 s; this script caps
their sleeps at --poll-secs (default 0.1 s, what the Quiver side polls with) so the total is not
rounded up by the client. "searchable_secs" runs from the first insert call (the first batch's
conversion included, as on the Quiver side) to the end of the first successful search.

stdout: one JSON object (see the end of `main`); progress and errors go to stderr.
"""

import argparse
import json
import sys
import time

from benchcommon import read_fvecs

POLL_SECS = 0.1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", required=True, help="Milvus gRPC endpoint, e.g. http://127.0.0.1:19530")
    p.add_argument("--collection", required=True)
    p.add_argument("--base", required=True, help=".fvecs base vectors")
    p.add_argument("--rows", type=int, required=True, help="first rows of --base to insert")
    p.add_argument("--queries", required=True, help=".npy float32 nq × dim (the first one probes)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--metric", default="IP")
    p.add_argument("--m", type=int, default=16, help="HNSW M")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=64, help="HNSW ef of the probe search")
    p.add_argument("--batch", type=int, default=2000, help="rows per insert call")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--poll-secs", type=float, default=POLL_SECS, help="cap on pymilvus' wait-loop sleeps")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole load")
    return p.parse_args(argv)


def cap_pymilvus_polls(cap):
    """pymilvus' blocking calls sleep between state polls through grpc_handler's `time`."""
    import pymilvus.client.grpc_handler as handler

    real = handler.time

    class Time:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def sleep(secs):
            real.sleep(min(secs, cap))

    handler.time = Time()


def main(argv):
    args = parse_args(argv)
    import numpy as np
    from pymilvus import DataType, MilvusClient

    if args.rows < 1 or args.batch < 1 or args.k < 1:
        print("--rows, --batch and --k must be >= 1", file=sys.stderr)
        return 2
    cap_pymilvus_polls(args.poll_secs)
    base = read_fvecs(args.base, args.rows)
    rows, dim = base.shape
    probe = np.load(args.queries)[0]
    client = MilvusClient(uri=args.uri, timeout=args.timeout)
    version = client.get_server_version()
    name = args.collection
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema, num_shards=args.shards)

    started = time.perf_counter()
    for start in range(0, rows, args.batch):
        end = min(start + args.batch, rows)
        client.insert(name, [{"id": i, "vector": base[i]} for i in range(start, end)])
    inserted = time.perf_counter()
    print(f"milvus: inserted {rows} rows in {inserted - started:.1f}s", file=sys.stderr)
    client.flush(name)
    flushed = time.perf_counter()
    print(f"milvus: flushed in {flushed - inserted:.1f}s", file=sys.stderr)
    index = client.prepare_index_params()
    index.add_index(
        field_name="vector",
        index_type="HNSW",
        index_name="vector_idx",
        metric_type=args.metric,
        params={"M": args.m, "efConstruction": args.ef_construction},
    )
    client.create_index(name, index)
    indexed = time.perf_counter()
    described = client.describe_index(name, "vector_idx") or {}
    print(
        f"milvus: index {described.get('state')} after {indexed - flushed:.1f}s "
        f"({described.get('indexed_rows')}/{described.get('total_rows')} rows)",
        file=sys.stderr,
    )
    client.load_collection(name)
    loaded = time.perf_counter()
    print(f"milvus: loaded after {loaded - indexed:.1f}s", file=sys.stderr)
    search_params = {"metric_type": args.metric, "params": {"ef": args.ef}}
    attempts = 0
    last_error = None
    deadline = loaded + 60
    while True:
        attempts += 1
        try:
            res = client.search(
                name,
                data=[probe],
                limit=args.k,
                search_params=search_params,
                anns_field="vector",
                consistency_level="Eventually",
            )
            if len(res) > 0 and len(res[0]) >= min(args.k, rows):
                break
            last_error = f"{len(res[0]) if len(res) > 0 else 0} hits"
        except Exception as e:
            last_error = f"{type(e).__name__}: {e}"
        if time.perf_counter() > deadline:
            print(f"milvus: no search answered 60 s after the load ({last_error})", file=sys.stderr)
            return 2
        time.sleep(args.poll_secs)
    searchable = time.perf_counter()
    segments = None
    try:
        from pymilvus import connections, utility

        connections.connect("bench-segments", uri=args.uri)
        info = utility.get_query_segment_info(name, using="bench-segments")
        segments = [int(s.num_rows) for s in info]
        connections.disconnect("bench-segments")
    except Exception as e:  # only informative
        print(f"milvus: cannot list the loaded segments: {e}", file=sys.stderr)
    client.close()
    print(
        json.dumps(
            {
                "server_version": version,
                "rows": rows,
                "dim": dim,
                "insert_secs": inserted - started,
                "flush_secs": flushed - inserted,
                "index_secs": indexed - flushed,
                "indexed_rows": described.get("indexed_rows"),
                "load_secs": loaded - indexed,
                "first_search_secs": searchable - loaded,
                "search_attempts": attempts,
                "searchable_secs": searchable - started,
                "segments": segments,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
