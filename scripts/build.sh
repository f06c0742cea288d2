#!/bin/sh
# Configures and builds metanode. Usage: scripts/build.sh [BUILD_DIR] [cmake args...]
#   scripts/build.sh build                      # RelWithDebInfo
#   scripts/build.sh build-asan -DMETANODE_SANITIZE=ON
set -eu
cd "$(dirname "$0")/.."
dir=${1:-build}
[ $# -gt 0 ] && shift
cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
# Two cores on the reference machine: more jobs only thrash.
ninja -C "$dir" -j "$(nproc)"
