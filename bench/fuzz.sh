#!/bin/sh
# Runs one libFuzzer target for a while and reports how many inputs it ran.
#   bench/fuzz.sh TARGET SECONDS      TARGET: thrift dubbo hessian xds xds_response
#   bench/fuzz.sh all SECONDS         each target in turn, SECONDS each
# Builds build-fuzz (clang, -DMETANODE_FUZZ=ON) when it is missing. The
# run starts from the target's corpus (tests/fuzz/corpus/TARGET, and the
# shared captures for the codecs) and grows a working copy under
# build-fuzz/fuzz-work/TARGET; inputs that crash land in
# tests/fuzz/crashes/TARGET/ - commit them into tests/fuzz/corpus/TARGET/
# once fixed, where ctest (fuzz_replay.TARGET) replays them in every build.
set -eu
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 TARGET|all SECONDS" >&2; exit 2; }
target=$1 secs=$2
if [ "$target" = all ]; then
  for t in thrift dubbo hessian xds xds_response; do "$0" "$t" "$secs"; done
  exit 0
fi
case $target in
  thrift|dubbo) seeds="tests/fuzz/corpus/$target ../shared/corpus/$target" ;;
  hessian|xds|xds_response) seeds="tests/fuzz/corpus/$target" ;;
  *) echo "unknown target '$target'" >&2; exit 2 ;;
esac
bin=build-fuzz/tests/${target}_fuzzer
if [ ! -x "$bin" ]; then
  CC=clang CXX=clang++ ./scripts/build.sh build-fuzz -DMETANODE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
work=build-fuzz/fuzz-work/$target
crashes=tests/fuzz/crashes/$target
mkdir -p "$work" "$crashes"
existing=""
for s in $seeds; do [ -d "$s" ] && existing="$existing $s"; done
log=build-fuzz/fuzz-work/$target.log
# One job, so the run uses one core and its numbers compare across runs.
# shellcheck disable=SC2086
"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$crashes/" "$work" $existing >"$log" 2>&1 || {
  echo "fuzz $target: FINDING (see $log and $crashes/)"; tail -30 "$log"; exit 1; }
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
echo "fuzz $target: ${execs:-?} executions in ${secs}s (${rate:-?}/s), $cov, no finding"
