// metanoded without eBPF (--no-bpf), as any user can run it: listeners bound
// on loopback service addresses, real python3-thrift peers. Covers what
// does not need the kernel hooks: bad input isolation and hot reload.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <sstream>
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

namespace metanode::testbed {
namespace {

// The access log: one line per answered request, with what an operator
// looks for (call, status, flags, sizes, duration, cluster, endpoint,
// client and the address it dialled, route).
class AccessLogged : public ::testing::Test {
 protected:
  void start(const std::vector<std::string>& flags) {
    auto svc = d_.serve_thrift_sample(
        "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
        "metadata: {name: r, namespace: meta-thrift}\nspec:\n  hosts: [" + std::string(kHost) + "]\n"
        "  routes:\n  - name: hello-only\n    match:\n      attributes:\n        method: {exact: sayHello}\n"
        "    route:\n    - destination: {host: " + std::string(kHost) + "}\n");
    ASSERT_NE(svc.upstream, 0) << d_.log();
    upstream_ = svc.upstream;
    vip_port_ = svc.vip;
    std::vector<std::string> args = {"--access-log", log_path()};
    args.insert(args.end(), flags.begin(), flags.end());
    ASSERT_TRUE(d_.start(args)) << d_.log();
  }
  std::string log_path() { return d_.dir() + "/access.log"; }
  ClientSummary calls(int n, const std::string& method = "sayHello") {
    return d_.run_client({"/usr/bin/python3", sample_options_from_build().peers_dir + "/client.py", "--host",
                          "127.0.0.1", "--port", std::to_string(vip_port_), "--calls", std::to_string(n),
                          "--method", method, "--quiet"});
  }
  std::vector<std::string> lines() {
    std::vector<std::string> out;
    std::istringstream in(slurp(log_path()));
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  LocalDaemon d_;
  int upstream_ = 0, vip_port_ = 0;
};

TEST_F(AccessLogged, JsonLinePerRequestWithItsRouteClusterAndEndpoint) {
  start({"--access-log-format", "json"});
  ASSERT_EQ(calls(3).ok, 3);
  ASSERT_EQ(calls(1, "sayGoodbye").errors, 1) << "no route for it";
  ASSERT_TRUE(eventually([&] { return lines().size() == 4; })) << slurp(log_path());
  auto l = lines();
  std::string ep = "127.0.0.1:" + std::to_string(upstream_), vip = "127.0.0.1:" + std::to_string(vip_port_);
  for (int i = 0; i < 3; ++i) {
    google::protobuf::Struct st;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(l[i], &st).ok()) << l[i];
    const auto& f = st.fields();
    EXPECT_EQ(f.at("protocol").string_value(), "thrift");
    EXPECT_EQ(f.at("method").string_value(), "sayHello");
    EXPECT_EQ(f.at("response_code").string_value(), "ok");
    EXPECT_EQ(f.at("response_flags").string_value(), "-");
    EXPECT_EQ(f.at("route_name").string_value(), "hello-only");
    EXPECT_EQ(f.at("upstream_cluster").string_value(), "outbound|" + std::to_string(vip_port_) + "||" + kHost);
    EXPECT_EQ(f.at("upstream_host").string_value(), ep);
    EXPECT_EQ(f.at("downstream_local_address").string_value(), vip);
    EXPECT_EQ(f.at("downstream_remote_address").string_value().rfind("127.0.0.1:", 0), 0u);
    EXPECT_EQ(f.at("upstream_request_attempt_count").number_value(), 1);
    EXPECT_GT(f.at("bytes_received").number_value(), 20);
    EXPECT_GT(f.at("bytes_sent").number_value(), 20);
    EXPECT_GE(f.at("duration").number_value(), 0);
    EXPECT_EQ(f.at("start_time").string_value().size(), 24u) << "2026-12-03T10:00:00.000Z";
  }
  EXPECT_NE(l[3].find("\"method\":\"sayGoodbye\",\"interface\":\"\",\"response_code\":\"exception\",\"response_flags\":\"NR\""),
            std::string::npos)
      << l[3];
  EXPECT_NE(l[3].find("\"upstream_cluster\":\"\",\"upstream_host\":\"\""), std::string::npos) << l[3];
  EXPECT_EQ(testbed::metric(d_.admin("/stats/prometheus"), "metanode_access_log_lines_total"), 4u);
}

TEST_F(AccessLogged, TextLinesAreCappedPerSecondAndCounted) {
  start({"--access-log-max-rate", "5"});
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(calls(60).ok, 60);
  int seconds = int(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0).count());
  ASSERT_TRUE(eventually([&] {
    auto m = d_.admin("/stats/prometheus");
    return testbed::metric(m, "metanode_access_log_lines_total") +
               testbed::metric(m, "metanode_access_log_dropped_total{reason=\"rate\"}") == 60;
  })) << d_.admin("/stats/prometheus");
  auto l = lines();
  EXPECT_GE(l.size(), 5u);
  EXPECT_LE(l.size(), size_t(5 * (seconds + 2))) << "5 a second";
  EXPECT_EQ(l[0].rfind("[20", 0), 0u) << l[0];
  EXPECT_NE(l[0].find("] \"thrift sayHello\" ok - "), std::string::npos) << l[0];
  EXPECT_NE(l[0].find(" 127.0.0.1:" + std::to_string(upstream_) + " 127.0.0.1:"), std::string::npos) << l[0];
  EXPECT_NE(l[0].find(" route=hello-only source=- attempts=1"), std::string::npos) << l[0];
}

TEST_F(AccessLogged, SampledShareOfRequests) {
  start({"--access-log-sample", "0.5", "--access-log-format", "json"});
  ASSERT_EQ(calls(400).ok, 400);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto n = lines().size();
  // Binomial(400, 0.5): outside [140, 260] with probability below 1e-9.
  EXPECT_GE(n, 140u);
  EXPECT_LE(n, 260u);
}

// /explain on the running daemon agrees with what the access log shows.
TEST_F(AccessLogged, ExplainSaysWhichRouteAndWhyNot) {
  start({});
  std::string vip = "127.0.0.1:" + std::to_string(vip_port_);
  std::string t = d_.admin("/explain?dst=" + vip + "&attr.method=sayHello");
  EXPECT_NE(t.find("kernel:   no interception (--no-bpf)"), std::string::npos) << t;
  EXPECT_NE(t.find("route:    hello-only: matches"), std::string::npos) << t;
  EXPECT_NE(t.find("  endpoint 127.0.0.1:" + std::to_string(upstream_) + " weight 1"), std::string::npos) << t;
  t = d_.admin("/explain?dst=" + vip + "&attr.method=sayGoodbye&format=json");
  EXPECT_NE(t.find("\"why\":\"attribute method: wants exact 'sayHello', request has 'sayGoodbye'\""),
            std::string::npos) << t;
  EXPECT_NE(t.find("no route (response flag NR)"), std::string::npos) << t;
  int status = 0;
  auto bad = http_get("", "127.0.0.1:" + d_.admin_port_str(), "/explain?dst=x", &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad.value_or(""), "explain: dst: 'x' is not IPv4:PORT\n");
}

// metanodectl's views of the running daemon, through its admin endpoint.
TEST_F(AccessLogged, MetanodectlStatusExplainAndClusters) {
  start({});
  ASSERT_EQ(calls(4).ok, 4);
  ASSERT_EQ(calls(1, "sayGoodbye").errors, 1);
  std::string ctl = METANODE_CTL, admin = " --admin 127.0.0.1:" + d_.admin_port_str();
  auto r = run({"/bin/sh", "-c", ctl + " status" + admin + " 2>&1"});
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("ready        yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("requests     5 answered, 1 with a response flag"), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", ctl + " status -o json" + admin});
  EXPECT_EQ(r.status, 0);
  google::protobuf::Struct st;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &st).ok()) << r.out;
  EXPECT_TRUE(st.fields().at("ready").bool_value());
  EXPECT_EQ(st.fields().at("requests").number_value(), 5);
  EXPECT_EQ(st.fields().count("pods_enrolled"), 0u) << "no --pods kubernetes";
  std::string vip = "127.0.0.1:" + std::to_string(vip_port_);
  r = run({"/bin/sh", "-c", ctl + " explain " + vip + " --attr method=sayGoodbye" + admin});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, d_.admin("/explain?dst=" + vip + "&attr.method=sayGoodbye")) << "the same answer";
  EXPECT_NE(r.out.find("no route (response flag NR)"), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", ctl + " routes" + admin});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("  hello-only: method exact 'sayHello'\n    -> outbound|" + std::to_string(vip_port_) + "||" +
                       std::string(kHost) + "\n"),
            std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", ctl + " routes -o json" + admin});
  EXPECT_NE(r.out.find("\"match\":[\"method exact 'sayHello'\"]"), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", ctl + " clusters -o json" + admin});
  EXPECT_EQ(r.status, 0) << r.out;
  google::protobuf::Struct cl;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &cl).ok()) << r.out;
  const auto& clusters = cl.fields().at("clusters").list_value().values();
  ASSERT_EQ(clusters.size(), 1) << r.out;
  const auto& eps = clusters[0].struct_value().fields().at("endpoints").list_value().values();
  ASSERT_EQ(eps.size(), 1) << r.out;
  const auto& ep = eps[0].struct_value().fields();
  EXPECT_EQ(ep.at("address").string_value(), "127.0.0.1:" + std::to_string(upstream_));
  EXPECT_EQ(ep.at("rq_total").number_value(), 4) << "the four routed calls, not the unrouted one";
  EXPECT_TRUE(ep.at("healthy").bool_value());
  EXPECT_EQ(ep.at("weight").number_value(), 1);
  r = run({"/bin/sh", "-c", ctl + " clusters" + admin});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("127.0.0.1:" + std::to_string(upstream_)), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", ctl + " status --admin 127.0.0.1:1 2>&1"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("cannot reach metanoded's admin endpoint at 127.0.0.1:1"), std::string::npos) << r.out;
}

// --log-format json: every line of the daemon's log is one JSON object.
TEST(NoBpfDaemonStart, JsonLogLinesAreOneObjectEach) {
  LocalDaemon d;
  auto svc = d.serve_thrift_sample();
  ASSERT_NE(svc.vip, 0);
  ASSERT_TRUE(d.start({"--log-format", "json"})) << d.log();
  std::istringstream in(d.log());
  int lines = 0;
  bool ready = false;
  for (std::string l; std::getline(in, l); ++lines) {
    google::protobuf::Struct st;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(l, &st).ok()) << l;
    const auto& f = st.fields();
    EXPECT_EQ(f.at("time").string_value().size(), 24u) << l;
    EXPECT_FALSE(f.at("level").string_value().empty()) << l;
    ready = ready || f.at("msg").string_value().rfind("metanoded ready", 0) == 0;
  }
  EXPECT_GT(lines, 2);
  EXPECT_TRUE(ready) << d.log();
}

TEST(AccessLogFlags, OptionsWithoutTheLogAreRefused) {
  LocalDaemon d;
  auto bin = sample_options_from_build().metanoded;
  auto r = run({"/bin/sh", "-c", bin + " --no-bpf --config-dir " + d.config_dir() + " --access-log-sample 0.1 2>&1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("go with --access-log"), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", bin + " --no-bpf --config-dir " + d.config_dir() + " --access-log - --access-log-sample 2 2>&1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("not a share in (0, 1]"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace metanode::testbed
