"""faiss-cpu (PyPI) side of `quiver-bench simd`: per-query HNSW search on one thread.

usage: bench-faiss-cpu.py INDEX QUERY.fvecs TRUTH.txt NQ K EF ROUNDS
INDEX is a faiss `write_index` file (the index Quiver's levels search); TRUTH.txt has the
expected ids of each query, one line per query. Prints one JSON line: the version, the SIMD
faiss loaded, and per round p50/p99 µs, QPS and recall@k.
"""

import json
import sys
import time

import faiss
import numpy as np


def main():
    index_path, query_path, truth_path = sys.argv[1:4]
    nq, k, ef, rounds = (int(a) for a in sys.argv[4:8])
    raw = np.fromfile(query_path, dtype=np.int32)
    dim = int(raw[0])
    queries = raw.reshape(-1, dim + 1)[:nq, 1:].view(np.float32).copy()
    truth = [set(int(x) for x in line.split()) for line in open(truth_path)][:nq]
    faiss.omp_set_num_threads(1)
    index = faiss.read_index(index_path)
    index.hnsw.efSearch = ef
    rows = [queries[i : i + 1] for i in range(len(queries))]
    for q in rows[:50]:
        index.search(q, k)
    out = []
    for _ in range(rounds):
        lat = []
        hits = 0
        started = time.perf_counter()
        for q, t in zip(rows, truth):
            t0 = time.perf_counter()
            _, labels = index.search(q, k)
            lat.append(time.perf_counter() - t0)
            hits += sum(1 for l in labels[0] if l in t)
        total = time.perf_counter() - started
        lat.sort()
        pct = lambda p: lat[min(int(len(lat) * p), len(lat) - 1)] * 1e6
        out.append(
            {
                "p50_us": pct(0.5),
                "p99_us": pct(0.99),
                "qps": len(lat) / total,
                "recall": hits / (len(truth) * k),
            }
        )
    options = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else ""
    print(json.dumps({"version": faiss.__version__, "compile_options": options, "rounds": out}))


if __name__ == "__main__":
    main()
