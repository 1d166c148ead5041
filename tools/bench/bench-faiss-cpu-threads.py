#!/usr/bin/env python3
"""faiss-cpu (PyPI) in-process leg of `quiver-bench standalone --milvus`: builds the HNSW index
itself, then searches it one query per call from N Python threads.

Started by tools/bench/src/standalone/faiss_cpu.rs with the faiss-cpu venv's python (the one
`quiver-bench simd` uses). It reads the first --rows base vectors of --base (an .fvecs file, the
rows the bench loads everywhere else), builds `IndexHNSWFlat` (M, efConstruction, metric as
given; COSINE = inner product over L2-normalised vectors) with every core (OpenMP threads =
--build-threads) and reports the build time. Then it answers commands, one per stdin line:

    search THREADS WARMUP_SECS DURATION_SECS

runs THREADS Python threads, each with one OpenMP thread (faiss releases the GIL in `search`),
started together (a barrier), each searching the queries round-robin from its own offset
(thread t starts at t * nq / THREADS), exactly like the Rust driver (`drive_threads` in
tools/bench/src/standalone.rs) and bench-pymilvus.py:

* latency: calls that *started* after the warm-up, perf_counter_ns around `index.search`;
* QPS: measured calls / (last measured call's end - the warm-up's end);
* recall@k: from the first answer to each query, |ids[:k] ∩ truth[:k]| / k, averaged.

Inputs: queries as an .npy of float32 (nq × dim), ground truth as an .npy of int64 (nq × k).
stdout: one JSON object per line: first {"event": "built", ...} (see `build`), then per command
the object bench-pymilvus.py prints (threads, calls, errors, qps, p50_us, ...). EOF ends it.
"""

import argparse
import json
import os
import sys
import threading
import time

import faiss
import numpy as np

from benchcommon import drive, read_fvecs, summarize



def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help=".fvecs base vectors")
    p.add_argument("--rows", type=int, required=True, help="first rows of --base to index")
    p.add_argument("--queries", required=True, help=".npy float32 nq × dim")
    p.add_argument("--truth", required=True, help=".npy int64 nq × k")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--metric", default="IP", choices=["IP", "L2", "COSINE"])
    p.add_argument("--m", type=int, default=16, help="HNSW M")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=64, help="HNSW efSearch")
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def build(args):
    base = read_fvecs(args.base, args.rows)
    dim = base.shape[1]
    metric = faiss.METRIC_L2 if args.metric == "L2" else faiss.METRIC_INNER_PRODUCT
    if args.metric == "COSINE":
        faiss.normalize_L2(base)
    index = faiss.IndexHNSWFlat(dim, args.m, metric)
    index.hnsw.efConstruction = args.ef_construction
    faiss.omp_set_num_threads(args.build_threads)
    started = time.perf_counter()
    index.add(base)
    secs = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    index.hnsw.efSearch = args.ef
    options = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else ""
    info = {
        "event": "built",
        "version": faiss.__version__,
        "compile_options": options.strip(),
        "rows": int(index.ntotal),
        "dim": dim,
        "build_secs": secs,
        "build_threads": args.build_threads,
    }
    return index, info


def run(index, queries, truth, k, threads, warmup, duration):
    """One configuration: `threads` searching threads through warm-up and the measured window."""
    nq = len(queries)
    rows = [queries[i : i + 1] for i in range(nq)]
    gt = [set(int(x) for x in row[:k]) for row in truth]
    barrier = threading.Barrier(threads + 1)
    window = {}
    parts = [None] * threads

    def worker(t):
        # OpenMP settings are per calling thread: one thread per search, as Quiver's query node.
        faiss.omp_set_num_threads(1)
        barrier.wait()

        def search(q):
            return index.search(rows[q], k)

        def ids_of(answer):
            return answer[1][0]

        parts[t] = drive(search, ids_of, gt, k, t * nq // threads, window["warm_end"], window["end"])

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter_ns()
    window["warm_end"] = start + int(warmup * 1e9)
    window["end"] = window["warm_end"] + int(duration * 1e9)
    barrier.wait()
    for w in workers:
        w.join()
    return summarize(threads, k, parts)


def main(argv):
    args = parse_args(argv)
    if args.rows < 1 or args.k < 1 or args.build_threads < 1:
        print("--rows, --k and --build-threads must be >= 1", file=sys.stderr)
        return 2
    queries = np.ascontiguousarray(np.load(args.queries), dtype=np.float32)
    truth = np.load(args.truth)
    if args.metric == "COSINE":
        faiss.normalize_L2(queries)
    index, info = build(args)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] != "search" or len(words) != 4:
            print(f"unknown command {line.strip()!r}", file=sys.stderr)
            return 2
        threads, warmup, duration = int(words[1]), float(words[2]), float(words[3])
        if threads < 1 or duration <= 0 or warmup < 0:
            print("search wants THREADS >= 1, WARMUP >= 0, DURATION > 0", file=sys.stderr)
            return 2
        print(json.dumps(run(index, queries, truth, args.k, threads, warmup, duration)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
