// Weighted round robin as an earliest-deadline-first schedule (Envoy's
// choice): each host's next turn is due 1/weight after its last, so a host
// of weight 3 is picked three times as often, evenly interleaved, in
// O(log n) per pick. Equal weights degenerate to a plain cursor.
#include <queue>

#include "internal.h"

namespace metanode::lb::detail {
namespace {

class WeightedRoundRobin final : public LoadBalancer {
 public:
  explicit WeightedRoundRobin(std::vector<uint32_t> w) : w_(std::move(w)) {
    equal_ = std::all_of(w_.begin(), w_.end(), [&](uint32_t x) { return x == w_[0]; });
    if (!equal_)
      for (size_t i = 0; i < w_.size(); ++i) q_.push({1.0 / w_[i], i});
  }

  std::optional<size_t> pick(const PickContext& ctx) override {
    if (w_.empty()) return std::nullopt;
    for (size_t tries = 0; tries < w_.size(); ++tries) {
      size_t h = equal_ ? cursor_++ % w_.size() : next_due();
      if (usable(ctx, h)) return h;
    }
    // A heavy unusable host can hold the schedule's next turns for longer
    // than n tries: take the next usable host after a rotating cursor.
    for (size_t k = 0; k < w_.size(); ++k) {
      size_t h = (cursor_ + k) % w_.size();
      if (usable(ctx, h)) {
        cursor_ = h + 1;
        return h;
      }
    }
    return std::nullopt;
  }

 private:
  struct Due {
    double at;
    size_t host;
    bool operator>(const Due& o) const { return at != o.at ? at > o.at : host > o.host; }
  };
  size_t next_due() {
    Due d = q_.top();
    q_.pop();
    q_.push({d.at + 1.0 / w_[d.host], d.host});
    return d.host;
  }

  std::vector<uint32_t> w_;
  bool equal_ = true;
  uint64_t cursor_ = 0;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> q_;
};

}  // namespace

std::unique_ptr<LoadBalancer> make_weighted_round_robin(std::vector<uint32_t> w) {
  return std::make_unique<WeightedRoundRobin>(std::move(w));
}

}  // namespace metanode::lb::detail
