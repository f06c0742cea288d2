#!/bin/sh
# Installs every Debian 12 package metanode needs to build, test and demo.
# Idempotent; run as root on a fresh machine. Nothing else is assumed present.
set -eu
export DEBIAN_FRONTEND=noninteractive
PKGS="
  build-essential cmake ninja-build pkg-config git openssl libssl-dev
  clang llvm lld libclang-rt-14-dev
  libbpf-dev bpftool libelf-dev zlib1g-dev
  libboost1.81-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libre2-dev
  libspdlog-dev libfmt-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3 python3-thrift thrift-compiler libthrift-dev libevent-dev
  iproute2 util-linux procps psmisc
  haproxy redis-server
  maven openjdk-17-jdk-headless
"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
fi
echo "install-deps: all packages present"

# Independent Dubbo implementations (sofa-rpc-node, dubbo-remoting,
# apache-dubbo-js) used as real peers by the tests, from the npm registry at
# the versions pinned in the lockfile.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends nodejs npm
fi
peers="$(dirname "$0")/../tests/peers/dubbo"
if [ ! -f "$peers/node_modules/.package-lock.json" ] ||
   [ "$peers/package-lock.json" -nt "$peers/node_modules/.package-lock.json" ]; then
  (cd "$peers" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "install-deps: npm peers present"

# Go modules for the xDS peers (go-control-plane, Aeraki's API types), from
# the Go module proxy at the versions in go.sum. Go itself comes with the
# machine (Debian 12's golang is too old for go-control-plane).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then PATH=$PATH:/usr/local/go/bin; fi
if ! command -v go >/dev/null 2>&1; then echo "install-deps: go (>= 1.26, as tests/peers/xds/go.mod says) is required on PATH" >&2; exit 1; fi
(cd "$(dirname "$0")/../tests/peers/xds" && GOFLAGS=-mod=readonly go mod download)
(cd "$(dirname "$0")/../tests/peers/ratelimit" && GOFLAGS=-mod=readonly go mod download)
(cd "$(dirname "$0")/../tests/peers/helm" && GOFLAGS=-mod=readonly go mod download)
echo "install-deps: Go modules present"

# Apache Dubbo Java (provider and consumer peers), from Maven Central at the
# versions pinned in the pom, with the plugins that build it.
(cd "$(dirname "$0")/../tests/peers/dubbo-java" && mvn -q -B dependency:resolve dependency:resolve-plugins >/dev/null)
echo "install-deps: Maven artifacts present"
