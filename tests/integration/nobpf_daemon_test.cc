// metanoded without eBPF (--no-bpf), as any user can run it: listeners bound
// on loopback service addresses, real python3-thrift peers. Covers what
// does not need the kernel hooks: bad input isolation and hot reload.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "testbed.h"
#include "thrift_sample.h"

namespace metanode::testbed {
namespace {

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  return ntohs(sa.sin_port);
}

std::string admin_get(int port, const std::string& path) {
  return http_get("", "127.0.0.1:" + std::to_string(port), path).value_or("");
}

uint64_t metric(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + " ", 0) == 0) return std::stoull(line.substr(name.size() + 1));
  return ~0ull;
}

class NoBpfDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_ = sample_options_from_build();
    setenv("METANODE_GEN_PY", opts_.gen_py.c_str(), 1);
    char tmpl[] = "/tmp/metanode-nobpf-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(mkdir((dir_ + "/config").c_str(), 0755), 0);
    for (int i = 0; i < 2; ++i) {
      ports_[i] = free_port();
      auto pid = procs_.spawn({"/usr/bin/python3", opts_.peers_dir + "/server.py", "--host", "127.0.0.1",
                               "--port", std::to_string(ports_[i]), "--name",
                               std::string("thrift-sample-server-v") + char('1' + i)},
                              "", "", dir_ + "/server" + std::to_string(i) + ".log");
      ASSERT_TRUE(pid);
    }
    // A loopback "VIP" unlikely to be used by anything else.
    vip_port_ = free_port();
    admin_port_ = free_port();
    std::ofstream(dir_ + "/config/svc.yaml")
        << "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
           "metadata: {name: thrift-sample-server, namespace: meta-thrift}\n"
           "spec:\n  hosts: [thrift-sample-server.meta-thrift.svc.cluster.local]\n"
           "  addresses: [127.0.0.1]\n  ports:\n  - number: " << vip_port_ << "\n"
           "    name: tcp-metaprotocol-thrift-hello\n  endpoints:\n"
           "  - address: 127.0.0.1\n    ports: {tcp-metaprotocol-thrift-hello: " << ports_[0] << "}\n"
           "    labels: {version: v1}\n"
           "  - address: 127.0.0.1\n    ports: {tcp-metaprotocol-thrift-hello: " << ports_[1] << "}\n"
           "    labels: {version: v2}\n";
    auto d = procs_.spawn({opts_.metanoded, "--no-bpf", "--config-dir", dir_ + "/config", "--admin-address",
                           "127.0.0.1:" + std::to_string(admin_port_), "--workers", "2"},
                          "", "", dir_ + "/daemon.log");
    ASSERT_TRUE(d);
    daemon_ = *d;
    for (int i = 0; i < 300; ++i) {
      bool up = admin_get(admin_port_, "/ready") == "ready\n" &&
                slurp(dir_ + "/server0.log").find("listening") != std::string::npos &&
                slurp(dir_ + "/server1.log").find("listening") != std::string::npos;
      if (up) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "daemon not ready: " << slurp(dir_ + "/daemon.log");
  }
  void TearDown() override {
    procs_.kill_all();
    if (!dir_.empty()) run({"rm", "-rf", dir_});
  }

  ClientSummary client(int calls, const std::string& method = "sayHello", double interval = 0) {
    std::string log = dir_ + "/client" + std::to_string(++clients_) + ".log";
    std::vector<std::string> argv = {"/usr/bin/python3", opts_.peers_dir + "/client.py", "--host", "127.0.0.1",
                                     "--port", std::to_string(vip_port_), "--calls", std::to_string(calls),
                                     "--method", method, "--quiet"};
    if (interval > 0) argv.insert(argv.end(), {"--interval", std::to_string(interval)});
    auto pid = procs_.spawn(argv, "", "", log);
    ClientSummary s;
    if (!pid) return s;
    s.status = procs_.wait(*pid, 60000);
    s.output = slurp(log);
    auto p = s.output.find("\"ok\": ");
    if (p != std::string::npos) s.ok = std::atoi(s.output.c_str() + p + 6);
    return s;
  }

  SampleOptions opts_;
  ProcessGroup procs_;
  std::string dir_;
  int ports_[2] = {0, 0};
  int vip_port_ = 0, admin_port_ = 0, clients_ = 0;
  pid_t daemon_ = -1;
};

TEST_F(NoBpfDaemon, BalancesEveryRequestOfOneConnection) {
  auto r = client(100);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.ok, 100);
  EXPECT_NE(r.output.find("\"thrift-sample-server-v1\": 50"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"switches\": 99"), std::string::npos) << r.output;
}

// A client that sends garbage loses its own connection, with a counter and a
// log line; a long-lived client on another connection does not notice.
TEST_F(NoBpfDaemon, GarbageClosesOnlyThatConnection) {
  std::thread good([&] {
    auto r = client(60, "sayHello", 0.01);
    EXPECT_EQ(r.ok, 60) << r.output;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(vip_port_));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  const char junk[] = "GET / HTTP/1.1\r\nHost: metanode\r\n\r\n";
  ASSERT_GT(write(fd, junk, sizeof(junk) - 1), 0);
  char buf[16];
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_EQ(read(fd, buf, sizeof(buf)), 0) << "the daemon closes the garbage connection";
  close(fd);
  good.join();
  std::string m = admin_get(admin_port_, "/stats/prometheus");
  EXPECT_EQ(metric(m, "metanode_downstream_decode_error_total"), 1u) << m;
  EXPECT_NE(slurp(dir_ + "/daemon.log").find("malformed thrift"), std::string::npos);
}

TEST_F(NoBpfDaemon, BadConfigChangeKeepsTheLastGoodOne) {
  std::ofstream(dir_ + "/config/route.yaml")
      << "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
         "metadata: {name: r, namespace: meta-thrift}\n"
         "spec:\n  hosts: [thrift-sample-server.meta-thrift.svc.cluster.local]\n"
         "  routes:\n  - name: x\n    route:\n    - destination:\n"
         "        host: thrift-sample-server.meta-thrift.svc.cluster.local\n        subset: v9\n";
  std::string m;
  for (int i = 0; i < 60; ++i) {
    m = admin_get(admin_port_, "/stats/prometheus");
    if (metric(m, "metanode_config_reload_rejected_total") == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(metric(m, "metanode_config_reload_rejected_total"), 1u);
  EXPECT_NE(slurp(dir_ + "/daemon.log").find("unknown subset 'v9'"), std::string::npos);
  auto r = client(10);
  EXPECT_EQ(r.ok, 10) << "still served by the last good configuration";
}

TEST(NoBpfDaemonStart, RejectsBadConfigAtStartNamingTheField) {
  auto opts = sample_options_from_build();
  char tmpl[] = "/tmp/metanode-badcfg-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::ofstream(dir + "/dr.yaml")
      << "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
         "metadata: {name: dr, namespace: ns1}\nspec:\n  host: nowhere\n";
  auto r = run({opts.metanoded, "--no-bpf", "--config-dir", dir, "--admin-address", "127.0.0.1:0"});
  EXPECT_EQ(r.status, 2);
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace metanode::testbed
