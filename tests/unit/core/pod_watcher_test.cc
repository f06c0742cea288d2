// Pods learned from a directory of netns files, against the fake maps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <functional>

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
  std::string dir_;
  bpf::FakeMaps maps_;
};

TEST_F(PodWatcherTest, ManagesWhatAppearsForgetsWhatGoesLeavesOptOutsAlone) {
  PodWatcher w(maps_, dir_, "cni-", cookie);
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
