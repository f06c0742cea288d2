// A token bucket with Envoy's semantics (max_tokens, tokens_per_fill every
// fill_interval, starting full), lock-free so every worker can draw from
// one bucket: a limit holds for the node, not per worker. Buckets are
// shared by key through a registry, so a new configuration snapshot keeps
// the state of a limit it did not change (a push for another service must
// not refill everyone's buckets).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace metanode::xds {

class TokenBucket {
 public:
  TokenBucket(uint32_t max_tokens, uint32_t tokens_per_fill, std::chrono::nanoseconds interval);
  // Takes one token if there is one.
  bool take(std::chrono::steady_clock::time_point now);
  // When the next tokens arrive (for a caller that waits for them).
  std::chrono::steady_clock::time_point next_fill() const;
  uint32_t max_tokens() const { return max_; }
  std::chrono::nanoseconds fill_interval() const { return std::chrono::nanoseconds(interval_ns_); }

 private:
  const int64_t max_, per_fill_, interval_ns_;
  std::atomic<int64_t> tokens_;
  std::atomic<int64_t> next_fill_ns_;
};

// The bucket for `key` with these parameters: the existing one while any
// snapshot still holds it, else a new, full one.
std::shared_ptr<TokenBucket> shared_token_bucket(const std::string& key, uint32_t max_tokens,
                                                 uint32_t tokens_per_fill,
                                                 std::chrono::nanoseconds interval);

}  // namespace metanode::xds
