#include "metanode/xds/token_bucket.h"

#include <algorithm>

#include "metanode/weak_registry.h"

namespace metanode::xds {

namespace {
int64_t ns_of(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

TokenBucket::TokenBucket(uint32_t max_tokens, uint32_t tokens_per_fill, std::chrono::nanoseconds interval)
    : max_(max_tokens),
      per_fill_(std::max<uint32_t>(1, tokens_per_fill)),
      interval_ns_(std::max<int64_t>(1, interval.count())),
      tokens_(max_tokens),
      next_fill_ns_(ns_of(std::chrono::steady_clock::now()) + interval_ns_) {}

bool TokenBucket::take(std::chrono::steady_clock::time_point now) {
  int64_t t = ns_of(now);
  int64_t due = next_fill_ns_.load(std::memory_order_acquire);
  if (t >= due) {
    int64_t periods = (t - due) / interval_ns_ + 1;
    // One thread wins the refill for these periods; the others see the
    // new deadline and only draw.
    if (next_fill_ns_.compare_exchange_strong(due, due + periods * interval_ns_,
                                              std::memory_order_acq_rel)) {
      int64_t cur = tokens_.load(std::memory_order_relaxed);
      int64_t add = periods > max_ ? max_ : periods * per_fill_;
      while (!tokens_.compare_exchange_weak(cur, std::min(max_, cur + add), std::memory_order_relaxed)) {
      }
    }
  }
  int64_t cur = tokens_.load(std::memory_order_relaxed);
  while (cur > 0)
    if (tokens_.compare_exchange_weak(cur, cur - 1, std::memory_order_relaxed)) return true;
  return false;
}

std::chrono::steady_clock::time_point TokenBucket::next_fill() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::nanoseconds(next_fill_ns_.load(std::memory_order_acquire)));
}

std::shared_ptr<TokenBucket> shared_token_bucket(const std::string& key, uint32_t max_tokens,
                                                 uint32_t tokens_per_fill,
                                                 std::chrono::nanoseconds interval) {
  // Never destroyed: snapshots released at exit still refer to it.
  static auto* buckets = new WeakRegistry<std::string, TokenBucket>();
  std::string k = key + "/" + std::to_string(max_tokens) + "/" + std::to_string(tokens_per_fill) +
                  "/" + std::to_string(interval.count());
  return buckets->get_or_make(
      k, [&] { return std::make_shared<TokenBucket>(max_tokens, tokens_per_fill, interval); });
}

}  // namespace metanode::xds
