#!/usr/bin/env bash
# Runs the pymilvus compatibility suite with one pymilvus version.
#
#   tests/pymilvus/run.sh [PYMILVUS_VERSION] [--secure | --s3] [pytest args...]
#
# --s3 (or QUIVER_PYMILVUS_S3=1): every server and cluster the suite starts keeps its objects in
# an S3-compatible store (s3rver) the suite starts (see conftest.py).
# --secure (or QUIVER_PYMILVUS_SECURE=1): the suite's server runs with security.enabled and TLS
# on gRPC and NATS, and the suite connects over https with the generated admin token (see
# conftest.py).
#
# Creates (or reuses) a venv per version under ${QUIVER_PY_CACHE:-~/.cache/quiver-py}/pymilvus-<v>
# with pymilvus==<v>, pytest and numpy, then runs `pytest tests/pymilvus -q` from the repo root.
# Against a running server: QUIVER_MILVUS_URI=http://127.0.0.1:19530. Otherwise the suite starts
# its own `quiver standalone` from QUIVER_BIN (see README.md).
set -euo pipefail

VERSION="${1:-2.5.14}"
shift || true
case "${1:-}" in
    --secure) export QUIVER_PYMILVUS_SECURE=1; shift ;;
    --s3) export QUIVER_PYMILVUS_S3=1; shift ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${QUIVER_PY_CACHE:-$HOME/.cache/quiver-py}"
VENV="$CACHE/pymilvus-$VERSION"
PY="$VENV/bin/python"

mkdir -p "$CACHE"
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi
installed="$("$PY" -c 'import importlib.metadata as m; print(m.version("pymilvus"))' 2>/dev/null || true)"
if [ "$installed" != "$VERSION" ] || ! "$PY" -c 'import pytest, numpy' 2>/dev/null; then
    "$PY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    "$PY" -m pip install -q --disable-pip-version-check "pymilvus==$VERSION" pytest numpy
fi

cd "$ROOT"
# default to the whole suite unless a test path (file, dir or node id) was given
target=(tests/pymilvus)
for a in "$@"; do
    case "$a" in
        -*) ;;
        *tests/pymilvus*|*.py|*::*) target=() ;;
    esac
done
exec "$PY" -m pytest "${target[@]}" -q -p no:cacheprovider "$@"
