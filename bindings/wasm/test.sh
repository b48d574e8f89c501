#!/usr/bin/env bash
# The facade's wasm-bindgen-test tests, compiled for wasm32-unknown-unknown and run in
# Node by wasm-bindgen-test-runner (tests/node.rs; the same scenarios run on the host
# in tests/facade.rs under plain `cargo test`). Extra arguments go to cargo test.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
if ! command -v node >/dev/null; then
  echo "node is needed to run the wasm tests (Debian: apt-get install nodejs)" >&2
  exit 1
fi
ensure_wasm_target
ensure_wasm_bindgen_cli

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
cargo test -p precall-wasm --target "$TARGET" "$@"
