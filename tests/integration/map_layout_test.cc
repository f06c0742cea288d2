// Upgrades across a pinned-map layout change (root; the test's own bpffs
// directory and cgroup). The "earlier install" is made here by hand, map by
// map, the way an older build would have left it; install_kernel() must keep
// what it held instead of wiping it.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <set>
#include <vector>

#include "metanode/bpf/maps.h"
#include "metanode_abi.h"
#include "root_guard.h"
#include "testbed.h"

namespace metanode::testbed {
namespace {

class PinnedMapLayout : public ::testing::Test {
 protected:
  void SetUp() override {
    METANODE_REQUIRE_ROOT();
    auto tb = Testbed::create("layout", "10.80");
    ASSERT_TRUE(tb) << tb.error().message();
    tb_ = std::move(tb.value());
    ASSERT_EQ(mkdir(tb_->pin_dir().c_str(), 0700), 0);
  }

  // A map pinned at pin_dir()/name, as an older build would have made it.
  int old_map(const char* name, bpf_map_type type, uint32_t key, uint32_t value, uint32_t max) {
    int fd = bpf_map_create(type, name, key, value, max, nullptr);
    EXPECT_GE(fd, 0) << name;
    EXPECT_EQ(bpf_obj_pin(fd, path(name).c_str()), 0) << name;
    fds_.push_back(fd);
    return fd;
  }

  std::string path(const char* name) { return tb_->pin_dir() + "/" + name; }

  bpf_map_info info(const char* name) {
    bpf_map_info i{};
    uint32_t len = sizeof i;
    int fd = bpf_obj_get(path(name).c_str());
    EXPECT_GE(fd, 0) << name;
    EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &i, &len), 0);
    close(fd);
    return i;
  }

  Result<bpf::Installed> install() {
    bpf::InstallOptions io;
    io.cgroup_path = tb_->cgroup();
    io.pin_dir = tb_->pin_dir();
    return bpf::install_kernel(io);
  }

  void TearDown() override {
    for (int fd : fds_) close(fd);
  }

  std::unique_ptr<Testbed> tb_;
  std::vector<int> fds_;
};

// mn_pods, mn_excl and mn_counters of other capacities (and no mn_layout:
// an install from before it existed), mn_services as this build has it.
TEST_F(PinnedMapLayout, AnEarlierLayoutIsMigratedWithItsEntries) {
  int pods = old_map(MN_MAP_PODS, BPF_MAP_TYPE_HASH, 8, sizeof(mn_pod_val), MN_MAX_PODS / 4);
  for (auto [cookie, flags] : std::vector<std::pair<uint64_t, uint32_t>>{
           {111, MN_POD_F_MANAGED}, {222, MN_POD_F_OPT_OUT}, {333, MN_POD_F_MANAGED}}) {
    mn_pod_val v{flags, 0};
    ASSERT_EQ(bpf_map_update_elem(pods, &cookie, &v, BPF_ANY), 0);
  }
  int excl = old_map(MN_MAP_EXCL, BPF_MAP_TYPE_HASH, sizeof(mn_excl_key), 4, 128);
  for (auto [netns, port] : std::vector<std::pair<uint64_t, uint16_t>>{{0, 9092}, {111, 8080}}) {
    mn_excl_key k{};
    k.netns = netns;
    k.port = htons(port);
    uint32_t one = 1;
    ASSERT_EQ(bpf_map_update_elem(excl, &k, &one, BPF_ANY), 0);
  }
  int counters = old_map(MN_MAP_COUNTERS, BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, MN_C__COUNT - 3);
  std::vector<uint64_t> per_cpu(size_t(libbpf_num_possible_cpus()), 0);
  per_cpu[0] = 7;
  uint32_t idx = MN_C_REDIRECTED;
  ASSERT_EQ(bpf_map_update_elem(counters, &idx, per_cpu.data(), BPF_ANY), 0);
  int services = old_map(MN_MAP_SERVICES, BPF_MAP_TYPE_HASH, sizeof(mn_svc_key), sizeof(mn_svc_val),
                         MN_MAX_SERVICES);
  mn_svc_key sk{htonl(0x0a60000a), htons(9090), 0};
  mn_svc_val sv{MN_SVC_F_ENABLED, 4};
  ASSERT_EQ(bpf_map_update_elem(services, &sk, &sv, BPF_ANY), 0);
  uint32_t services_id = info(MN_MAP_SERVICES).id, pods_id = info(MN_MAP_PODS).id;

  auto inst = install();
  ASSERT_TRUE(inst) << inst.error().message();
  EXPECT_NE(inst->notes.find("mn_pods (layout v1 -> v1, 4096 -> 16384 entries) migrated: 3 entries carried"),
            std::string::npos)
      << inst->notes;
  auto& maps = *inst->maps;

  auto p = maps.pods();
  ASSERT_TRUE(p);
  const std::map<uint64_t, uint32_t> want{{111, MN_POD_F_MANAGED}, {222, MN_POD_F_OPT_OUT},
                                          {333, MN_POD_F_MANAGED}};
  EXPECT_EQ(*p, want);
  auto e = maps.excluded_ports();
  ASSERT_TRUE(e);
  using Excl = std::set<std::pair<uint64_t, uint16_t>>;
  EXPECT_EQ(Excl(e->begin(), e->end()), (Excl{{0, 9092}, {111, 8080}}));
  auto c = maps.counters();
  ASSERT_TRUE(c);
  ASSERT_EQ(c->size(), size_t(MN_C__COUNT));
  EXPECT_EQ((*c)[MN_C_REDIRECTED].value, 7u) << "counters carried by number";
  auto s = maps.services();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->size(), 1u);

  // The new maps have this build's capacity; the unchanged one was reused.
  EXPECT_EQ(info(MN_MAP_PODS).max_entries, uint32_t(MN_MAX_PODS));
  EXPECT_NE(info(MN_MAP_PODS).id, pods_id);
  EXPECT_EQ(info(MN_MAP_COUNTERS).max_entries, uint32_t(MN_C__COUNT));
  EXPECT_EQ(info(MN_MAP_SERVICES).id, services_id) << "a map of the same layout is reused, not copied";

  // The versions are recorded for the next upgrade, and it reuses everything.
  int layout = bpf_obj_get(path(MN_MAP_LAYOUT).c_str());
  ASSERT_GE(layout, 0);
  uint32_t key = MN_ID_PODS, version = 0;
  EXPECT_EQ(bpf_map_lookup_elem(layout, &key, &version), 0);
  EXPECT_EQ(version, uint32_t(MN_LAYOUT_V_PODS));
  close(layout);
  uint32_t migrated_pods_id = info(MN_MAP_PODS).id;
  inst->maps.reset();
  auto again = install();
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->notes.find("pinned maps"), std::string::npos) << again->notes;
  EXPECT_EQ(info(MN_MAP_PODS).id, migrated_pods_id);
}

// Same geometry, another layout version recorded: the sizes match, the
// meaning does not. The map is replaced, not reused; its entries are not
// read as if they were this build's.
TEST_F(PinnedMapLayout, AnotherLayoutVersionOfTheSameSizeIsReplaced) {
  int services = old_map(MN_MAP_SERVICES, BPF_MAP_TYPE_HASH, sizeof(mn_svc_key), sizeof(mn_svc_val),
                         MN_MAX_SERVICES);
  mn_svc_key sk{htonl(0x0a60000a), htons(9090), 0};
  mn_svc_val sv{MN_SVC_F_ENABLED, 4};
  ASSERT_EQ(bpf_map_update_elem(services, &sk, &sv, BPF_ANY), 0);
  int layout = old_map(MN_MAP_LAYOUT, BPF_MAP_TYPE_ARRAY, 4, 4, MN_LAYOUT_SLOTS);
  for (uint32_t id = 0; id < MN_ID__COUNT; ++id) {
    uint32_t v = id == MN_ID_SERVICES ? MN_LAYOUT_V_SERVICES + 1 : 1;
    ASSERT_EQ(bpf_map_update_elem(layout, &id, &v, BPF_ANY), 0);
  }
  uint32_t services_id = info(MN_MAP_SERVICES).id;

  auto inst = install();
  ASSERT_TRUE(inst) << inst.error().message();
  EXPECT_NE(inst->notes.find("mn_services (layout v2 -> v1"), std::string::npos) << inst->notes;
  EXPECT_NE(inst->notes.find("no conversion, 1 entries left for the daemon to rewrite"), std::string::npos)
      << inst->notes;
  EXPECT_NE(info(MN_MAP_SERVICES).id, services_id);
  auto s = inst->maps->services();
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->empty());
  uint32_t key = MN_ID_SERVICES, version = 0;
  EXPECT_EQ(bpf_map_lookup_elem(layout, &key, &version), 0);
  EXPECT_EQ(version, uint32_t(MN_LAYOUT_V_SERVICES)) << "the record now says what is pinned";
}

}  // namespace
}  // namespace metanode::testbed
