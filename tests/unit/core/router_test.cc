// Route matching (Envoy HeaderMatcher semantics over codec metadata),
// weighted cluster choice and load balancing, without sockets.
#include <gtest/gtest.h>

#include <cmath>

#include "metanode/core/router.h"

namespace metanode::core {
namespace {

using xds::AttributeMatcher;

AttributeMatcher m(std::string name, AttributeMatcher::Kind k, std::string v = "") {
  AttributeMatcher a;
  a.name = std::move(name);
  a.kind = k;
  a.value = std::move(v);
  return a;
}

codecs::Metadata md(std::initializer_list<std::pair<const char*, const char*>> kv) {
  codecs::Metadata out;
  for (const auto& [k, v] : kv) out.set(k, v);
  return out;
}

TEST(Router, FirstMatchingRouteWins) {
  xds::RouteTable t;
  xds::Route a, b, c;
  a.name = "hello";
  a.match = {m("method", AttributeMatcher::Kind::kExact, "sayHello")};
  b.name = "say-prefix-and-tag";
  b.match = {m("method", AttributeMatcher::Kind::kPrefix, "say"),
             m("tag", AttributeMatcher::Kind::kPresent)};
  c.name = "default";
  t.routes = {a, b, c};
  EXPECT_EQ(match_route(t, md({{"method", "sayHello"}}))->name, "hello");
  EXPECT_EQ(match_route(t, md({{"method", "sayBye"}, {"tag", "x"}}))->name, "say-prefix-and-tag");
  EXPECT_EQ(match_route(t, md({{"method", "sayBye"}}))->name, "default");
  t.routes.pop_back();
  EXPECT_EQ(match_route(t, md({{"method", "other"}})), nullptr);
}

TEST(Router, MatcherKinds) {
  using K = AttributeMatcher::Kind;
  std::string v = "sayHello";
  EXPECT_TRUE(m("x", K::kSuffix, "Hello").matches(&v));
  EXPECT_TRUE(m("x", K::kContains, "yHe").matches(&v));
  EXPECT_FALSE(m("x", K::kExact, "sayhello").matches(&v));
  auto ic = m("x", K::kExact, "sayhello");
  ic.ignore_case = true;
  EXPECT_TRUE(ic.matches(&v));
  auto inv = m("x", K::kExact, "sayHello");
  inv.invert = true;
  EXPECT_FALSE(inv.matches(&v));
  EXPECT_TRUE(inv.matches(nullptr));
  EXPECT_FALSE(m("x", K::kPresent).matches(nullptr));
  EXPECT_FALSE(m("x", K::kExact, "").matches(nullptr));
}

TEST(Router, WeightedChoiceFollowsWeights) {
  xds::Route r;
  r.clusters = {{"v1", 20, nullptr}, {"v2", 80, nullptr}};
  r.total_weight = 100;
  Rng rng(42);
  int v1 = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) v1 += pick_cluster(r, rng.next())->name == "v1";
  double p = double(v1) / n;
  double sigma = std::sqrt(0.2 * 0.8 / n);
  EXPECT_NEAR(p, 0.2, 5 * sigma) << v1;
}

TEST(Router, WeightedChoiceEdges) {
  xds::Route r;
  r.clusters = {{"a", 1, nullptr}, {"b", 3, nullptr}};
  r.total_weight = 4;
  EXPECT_EQ(pick_cluster(r, 0)->name, "a");
  EXPECT_EQ(pick_cluster(r, ~0ull)->name, "b");
  EXPECT_EQ(pick_cluster(r, (1ull << 62) - 1)->name, "a");  // first quarter
  EXPECT_EQ(pick_cluster(r, 1ull << 62)->name, "b");
}

xds::Cluster cluster(int n, xds::LbPolicy lb) {
  xds::Cluster c;
  c.name = "c";
  c.lb = lb;
  for (int i = 0; i < n; ++i) c.endpoints.push_back({{uint32_t(0x0a000001 + i), 9090}, {}, 1});
  return c;
}

TEST(LoadBalancer, RoundRobinCyclesEveryRequest) {
  auto c = cluster(3, xds::LbPolicy::kRoundRobin);
  LoadBalancer lb;
  Rng rng(1);
  xds::Route r;
  std::vector<uint32_t> seen;
  for (int i = 0; i < 6; ++i)
    seen.push_back(lb.pick(c, r, {}, rng, [](const auto&) { return 0u; })->address.addr & 0xff);
  EXPECT_EQ(seen, (std::vector<uint32_t>{1, 2, 3, 1, 2, 3}));
}

TEST(LoadBalancer, LeastRequestPrefersIdle) {
  auto c = cluster(2, xds::LbPolicy::kLeastRequest);
  LoadBalancer lb;
  Rng rng(7);
  xds::Route r;
  int idle = 0;
  for (int i = 0; i < 1000; ++i) {
    auto* e = lb.pick(c, r, {}, rng, [](const net::Endpoint& e) { return (e.addr & 0xff) == 1 ? 10u : 0u; });
    idle += (e->address.addr & 0xff) == 2;
  }
  EXPECT_GT(idle, 700);  // P2C picks the busy one only when both draws hit it (~25%)
}

TEST(LoadBalancer, RingHashIsStickyPerKey) {
  auto c = cluster(5, xds::LbPolicy::kRingHash);
  LoadBalancer lb;
  Rng rng(3);
  xds::Route r;
  r.hash_keys = {"user"};
  std::map<std::string, const xds::Endpoint*> first;
  std::set<const xds::Endpoint*> used;
  for (int round = 0; round < 3; ++round) {
    for (int u = 0; u < 50; ++u) {
      std::string key = "user-" + std::to_string(u);
      codecs::Metadata meta;
      meta.set("user", key);
      auto* e = lb.pick(c, r, meta, rng, [](const auto&) { return 0u; });
      if (round == 0) first[key] = e;
      EXPECT_EQ(first[key], e) << key;
      used.insert(e);
    }
  }
  EXPECT_GE(used.size(), 4u);  // keys spread over the ring
}

}  // namespace
}  // namespace metanode::core
