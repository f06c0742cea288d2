// Pods learned from a directory of netns files, against the fake maps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "metanode/core/pod_watcher.h"

namespace metanode::core {
namespace {

class PodWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/metanode-podwatch-XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  void touch(const std::string& n) { std::ofstream(dir_ + "/" + n) << ""; }
  static Result<uint64_t> cookie(const std::string& path) {
    return uint64_t(std::hash<std::string>()(path.substr(path.rfind('/') + 1)) | 1);
  }
  // A namespace's addresses as the runtime's CNI gives them, per file name.
  std::map<std::string, std::vector<uint32_t>> addrs_;
  PodWatcher::ProbeFn probe() {
    return [this](const std::string& path) -> Result<bpf::NetnsInfo> {
      return bpf::NetnsInfo{*cookie(path), addrs_[path.substr(path.rfind('/') + 1)]};
    };
  }
  std::string dir_;
  bpf::FakeMaps maps_;
};

TEST_F(PodWatcherTest, ManagesWhatAppearsForgetsWhatGoesLeavesOptOutsAlone) {
  PodWatcher w(maps_, dir_, "cni-", probe());
  touch("cni-a");
  touch("cni-b");
  touch("other");
  auto ch = w.sync();
  EXPECT_EQ(ch.added, 2);
  EXPECT_EQ(maps_.pods()->size(), 2u);
  // An operator opts pod b out; a rescan must not undo it.
  uint64_t b = *cookie(dir_ + "/cni-b");
  ASSERT_TRUE(maps_.set_pod(b, bpf::kPodOptOut));
  EXPECT_EQ(w.sync().added, 0);
  EXPECT_EQ(maps_.pods()->at(b), uint32_t(bpf::kPodOptOut));
  unlink((dir_ + "/cni-a").c_str());
  ch = w.sync();
  EXPECT_EQ(ch.removed, 1);
  EXPECT_EQ(maps_.pods()->count(*cookie(dir_ + "/cni-a")), 0u);
  EXPECT_EQ(maps_.pods()->count(b), 1u) << "opt-out survives its pod's rescans";
}

}  // namespace
}  // namespace metanode::core

namespace metanode::core {
namespace {

// --pods kubernetes: managed while the policy (an enrolled pod holds one of
// the namespace's addresses) says so; addresses that come after the file
// are picked up.
TEST_F(PodWatcherTest, PolicyOnAddressesDecidesAndIsAppliedAgainOnEverySync) {
  std::set<uint32_t> enrolled;
  PodWatcher w(maps_, dir_, "cni-", probe(), [&](const bpf::NetnsInfo& n) {
    for (uint32_t a : n.ipv4)
      if (enrolled.count(a)) return true;
    return false;
  });
  touch("cni-a");  // CNI has not run yet: no address
  touch("cni-b");
  addrs_["cni-b"] = {0x0a000002};
  enrolled = {0x0a000001, 0x0a000002};
  auto first = w.sync();
  EXPECT_EQ(first.added, 1);
  EXPECT_EQ(first.seen, 2) << "two namespaces found";
  EXPECT_EQ(w.sync().seen, 0) << "a's address still unknown: nothing new";
  uint64_t a = *cookie(dir_ + "/cni-a"), b = *cookie(dir_ + "/cni-b");
  EXPECT_EQ(maps_.pods()->count(a), 0u);
  EXPECT_EQ(maps_.pods()->count(b), 1u);
  addrs_["cni-a"] = {0x0a000001};  // now it has one
  auto learned = w.sync();
  EXPECT_EQ(learned.added, 1);
  EXPECT_EQ(learned.seen, 1) << "a's address learned";
  EXPECT_EQ(maps_.pods()->count(a), 1u);
  enrolled.erase(0x0a000002);  // pod b's label removed
  auto ch = w.sync();
  EXPECT_EQ(ch.removed, 1);
  EXPECT_EQ(ch.added, 0);
  EXPECT_EQ(ch.seen, 0) << "the policy changed, not the namespaces";
  EXPECT_EQ(maps_.pods()->count(b), 0u);
  EXPECT_EQ(maps_.pods()->count(a), 1u);
  ASSERT_EQ(w.entries().size(), 2u);
}

}  // namespace
}  // namespace metanode::core
