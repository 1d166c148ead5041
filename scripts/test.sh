#!/usr/bin/env bash
# One command to test Quiver: installs what is missing, checks formatting and lints, and runs
# every unit and integration test (the integration tests start real nats-server and quiver
# processes on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace -- --test-threads=2
