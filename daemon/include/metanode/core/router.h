// Per-request decisions: which route, which cluster, which endpoint. Pure
// functions over an immutable snapshot plus a small per-worker state, so
// they are unit-tested without sockets.
#pragma once

#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include "metanode/codecs/codec.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

// First route whose matchers all hold; nullptr if none.
const xds::Route* match_route(const xds::RouteTable& table, const codecs::Metadata& md);

// Weighted choice: `draw` uniform in [0, 2^64). Clusters are chosen with
// probability weight / total_weight.
const xds::ClusterRef* pick_cluster(const xds::Route& route, uint64_t draw);

// Small, fast generator for per-request draws; one per worker.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t s_;
};

// Load balancer state of one worker. Round-robin cursors and hash rings are
// keyed by cluster identity and dropped when the snapshot changes.
class LoadBalancer {
 public:
  // `active(endpoint)` reports in-flight requests (least-request policy).
  template <class ActiveFn>
  const xds::Endpoint* pick(const xds::Cluster& c, const xds::Route& route,
                            const codecs::Metadata& md, Rng& rng, ActiveFn&& active);

  void reset() {
    rr_.clear();
    rings_.clear();
  }

  static uint64_t hash_key(const xds::Route& route, const codecs::Metadata& md, bool& found);

 private:
  const xds::Endpoint* pick_ring(const xds::Cluster& c, uint64_t h);

  std::unordered_map<const xds::Cluster*, uint64_t> rr_;
  std::unordered_map<const xds::Cluster*, std::vector<std::pair<uint64_t, uint32_t>>> rings_;
};

template <class ActiveFn>
const xds::Endpoint* LoadBalancer::pick(const xds::Cluster& c, const xds::Route& route,
                                        const codecs::Metadata& md, Rng& rng, ActiveFn&& active) {
  const auto& eps = c.endpoints;
  if (eps.empty()) return nullptr;
  if (eps.size() == 1) return &eps[0];
  switch (c.lb) {
    case xds::LbPolicy::kRandom:
      return &eps[rng.next() % eps.size()];
    case xds::LbPolicy::kLeastRequest: {
      // Power of two choices: as good as full scans in practice, O(1).
      const auto* a = &eps[rng.next() % eps.size()];
      const auto* b = &eps[rng.next() % eps.size()];
      return active(a->address) <= active(b->address) ? a : b;
    }
    case xds::LbPolicy::kRingHash: {
      bool found = false;
      uint64_t h = hash_key(route, md, found);
      if (found) return pick_ring(c, h);
      return &eps[rng.next() % eps.size()];
    }
    case xds::LbPolicy::kRoundRobin:
    default:
      return &eps[rr_[&c]++ % eps.size()];
  }
}

}  // namespace metanode::core
