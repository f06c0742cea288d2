#include "metanode/core/router.h"

#include <algorithm>
#include <functional>

namespace metanode::core {
namespace {
uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// FNV's last byte barely reaches the high bits; a ring ordered by the full
// value needs them mixed (murmur3's finalizer).
uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}
}  // namespace

const xds::Route* match_route(const xds::RouteTable& table, const codecs::Metadata& md) {
  for (const auto& r : table.routes) {
    bool ok = std::all_of(r.match.begin(), r.match.end(),
                          [&](const xds::AttributeMatcher& m) { return m.matches(md.get(m.name)); });
    if (ok) return &r;
  }
  return nullptr;
}

const xds::ClusterRef* pick_cluster(const xds::Route& route, uint64_t draw) {
  if (route.clusters.empty()) return nullptr;
  if (route.clusters.size() == 1) return &route.clusters[0];
  // Map the 64-bit draw onto [0, total) without modulo bias worth noticing
  // (total is at most ~2^32, so the bias is below 2^-32).
  uint64_t x = uint64_t((unsigned __int128)draw * route.total_weight >> 64);
  for (const auto& c : route.clusters) {
    if (x < c.weight) return &c;
    x -= c.weight;
  }
  return &route.clusters.back();
}

uint64_t LoadBalancer::hash_key(const xds::Route& route, const codecs::Metadata& md, bool& found) {
  uint64_t h = 0xcbf29ce484222325ull;
  found = false;
  for (const auto& k : route.hash_keys) {
    if (const std::string* v = md.get(k)) {
      h = fnv1a(*v, fnv1a(k, h));
      found = true;
    }
  }
  return mix(h);
}

const xds::Endpoint* LoadBalancer::pick_ring(const xds::Cluster& c, uint64_t h) {
  auto& ring = rings_[&c];
  if (ring.empty()) {
    // ~64 points per endpoint (scaled by weight): even spread, small memory.
    for (uint32_t i = 0; i < c.endpoints.size(); ++i) {
      std::string key = c.endpoints[i].address.str();
      uint32_t points = 64 * std::max(1u, c.endpoints[i].weight);
      for (uint32_t p = 0; p < points; ++p)
        ring.emplace_back(mix(fnv1a(key + "_" + std::to_string(p))), i);
    }
    std::sort(ring.begin(), ring.end());
  }
  auto it = std::lower_bound(ring.begin(), ring.end(), std::make_pair(h, 0u));
  if (it == ring.end()) it = ring.begin();
  return &c.endpoints[it->second];
}

}  // namespace metanode::core
