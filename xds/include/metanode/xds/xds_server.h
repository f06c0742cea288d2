// metanode-xds's gRPC side: serves a state of the world to any number of
// xDS clients, over ADS (envoy.service.discovery.v3.AggregatedDiscoveryService,
// state of the world) and over the plain RDS service Aeraki's listeners name
// (envoy.service.route.v3.RouteDiscoveryService/StreamRoutes). Every resource
// is versioned by a hash of its content; a change pushes each stream only
// the resources that changed (Listener and Cluster: the whole set, as the
// protocol requires for them).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "metanode/result.h"
#include "metanode/xds/resources.h"

namespace metanode::xds {

struct XdsServerStats {
  uint64_t streams_active = 0;
  uint64_t streams_total = 0;
  uint64_t responses = 0;
  uint64_t acks = 0;
  uint64_t nacks = 0;
};

class XdsServer {
 public:
  XdsServer();
  ~XdsServer();
  XdsServer(const XdsServer&) = delete;
  XdsServer& operator=(const XdsServer&) = delete;

  // Serves on HOST:PORT (port 0: any); returns the bound port.
  Result<int> start(const std::string& listen);
  void stop();
  // Replaces what is served; streams are pushed what changed. Thread-safe.
  // Returns the content version of the whole set (unchanged: nothing pushed).
  std::string update(const Resources& resources);
  XdsServerStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace metanode::xds
