// Hitless restart through the real daemon (metanoded --no-bpf on loopback):
// a second daemon started with the same --handover name takes the first's
// listening sockets, so clients connecting in a loop through the upgrade
// see no refused connect, no reset and no failed call. The kernel's view
// (/proc/net/tcp) shows the sockets are the same ones, not new binds. The
// interception variant (no bypass while the BPF side changes hands) is in
// interception_test.cc.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "fake_upstream.h"
#include "local_daemon.h"

namespace metanode::testbed {
namespace {

using namespace std::chrono_literals;

// One Thrift service on loopback port `vip` in front of `upstream`.
std::string service(int vip, int upstream) {
  return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
         "metadata: {name: up, namespace: ns}\n"
         "spec:\n  hosts: [up.ns.svc.cluster.local]\n  addresses: [127.0.0.1]\n"
         "  ports: [{number: " + std::to_string(vip) + ", name: tcp-metaprotocol-thrift}]\n"
         "  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-thrift: " +
         std::to_string(upstream) + "}}]\n";
}

// Inodes of the sockets listening on 127.0.0.1:`port`.
std::set<std::string> listening_inodes(int port) {
  std::set<std::string> out;
  std::ifstream in("/proc/net/tcp");
  std::string line;
  char want[32];
  std::snprintf(want, sizeof(want), "0100007F:%04X", port);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
    f >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
    if (local == want && state == "0A") out.insert(inode);
  }
  return out;
}

// Socket inodes a process holds open.
std::set<std::string> socket_inodes_of(pid_t pid) {
  std::set<std::string> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = readdir(d)) {
    char buf[64];
    ssize_t n = readlink((dir + "/" + e->d_name).c_str(), buf, sizeof(buf) - 1);
    if (n <= 0) continue;
    std::string target(buf, size_t(n));
    if (target.rfind("socket:[", 0) == 0) out.insert(target.substr(8, target.size() - 9));
  }
  closedir(d);
  return out;
}

// Clients that each open a connection, make one call and close, in a loop:
// what pods do through an upgrade. Every failure counted.
class ConnectLoop {
 public:
  explicit ConnectLoop(int port) {
    for (int i = 0; i < 3; ++i) threads_.emplace_back([this, port] { run(port); });
  }
  ~ConnectLoop() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  int ok() const { return ok_; }
  int errors() const { return errors_; }

 private:
  void run(int port) {
    while (!stop_) {
      ThriftClient c(port);
      auto r = c.ok() ? c.call("get", 5000ms) : std::nullopt;
      if (r && r->type == 2) ++ok_;
      else ++errors_;
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, errors_{0};
  std::vector<std::thread> threads_;
};

TEST(Handover, UpgradeTakesTheListeningSocketsSoNoConnectFails) {
  LocalDaemon d;
  FakeUpstream up("up");
  int vip = free_port(), metrics = free_port();
  d.write_config("svc.yaml", service(vip, up.port()));
  // Abstract: nothing on disk, unique to this test run.
  std::string name = "@metanode-test-handover-" + std::to_string(getpid());
  std::vector<std::string> args = {"--workers", "2", "--handover", name, "--metrics-address",
                                   "127.0.0.1:" + std::to_string(metrics)};
  ASSERT_TRUE(d.start(args)) << d.log();
  pid_t old_pid = d.daemon_pid();
  auto before = listening_inodes(vip);
  ASSERT_EQ(before.size(), 2u) << "one SO_REUSEPORT socket per worker";

  ConnectLoop loop(vip);
  // One client on one long-lived connection, as Dubbo and Thrift clients
  // keep them. It never reconnects, so a close is an error.
  SteadyClient persistent(vip, 0ms, true);
  ASSERT_TRUE(eventually([&] { return loop.ok() > 50 && persistent.ok() > 50; }));

  // The successor: the same flags, the same admin and metrics addresses
  // (bound by the predecessor: without the handover it could not start).
  std::vector<std::string> argv = {sample_options_from_build().metanoded, "--no-bpf", "--admin-address",
                                   "127.0.0.1:" + d.admin_port_str(), "--config-dir", d.config_dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto next = d.processes().spawn(argv, "", "", d.dir() + "/successor.log");
  ASSERT_TRUE(next);
  auto successor_log = [&] { return slurp(d.dir() + "/successor.log"); };
  ASSERT_TRUE(eventually([&] { return d.log().find("handed over; drained") != std::string::npos; }, 20s))
      << d.log() << "\n--- successor:\n" << successor_log();
  int ok_at_handover = loop.ok(), persistent_at_handover = persistent.ok();
  ASSERT_TRUE(eventually([&] {
    return loop.ok() > ok_at_handover + 100 && persistent.ok() > persistent_at_handover + 100;
  })) << persistent.errors() << " errors on the long-lived connection";
  loop.stop();
  persistent.stop();

  EXPECT_EQ(loop.errors(), 0) << "a connect or call failed during the upgrade\n" << successor_log();
  // The long-lived connection was not closed: it went to the successor.
  EXPECT_EQ(persistent.errors(), 0) << successor_log();
  EXPECT_TRUE(eventually([&] {
    return successor_log().find("client connections taken over from the predecessor") != std::string::npos;
  })) << successor_log();
  EXPECT_NE(successor_log().find("handover: took 5 listening sockets"), std::string::npos)
      << "2 data, admin, metrics and the handover listener\n" << successor_log();
  // The very same sockets: held by the successor, let go of by the predecessor.
  EXPECT_EQ(listening_inodes(vip), before);
  auto theirs = socket_inodes_of(*next), ours = socket_inodes_of(old_pid);
  for (const auto& i : before) {
    EXPECT_TRUE(theirs.count(i)) << "successor lacks listening socket " << i;
    EXPECT_FALSE(ours.count(i)) << "predecessor still holds listening socket " << i;
  }
  // The admin and metrics ports are the successor's: they count its calls.
  std::string successor_metrics =
      http_get("", "127.0.0.1:" + std::to_string(metrics), "/stats/prometheus").value_or("");
  EXPECT_GT(metric(successor_metrics, "metanode_requests_total"), 0u);
  EXPECT_GE(metric(successor_metrics, "metanode_downstream_cx_adopted_total"), 1u) << successor_metrics;
  EXPECT_EQ(d.admin("/ready"), "ready\n");

  // The predecessor waits for its SIGTERM and then exits at once, leaving
  // the successor serving.
  EXPECT_EQ(kill(old_pid, 0), 0) << "exited before its SIGTERM";
  ASSERT_EQ(kill(old_pid, SIGTERM), 0);
  EXPECT_EQ(d.processes().wait(old_pid, 5000), 0);
  ThriftClient after(vip);
  auto r = after.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, 2);

  // And the successor offers the sockets on: a third daemon takes them.
  auto third = d.processes().spawn(argv, "", "", d.dir() + "/third.log");
  ASSERT_TRUE(third);
  EXPECT_TRUE(eventually([&] { return successor_log().find("handed over; drained") != std::string::npos; }, 20s))
      << successor_log() << "\n--- third:\n" << slurp(d.dir() + "/third.log");
  EXPECT_EQ(listening_inodes(vip), before);
}

// A successor that cannot start (its configuration is refused) takes
// nothing away: the predecessor keeps serving, its sockets untouched.
TEST(Handover, SuccessorThatFailsToStartLeavesThePredecessorServing) {
  LocalDaemon d;
  FakeUpstream up("up");
  int vip = free_port();
  d.write_config("svc.yaml", service(vip, up.port()));
  std::string name = "@metanode-test-handover-fail-" + std::to_string(getpid());
  ASSERT_TRUE(d.start({"--workers", "2", "--handover", name})) << d.log();
  auto before = listening_inodes(vip);
  std::string bad = d.dir() + "/bad";
  ASSERT_EQ(system(("mkdir -p " + bad).c_str()), 0);
  std::ofstream(bad + "/x.yaml") << "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                                    "metadata: {name: x}\nspec: {hosts: [x], ports: [{number: -1}]}\n";
  auto next = d.processes().spawn({sample_options_from_build().metanoded, "--no-bpf", "--admin-address",
                                   "127.0.0.1:" + d.admin_port_str(), "--config-dir", bad, "--handover", name},
                                  "", "", d.dir() + "/successor.log");
  ASSERT_TRUE(next);
  EXPECT_NE(d.processes().wait(*next, 10000), 0) << slurp(d.dir() + "/successor.log");
  ThriftClient c(vip);
  auto r = c.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, 2);
  EXPECT_EQ(listening_inodes(vip), before);
  EXPECT_EQ(d.admin("/ready"), "ready\n");
  EXPECT_EQ(d.log().find("handed over"), std::string::npos) << d.log();
}

}  // namespace
}  // namespace metanode::testbed
