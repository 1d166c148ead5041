"""Helpers the bench's Python drivers share (written beside them into one temp dir by
tools/bench/src/standalone/milvus.rs, so `import benchcommon` finds this file)."""

import math
import time

# A client stops after this many failed calls (it reports them).
MAX_ERRORS = 1000


def read_fvecs(path, rows):
    """The first `rows` vectors of an .fvecs file (each row: int32 dim, then dim float32)."""
    import numpy as np

    with open(path, "rb") as f:
        dim = int(np.frombuffer(f.read(4), dtype=np.int32)[0])
    raw = np.fromfile(path, dtype=np.int32, count=rows * (dim + 1))
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def percentile(sorted_ns, p):
    """Nearest-rank percentile in µs (as tools/bench/src/standalone.rs computes it)."""
    if not sorted_ns:
        return None
    rank = min(max(math.ceil(p * len(sorted_ns)), 1), len(sorted_ns))
    return sorted_ns[rank - 1] / 1000.0


def drive(search, ids_of, gt, k, first, warm_end, end):
    """One client's calls, one query each, round-robin from query `first` until `end` (ns,
    perf_counter): `search(q)` answers query `q`, `ids_of(answer)` lists its ids best first
    (outside the timed call). Latency counts the calls started after `warm_end`; recall comes from
    each query's first answer. Returns the client's part for [`summarize`]."""
    nq = len(gt)
    lat = []
    correct = {}
    errors = 0
    first_error = None
    last_end = None
    i = first
    while errors < MAX_ERRORS:
        t0 = time.perf_counter_ns()
        if t0 >= end:
            break
        q = i % nq
        i += 1
        try:
            answer = search(q)
            t1 = time.perf_counter_ns()
        except Exception as e:
            errors += 1
            if first_error is None:
                first_error = f"{type(e).__name__}: {e}"
            continue
        if t0 >= warm_end:
            lat.append(t1 - t0)
            last_end = t1
        if q not in correct:
            correct[q] = sum(1 for x in ids_of(answer)[:k] if int(x) in gt[q])
    return {
        "lat": lat,
        "correct": correct,
        "errors": errors,
        "first_error": first_error,
        "warm_end": warm_end,
        "last_end": last_end,
    }


def summarize(threads, k, parts):
    """Merges the per-client results (`lat` ns of measured calls, `correct` hits per query from
    its first answer, `errors`, `first_error`, `warm_end` and `last_end` ns) into the JSON the
    bench parses (`DriverOutput`)."""
    lat = sorted(x for p in parts for x in p["lat"])
    warm_end = min(p["warm_end"] for p in parts)
    ends = [p["last_end"] for p in parts if p["last_end"] is not None]
    elapsed = (max(ends) - warm_end) / 1e9 if ends else 0.0
    seen = {}
    for p in parts:
        for q, c in p["correct"].items():
            seen.setdefault(q, c)
    return {
        "threads": threads,
        "calls": len(lat),
        "errors": sum(p["errors"] for p in parts),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), None),
        "qps": len(lat) / elapsed if elapsed > 0 else 0.0,
        "p50_us": percentile(lat, 0.50),
        "p90_us": percentile(lat, 0.90),
        "p99_us": percentile(lat, 0.99),
        "mean_us": sum(lat) / len(lat) / 1000.0 if lat else None,
        "recall": sum(seen.values()) / (len(seen) * k) if seen else None,
        "queries_seen": len(seen),
    }
