#!/usr/bin/env bash
# Runs the Python SDK's tests against a real `quiver standalone` ($QUIVER_BIN, default
# /tmp/quiver-bin/quiver). Idempotent: creates (or reuses) a venv under
# ${QUIVER_PY_CACHE:-$HOME/.cache/quiver-py}/sdk and installs the SDK into it (editable, with the
# test extras) only when pyproject.toml changed since the last install. Extra arguments go to
# pytest, e.g. `sdk/python/run-tests.sh -k sync -x`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${QUIVER_PY_CACHE:-$HOME/.cache/quiver-py}/sdk"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi

stamp="$venv/.quiver-client-installed"
want="$(cat "$here/pyproject.toml" | sha256sum | cut -d' ' -f1) $here"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || ! "$venv/bin/python" -c "import quiver_client, pytest" 2>/dev/null; then
    echo "installing quiver-client (editable) and test dependencies into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
    echo "$want" > "$stamp"
fi

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
