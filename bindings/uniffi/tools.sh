# Sourced by build.sh (not run): what the Kotlin and Python bindings need besides
# cargo, installed only when missing.
#
# - a Java runtime (the JDK these machines have; Debian's default-jre-headless otherwise);
# - JNA, which the generated Kotlin loads the library with: Debian's libjna-java
#   (/usr/share/java/jna.jar, with its native part from libjna-jni);
# - kotlinc: Debian's kotlin package is too old for current Kotlin, so the compiler
#   comes from the npm registry's `kotlin-compiler` package, at the version below,
#   installed into target/uniffi-tools (nothing global, nothing downloaded by hand).
# - Python 3.8+ for the generated Python (ctypes only, no package to install).

UNIFFI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$UNIFFI_DIR/../.." && pwd)"
KOTLIN_VERSION=2.4.20
TOOLS="$ROOT/target/uniffi-tools"
KOTLINC="$TOOLS/node_modules/kotlin-compiler/bin/kotlinc"
KOTLIN_STDLIB="$TOOLS/node_modules/kotlin-compiler/lib/kotlin-stdlib.jar"
JNA_JAR=/usr/share/java/jna.jar

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || { echo "no apt-get: install $* yourself" >&2; return 1; }
  echo "installing $* (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_java() {
  command -v java >/dev/null || apt_install default-jre-headless
}

ensure_jna() {
  [ -f "$JNA_JAR" ] || apt_install libjna-java
}

ensure_kotlinc() {
  local have
  have="$(cat "$TOOLS/node_modules/kotlin-compiler/package.json" 2>/dev/null |
    sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n 1 || true)"
  if [ "$have" != "$KOTLIN_VERSION" ] || [ ! -x "$KOTLINC" ]; then
    command -v npm >/dev/null || apt_install npm
    echo "installing kotlin-compiler $KOTLIN_VERSION from the npm registry into $TOOLS"
    mkdir -p "$TOOLS"
    npm install --prefix "$TOOLS" --no-audit --no-fund --silent "kotlin-compiler@$KOTLIN_VERSION"
  fi
}
