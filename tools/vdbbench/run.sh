#!/usr/bin/env bash
# Runs VectorDBBench's Milvus HNSW case (`vectordbbench milvushnsw`, PerformanceCustomDataset)
# against Quiver, on the shared pypi-minilm embeddings (or their first ROWS rows).
#
#   tools/vdbbench/run.sh [ROWS] [extra vectordbbench args...]
#
# - venv: ${QUIVER_PY_CACHE:-~/.cache/quiver-py}/vdbbench with `vectordb-bench` (and the pymilvus
#   it pins); created on first use.
# - data: tools/vdbbench/prepare.py writes ROWS base vectors (default 20000), QUERIES queries
#   (default 200) and their exact top-100 into ${VDB_DATA:-/tmp/vdbbench-minilm-ROWS}.
# - server: QUIVER_MILVUS_URI (+ QUIVER_MILVUS_USER/QUIVER_MILVUS_PASSWORD) for a running one;
#   otherwise a `quiver standalone` from QUIVER_BIN (default: the release build) in a temp dir
#   on free ports, security on, connected to as admin with the generated password.
# - output: VectorDBBench's log on stdout, its results under the venv's
#   vectordb_bench/results/Milvus/; the server log is kept in the temp dir (path printed).
#
# HNSW M=16, efConstruction=200, ef=64, k=10, IP; serial search then concurrency 1,2 for 20 s
# (VectorDBBench's own defaults are heavier; override with extra args).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROWS="${1:-20000}"
shift || true
QUERIES="${QUERIES:-200}"
CACHE="${QUIVER_PY_CACHE:-$HOME/.cache/quiver-py}"
VENV="$CACHE/vdbbench"
DATA="${VDB_DATA:-/tmp/vdbbench-minilm-$ROWS}"

if [ ! -x "$VENV/bin/vectordbbench" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check vectordb-bench
fi
if [ ! -f "$DATA/neighbors.parquet" ]; then
    "$VENV/bin/python" "$ROOT/tools/vdbbench/prepare.py" --rows "$ROWS" --queries "$QUERIES" --out "$DATA"
fi

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

URI="${QUIVER_MILVUS_URI:-}"
USER_NAME="${QUIVER_MILVUS_USER:-}"
PASSWORD="${QUIVER_MILVUS_PASSWORD:-}"
SERVER_PID=""
if [ -z "$URI" ]; then
    BIN="${QUIVER_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}/release/quiver}"
    DIR="$(mktemp -d /tmp/quiver-vdbbench-XXXXXX)"
    GRPC="$(free_port)"
    env QUIVER_CLUSTER__NAME="vdbbench_$$" QUIVER_CLUSTER__DATA_DIR="$DIR/data" \
        QUIVER_NATS__EMBEDDED_PORT="$(free_port)" QUIVER_PROXY__GRPC_PORT="$GRPC" QUIVER_PROXY__HTTP_PORT=0 \
        QUIVER_METRICS__LISTEN= RUST_LOG="${QUIVER_LOG:-info}" \
        "$BIN" standalone >"$DIR/quiver.log" 2>&1 &
    SERVER_PID=$!
    trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; echo "server log: $DIR/quiver.log" >&2' EXIT
    for _ in $(seq 1 120); do
        [ -f "$DIR/data/credentials/admin.credentials" ] && break
        sleep 0.5
    done
    CRED="$(cat "$DIR/data/credentials/admin.credentials")"
    USER_NAME="${CRED%%:*}"
    PASSWORD="${CRED#*:}"
    URI="http://127.0.0.1:$GRPC"
    sleep 2
fi

auth=()
[ -n "$USER_NAME" ] && auth+=(--user-name "$USER_NAME")
[ -n "$PASSWORD" ] && auth+=(--password "$PASSWORD")
"$VENV/bin/vectordbbench" milvushnsw --uri "$URI" "${auth[@]}" \
    --case-type PerformanceCustomDataset \
    --custom-case-name "pypi-minilm-$ROWS" --custom-dataset-name pypi-minilm \
    --custom-dataset-dir "$DATA" --custom-dataset-size "$ROWS" --custom-dataset-dim 384 \
    --custom-dataset-metric-type IP --custom-dataset-file-count 1 --skip-custom-dataset-use-shuffled \
    --custom-dataset-with-gt --k 10 \
    --m 16 --ef-construction 200 --ef-search 64 \
    --num-concurrency 1,2 --concurrency-duration 20 \
    "$@"
