// Shared by the policies: a weighted random choice
// among usable hosts that the hash policies fall back to.
#pragma once

#include <algorithm>

#include "metanode/lb/load_balancer.h"

namespace metanode::lb::detail {

inline bool usable(const PickContext& ctx, size_t i) { return !ctx.usable || ctx.usable(i); }
inline uint32_t active(const PickContext& ctx, size_t i) { return ctx.active ? ctx.active(i) : 0; }

// Cumulative weights for O(log n) weighted draws.
class WeightedDraw {
 public:
  explicit WeightedDraw(const std::vector<uint32_t>& w) {
    cum_.reserve(w.size());
    uint64_t t = 0;
    for (uint32_t x : w) cum_.push_back(t += x);
  }
  size_t size() const { return cum_.size(); }
  uint64_t total() const { return cum_.empty() ? 0 : cum_.back(); }
  size_t draw(Rng& rng) const {
    uint64_t x = rng.below(total());
    return size_t(std::upper_bound(cum_.begin(), cum_.end(), x) - cum_.begin());
  }
  // A weighted draw that lands on a usable host: a few tries (cheap when
  // most hosts are usable), then a weighted draw over the usable ones only.
  std::optional<size_t> draw_usable(const PickContext& ctx) const {
    if (cum_.empty()) return std::nullopt;
    for (int i = 0; i < 4; ++i) {
      size_t h = draw(*ctx.rng);
      if (usable(ctx, h)) return h;
    }
    uint64_t t = 0;
    std::vector<std::pair<uint64_t, size_t>> ok;
    for (size_t i = 0; i < cum_.size(); ++i)
      if (usable(ctx, i)) ok.emplace_back(t += cum_[i] - (i ? cum_[i - 1] : 0), i);
    if (ok.empty()) return std::nullopt;
    uint64_t x = ctx.rng->below(t);
    return std::upper_bound(ok.begin(), ok.end(), std::make_pair(x, ~size_t(0)))->second;
  }

 private:
  std::vector<uint64_t> cum_;
};

std::unique_ptr<LoadBalancer> make_weighted_round_robin(std::vector<uint32_t> w);
std::unique_ptr<LoadBalancer> make_least_request(std::vector<uint32_t> w);
std::unique_ptr<LoadBalancer> make_random(std::vector<uint32_t> w);
// Weights are at least 1 from here on; `ids` are the hosts' identities.
std::unique_ptr<LoadBalancer> make_ring_hash(std::vector<uint32_t> w, std::vector<uint64_t> ids,
                                             uint64_t ring_size);
std::unique_ptr<LoadBalancer> make_maglev(std::vector<uint32_t> w, std::vector<uint64_t> ids,
                                          uint64_t table_size);

}  // namespace metanode::lb::detail
