// Several nodes without Kubernetes, on the real kernel: two "node" network
// namespaces joined by a node network, each with its own metanoded (BPF
// interception of its own pods' cgroup), one metanode-xds feeding both over
// that network. The sample's v1 pod lives on node A, v2 on node B; a client
// pod on each node sees the 20/80 split over one connection, and a
// MetaRouter edit reaches both nodes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "local_daemon.h"
#include "root_guard.h"
#include "testbed.h"
#include "thrift_sample.h"

namespace metanode::testbed {
namespace {

using namespace std::chrono_literals;
constexpr char kHost[] = "thrift-sample-server.meta-thrift.svc.cluster.local";
constexpr char kVip[] = "10.96.0.10";

struct Node {
  std::unique_ptr<Testbed> tb;
  std::string link_ip;  // on the node network
  std::string client_ns;
  pid_t daemon = 0;
};

class MultiNode : public ::testing::Test {
 protected:
  void SetUp() override {
    METANODE_REQUIRE_ROOT();
    opts_ = sample_options_from_build();
    setenv("METANODE_GEN_PY", opts_.gen_py.c_str(), 1);
    const char* subnets[] = {"10.77", "10.78"};
    for (int i = 0; i < 2; ++i) {
      auto tb = Testbed::create(std::string("multinode-") + char('a' + i), subnets[i]);
      ASSERT_TRUE(tb) << tb.error().message();
      nodes_[i].tb = std::move(tb.value());
      nodes_[i].link_ip = std::string("10.79.0.") + char('1' + i);
      ASSERT_EQ(run({"sysctl", "-qw", "net.ipv4.ip_forward=1"}, nodes_[i].tb->node_ns()).status, 0);
    }
    // The node network: one veth pair between the two node namespaces, and
    // each node's pod subnet routed via the other's link address.
    std::string a = nodes_[0].tb->tag() + "-node", b = nodes_[1].tb->tag() + "-node";
    std::string va = "mnl" + std::to_string(getpid() % 100000) + "a",
                vb = "mnl" + std::to_string(getpid() % 100000) + "b";
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {"ip", "-n", a, "link", "add", va, "type", "veth", "peer", "name", vb, "netns", b},
             {"ip", "-n", a, "addr", "add", "10.79.0.1/24", "dev", va},
             {"ip", "-n", b, "addr", "add", "10.79.0.2/24", "dev", vb},
             {"ip", "-n", a, "link", "set", va, "up"},
             {"ip", "-n", b, "link", "set", vb, "up"},
             {"ip", "-n", a, "route", "add", "10.78.0.0/24", "via", "10.79.0.2"},
             {"ip", "-n", b, "route", "add", "10.77.0.0/24", "via", "10.79.0.1"}})
      ASSERT_EQ(run(argv).status, 0) << argv[5];

    // v1 on node A, v2 on node B, a client pod on each.
    for (int i = 0; i < 2; ++i) {
      auto& n = nodes_[i];
      std::string ver = i == 0 ? "v1" : "v2";
      auto ns = n.tb->add_pod("server-" + ver, 11);
      ASSERT_TRUE(ns) << ns.error().message();
      ASSERT_TRUE(n.tb->spawn({"/usr/bin/python3", opts_.peers_dir + "/server.py", "--port", "9090", "--name",
                               "thrift-sample-server-" + ver, "--ip", n.tb->pod_ip(11)},
                              *ns, "", n.tb->work_dir() + "/server.log"));
      auto c = n.tb->add_pod("client", 10);
      ASSERT_TRUE(c) << c.error().message();
      n.client_ns = *c;
    }
    // The control plane runs in node A's namespace, on the node network.
    config_dir_ = nodes_[0].tb->work_dir() + "/config";
    ASSERT_EQ(mkdir(config_dir_.c_str(), 0755), 0);
    write("svc.yaml", service());
    write("route.yaml", split(20, 80));
    ASSERT_TRUE(nodes_[0].tb->spawn({METANODE_XDS_BIN, "--config-dir", config_dir_, "--listen", "10.79.0.1:15010"},
                                    nodes_[0].tb->node_ns(), "", nodes_[0].tb->work_dir() + "/metanode-xds.log"));
    for (int i = 0; i < 2; ++i) {
      auto& n = nodes_[i];
      auto d = n.tb->spawn({opts_.metanoded, "--xds-address", "10.79.0.1:15010", "--node-id",
                            std::string("node-") + char('a' + i), "--cgroup", n.tb->cgroup(),
                            "--redirect-address", n.tb->node_ip() + ":15001", "--pin-dir", n.tb->pin_dir(),
                            "--admin-address", "127.0.0.1:15000"},
                           n.tb->node_ns(), n.tb->daemon_cgroup(), n.tb->work_dir() + "/metanoded.log");
      ASSERT_TRUE(d) << d.error().message();
      n.daemon = *d;
    }
    for (int i = 0; i < 2; ++i)
      ASSERT_TRUE(eventually([&] {
        int status = 0;
        auto r = http_get(nodes_[i].tb->node_ns(), "127.0.0.1:15000", "/ready", &status);
        return r && status == 200;
      }, 20s)) << daemon_log(i) << slurp(nodes_[0].tb->work_dir() + "/metanode-xds.log");
  }

  void write(const std::string& name, const std::string& text) {
    std::string tmp = config_dir_ + "/." + name;
    std::ofstream(tmp) << text;
    ASSERT_EQ(std::rename(tmp.c_str(), (config_dir_ + "/" + name).c_str()), 0);
  }
  std::string service() const {
    return std::string("apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                       "metadata: {name: thrift-sample-server, namespace: meta-thrift}\n"
                       "spec:\n  hosts: [") + kHost + "]\n  addresses: [" + kVip + "]\n"
           "  ports: [{number: 9090, name: tcp-metaprotocol-thrift-hello-server}]\n  endpoints:\n"
           "  - {address: " + nodes_[0].tb->pod_ip(11) + ", labels: {version: v1}}\n"
           "  - {address: " + nodes_[1].tb->pod_ip(11) + ", labels: {version: v2}}\n---\n"
           "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
           "metadata: {name: thrift-sample-server, namespace: meta-thrift}\n"
           "spec:\n  host: " + kHost + "\n  subsets:\n"
           "  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
  }
  static std::string split(int v1, int v2) {
    return std::string("apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                       "metadata: {name: split, namespace: meta-thrift}\n"
                       "spec:\n  hosts: [") + kHost + "]\n  routes:\n  - name: split-" +
           std::to_string(v1) + "\n    route:\n"
           "    - {destination: {host: " + kHost + ", subset: v1}, weight: " + std::to_string(v1) + "}\n"
           "    - {destination: {host: " + kHost + ", subset: v2}, weight: " + std::to_string(v2) + "}\n";
  }
  ClientSummary client(int i, int calls) {
    auto& n = nodes_[i];
    std::string log = n.tb->work_dir() + "/client-" + std::to_string(++clients_) + ".log";
    auto pid = n.tb->spawn({"/usr/bin/python3", opts_.peers_dir + "/client.py", "--host", kVip, "--port", "9090",
                            "--calls", std::to_string(calls), "--quiet"},
                           n.client_ns, n.tb->pods_cgroup(), log);
    if (!pid) return {};
    int status = n.tb->wait(*pid, 120000);
    return parse_summary(slurp(log), status);
  }
  std::string admin(int i, const std::string& path) {
    return http_get(nodes_[i].tb->node_ns(), "127.0.0.1:15000", path).value_or("");
  }
  std::string daemon_log(int i) { return slurp(nodes_[i].tb->work_dir() + "/metanoded.log"); }

  SampleOptions opts_;
  Node nodes_[2];
  std::string config_dir_;
  int clients_ = 0;
};

TEST_F(MultiNode, EachNodeSplitsTwentyEightyAndFollowsEdits) {
  for (int i = 0; i < 2; ++i) {
    auto r = client(i, 1000);
    ASSERT_EQ(r.ok, 1000) << "node " << i << ": " << r.output << daemon_log(i);
    // One connection, every request balanced: 20% +- 5 sigma (12.6 each).
    EXPECT_NEAR(r.by_server["thrift-sample-server-v1"], 200, 63) << "node " << i;
    EXPECT_GT(r.switches, 100) << "node " << i;
    EXPECT_NE(admin(i, "/stats/prometheus").find("metanode_bpf_events_total{event=\"redirected\"} 1"),
              std::string::npos)
        << admin(i, "/stats/prometheus");
  }
  auto t0 = std::chrono::steady_clock::now();
  write("route.yaml", split(0, 100));
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(eventually([&] { return admin(i, "/config_dump").find("split-0") != std::string::npos; }, 20s))
        << daemon_log(i);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("MetaRouter edit applied on both nodes in %lld ms\n", static_cast<long long>(ms));
  for (int i = 0; i < 2; ++i) {
    auto r = client(i, 50);
    ASSERT_EQ(r.ok, 50) << r.output;
    EXPECT_EQ(r.by_server["thrift-sample-server-v2"], 50) << "node " << i;
  }
}

}  // namespace
}  // namespace metanode::testbed
