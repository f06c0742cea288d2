// Every policy, statistically: shares follow weights (within 5 sigma of a
// binomial where picks are random), hash policies are sticky and move few
// keys when a host goes, unusable hosts are never chosen.
#include "metanode/lb/load_balancer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace metanode::lb {
namespace {

std::vector<Host> hosts(std::initializer_list<uint32_t> weights) {
  std::vector<Host> out;
  uint64_t id = 1000;
  for (uint32_t w : weights) out.push_back({w, mix64(id++)});
  return out;
}

std::vector<int> counts(LoadBalancer& lb, size_t n_hosts, int picks, PickContext ctx,
                        bool hashed = false) {
  std::vector<int> c(n_hosts, 0);
  Rng keys(99);
  for (int i = 0; i < picks; ++i) {
    if (hashed) ctx.hash = keys.next();
    auto h = lb.pick(ctx);
    EXPECT_TRUE(h.has_value());
    if (h) ++c[*h];
  }
  return c;
}

void expect_shares(const std::vector<int>& c, const std::vector<double>& want, int n,
                   double extra_tolerance = 0) {
  for (size_t i = 0; i < c.size(); ++i) {
    double p = want[i];
    double sigma = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(double(c[i]) / n, p, 5 * sigma + extra_tolerance) << "host " << i;
  }
}

TEST(RoundRobin, EqualWeightsCycle) {
  Rng rng(1);
  auto lb = make_load_balancer(Policy::kRoundRobin, hosts({1, 1, 1}));
  PickContext ctx{&rng};
  std::vector<size_t> seq;
  for (int i = 0; i < 6; ++i) seq.push_back(*lb->pick(ctx));
  EXPECT_EQ(seq, (std::vector<size_t>{0, 1, 2, 0, 1, 2}));
}

TEST(RoundRobin, WeightsAreExactAndInterleaved) {
  Rng rng(1);
  auto lb = make_load_balancer(Policy::kRoundRobin, hosts({1, 2, 3}));
  PickContext ctx{&rng};
  auto c = counts(*lb, 3, 600, ctx);
  EXPECT_EQ(c, (std::vector<int>{100, 200, 300}));
  // Interleaved, not in blocks: the weight-3 host never runs 4 times in a row.
  int run = 0, max_run = 0;
  for (int i = 0; i < 600; ++i) {
    run = *lb->pick(ctx) == 2 ? run + 1 : 0;
    max_run = std::max(max_run, run);
  }
  EXPECT_LE(max_run, 3);
}

TEST(RoundRobin, SkipsUnusableAndReportsNone) {
  Rng rng(1);
  for (auto w : {hosts({1, 1, 1}), hosts({1, 5, 2})}) {
    auto lb = make_load_balancer(Policy::kRoundRobin, w);
    PickContext ctx{&rng};
    ctx.usable = [](size_t i) { return i != 1; };
    auto c = counts(*lb, 3, 300, ctx);
    EXPECT_EQ(c[1], 0);
    EXPECT_EQ(c[0] + c[2], 300);
    ctx.usable = [](size_t) { return false; };
    EXPECT_FALSE(lb->pick(ctx).has_value());
  }
}

TEST(Random, FollowsWeights) {
  Rng rng(7);
  auto lb = make_load_balancer(Policy::kRandom, hosts({1, 3}));
  const int n = 100000;
  expect_shares(counts(*lb, 2, n, {&rng}), {0.25, 0.75}, n);
}

TEST(Random, NeverPicksUnusable) {
  Rng rng(7);
  auto lb = make_load_balancer(Policy::kRandom, hosts({1, 100, 1}));
  PickContext ctx{&rng};
  ctx.usable = [](size_t i) { return i != 1; };
  const int n = 20000;
  auto c = counts(*lb, 3, n, ctx);
  EXPECT_EQ(c[1], 0);
  expect_shares(c, {0.5, 0, 0.5}, n);
}

TEST(LeastRequest, AvoidsTheBusyHost) {
  Rng rng(3);
  auto lb = make_load_balancer(Policy::kLeastRequest, hosts({1, 1, 1}));
  PickContext ctx{&rng};
  ctx.active = [](size_t i) { return i == 0 ? 10u : 0u; };
  const int n = 30000;
  auto c = counts(*lb, 3, n, ctx);
  // Host 0 wins only when both draws land on it: p = 1/9.
  expect_shares(c, {1.0 / 9, 4.0 / 9, 4.0 / 9}, n);
}

TEST(LeastRequest, WeightsHoldWhenIdle) {
  Rng rng(3);
  auto lb = make_load_balancer(Policy::kLeastRequest, hosts({1, 4}));
  const int n = 50000;
  // Ties go to the first draw, so idle picks are weighted random draws.
  expect_shares(counts(*lb, 2, n, {&rng}), {0.2, 0.8}, n);
}

TEST(LeastRequest, LoadIsPerUnitOfWeight) {
  Rng rng(3);
  auto lb = make_load_balancer(Policy::kLeastRequest, hosts({1, 4}));
  PickContext ctx{&rng};
  // 2 in flight on weight 1 is busier than 4 on weight 4.
  ctx.active = [](size_t i) { return i == 0 ? 2u : 4u; };
  int zero = 0;
  for (int i = 0; i < 10000; ++i) zero += *lb->pick(ctx) == 0;
  // Host 0 only when both draws are host 0: p = 0.04.
  EXPECT_NEAR(zero / 10000.0, 0.04, 5 * std::sqrt(0.04 * 0.96 / 10000));
}

template <Policy P>
void hash_policy_contract(double share_tolerance, double max_moved) {
  Rng rng(5);
  auto hs = hosts({1, 1, 2, 4});
  auto lb = make_load_balancer(P, hs);
  // Sticky: the same key always lands on the same host.
  PickContext ctx{&rng};
  ctx.hash = 0x1234567;
  auto first = lb->pick(ctx);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(lb->pick(ctx), first);
  // Shares follow weights (the table or ring quantises them: extra tolerance).
  const int n = 100000;
  expect_shares(counts(*lb, 4, n, ctx, true), {0.125, 0.125, 0.25, 0.5}, n, share_tolerance);
  // Host 1 leaves: keys of the others mostly stay where they were.
  auto fewer = hs;
  fewer.erase(fewer.begin() + 1);
  auto lb2 = make_load_balancer(P, fewer);
  Rng keys(11);
  int kept = 0, moved = 0;
  for (int i = 0; i < 20000; ++i) {
    PickContext c{&rng};
    c.hash = keys.next();
    size_t before = *lb->pick(c);
    if (before == 1) continue;
    size_t after = *lb2->pick(c);
    size_t after_as_before = after >= 1 ? after + 1 : after;
    (after_as_before == before ? kept : moved)++;
  }
  EXPECT_LE(double(moved) / (kept + moved), max_moved) << moved << " of " << kept + moved;
  // An unusable host's keys go elsewhere, consistently, and never to it.
  PickContext down{&rng};
  down.usable = [](size_t i) { return i != 3; };
  Rng k2(13);
  for (int i = 0; i < 2000; ++i) {
    down.hash = k2.next();
    auto h = lb->pick(down);
    ASSERT_TRUE(h.has_value());
    EXPECT_NE(*h, 3u);
    EXPECT_EQ(lb->pick(down), h);
  }
  // No key: a weighted random usable host.
  PickContext nokey{&rng};
  expect_shares(counts(*lb, 4, n, nokey), {0.125, 0.125, 0.25, 0.5}, n);
}

// A ring of fixed size re-spreads its points when a host leaves, so a few
// keys move between the remaining hosts too (as in Envoy).
TEST(RingHash, Contract) { hash_policy_contract<Policy::kRingHash>(0.04, 0.1); }
TEST(Maglev, Contract) { hash_policy_contract<Policy::kMaglev>(0.005, 0.05); }

TEST(RingHash, RingSizeBoundsPoints) {
  Rng rng(5);
  // A tiny ring still gives every host a point.
  auto lb = make_load_balancer(Policy::kRingHash, hosts({1, 1000}), {.ring_size = 4});
  std::map<size_t, int> seen;
  Rng keys(1);
  for (int i = 0; i < 10000; ++i) {
    PickContext c{&rng};
    c.hash = keys.next();
    seen[*lb->pick(c)]++;
  }
  EXPECT_EQ(seen.size(), 2u);
}

TEST(Maglev, TableSizeIsPrimeAndAtLeastHosts) {
  Rng rng(5);
  // 10 is not prime: rounded up to 11; every host still reachable.
  auto lb = make_load_balancer(Policy::kMaglev, hosts({1, 1, 1}), {.maglev_table_size = 10});
  std::map<size_t, int> seen;
  Rng keys(2);
  for (int i = 0; i < 1000; ++i) {
    PickContext c{&rng};
    c.hash = keys.next();
    seen[*lb->pick(c)]++;
  }
  EXPECT_EQ(seen.size(), 3u);
}

TEST(AllPolicies, EmptyHostSet) {
  Rng rng(1);
  for (auto p : {Policy::kRoundRobin, Policy::kLeastRequest, Policy::kRandom, Policy::kRingHash,
                 Policy::kMaglev}) {
    auto lb = make_load_balancer(p, {});
    PickContext ctx{&rng};
    ctx.hash = 1;
    EXPECT_FALSE(lb->pick(ctx).has_value()) << policy_name(p);
  }
}

}  // namespace
}  // namespace metanode::lb
