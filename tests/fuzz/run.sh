#!/usr/bin/env bash
# Bounded fuzz run for the test suite: builds the libFuzzer targets with clang (their own
# build directory, DSYNC_FUZZ=ON), replays every checked-in regression input, then fuzzes each
# target for a bounded time starting from its checked-in seed corpus. Exits non-zero on any
# crash, leak, timeout or failed invariant. New inputs go to a temporary directory (the first
# corpus directory libFuzzer is given); the checked-in corpus is only read.
#
# Usage: bash tests/fuzz/run.sh [target...]
# Environment: DSYNC_FUZZ_SECONDS (per target, default 45), DSYNC_FUZZ_BUILD (build
# directory, default build-fuzz), CC (default clang-14). Crash inputs are kept in
# $DSYNC_FUZZ_BUILD/fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${DSYNC_FUZZ_SECONDS:-45}
BUILD=${DSYNC_FUZZ_BUILD:-build-fuzz}
CC_FUZZ=${CC:-clang-14}
case "$CC_FUZZ" in *clang*) ;; *) CC_FUZZ=clang-14 ;; esac
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_druid_lines fuzz_rowenc fuzz_rowdec fuzz_druid_error fuzz_config)

cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER="$CC_FUZZ" -DDSYNC_FUZZ=ON -DDSYNC_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target fuzz_targets

# The sanitizers' own settings; libFuzzer reports leaks itself at the end of each input.
# A smaller quarantine keeps RSS well under -rss_limit_mb on a shared machine.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=64
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
artifacts="$PWD/$BUILD/fuzz-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
for t in "${TARGETS[@]}"; do
  bin="$BUILD/tests/fuzz/$t"
  seeds="tests/fuzz/corpus/$t"
  regs="tests/fuzz/regressions/$t"
  flags=(-rss_limit_mb=512 -timeout=10 -artifact_prefix="$artifacts/$t-")
  [ -f "tests/fuzz/$t.dict" ] && flags+=(-dict="tests/fuzz/$t.dict")
  if [ -d "$regs" ] && [ -n "$(ls -A "$regs")" ]; then
    echo "== $t: regressions"
    if ! "$bin" "${flags[@]}" "$regs"/* </dev/null >"$work/$t.replay.log" 2>&1; then
      tail -n 40 "$work/$t.replay.log"
      echo "FAIL $t: a checked-in regression input fails again"
      status=1
      continue
    fi
  fi
  echo "== $t: fuzzing for ${SECS}s"
  mkdir -p "$work/$t"
  if "$bin" "${flags[@]}" -max_total_time="$SECS" -print_final_stats=1 \
    "$work/$t" "$seeds" </dev/null >"$work/$t.log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+.*DONE' \
      "$work/$t.log" | tr '\n' ' '
    echo
  else
    tail -n 60 "$work/$t.log"
    echo "FAIL $t: see the input saved under $artifacts"
    status=1
  fi
done
exit $status
