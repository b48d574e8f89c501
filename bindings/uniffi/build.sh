#!/usr/bin/env bash
# Builds precall-ffi and generates its bindings into target/uniffi/:
#
#   target/uniffi/kotlin/   uniffi/precall_ffi/precall_ffi.kt, and scenario.jar (the
#                           generated code and bindings/uniffi/kotlin/Scenario.kt)
#   target/uniffi/python/   precall_ffi.py with libprecall_ffi.so beside it
#   target/uniffi/swift/    precall_ffi.swift, precall_ffiFFI.h, precall_ffiFFI.modulemap
#   target/uniffi/lib/      libprecall_ffi.so (what JNA loads: -Djna.library.path)
#
# The Swift files cannot be compiled here (no Swift toolchain on Linux machines of
# this project); e2e/tests/phones.rs checks that they equal bindings/uniffi/swift/.
# After a change to the facade's API, `bindings/uniffi/build.sh --bless` copies the
# new ones there (review the diff).
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"

ensure_java
ensure_jna
ensure_kotlinc

OUT="$ROOT/target/uniffi"
cargo build -q -p precall-ffi -p precall-ffi-bindgen
lib="$ROOT/target/debug/libprecall_ffi.so"
rm -rf "$OUT/kotlin" "$OUT/python" "$OUT/swift" "$OUT/lib"
mkdir -p "$OUT/lib"
cp "$lib" "$OUT/lib/"
for lang in kotlin python swift; do
  # --no-format: the output must not depend on whether ktlint or swift-format exist.
  "$ROOT/target/debug/uniffi-bindgen" generate --no-format --library "$lib" \
    --language "$lang" --out-dir "$OUT/$lang" >/dev/null
done
cp "$lib" "$OUT/python/"

echo "compiling the Kotlin scenario (kotlinc $KOTLIN_VERSION)"
"$KOTLINC" -nowarn -cp "$JNA_JAR" -d "$OUT/kotlin/scenario.jar" \
  "$OUT/kotlin/uniffi/precall_ffi/precall_ffi.kt" "$UNIFFI_DIR/kotlin/Scenario.kt"
cp "$KOTLIN_STDLIB" "$OUT/kotlin/"

if [ "${1:-}" = "--bless" ]; then
  mkdir -p "$UNIFFI_DIR/swift"
  cp "$OUT/swift/"* "$UNIFFI_DIR/swift/"
  echo "copied the generated Swift files to bindings/uniffi/swift/"
fi
echo "bindings in $OUT: $(cd "$OUT" && find . -type f -name 'precall_ffi*' | sort | tr '\n' ' ')"
