#!/bin/bash
# What ingest costs a standalone: `quiver load` inserts rows of the shared dataset in batches
# of 100 into a fresh `quiver standalone` (embedded nats-server on port 24222), then waits 5 s
# for the data and query nodes' log readers to apply them; prints the load's rows/s and the CPU
# seconds the quiver process and its nats-server used, and how often a log reader had to
# recreate its consumer. Compare two builds by running it with each one's binary directory.
#
#   tools/bench/ingest-bench.sh BIN_DIR LABEL [ROWS]      (from the repository root)
set -euo pipefail
BIN=$(cd "$1" && pwd); LABEL=$2; ROWS=${3:-100000}
DATASET=$(cd "$(dirname "$0")/../../../shared/datasets/pypi-minilm" && pwd)/base.fvecs
DIR=$(mktemp -d); cd "$DIR"
QUIVER_NATS__EMBEDDED_PORT=24222 QUIVER_METRICS__LISTEN= "$BIN/quiver" standalone > standalone.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 120); do grep -q "Quiver ready" standalone.log && break; sleep 0.5; done
NATS=$(pgrep -P $PID nats-server)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
q0=$(cpu $PID); n0=$(cpu "$NATS")
"$BIN/quiver" load --url nats://127.0.0.1:24222 --collection c --file "$DATASET" --limit "$ROWS" --batch 100 > load.out 2>&1
sleep 5
q1=$(cpu $PID); n1=$(cpu "$NATS")
echo "$LABEL: $(tail -1 load.out); CPU quiver $(echo "scale=2; ($q1 - $q0) / $TICK" | bc) s," \
  "nats-server $(echo "scale=2; ($n1 - $n0) / $TICK" | bc) s; consumers recreated: $(grep -c "DML consumer reopened" standalone.log || true)"
