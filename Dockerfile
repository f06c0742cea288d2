# The daemon image the chart runs: Debian 12 with metanoded, metanodectl and
# the shared libraries they link, built from this tree in a first stage.
#   docker build -t metanode/metanoded:0.1.0 .
# (No engine runs on the development machines; CI checks the chart, not
# this file.)
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./scripts/install-deps.sh \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETANODE_TESTS=OFF \
 && cmake --build /build --target metanoded metanodectl

FROM debian:12-slim
# Runtime libraries only (what `ldd` lists for the two binaries), and
# util-linux's mount for the chart's bpffs init container (in the base image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libprotobuf32 libgrpc++1.51 libyaml-cpp0.7 \
      libspdlog1.10 libfmt9 libabsl20220623 libc-ares2 libelf1 libgrpc29 libre2-9 libssl3 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/daemon/metanoded /build/daemon/metanodectl /usr/local/bin/
# The BPF object is embedded in metanoded. Ports: 15001 redirect, 15000
# admin (loopback), 15020 metrics, 15021 readiness.
ENTRYPOINT ["/usr/local/bin/metanoded"]
