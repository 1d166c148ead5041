"""Synthetic clustered unit vectors in TEXMEX .fvecs (base N x DIM, 1000 queries from the same
mixture), in pure Python for machines without numpy (the device pack's gen.py needs it).

    python3 tools/bench/gen-synthetic.py OUT_DIR N [DIM]

No ground truth file: `quiver-bench` computes it by brute force."""
import math
import os
import random
import struct
import sys
from array import array

out, n = sys.argv[1], int(sys.argv[2])
d = int(sys.argv[3]) if len(sys.argv) > 3 else 384
rng = random.Random(1)
os.makedirs(out, exist_ok=True)
centers = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(2000)]


def save(path, m):
    header = struct.pack("<i", d)
    with open(path, "wb") as f:
        for _ in range(m):
            c = centers[rng.randrange(len(centers))]
            v = [x + 0.6 * rng.gauss(0, 1) for x in c]
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            f.write(header)
            array("f", [x / norm for x in v]).tofile(f)


save(f"{out}/base.fvecs", n)
save(f"{out}/query.fvecs", 1000)
print("dataset", out, n, d)
