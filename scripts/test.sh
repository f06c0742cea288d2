#!/bin/sh
# Installs, builds and runs every test, as root on a fresh Debian 12 machine.
# Two builds: the regular one, and one with AddressSanitizer + UBSan that
# runs the same tests again (data-path memory errors surface there).
# Fails if any test fails, or if any test was skipped (a skipped root-only
# test would hide a kernel regression).
set -eu
cd "$(dirname "$0")/.."
# The Go peers' module cache lives under $HOME.
export HOME="${HOME:-/root}"
if [ "$(id -u)" != 0 ]; then echo "run as root: the root test tier loads eBPF and builds namespaces" >&2; exit 2; fi
./scripts/install-deps.sh

run_suite() {
  dir=$1
  log="$dir/ctest.log"
  # Root tests build their own namespaces and cgroups; they may run in
  # parallel with each other (every testbed has its own tag).
  set +e
  ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 300 >"$log" 2>&1
  rc=$?
  set -e
  tail -n 25 "$log"
  if [ $rc -ne 0 ]; then echo "FAILED: tests in $dir" >&2; exit 1; fi
  if grep -Eq '\*\*\*Skipped|[1-9][0-9]* tests? (were )?skipped|Not Run' "$log"; then
    echo "FAILED: tests were skipped in $dir:" >&2
    grep -E 'Skipped|Not Run' "$log" >&2
    exit 1
  fi
  total=$(grep -Eo 'out of [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
  echo "OK: $total tests passed in $dir"
}

./scripts/build.sh build
run_suite build
./scripts/build.sh build-asan -DMETANODE_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan
echo "all tests passed (regular and ASan/UBSan builds)"
