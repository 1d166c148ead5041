#!/bin/bash
# The many-core run of issue 14: raw faiss against Quiver standalone through its NATS SDK at 1, 4
# and 16 client threads, one segment of synthetic 384-dimensional vectors (50,000 by default),
# HNSW M 16 efConstruction 200, ef 64, k 10. For the device machine, which has no toolchain:
# build here (`cargo build --release -p quiver -p quiver-bench`), pack with
# `../shared/tools/device-pack.sh`, then call `run` with `carry: [".device-pack"]` and
#
#   source .device-pack/setup.sh && tools/bench/device-scaling.sh
#
# Writes the machine's description and the bench's report under $OUT (default ./device-results).
# ROWS and THREADS override the defaults (a local trial: ROWS=5000 THREADS=1,2).
set -euo pipefail
out=${OUT:-device-results}
mkdir -p "$out"
{ nproc; lscpu 2>/dev/null || true; free -g 2>/dev/null || true; } > "$out/machine.txt"
# The pack's generator needs numpy; this repository's does not (slower: about a minute for 50,000).
gen=tools/bench/gen-synthetic.py
python3 -c 'import numpy' 2>/dev/null && gen=.device-pack/gen.py
python3 "$gen" /tmp/quiver-device-ds "${ROWS:-50000}" > "$out/dataset.txt"
quiver-bench standalone --dataset /tmp/quiver-device-ds --threads "${THREADS:-1,4,16}" \
  --consistency eventually --duration-secs 10 --warmup-secs 2 --quiet-wait-secs 0 \
  > "$out/standalone.log" 2>&1
tail -40 "$out/standalone.log"
