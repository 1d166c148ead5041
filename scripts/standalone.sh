#!/usr/bin/env bash
# One command to run Quiver: installs what is missing, builds, starts `quiver standalone`
# (all roles + its own nats-server on 127.0.0.1:4222; data under ./quiver-data; Prometheus
# metrics on 127.0.0.1:9091). Extra arguments go to `quiver standalone` (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
cargo build --release --bin quiver
exec "$QUIVER_BIN" standalone "$@"
