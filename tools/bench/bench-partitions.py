#!/usr/bin/env python3
"""What a search of one partition costs, through pymilvus against a running server, beside
faiss-cpu in-process over the same rows (the physical limit).

20,000 rows of the shared dataset (384-dim MiniLM, IP), HNSW M 16 / efConstruction 200, ef 64,
k 10, one query per call from one client for `--secs` each:

* `plain`: no partitions, search everything;
* `apart`: 4 partitions of 5,000 rows, each inserted and flushed on its own (a partition's rows
  seal into segments of their own), search one partition / everything;
* `mixed`: the same 4 partitions written in interleaved batches of 500 rows and flushed once
  (every segment holds all four), search one partition / everything;
* faiss-cpu: an HNSW index over all 20,000 rows and one over one partition's 5,000.

Recall@10 is against exact inner products over the rows the search covers.

    python bench-partitions.py --uri http://127.0.0.1:19530 [--token admin:PW] [--secs 5]
(run with the pymilvus venv's python: it has numpy and faiss-cpu; from the repository root)
"""

import argparse
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "..", "shared", "datasets", "pypi-minilm")
ROWS, PARTS, K, EF = 20_000, 4, 10, 64


def fvecs(path, rows):
    with open(path, "rb") as f:
        dim = int(np.frombuffer(f.read(4), dtype=np.int32)[0])
    raw = np.fromfile(path, dtype=np.int32, count=rows * (dim + 1))
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def timed(search, queries, secs):
    """Calls `search(q)` round-robin for `secs`; QPS, p50 µs and each query's first answer."""
    lat, first = [], {}
    end = time.perf_counter() + secs
    i = 0
    while time.perf_counter() < end:
        q = i % len(queries)
        t0 = time.perf_counter_ns()
        ids = search(queries[q])
        lat.append(time.perf_counter_ns() - t0)
        first.setdefault(q, ids)
        i += 1
    lat.sort()
    return len(lat) / (sum(lat) / 1e9), lat[len(lat) // 2] / 1000, first


def recall(first, truth):
    return float(np.mean([len(set(first[q][:K]) & set(truth[q])) / K for q in first]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", required=True)
    p.add_argument("--token", default="")
    p.add_argument("--secs", type=float, default=5.0)
    args = p.parse_args()
    from pymilvus import DataType, MilvusClient

    base = fvecs(os.path.join(DATA, "base.fvecs"), ROWS)
    queries = fvecs(os.path.join(DATA, "query.fvecs"), 200)
    part_of = {"apart": lambda r: r // (ROWS // PARTS), "mixed": lambda r: (r // 500) % PARTS}
    p0_apart = np.arange(ROWS // PARTS)
    p0_mixed = np.array([r for r in range(ROWS) if part_of["mixed"](r) == 0])
    scores = queries @ base.T

    def truth(rows=None):
        s = scores if rows is None else scores[:, rows]
        top = np.argsort(-s, axis=1)[:, :K]
        return top if rows is None else rows[top]

    c = MilvusClient(uri=args.uri, token=args.token)
    results = []
    for name in ["plain", "apart", "mixed"]:
        if c.has_collection(name):
            c.drop_collection(name)
        schema = c.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=base.shape[1])
        index = c.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 200})
        c.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        rows = [{"id": r, "vector": base[r].tolist()} for r in range(ROWS)]
        if name == "plain":
            for s in range(0, ROWS, 500):
                c.insert(name, rows[s : s + 500])
        else:
            for i in range(PARTS):
                c.create_partition(name, f"p{i}")
            for s in range(0, ROWS, 500):
                c.insert(name, rows[s : s + 500], partition_name=f"p{part_of[name](s)}")
                if name == "apart" and (s + 500) % (ROWS // PARTS) == 0:
                    c.flush(name)
        c.flush(name)
        while True:  # every row indexed, then every segment served
            d = c.describe_index(name, "vector")
            if d.get("total_rows") == ROWS and d.get("pending_index_rows", 1) == 0:
                break
            time.sleep(0.5)
        c.refresh_load(name)
        cases = [("everything", None, truth())]
        if name != "plain":
            cases.append(("p0", ["p0"], truth(p0_apart if name == "apart" else p0_mixed)))
        for what, parts, gt in cases:

            def search(q, parts=parts, name=name):
                hits = c.search(name, [q.tolist()], limit=K, partition_names=parts, search_params={"params": {"ef": EF}})
                return [h["id"] for h in hits[0]]

            qps, p50, first = timed(search, queries, args.secs)
            results.append((f"quiver {name}", what, qps, p50, recall(first, gt)))

    import faiss

    faiss.omp_set_num_threads(1)
    for what, rows in [("everything", np.arange(ROWS)), ("p0 alone (5,000 rows)", p0_apart)]:
        ix = faiss.IndexHNSWFlat(base.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 200
        ix.add(base[rows])
        ix.hnsw.efSearch = EF

        def search(q, ix=ix, rows=rows):
            return [int(rows[i]) for i in ix.search(q[None, :], K)[1][0]]

        qps, p50, first = timed(search, queries, args.secs)
        results.append(("faiss-cpu", what, qps, p50, recall(first, truth(None if len(rows) == ROWS else rows))))

    print("| system | searches | QPS | p50 µs | recall@10 |")
    print("|---|---|---:|---:|---:|")
    for system, what, qps, p50, rec in results:
        print(f"| {system} | {what} | {qps:,.0f} | {p50:,.0f} | {rec:.3f} |")


if __name__ == "__main__":
    main()
