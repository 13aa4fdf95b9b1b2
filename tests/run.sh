#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds twice (plain, and with
# AddressSanitizer + UndefinedBehaviorSanitizer) with -Werror, and runs every test under
# CTest in both builds, then a bounded run of the libFuzzer targets (tests/fuzz). Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
JOBS=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
cmake -S . -B build-asan -DDSYNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$JOBS"
# Leak checking stays on; curl/OpenSSL keep process-lifetime state that is freed at exit.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
echo "== tests (plain build) =="
(cd build && ctest --output-on-failure -j2 --timeout 900) || status=1
echo "== tests (ASan + UBSan build) =="
(cd build-asan && ctest --output-on-failure -j2 --timeout 900) || status=1
echo "== fuzz targets (bounded run, regressions replayed) =="
bash tests/fuzz/run.sh || status=1
exit $status
