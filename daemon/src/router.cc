#include "metanode/core/router.h"

#include <algorithm>

#include "metanode/lb/load_balancer.h"

namespace metanode::core {

bool matches_all(const std::vector<xds::AttributeMatcher>& match, const codecs::Metadata& md) {
  return std::all_of(match.begin(), match.end(),
                     [&](const xds::AttributeMatcher& m) { return m.matches(md.get(m.name)); });
}

const xds::Route* match_route(const xds::RouteTable& table, const codecs::Metadata& md) {
  for (const auto& r : table.routes)
    if (matches_all(r.match, md)) return &r;
  return nullptr;
}

const xds::ClusterRef* pick_cluster(const xds::Route& route, uint64_t draw) {
  if (route.clusters.empty()) return nullptr;
  if (route.clusters.size() == 1) return &route.clusters[0];
  // Map the 64-bit draw onto [0, total) without modulo bias worth noticing
  // (total is at most ~2^32, so the bias is below 2^-32).
  __extension__ using u128 = unsigned __int128;
  uint64_t x = uint64_t(u128(draw) * route.total_weight >> 64);
  for (const auto& c : route.clusters) {
    if (x < c.weight) return &c;
    x -= c.weight;
  }
  return &route.clusters.back();
}

std::optional<uint64_t> request_hash(const xds::Route& route, const codecs::Metadata& md,
                                     net::Endpoint source) {
  uint64_t h = 0xcbf29ce484222325ull;
  bool found = false;
  for (const auto& k : route.hash_keys) {
    if (const std::string* v = md.get(k)) {
      h = lb::fnv1a(k.data(), k.size(), h);
      h = lb::fnv1a(v->data(), v->size(), h);
      found = true;
    }
  }
  if (route.hash_source_ip) {
    // The address only: a pod's connections from different ports stick too.
    h = lb::fnv1a(&source.addr, sizeof source.addr, h);
    found = true;
  }
  if (!found) return std::nullopt;
  return lb::mix64(h);
}

}  // namespace metanode::core
