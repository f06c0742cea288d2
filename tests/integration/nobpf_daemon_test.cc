// metanoded without eBPF (--no-bpf), as any user can run it: listeners bound
// on loopback service addresses, real python3-thrift peers. Covers what
// does not need the kernel hooks: bad input isolation and hot reload.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "local_daemon.h"

namespace metanode::testbed {
namespace {

constexpr char kHost[] = "thrift-sample-server.meta-thrift.svc.cluster.local";

class NoBpfDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    auto peers = sample_options_from_build().peers_dir;
    for (int i = 0; i < 2; ++i) {
      ports_[i] = free_port();
      ASSERT_TRUE(d_.start_peer({"/usr/bin/python3", peers + "/server.py", "--host", "127.0.0.1",
                                 "--port", std::to_string(ports_[i]), "--name",
                                 std::string("thrift-sample-server-v") + char('1' + i)},
                                "server" + std::to_string(i)));
    }
    vip_port_ = free_port();  // a loopback "VIP" unlikely to be used by anything else
    d_.write_config("svc.yaml", service_yaml("tcp-metaprotocol-thrift-hello"));
    ASSERT_TRUE(d_.start({"--workers", "2"})) << d_.log();
  }

  // The sample service with both servers as endpoints, on a port with `port_name`.
  std::string service_yaml(const std::string& port_name) {
    return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
           "metadata: {name: thrift-sample-server, namespace: meta-thrift}\n"
           "spec:\n  hosts: [" + std::string(kHost) + "]\n"
           "  addresses: [127.0.0.1]\n  ports:\n  - number: " + std::to_string(vip_port_) +
           "\n    name: " + port_name + "\n  endpoints:\n"
           "  - address: 127.0.0.1\n    ports: {" + port_name + ": " + std::to_string(ports_[0]) +
           "}\n    labels: {version: v1}\n"
           "  - address: 127.0.0.1\n    ports: {" + port_name + ": " + std::to_string(ports_[1]) +
           "}\n    labels: {version: v2}\n";
  }

  ClientSummary client(int calls, const std::string& method = "sayHello", double interval = 0) {
    std::vector<std::string> argv = {"/usr/bin/python3", sample_options_from_build().peers_dir + "/client.py",
                                     "--host", "127.0.0.1", "--port", std::to_string(vip_port_),
                                     "--calls", std::to_string(calls), "--method", method, "--quiet"};
    if (interval > 0) argv.insert(argv.end(), {"--interval", std::to_string(interval)});
    return d_.run_client(argv);
  }

  LocalDaemon d_;
  int ports_[2] = {0, 0};
  int vip_port_ = 0;
};

TEST_F(NoBpfDaemon, BalancesEveryRequestOfOneConnection) {
  auto r = client(100);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.ok, 100);
  EXPECT_EQ(r.by_server["thrift-sample-server-v1"], 50);
  EXPECT_EQ(r.switches, 99);
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
  EXPECT_EQ(d_.metric("metanode_downstream_decode_error_total"), 1u);
  EXPECT_NE(d_.log().find("malformed thrift"), std::string::npos);
}

TEST_F(NoBpfDaemon, BadConfigChangeKeepsTheLastGoodOne) {
  d_.write_config("route.yaml",
                  "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                  "metadata: {name: r, namespace: meta-thrift}\n"
                  "spec:\n  hosts: [" + std::string(kHost) + "]\n"
                  "  routes:\n  - name: x\n    route:\n    - destination:\n"
                  "        host: " + std::string(kHost) + "\n        subset: v9\n");
  for (int i = 0; i < 60 && d_.metric("metanode_config_reload_rejected_total") != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(d_.metric("metanode_config_reload_rejected_total"), 1u);
  EXPECT_NE(d_.log().find("unknown subset 'v9'"), std::string::npos);
  auto r = client(10);
  EXPECT_EQ(r.ok, 10) << "still served by the last good configuration";
}

TEST_F(NoBpfDaemon, AutoProtocolPortRecognisesThrift) {
  d_.write_config("svc.yaml", service_yaml("tcp-metaprotocol-auto-hello"));
  for (int i = 0; i < 100 && d_.admin("/config_dump").find("codec.auto") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto r = client(10);
  EXPECT_EQ(r.ok, 10) << r.output << d_.log();
}

TEST(NoBpfDaemonStart, RejectsBadConfigAtStartNamingTheField) {
  LocalDaemon d;
  d.write_config("dr.yaml",
                 "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                 "metadata: {name: dr, namespace: ns1}\nspec:\n  host: nowhere\n");
  auto r = run({sample_options_from_build().metanoded, "--no-bpf", "--config-dir", d.config_dir(),
                "--admin-address", "127.0.0.1:0"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("DestinationRule ns1/dr: spec.host: no ServiceEntry declares host"),
            std::string::npos)
      << r.out;
}

// A listener address that cannot be bound fails the start, rather than a
// daemon that looks ready and serves nothing.
TEST(NoBpfDaemonStart, PortAlreadyTakenFailsTheStart) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  LocalDaemon d;
  d.write_config("svc.yaml",
                 "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                 "metadata: {name: taken, namespace: t}\nspec:\n  hosts: [taken.t.svc.cluster.local]\n"
                 "  addresses: [127.0.0.1]\n  ports: [{number: " + std::to_string(ntohs(sa.sin_port)) +
                 ", name: tcp-metaprotocol-thrift-x}]\n"
                 "  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-x: 1}}]\n");
  auto r = run({sample_options_from_build().metanoded, "--no-bpf", "--config-dir", d.config_dir(),
                "--admin-address", "127.0.0.1:0"});
  close(fd);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("listen on 127.0.0.1:"), std::string::npos) << r.out;
}

// What a hostNetwork daemon may show on the node's address: metrics and
// readiness on their own ports (Istio's 15020 and 15021), not the
// configuration; the admin port itself stays on loopback unless forced.
TEST(NoBpfDaemonStart, MetricsAndReadinessHaveTheirOwnPortsAndAdminStaysLocal) {
  LocalDaemon d;
  int metrics = free_port(), ready = free_port();
  d.write_config("svc.yaml",
                 "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                 "metadata: {name: m, namespace: t}\nspec:\n  hosts: [m.t.svc.cluster.local]\n"
                 "  addresses: [127.0.0.1]\n  ports: [{number: " + std::to_string(free_port()) +
                 ", name: tcp-metaprotocol-thrift-x}]\n"
                 "  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-x: 1}}]\n");
  ASSERT_TRUE(d.start({"--metrics-address", "127.0.0.1:" + std::to_string(metrics), "--readiness-address",
                       "127.0.0.1:" + std::to_string(ready)}))
      << d.log();
  auto at = [](int port, const std::string& path) {
    int status = 0;
    auto body = http_get("", "127.0.0.1:" + std::to_string(port), path, &status);
    return std::make_pair(status, body.value_or(""));
  };
  auto m = at(metrics, "/stats/prometheus");
  EXPECT_EQ(m.first, 200);
  EXPECT_NE(m.second.find("metanode_downstream_cx_active"), std::string::npos) << m.second;
  EXPECT_EQ(at(metrics, "/metrics").first, 200);
  EXPECT_EQ(at(metrics, "/config_dump").first, 404) << "the configuration leaks on the metrics port";
  EXPECT_EQ(at(metrics, "/healthz/ready").first, 404);
  auto r = at(ready, "/healthz/ready");
  EXPECT_EQ(r.first, 200);
  EXPECT_EQ(r.second, "ready\n");
  EXPECT_EQ(at(ready, "/stats/prometheus").first, 404);
  EXPECT_EQ(at(ready, "/config_dump").first, 404);
  // Refused: an admin address off loopback without the flag.
  auto refused = run({"/bin/sh", "-c",
                      sample_options_from_build().metanoded + " --no-bpf --config-dir " + d.config_dir() +
                          " --admin-address 0.0.0.0:0 2>&1"});
  EXPECT_EQ(refused.status, 2);
  EXPECT_NE(refused.out.find("not a loopback address"), std::string::npos) << refused.out;
}

}  // namespace
}  // namespace metanode::testbed
