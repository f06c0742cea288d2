#include "metanode/lb/load_balancer.h"

#include <algorithm>

#include "internal.h"

namespace metanode::lb {

const char* policy_name(Policy p) {
  switch (p) {
    case Policy::kRoundRobin:
      return "ROUND_ROBIN";
    case Policy::kLeastRequest:
      return "LEAST_REQUEST";
    case Policy::kRandom:
      return "RANDOM";
    case Policy::kRingHash:
      return "RING_HASH";
    case Policy::kMaglev:
      return "MAGLEV";
  }
  return "?";
}

uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}

uint64_t fnv1a(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::unique_ptr<LoadBalancer> make_load_balancer(Policy p, const std::vector<Host>& hosts,
                                                 const Options& opts) {
  std::vector<uint32_t> w;
  std::vector<uint64_t> ids;
  for (const auto& h : hosts) {
    w.push_back(std::max(1u, h.weight));
    ids.push_back(h.id);
  }
  switch (p) {
    case Policy::kLeastRequest:
      return detail::make_least_request(std::move(w));
    case Policy::kRandom:
      return detail::make_random(std::move(w));
    case Policy::kRingHash:
      return detail::make_ring_hash(std::move(w), std::move(ids), opts.ring_size);
    case Policy::kMaglev:
      return detail::make_maglev(std::move(w), std::move(ids), opts.maglev_table_size);
    case Policy::kRoundRobin:
      break;
  }
  return detail::make_weighted_round_robin(std::move(w));
}

}  // namespace metanode::lb
