#!/usr/bin/env bash
# Builds precall-wasm for a web page: the crate for wasm32-unknown-unknown in release,
# then `wasm-bindgen --target web` into the repository's web/pkg/ (precall_wasm.js,
# precall_wasm_bg.wasm, precall_wasm.d.ts; generated, git-ignored), where the page
# web/app.js imports ./pkg/precall_wasm.js. Prints the size of the .wasm.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
ensure_wasm_target
ensure_wasm_bindgen_cli

cargo build -p precall-wasm --target "$TARGET" --release
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
wasm="$target_dir/$TARGET/release/precall_wasm.wasm"
out="$ROOT/web/pkg"
rm -rf "$out"
wasm-bindgen --target web --out-dir "$out" "$wasm"

size() { wc -c < "$1" | tr -d ' '; }
bg="$out/precall_wasm_bg.wasm"
echo "cargo's .wasm:        $(size "$wasm") bytes ($wasm)"
echo "web/pkg .wasm:        $(size "$bg") bytes, $(gzip -9 -c "$bg" | wc -c | tr -d ' ') gzipped ($bg)"
echo "web/pkg JS glue:      $(size "$out/precall_wasm.js") bytes"

# The generated module, loaded as a page loads it (in Node when there is one).
if command -v node >/dev/null; then
  node "$WASM_DIR/smoke.mjs"
fi
