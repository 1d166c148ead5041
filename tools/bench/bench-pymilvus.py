#!/usr/bin/env python3
"""The pymilvus leg of `quiver-bench standalone --milvus`: `MilvusClient.search`, one query per
call.

Started by tools/bench/src/standalone.rs with the venv's python once per configuration (client
count, filter).
Each client is its own OS process with its own `MilvusClient` (so the GIL of one client does not
slow another, as the Rust legs use one OS thread and connection per client). The clients start
together (a barrier), search the queries round-robin from their own offset through the warm-up and
the measured window, exactly like the Rust driver (`drive_threads` in tools/bench/src/standalone.rs):

* latency: calls that *started* after the warm-up, perf_counter_ns around `client.search`;
* QPS: measured calls / (last measured call's end - earliest warm-up end);
* recall@k: from the first answer to each query, |ids[:k] ∩ truth[:k]| / k, averaged.

Inputs: queries as an .npy of float32 (nq × dim), ground truth as an .npy of int64 (nq × k).
Output: one JSON object on stdout (see `summarize`); progress and errors go to stderr.
Exit status 0 even when calls failed (the JSON counts them); 2 on bad arguments / no connection.
"""

import argparse
import json
import multiprocessing as mp
import sys
import time

from benchcommon import drive, summarize



def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", required=True, help="Milvus gRPC endpoint, e.g. http://127.0.0.1:19530")
    p.add_argument("--collection", required=True)
    p.add_argument("--queries", required=True, help=".npy float32 nq × dim")
    p.add_argument("--truth", required=True, help=".npy int64 nq × k")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--metric", default="IP")
    p.add_argument("--ef", type=int, default=0, help="HNSW ef (0 = server default, not sent)")
    p.add_argument("--nprobe", type=int, default=0, help="IVF nprobe (0 = server default, not sent)")
    p.add_argument("--anns-field", default="vector")
    p.add_argument("--filter", default="", help="boolean expression (empty = unfiltered)")
    p.add_argument("--consistency", default="Eventually")
    p.add_argument("--threads", type=int, default=1, help="client processes")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    return p.parse_args(argv)


def search_params(args):
    params = {}
    if args.ef > 0:
        params["ef"] = args.ef
    if args.nprobe > 0:
        params["nprobe"] = args.nprobe
    return {"metric_type": args.metric, "params": params}


def worker(t, args, barrier, out):
    """One client: returns (via `out`) its latencies, window and first-answer hits per query."""
    import numpy as np
    from pymilvus import MilvusClient

    try:
        queries = np.load(args.queries)
        truth = np.load(args.truth)
        client = MilvusClient(uri=args.uri, timeout=60)
        sp = search_params(args)
        # One unmeasured call first: the connection and the channel are up before the barrier.
        client.search(
            args.collection,
            data=[queries[0]],
            filter=args.filter,
            limit=args.k,
            search_params=sp,
            anns_field=args.anns_field,
            consistency_level=args.consistency,
        )
        setup_error = None
    except Exception as e:  # reported, and the other clients are told through the barrier
        setup_error = f"{type(e).__name__}: {e}"
    barrier.wait()
    if setup_error is not None:
        out.put({"worker": t, "setup_error": setup_error})
        return
    nq = len(queries)
    gt = [set(int(x) for x in row[: args.k]) for row in truth]
    start = time.perf_counter_ns()
    warm_end = start + int(args.warmup * 1e9)
    end = warm_end + int(args.duration * 1e9)

    def search(q):
        return client.search(
            args.collection,
            data=[queries[q]],
            filter=args.filter,
            limit=args.k,
            search_params=sp,
            anns_field=args.anns_field,
            consistency_level=args.consistency,
        )

    def ids_of(res):
        return [h["id"] for h in (res[0] if len(res) > 0 else [])]

    part = drive(search, ids_of, gt, args.k, t * nq // args.threads, warm_end, end)
    try:
        client.close()
    except Exception:
        pass
    out.put({"worker": t, **part})


def main(argv):
    args = parse_args(argv)
    if args.threads < 1 or args.k < 1 or args.duration <= 0 or args.warmup < 0:
        print("--threads and --k must be >= 1, --duration > 0, --warmup >= 0", file=sys.stderr)
        return 2
    # spawn, not fork: gRPC does not survive a fork, and each client must own its channel.
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(args.threads)
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(t, args, barrier, out), daemon=True) for t in range(args.threads)]
    for p in procs:
        p.start()
    parts = []
    deadline = time.monotonic() + 120 + args.warmup + args.duration
    while len(parts) < args.threads:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print("pymilvus clients did not finish in time", file=sys.stderr)
            return 2
        try:
            parts.append(out.get(timeout=min(remaining, 5)))
        except Exception:
            if all(not p.is_alive() for p in procs) and out.empty():
                print("pymilvus client processes died without a result", file=sys.stderr)
                return 2
    for p in procs:
        p.join(timeout=10)
    failed = [p for p in parts if "setup_error" in p]
    if failed:
        print(f"pymilvus client {failed[0]['worker']} could not start: {failed[0]['setup_error']}", file=sys.stderr)
        return 2
    print(json.dumps(summarize(args.threads, args.k, parts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
