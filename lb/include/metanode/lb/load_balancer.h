// Load balancers over one cluster's hosts. A balancer is built once per
// configuration (weights are fixed for its lifetime, as in Envoy, where
// the host set is rebuilt on every EDS update) and asked for a host per
// request with the live facts that change between requests: which hosts
// are usable (not ejected, not backing off), how busy each one is, and the
// request's hash key when the route hashes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace metanode::lb {

enum class Policy : uint8_t { kRoundRobin, kLeastRequest, kRandom, kRingHash, kMaglev };
const char* policy_name(Policy p);

struct Options {
  // Ring hash: points on the ring in total (Envoy's minimum_ring_size; its
  // default is 1024). Each host gets a share proportional to its weight.
  uint64_t ring_size = 1024;
  // Maglev: lookup table size, a prime (Envoy's default 65537).
  uint64_t maglev_table_size = 65537;
};

// Small, fast generator for per-request draws (splitmix64); one per worker.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0; bias below 2^-32 for any n < 2^32.
  uint64_t below(uint64_t n) {
    __extension__ using u128 = unsigned __int128;
    return uint64_t(u128(next()) * n >> 64);
  }

 private:
  uint64_t s_;
};

// What a pick may consult. `usable` and `active` are indexed like the
// weights the balancer was built with; either may be empty (all usable,
// nothing active).
struct PickContext {
  PickContext(Rng* r = nullptr) : rng(r) {}  // NOLINT: implicit, PickContext ctx{&rng}
  Rng* rng;
  std::optional<uint64_t> hash;  // set when the route hashes and the key was present
  std::function<bool(size_t)> usable;
  std::function<uint32_t(size_t)> active;
};

// One host as a balancer sees it: its weight (0 counts as 1) and a stable
// identity (e.g. a hash of its address), so hash policies keep a host's
// keys when other hosts come and go.
struct Host {
  uint32_t weight = 1;
  uint64_t id = 0;
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  // A host index, or nullopt when no host is usable. Hash-based policies
  // fall back to a random usable host when the request has no key.
  virtual std::optional<size_t> pick(const PickContext& ctx) = 0;
};

std::unique_ptr<LoadBalancer> make_load_balancer(Policy p, const std::vector<Host>& hosts,
                                                 const Options& opts = {});

// Mixes a 64-bit value so that every input bit reaches every output bit
// (murmur3's finalizer); used for ring points and request keys alike.
uint64_t mix64(uint64_t h);
// FNV-1a over bytes, continuing from `h`.
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace metanode::lb
