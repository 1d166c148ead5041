#!/usr/bin/env bash
# One command to test Quiver: installs what is missing, checks formatting and lints, and runs
# every unit and integration test (the integration tests start real nats-server and quiver
# processes on free ports), a short run of every fuzz target, then the Python suites against
# the freshly built binary: pymilvus (pinned and newest) through the Milvus gRPC API, and the
# Python NATS SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace -- --test-threads=2
# The Prometheus alert rules: valid, and each alert's own unit tests (docs/observability.md).
promtool check rules deploy/prometheus/quiver-alerts.yml
promtool test rules deploy/prometheus/quiver-alerts.test.yml
# Every fuzz target briefly (20 s each; longer campaigns: docs/fuzzing.md).
scripts/fuzz.sh run 20
# quiver for the Python suites below; quiver-bench so every test run builds the benchmark tool.
cargo build --release -p quiver -p quiver-bench
# pymilvus: the version we pin and test with, the newest 2.6 (VectorDBBench's) and the newest
# release (see tests/pymilvus/README.md).
# The chaos test (every kind of process SIGKILLed in turn under load, ~75 s) runs with the
# pinned version only.
tests/pymilvus/run.sh 2.5.14
QUIVER_PYMILVUS_CHAOS=0 tests/pymilvus/run.sh 2.6.17
QUIVER_PYMILVUS_CHAOS=0 tests/pymilvus/run.sh 3.0.2
# ... and once with authentication and TLS on gRPC and NATS (docs/security.md).
tests/pymilvus/run.sh 2.5.14 --secure
# ... and with every object in an S3-compatible store (s3rver), standalone and multi-process.
QUIVER_PYMILVUS_CHAOS=0 tests/pymilvus/run.sh 2.5.14 --s3
# The SDK's plugin test loads a real router component (built with the bundled plugins).
QUIVER_TEST_PLUGIN_WASM="$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip2/plugin/quiver_plugin_router_round_robin.wasm" \
  sdk/python/run-tests.sh -q
