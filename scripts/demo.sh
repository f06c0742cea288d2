#!/bin/sh
# The main job on a fresh Debian 12 machine, as root: install what is
# needed, build, and run Aeraki's MetaRouter tutorial for Thrift on this one
# machine (network namespaces as node and pods, eBPF interception, one
# metanoded, real python3-thrift client and servers).
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (namespaces, cgroups, eBPF)" >&2; exit 2; fi
./scripts/install-deps.sh
./scripts/build.sh build
exec ./build/tests/metanode-demo "${1:-1000}"
