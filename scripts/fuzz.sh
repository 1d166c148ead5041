#!/usr/bin/env bash
# Builds and runs Quiver's fuzz targets (fuzz/, docs/fuzzing.md) with cargo-fuzz on the stable
# toolchain: `-s none` (no sanitizer, so no nightly `-Zsanitizer` flag; Rust code is memory-safe
# and the targets check their own properties), debug assertions on (overflow checks included).
#
#   scripts/fuzz.sh build                     # build every target
#   scripts/fuzz.sh run [SECONDS] [TARGET...] # run each target SECONDS (default 20), all by default
#   scripts/fuzz.sh seeds                     # rewrite the committed seed corpora, fuzz/corpus/
#   scripts/fuzz.sh list
#
# Extra libFuzzer flags go in FUZZ_ARGS (e.g. FUZZ_ARGS="-jobs=4 -workers=4"). New inputs are
# kept in $FUZZ_TARGET_DIR/corpus/<target> (outside the repository), crashes in
# fuzz/artifacts/<target>/. The build goes to $FUZZ_TARGET_DIR (default
# ~/.cache/quiver-fuzz-target): instrumented code cannot share the normal target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/env.sh
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/quiver-fuzz-target}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
# A shared build directory would be locked by (and useless to) the instrumented build.
unset CARGO_BUILD_BUILD_DIR

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: cargo-fuzz is missing; run scripts/install-deps.sh" >&2
  exit 1
fi

# faiss takes long to compile; reuse the static libraries the normal build made (scripts/env.sh's
# target directory), through a `links` override of faiss-sys in a cargo config that only this
# script's cargo invocations see (cargo reads .cargo/config.toml from the working directory up).
CONFIG_DIR="$FUZZ_TARGET_DIR/cargo-config"
mkdir -p "$CONFIG_DIR/.cargo"
faiss_lib="$(find "$CARGO_TARGET_DIR" -path '*/faiss-sys-*/out/lib/libfaiss_c.a' -print -quit 2>/dev/null || true)"
if [ -n "$faiss_lib" ] && [ -f "$(dirname "$faiss_lib")/libfaiss.a" ]; then
  cat >"$CONFIG_DIR/.cargo/config.toml" <<EOF
# Written by scripts/fuzz.sh: link the faiss the normal build compiled instead of building it again.
[target.$TRIPLE.faiss_c]
rustc-link-search = ["native=$(dirname "$faiss_lib")"]
rustc-link-lib = ["static=faiss_c", "static=faiss", "stdc++", "gomp", "blas", "lapack"]
EOF
else
  echo "fuzz: no faiss build under $CARGO_TARGET_DIR; the fuzz build compiles faiss itself (slow)" >&2
  rm -f "$CONFIG_DIR/.cargo/config.toml"
fi

fuzz() {
  (cd "$CONFIG_DIR" && cargo fuzz "$@")
}
BUILD_OPTS=(--fuzz-dir "$ROOT/fuzz" --target-dir "$FUZZ_TARGET_DIR" -s none --debug-assertions --codegen-units 16)

targets() {
  fuzz list --fuzz-dir "$ROOT/fuzz"
}

cmd="${1:-run}"
shift || true
case "$cmd" in
  list) targets ;;
  build) fuzz build "${BUILD_OPTS[@]}" ;;
  seeds)
    fuzz build "${BUILD_OPTS[@]}"
    # The generator is a plain binary of the fuzz crate, built with the targets.
    rm -rf "$ROOT/fuzz/corpus"
    "$FUZZ_TARGET_DIR/$TRIPLE/release/seed_corpus" "$ROOT/fuzz/corpus"
    ;;
  run)
    seconds="${1:-20}"
    shift || true
    selected=("$@")
    [ ${#selected[@]} -gt 0 ] || mapfile -t selected < <(targets)
    fuzz build "${BUILD_OPTS[@]}"
    for t in "${selected[@]}"; do
      work="$FUZZ_TARGET_DIR/corpus/$t"
      log="$FUZZ_TARGET_DIR/logs/$t.log"
      mkdir -p "$work" "$ROOT/fuzz/corpus/$t" "$(dirname "$log")"
      # -rss_limit_mb: the targets build real faiss indexes and decode messages up to the
      # decoders' limits; 4 GiB leaves room for both.
      # shellcheck disable=SC2086
      if ! fuzz run "${BUILD_OPTS[@]}" "$t" "$work" "$ROOT/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/, the log in $log" >&2
        exit 1
      fi
      echo "fuzz: $t ran ${seconds}s:" "$(grep -oE 'stat::(number_of_executed_units|new_units_added): *[0-9]+' "$log" | tr '\n' ' ')" >&2
    done
    ;;
  *)
    echo "usage: scripts/fuzz.sh [build | run [SECONDS] [TARGET...] | seeds | list]" >&2
    exit 2
    ;;
esac
