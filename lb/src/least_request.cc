// Least request by the power of two choices: draw two hosts (by weight) and
// keep the one with fewer requests in flight per unit of weight. As good as
// a full scan in practice and O(log n); with no load it is a weighted
// random choice, so weights hold when every host is idle too.
#include "internal.h"

namespace metanode::lb::detail {
namespace {

class LeastRequest final : public LoadBalancer {
 public:
  explicit LeastRequest(std::vector<uint32_t> w) : w_(std::move(w)), draw_(w_) {}

  std::optional<size_t> pick(const PickContext& ctx) override {
    auto a = draw_.draw_usable(ctx);
    if (!a) return std::nullopt;
    auto b = draw_.draw_usable(ctx);
    if (!b || *a == *b) return a;
    // active/weight compared without division.
    uint64_t la = uint64_t(active(ctx, *a)) * w_[*b];
    uint64_t lb = uint64_t(active(ctx, *b)) * w_[*a];
    return la <= lb ? a : b;
  }

 private:
  std::vector<uint32_t> w_;
  WeightedDraw draw_;
};

}  // namespace

std::unique_ptr<LoadBalancer> make_least_request(std::vector<uint32_t> w) {
  return std::make_unique<LeastRequest>(std::move(w));
}

}  // namespace metanode::lb::detail
