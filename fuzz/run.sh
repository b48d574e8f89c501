#!/usr/bin/env bash
# Fuzzes each target for SECONDS (default 60) with cargo-fuzz on a nightly toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]        targets: decode server client negotiate
#
# New inputs go to a scratch corpus (fuzz/scratch/<target>, not committed); the seed
# corpus fuzz/corpus/<target> and the regressions are read, never written. A crash is
# saved under fuzz/artifacts/<target>/ and makes this script exit non-zero: copy the
# file into fuzz/regressions/<target>/ once fixed, and the stable test
# `cargo test -p precall-protocol --features arbitrary --test fuzz_replay` replays it.
# Prints, per target, the executions per second and the final coverage (libFuzzer's
# `cov:` edges and `ft:` features).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode server client negotiate)

cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "scratch/$t" "artifacts/$t"
  log="scratch/$t.log"
  echo "== fuzz $t for ${secs}s"
  if ! cargo +nightly fuzz run -O "$t" "scratch/$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$secs" -dict=precall.dict -max_len=4096 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    echo "FUZZ FAILURE in $t: see fuzz/$log and fuzz/artifacts/$t/" >&2
    tail -n 40 "$log" >&2
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -E '#[0-9]+.*exec/s: ' "$log" | tail -n 1 | grep -o 'exec/s: [0-9]*' || true)
  last=$(grep -E '#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' || true)
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' || true)
  corp=$(echo "$last" | grep -o 'corp: [0-9/]*[a-zA-Z]*' || true)
  echo "$t: $execs execs, $rate; $cov edges, $ft features, $corp"
done
exit $status
