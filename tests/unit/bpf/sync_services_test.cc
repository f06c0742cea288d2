// Control logic over the BPF maps, tested against the in-memory fake.
#include <gtest/gtest.h>

#include "metanode/bpf/maps.h"

namespace metanode::bpf {
namespace {

TEST(SyncServices, WritesOnlyTheDifference) {
  FakeMaps maps;
  net::Endpoint a{0x0a60000a, 9090}, b{0x0a60000b, 9090}, c{0x0a60000c, 20880};
  ASSERT_TRUE(sync_services(maps, {a, b}));
  EXPECT_EQ(maps.services().value().size(), 2u);
  int writes = maps.writes();
  ASSERT_TRUE(sync_services(maps, {a, b}));
  EXPECT_EQ(maps.writes(), writes) << "an unchanged set must not touch the map";
  ASSERT_TRUE(sync_services(maps, {a, c}));
  auto s = maps.services().value();
  EXPECT_TRUE(s.count(a));
  EXPECT_FALSE(s.count(b));
  EXPECT_TRUE(s.count(c));
}

}  // namespace
}  // namespace metanode::bpf
