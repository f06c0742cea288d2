// Ketama-style consistent hashing: each host owns points on a 64-bit ring
// in proportion to its weight; a request goes to the first point at or
// after its key. Removing a host moves only the keys it owned. An unusable
// host passes its keys on to the next usable point clockwise.
#include <cmath>

#include "internal.h"

namespace metanode::lb::detail {
namespace {

class RingHash final : public LoadBalancer {
 public:
  RingHash(std::vector<uint32_t> w, const std::vector<uint64_t>& ids, uint64_t ring_size)
      : draw_(w) {
    uint64_t total = draw_.total();
    ring_size = std::clamp<uint64_t>(ring_size, w.size(), 8u << 20);
    for (size_t i = 0; i < w.size(); ++i) {
      // At least one point each, the rest by share of the total weight.
      uint64_t points = std::max<uint64_t>(
          1, uint64_t(std::llround(double(ring_size) * double(w[i]) / double(total))));
      for (uint64_t p = 0; p < points; ++p) {
        uint64_t key[2] = {ids[i], p};
        ring_.push_back({mix64(fnv1a(key, sizeof key)), i});
      }
    }
    std::sort(ring_.begin(), ring_.end());
  }

  std::optional<size_t> pick(const PickContext& ctx) override {
    if (ring_.empty()) return std::nullopt;
    if (!ctx.hash) return draw_.draw_usable(ctx);
    auto it = std::lower_bound(ring_.begin(), ring_.end(), std::make_pair(*ctx.hash, size_t(0)));
    size_t start = size_t(it - ring_.begin()) % ring_.size();
    // Walk clockwise past unusable hosts; bounded by the ring.
    for (size_t k = 0; k < ring_.size(); ++k) {
      size_t h = ring_[(start + k) % ring_.size()].second;
      if (usable(ctx, h)) return h;
      if (k > 64 * draw_.size()) break;  // almost everything is down: scan by host
    }
    for (size_t h = 0; h < draw_.size(); ++h)
      if (usable(ctx, h)) return h;
    return std::nullopt;
  }

 private:
  WeightedDraw draw_;
  std::vector<std::pair<uint64_t, size_t>> ring_;
};

}  // namespace

std::unique_ptr<LoadBalancer> make_ring_hash(std::vector<uint32_t> w, std::vector<uint64_t> ids,
                                             uint64_t ring_size) {
  return std::make_unique<RingHash>(std::move(w), ids, ring_size);
}

}  // namespace metanode::lb::detail
