// The data plane: one event loop per worker thread, each with its own
// acceptors (SO_REUSEPORT), downstream connections, upstream connection pools,
// load-balancer state and stats shard. Workers share nothing but the
// configuration snapshot, which they pick up without a lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "metanode/bpf/maps.h"
#include "metanode/codecs/codec.h"
#include "metanode/core/stats.h"
#include "metanode/net.h"
#include "metanode/result.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

struct ServerOptions {
  size_t workers = 0;  // 0: one per core
  // Interception mode: accept on `redirect` and learn each connection's
  // original destination from the BPF maps. Otherwise (--no-bpf) bind every
  // listener address directly.
  bool intercept = false;
  net::Endpoint redirect;
  std::chrono::milliseconds request_timeout{30000};
  size_t max_upstream_conns = 2;      // per endpoint per worker
  size_t max_inflight_per_conn = 1024;  // downstream reads pause beyond this
  codecs::Limits limits;
};

class Server {
 public:
  Server(ServerOptions opts, bpf::Maps* maps);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Publishes a configuration; safe from any thread but a worker's. In
  // --no-bpf mode after start(), returns once every worker has bound the new
  // listener set: the first address that could not be bound is the error
  // (the rest of the configuration is live regardless).
  Result<void> publish(std::shared_ptr<const xds::Snapshot> snap);
  std::shared_ptr<const xds::Snapshot> snapshot() const;

  Result<void> start();
  void stop();
  bool ready() const;  // started (configuration readiness is the source's)

  std::vector<const StatsShard*> shards() const;
  StatsShard& control_stats();
  // Envoy-like /clusters text: every cluster, endpoint and its request count.
  std::string clusters_text() const;

  struct Impl;  // public name so the workers in server.cc can refer to it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace metanode::core
