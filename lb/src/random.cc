// Weighted random: each pick independent, probability weight / total.
#include "internal.h"

namespace metanode::lb::detail {
namespace {

class Random final : public LoadBalancer {
 public:
  explicit Random(std::vector<uint32_t> w) : draw_(w) {}
  std::optional<size_t> pick(const PickContext& ctx) override { return draw_.draw_usable(ctx); }

 private:
  WeightedDraw draw_;
};

}  // namespace

std::unique_ptr<LoadBalancer> make_random(std::vector<uint32_t> w) {
  return std::make_unique<Random>(std::move(w));
}

}  // namespace metanode::lb::detail
