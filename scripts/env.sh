# Sourced by the other scripts: where cargo builds (outside the clone, so CI runs reuse it).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
export QUIVER_BIN="$CARGO_TARGET_DIR/release/quiver"
