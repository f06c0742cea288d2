// The foundation, end to end on the real kernel: a python3-thrift client in
// a pod namespace and test-made cgroup connects to a service VIP that exists
// nowhere; connect4 sends it to metanoded in the node namespace, which routes
// every request of that ONE connection by the MetaRouter in force to
// python3-thrift servers v1 and v2 in their own pod namespaces.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include <signal.h>

#include <thread>

#include "local_daemon.h"
#include "metanode/bpf/maps.h"
#include "root_guard.h"
#include "thrift_sample.h"

namespace metanode::testbed {
namespace {

// sayHello("metanode") as a framed binary call: 4 (frame) + 20 (message
// header) + 16 (argument struct).
constexpr uint64_t kRequestBytes = 40;

class WalkingSkeleton : public ::testing::Test {
 protected:
  void start(bool skmsg = true, bool local_upstream = false, std::vector<std::string> daemon_args = {}) {
    auto tb = Testbed::create("skeleton");
    ASSERT_TRUE(tb) << tb.error().message();
    tb_ = std::move(tb.value());
    auto opts = sample_options_from_build();
    opts.skmsg = skmsg;
    opts.skmsg_upstream = local_upstream;
    opts.servers_in_pods_cgroup = local_upstream;
    opts.daemon_args = std::move(daemon_args);
    auto s = ThriftSample::start(*tb_, opts);
    ASSERT_TRUE(s) << s.error().message();
    s_ = std::move(s.value());
  }
  void SetUp() override { METANODE_REQUIRE_ROOT(); }

  // Every connection the servers accepted came from the node (the daemon),
  // never from the client pod.
  void expect_servers_only_saw_the_daemon() {
    for (const char* v : {"v1", "v2"}) {
      std::istringstream in(s_->server_log(v));
      std::string line;
      int peers = 0;
      while (std::getline(in, line)) {
        if (line.rfind("peer ", 0) != 0) continue;
        ++peers;
        EXPECT_EQ(line.substr(5, line.find(':') - 5), tb_->node_ip()) << v << ": " << line;
      }
      EXPECT_GT(peers, 0) << v << " never saw a connection";
    }
  }

  std::unique_ptr<Testbed> tb_;
  std::unique_ptr<ThriftSample> s_;
};

TEST_F(WalkingSkeleton, RequestsOnOneConnectionAlternateAcrossVersions) {
  start();
  auto r = s_->run_client(200, "sayHello", true);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, 0) << r->output << s_->daemon_log();
  EXPECT_EQ(r->ok, 200) << r->first_error;
  EXPECT_EQ(r->by_server["thrift-sample-server-v1"], 100);
  EXPECT_EQ(r->by_server["thrift-sample-server-v2"], 100);
  EXPECT_EQ(r->switches, 199) << "round robin per request: every reply from the other version";
  expect_servers_only_saw_the_daemon();
  auto c = s_->bpf_counters();
  EXPECT_EQ(c["redirected"], 1u) << "exactly the client's one connection is redirected";
  EXPECT_EQ(c["sockops_passive"], 1u) << "original destination carried to the daemon's socket";
  EXPECT_GE(c["connect_seen"], 3u) << "the daemon's own upstream connects pass the hook";
  std::cout << "[ numbers ] v1=" << r->by_server["thrift-sample-server-v1"]
            << " v2=" << r->by_server["thrift-sample-server-v2"] << " switches=" << r->switches
            << "/199\n";
}

TEST_F(WalkingSkeleton, MethodRouteSendsEverySayHelloToV1) {
  start();
  ASSERT_TRUE(s_->set_meta_router(ThriftSample::method_route_yaml()));
  auto r = s_->run_client(400, "alternate", true);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, 0) << r->output;
  EXPECT_EQ(r->ok, 400) << r->first_error;
  EXPECT_EQ(r->by_method_server["sayHello:thrift-sample-server-v1"], 200);
  EXPECT_EQ(r->by_method_server["sayHello:thrift-sample-server-v2"], 0);
  // The catch-all route balances the other method over the whole service.
  EXPECT_EQ(r->by_method_server["sayGoodbye:thrift-sample-server-v1"], 100);
  EXPECT_EQ(r->by_method_server["sayGoodbye:thrift-sample-server-v2"], 100);
  std::cout << "[ numbers ] sayHello v1=" << r->by_method_server["sayHello:thrift-sample-server-v1"]
            << " v2=" << r->by_method_server["sayHello:thrift-sample-server-v2"] << "\n";
}

TEST_F(WalkingSkeleton, TwentyEightySplitIsWithinStatisticalBounds) {
  start();
  ASSERT_TRUE(s_->set_meta_router(ThriftSample::split_route_yaml(20, 80)));
  const int n = 3000;
  auto r = s_->run_client(n, "sayHello", true);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, 0) << r->output;
  ASSERT_EQ(r->ok, n) << r->first_error;
  int v1 = r->by_server["thrift-sample-server-v1"];
  int v2 = r->by_server["thrift-sample-server-v2"];
  EXPECT_EQ(v1 + v2, n);
  // Each request is an independent 20% draw: binomial, sigma = sqrt(n p q).
  // Five sigma keeps a correct implementation's failure odds below 1e-6.
  double sigma = std::sqrt(n * 0.2 * 0.8);
  EXPECT_NEAR(v1, 0.2 * n, 5 * sigma) << "v1=" << v1 << " v2=" << v2;
  std::cout << "[ numbers ] split over " << n << " calls on one connection: v1=" << v1
            << " (" << 100.0 * v1 / n << "%) v2=" << v2 << " (" << 100.0 * v2 / n
            << "%), bound 20% +- " << 100.0 * 5 * sigma / n << "%\n";
}

// The pod's payload goes socket to socket: the pod's eth0 carries only the
// TCP handshake and teardown, not the requests.
TEST_F(WalkingSkeleton, PodPayloadDoesNotCrossTheVeth) {
  start();
  const int n = 2000;
  auto before = tb_->if_stats(s_->client_netns(), "eth0");
  auto c0 = s_->bpf_counters();
  auto r = s_->run_client(n, "sayHello", true);
  auto after = tb_->if_stats(s_->client_netns(), "eth0");
  auto c1 = s_->bpf_counters();
  ASSERT_TRUE(r && before && after);
  ASSERT_EQ(r->ok, n) << r->first_error;
  uint64_t tx = after->tx_bytes - before->tx_bytes;
  uint64_t payload = n * kRequestBytes;
  EXPECT_LT(tx, payload / 20) << "pod eth0 sent " << tx << " bytes for " << payload
                              << " bytes of requests";
  EXPECT_GE(c1["msg_redirect"] - c0["msg_redirect"], uint64_t(2 * n))
      << "every request and every reply went through sk_msg";
  std::cout << "[ numbers ] sk_msg on: pod eth0 tx " << tx << " bytes (" << after->tx_packets - before->tx_packets
            << " packets) for " << payload << " payload bytes in " << n << " calls\n";
}

// Control for the test above: the same run without sk_msg puts every request
// on the wire, so the byte counter really measures the payload path.
TEST_F(WalkingSkeleton, WithoutSkMsgPayloadCrossesTheVeth) {
  start(/*skmsg=*/false);
  const int n = 2000;
  auto before = tb_->if_stats(s_->client_netns(), "eth0");
  auto r = s_->run_client(n, "sayHello", true);
  auto after = tb_->if_stats(s_->client_netns(), "eth0");
  ASSERT_TRUE(r && before && after);
  ASSERT_EQ(r->ok, n) << r->first_error;
  uint64_t tx = after->tx_bytes - before->tx_bytes;
  EXPECT_GT(tx, n * kRequestBytes);
  std::cout << "[ numbers ] sk_msg off: pod eth0 tx " << tx << " bytes for "
            << n * kRequestBytes << " payload bytes\n";
}

// With --skmsg-upstream and the servers being pods under the attached
// cgroup, the daemon's upstream hop goes socket to socket as well: neither
// the client's nor the servers' veth carries requests.
TEST_F(WalkingSkeleton, LocalUpstreamHopAlsoGoesSocketToSocket) {
  start(/*skmsg=*/true, /*local_upstream=*/true);
  const int n = 2000;
  auto s0 = tb_->if_stats(s_->server_netns("v1"), "eth0");
  auto c0 = s_->bpf_counters();
  auto r = s_->run_client(n, "sayHello", true);
  auto s1 = tb_->if_stats(s_->server_netns("v1"), "eth0");
  auto c1 = s_->bpf_counters();
  ASSERT_TRUE(r && s0 && s1);
  ASSERT_EQ(r->ok, n) << r->first_error;
  EXPECT_GE(c1["sockops_upstream"], 2u) << "one upstream connect per server";
  EXPECT_GE(c1["sockops_upstream_peer"], 2u) << "both servers joined";
  EXPECT_GE(c1["msg_redirect"] - c0["msg_redirect"], uint64_t(4 * n)) << "both hops, both ways";
  uint64_t rx = s1->rx_bytes - s0->rx_bytes;
  EXPECT_LT(rx, n / 2 * kRequestBytes / 20) << "server v1 eth0 received " << rx << " bytes";
  std::cout << "[ numbers ] local upstream: server v1 eth0 rx " << rx << " bytes for "
            << n / 2 * kRequestBytes << " request bytes\n";
}

// A dead daemon must not strand pods: once heartbeats stop, connect4 lets
// connects through to their original destination (here the kube-proxy
// stand-in route to the v1 pod).
TEST_F(WalkingSkeleton, KilledDaemonFailsOpenWithinOneSecond) {
  start();
  kill(s_->daemon_pid(), SIGKILL);
  ASSERT_GE(tb_->wait(s_->daemon_pid(), 5000), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // liveness window: 1 s
  auto r = s_->run_client(5, "sayHello", true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 5) << r->output;
  EXPECT_EQ(r->by_server["thrift-sample-server-v1"], 5) << "direct path leads to v1";
  EXPECT_NE(s_->server_log("v1").find("peer " + tb_->pod_ip(10) + ":"), std::string::npos)
      << "v1 must have been reached by the client pod itself";
  auto maps = bpf::open_pinned(tb_->pin_dir());
  ASSERT_TRUE(maps) << "pins survive the daemon: " << maps.error().message();
  auto counters = (*maps)->counters();
  ASSERT_TRUE(counters);
  uint64_t down = 0;
  for (const auto& c : *counters)
    if (c.name == "skip_daemon_down") down = c.value;
  EXPECT_GE(down, 1u);
}

// Killed with -9 in the middle of traffic, the way an OOM kill or a node
// agent's crash ends it: the mesh client's connection through the daemon
// breaks, its reconnects go straight to the service once the liveness
// window has passed, and the same pod's traffic that never went through
// the daemon does not notice. Red if the hook kept redirecting to the dead
// daemon (the mesh calls never recover), if the daemon's death broke a
// connection it was not part of (the bystander errs), or if the kill did
// not land under load (no call before it, no broken connection).
TEST_F(WalkingSkeleton, KilledUnderLoadFailsOpenAndNothingElseBreaks) {
  start();
  const std::vector<std::string> run = {"--method", "sayHello", "--calls", "1000000", "--seconds", "6",
                                        "--interval", "0.002", "--quiet"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), run.begin(), run.end());
    return extra;
  };
  auto mesh = s_->start_client(with({"--reconnect"}));
  auto bystander = s_->start_client(with({"--host", s_->server_ip("v2")}));
  ASSERT_TRUE(mesh && bystander);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  kill(s_->daemon_pid(), SIGKILL);
  ASSERT_GE(tb_->wait(s_->daemon_pid(), 5000), 0);
  auto m = s_->finish_client(*mesh);
  auto b = s_->finish_client(*bystander);
  EXPECT_EQ(b.status, 0) << b.output;
  EXPECT_EQ(b.errors + b.transport_errors, 0) << b.first_error;
  EXPECT_GT(b.ok, 100) << b.output;
  EXPECT_EQ(m.status, 0) << m.output;
  EXPECT_GT(m.by_server["thrift-sample-server-v2"], 0) << "no call went through the daemon before the kill";
  EXPECT_GE(m.transport_errors, 1) << "the kill did not break the connection through the daemon";
  EXPECT_EQ(m.errors, 0) << m.first_error;
  EXPECT_GT(m.ok_after_last_error, 100) << "the pod's calls did not recover without the daemon: " << m.output;
  std::cout << "[ numbers ] mesh client: " << m.ok << " ok, " << m.transport_errors
            << " broken connections or refused connects, " << m.ok_after_last_error
            << " ok since the last; bystander: " << b.ok << " ok, 0 errors\n";
}


// An upgrade under a pod's long-lived connection, on the kernel path: the
// successor takes the listening socket and then the pod's connection
// itself, whose messages keep arriving by sk_msg into the same socket. The
// python client never reconnects (no --reconnect): one closed connection
// or failed call turns it red, as does a successor that did not adopt it or
// sk_msg that stopped redirecting after the handover.
TEST_F(WalkingSkeleton, UpgradeKeepsThePodsConnectionAndItsSkMsgPath) {
  start(true, false, {"--handover", "@metanode-test-skeleton-" + std::to_string(getpid())});
  auto client = s_->start_client({"--method", "sayHello", "--calls", "1000000", "--seconds", "5", "--interval",
                                  "0.002", "--quiet"});
  ASSERT_TRUE(client);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  std::string successor_log = tb_->work_dir() + "/successor.log";
  auto next = tb_->spawn(s_->daemon_argv(), tb_->node_ns(), tb_->daemon_cgroup(), successor_log);
  ASSERT_TRUE(next);
  ASSERT_TRUE(eventually([&] { return s_->daemon_log().find("handed over; drained") != std::string::npos; },
                         std::chrono::seconds(20)))
      << s_->daemon_log() << "\n--- successor:\n" << slurp(successor_log);
  ASSERT_TRUE(eventually([&] {
    return slurp(successor_log).find("1 client connections taken over") != std::string::npos;
  })) << slurp(successor_log);
  uint64_t redirected_at_handover = s_->bpf_counters()["msg_redirect"];
  auto r = s_->finish_client(*client);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.errors + r.transport_errors, 0) << r.first_error;
  EXPECT_GT(r.ok, 500) << r.output;
  EXPECT_GT(s_->bpf_counters()["msg_redirect"], redirected_at_handover + 100)
      << "the adopted connection's requests no longer go socket to socket";
  kill(s_->daemon_pid(), SIGTERM);
  EXPECT_EQ(tb_->wait(s_->daemon_pid(), 5000), 0);
}

}  // namespace
}  // namespace metanode::testbed
