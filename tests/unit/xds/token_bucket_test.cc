// Envoy's token bucket semantics, node-wide: full at start, tokens_per_fill
// per fill_interval up to max_tokens, never more taken than given even
// from several threads; one bucket per key and parameters.
#include "metanode/xds/token_bucket.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace metanode::xds {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(TokenBucket, StartsFullAndRefillsPerInterval) {
  TokenBucket b(3, 2, 100ms);
  auto t0 = Clock::now();
  EXPECT_TRUE(b.take(t0));
  EXPECT_TRUE(b.take(t0));
  EXPECT_TRUE(b.take(t0));
  EXPECT_FALSE(b.take(t0));
  // One interval later: tokens_per_fill more, no more than that.
  auto t1 = t0 + 150ms;
  EXPECT_TRUE(b.take(t1));
  EXPECT_TRUE(b.take(t1));
  EXPECT_FALSE(b.take(t1));
  // Many intervals later: capped at max_tokens.
  auto t2 = t0 + 10s;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.take(t2)) << i;
  EXPECT_FALSE(b.take(t2));
}

TEST(TokenBucket, ConcurrentTakersNeverExceedTheTokens) {
  TokenBucket b(1000, 1, 1h);
  std::atomic<int> got{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        if (b.take(Clock::now())) ++got;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(got.load(), 1000);
}

TEST(TokenBucket, SharedByKeyAndParameters) {
  auto a = shared_token_bucket("l#all", 5, 1, 1s);
  auto b = shared_token_bucket("l#all", 5, 1, 1s);
  EXPECT_EQ(a, b);  // a new snapshot keeps the state
  EXPECT_NE(a, shared_token_bucket("l#all", 6, 1, 1s));  // changed limit: a new bucket
  EXPECT_NE(a, shared_token_bucket("l#0", 5, 1, 1s));
  // Once no snapshot holds it, the key starts over with a full bucket.
  auto now = Clock::now();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a->take(now));
  EXPECT_FALSE(b->take(now));  // the same, drained bucket
  a.reset();
  b.reset();
  auto c = shared_token_bucket("l#all", 5, 1, 1s);
  EXPECT_TRUE(c->take(now));
}

}  // namespace
}  // namespace metanode::xds
