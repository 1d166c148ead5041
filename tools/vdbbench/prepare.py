"""Writes the shared pypi-minilm dataset (or its first N rows) in VectorDBBench's custom-dataset
parquet layout, for its `PerformanceCustomDataset` case:

    DIR/train.parquet      id: int64, emb: list<float32>        (the base vectors)
    DIR/test.parquet       id: int64, emb: list<float32>        (the query vectors)
    DIR/neighbors.parquet  id: int64, neighbors_id: list<int64> (exact top-100 by inner product)

With all 100,000 rows the dataset's own ground truth is used; for a subset it is recomputed
exactly (numpy, inner product: the vectors are L2-normalised, so IP = COSINE).

    python prepare.py --rows 20000 --queries 200 --out /tmp/vdb-minilm-20k
"""

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_DATASET = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets", "pypi-minilm")


def read_vecs(path, dtype, n=None):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    rows = raw.reshape(-1, d + 1)[:, 1:]
    if n is not None:
        rows = rows[:n]
    return rows.view(dtype) if dtype == np.float32 else rows


def write(path, ids, column, values):
    if column == "emb":
        arr = pa.array(list(values.astype(np.float32)), type=pa.list_(pa.float32()))
    else:
        arr = pa.array(list(values.astype(np.int64)), type=pa.list_(pa.int64()))
    pq.write_table(pa.table({"id": pa.array(ids, type=pa.int64()), column: arr}), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=os.environ.get("QUIVER_DATASET", DEFAULT_DATASET))
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    base = read_vecs(os.path.join(args.dataset, "base.fvecs"), np.float32, args.rows)
    query = read_vecs(os.path.join(args.dataset, "query.fvecs"), np.float32, args.queries)
    if args.rows >= 100_000:
        truth = read_vecs(os.path.join(args.dataset, "groundtruth.ivecs"), np.int32, args.queries)
    else:
        scores = query @ base.T
        top = np.argpartition(-scores, 100, axis=1)[:, :100]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        truth = np.take_along_axis(top, order, axis=1)
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "train.parquet"), np.arange(len(base)), "emb", base)
    write(os.path.join(args.out, "test.parquet"), np.arange(len(query)), "emb", query)
    write(os.path.join(args.out, "neighbors.parquet"), np.arange(len(query)), "neighbors_id", truth)
    print(f"{args.out}: {len(base)} base x {base.shape[1]} d, {len(query)} queries, top-{truth.shape[1]} truth")


if __name__ == "__main__":
    main()
