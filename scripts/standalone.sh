#!/usr/bin/env bash
# One command to run Quiver: installs what is missing, builds, starts `quiver standalone`
# (all roles + its own nats-server on 127.0.0.1:4222; data under ./quiver-data; Prometheus
# metrics on 127.0.0.1:9091). Extra arguments go to `quiver standalone` (e.g. --config FILE).
#
# Security is on (security.enabled defaults to true): the first start generates the cluster's
# credentials in ./quiver-data/credentials, and NATS and the Milvus gRPC API accept only them.
# `quiver ctl` run from the repository root finds admin.credentials there by itself; pymilvus
# connects with MilvusClient("http://127.0.0.1:19530", token=<the content of admin.credentials>).
# QUIVER_SECURITY__ENABLED=false turns it off (a trusted network only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
cargo build --release --bin quiver
echo "starting Quiver standalone: its \"security on\" log line names the credentials files (by default $PWD/quiver-data/credentials)" >&2
exec "$QUIVER_BIN" standalone "$@"
