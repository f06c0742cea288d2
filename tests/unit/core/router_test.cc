// Route matching (Envoy HeaderMatcher semantics over codec metadata),
// weighted cluster choice and load balancing, without sockets.
#include <gtest/gtest.h>

#include <cmath>

#include "metanode/core/router.h"
#include "metanode/lb/load_balancer.h"

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
  lb::Rng rng(42);
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

TEST(RequestHash, AttributesAndSourceAddress) {
  xds::Route r;
  EXPECT_FALSE(request_hash(r, md({{"user", "a"}}), {1, 2}).has_value());  // route does not hash
  r.hash_keys = {"user"};
  EXPECT_FALSE(request_hash(r, md({{"other", "a"}}), {1, 2}).has_value());  // key absent
  auto a = request_hash(r, md({{"user", "a"}}), {1, 2});
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a, request_hash(r, md({{"user", "a"}}), {7, 8}));  // the address does not count
  EXPECT_NE(a, request_hash(r, md({{"user", "b"}}), {1, 2}));
  xds::Route s;
  s.hash_source_ip = true;
  // The client's address, not its port: every connection of a pod sticks.
  EXPECT_EQ(request_hash(s, {}, {0x0a000001, 1000}), request_hash(s, {}, {0x0a000001, 2000}));
  EXPECT_NE(request_hash(s, {}, {0x0a000001, 1000}), request_hash(s, {}, {0x0a000002, 1000}));
}

}  // namespace
}  // namespace metanode::core
