# Shared by build.sh and test.sh (sourced, not run): the toolchain pieces cargo does
# not fetch by itself, installed only when missing or of the wrong version.

# The workspace root and the crate's directory.
WASM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$WASM_DIR/../.." && pwd)"
TARGET=wasm32-unknown-unknown

# The Rust standard library for wasm32-unknown-unknown.
ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "adding the $TARGET target"
    rustup target add "$TARGET"
  fi
}

# The wasm-bindgen version Cargo.lock pins (the CLI must be exactly that version).
locked_wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

# wasm-bindgen and wasm-bindgen-test-runner, from crates.io through cargo, at exactly
# the locked version (no wasm-pack, no prebuilt binaries).
ensure_wasm_bindgen_cli() {
  local want have
  want="$(locked_wasm_bindgen_version)"
  if [ -z "$want" ]; then
    echo "no wasm-bindgen in $ROOT/Cargo.lock" >&2
    return 1
  fi
  have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
  if [ "$have" != "$want" ] || ! command -v wasm-bindgen-test-runner >/dev/null; then
    echo "installing wasm-bindgen-cli $want (found: ${have:-none}); this takes a few minutes"
    # Built for a quick install rather than top speed (opt-level 1, no LTO, parallel
    # codegen): about 150 s instead of about 470 s on a 2-core machine, and it turns
    # this workspace's .wasm in a fraction of a second all the same (its output is
    # byte-identical to the fully optimised build's).
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
      cargo install wasm-bindgen-cli --version "$want" --locked
  fi
}
