"""Data and reference helpers for the pymilvus suite (numpy brute force, Python filters)."""

import os

import numpy as np
import pymilvus

PYMILVUS = tuple(int(x) for x in pymilvus.__version__.split(".")[:2] if x.isdigit())
STRONG = {"consistency_level": "Strong"}

DATASET = os.environ.get(
    "QUIVER_PYMILVUS_DATASET",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets", "pypi-minilm"),
)
if not os.path.isdir(DATASET):
    DATASET = "/work/shared/datasets/pypi-minilm"


def vectors(n, dim, seed=0, normalize=False):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    if normalize:
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def rows(n, dim, seed=0, start=0, with_id=True):
    """n rows with a fixed schema's scalar fields plus dynamic keys (`color`, `k`)."""
    v = vectors(n, dim, seed)
    out = []
    colors = ["red", "green", "blue"]
    for i in range(n):
        pk = start + i
        r = {
            "vector": v[i].tolist(),
            "age": pk % 50,
            "score": float(pk % 7) / 2.0,
            "name": ("pre_" if pk % 3 == 0 else "x_") + str(pk),
            "flag": pk % 2 == 0,
            "info": {"a": pk % 4, "tag": colors[pk % 3]},
            "color": colors[pk % 3],
            "k": pk % 10,
        }
        if with_id:
            r["id"] = pk
        out.append(r)
    return out


def brute_force(base, queries, k, metric):
    base = np.asarray(base, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if metric == "L2":
        d = (queries**2).sum(1)[:, None] - 2 * queries @ base.T + (base**2).sum(1)[None, :]
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    if metric == "COSINE":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = queries @ base.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(result, truth, ids=None):
    """Mean |returned ∩ truth| / k; `ids` maps row index -> primary key (default identity)."""
    k = truth.shape[1]
    tot = 0.0
    for hits, t in zip(result, truth):
        want = {int(x) if ids is None else ids[int(x)] for x in t}
        got = {h["id"] for h in hits[:k]}
        tot += len(want & got) / k
    return tot / len(truth)


def read_fvecs(path, n):
    with open(path, "rb") as f:
        dim = int(np.frombuffer(f.read(4), dtype=np.int32)[0])
    raw = np.fromfile(path, dtype=np.float32, count=n * (dim + 1)).reshape(n, dim + 1)
    return raw[:, 1:].copy()


def read_tsv(path, n):
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            name, _, text = line.rstrip("\n").partition("\t")
            out.append((name, text))
    return out
