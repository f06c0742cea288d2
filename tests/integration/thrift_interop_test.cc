// Thrift interop through metanoded with real peers from two independent
// implementations (python3-thrift and libthrift C++), in every common wire
// form: {framed, buffered, THeader} x {binary, compact} x {plain,
// multiplexed}, each with a python client against a C++ server and a C++
// client against a python server. Shows per form: routing by method (so the
// method was read), seqid rewriting (the C++ client checks seqids), a
// TApplicationException for an unrouted method decoded by the client, and
// for THeader a header added by the route read back by the server.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <set>
#include <thread>
#include <tuple>

#include "local_daemon.h"

namespace metanode::testbed {
namespace {

constexpr char kHost[] = "hello.interop.svc.cluster.local";

using Form = std::tuple<std::string /*transport*/, std::string /*protocol*/, bool /*multiplexed*/,
                        bool /*python client*/>;

class ThriftInterop : public ::testing::TestWithParam<Form> {};

std::vector<std::string> form_args(const Form& f) {
  std::vector<std::string> a = {"--transport", std::get<0>(f), "--protocol", std::get<1>(f)};
  if (std::get<2>(f)) a.push_back("--multiplexed");
  return a;
}

TEST_P(ThriftInterop, RoutesRewritesAndAnswersErrorsInTheClientsWireForm) {
  const Form& f = GetParam();
  bool py_client = std::get<3>(f);
  const bool header = std::get<0>(f) == "header";
  auto opts = sample_options_from_build();
  std::string cpp_peer = METANODE_CPP_PEER;
  LocalDaemon d;
  int server_port = free_port(), vip_port = free_port();

  std::vector<std::string> server = py_client
      ? std::vector<std::string>{cpp_peer, "server"}
      : std::vector<std::string>{"/usr/bin/python3", opts.peers_dir + "/server.py", "--host", "127.0.0.1"};
  for (const auto& a : std::vector<std::string>{"--port", std::to_string(server_port), "--name", "upstream"})
    server.push_back(a);
  for (const auto& a : form_args(f)) server.push_back(a);
  // Framed forms against libthrift's event-loop server (the benchmarks'
  // upstream), the others against its thread-per-connection one.
  if (py_client && std::get<0>(f) == "framed") server.push_back("--nonblocking");
  ASSERT_TRUE(d.start_peer(server, "server")) << slurp(d.dir() + "/server.log");

  std::string h = kHost;
  d.write_config("svc.yaml",
                 "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                 "metadata: {name: hello, namespace: interop}\n"
                 "spec:\n  hosts: [" + h + "]\n  addresses: [127.0.0.1]\n"
                 "  ports: [{number: " + std::to_string(vip_port) + ", name: tcp-metaprotocol-thrift-x}]\n"
                 "  endpoints:\n  - address: 127.0.0.1\n"
                 "    ports: {tcp-metaprotocol-thrift-x: " + std::to_string(server_port) + "}\n"
                 "    labels: {version: v1}\n---\n"
                 "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                 "metadata: {name: hello, namespace: interop}\n"
                 "spec:\n  host: " + h + "\n  subsets: [{name: v1, labels: {version: v1}}]\n---\n"
                 "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                 "metadata: {name: hello, namespace: interop}\n"
                 "spec:\n  hosts: [" + h + "]\n  routes:\n"
                 "  - name: hello\n    match: {attributes: {method: {exact: sayHello}}}\n"
                 "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
                 "  - name: echo\n    match: {attributes: {method: {exact: echoHeader}}}\n"
                 "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
                 "    requestMutation: [{key: x-metanode, value: mutated}]\n");
  ASSERT_TRUE(d.start()) << d.log();

  auto client = [&](const std::string& method, int calls, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = py_client
        ? std::vector<std::string>{"/usr/bin/python3", opts.peers_dir + "/client.py"}
        : std::vector<std::string>{cpp_peer, "client"};
    for (const auto& a : std::vector<std::string>{"--host", "127.0.0.1", "--port", std::to_string(vip_port),
                                                  "--calls", std::to_string(calls), "--method", method,
                                                  "--quiet"})
      argv.push_back(a);
    for (const auto& a : form_args(f)) argv.push_back(a);
    argv.insert(argv.end(), extra.begin(), extra.end());
    return d.run_client(argv);
  };

  auto hello = client("sayHello", 20);
  ASSERT_EQ(hello.status, 0) << hello.output << d.log();
  EXPECT_EQ(hello.ok, 20) << hello.first_error << "\n" << d.log();

  // No route for sayGoodbye: a TApplicationException the client decodes.
  auto bye = client("sayGoodbye", 3);
  ASSERT_EQ(bye.status, 0) << bye.output;
  EXPECT_EQ(bye.errors, 3);
  EXPECT_NE(bye.first_error.find("no route for method 'sayGoodbye'"), std::string::npos)
      << bye.first_error;

  auto echo = client("echoHeader", 2, {"--arg", "x-metanode"});
  ASSERT_EQ(echo.status, 0) << echo.output;
  ASSERT_EQ(echo.ok, 2) << echo.first_error;
  if (header) {
    ASSERT_FALSE(echo.replies.empty()) << echo.output;
    EXPECT_EQ(echo.replies[0], "mutated") << "THeader header added by the route, read by the server";
    EXPECT_EQ(d.metric("metanode_mutation_unsupported_total"), 0u);
  } else {
    EXPECT_EQ(d.metric("metanode_mutation_unsupported_total"), 2u) << "no carrier without THeader";
  }
  EXPECT_EQ(d.metric("metanode_downstream_decode_error_total"), 0u);
  EXPECT_EQ(d.metric("metanode_upstream_decode_error_total"), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    AllForms, ThriftInterop,
    ::testing::Combine(::testing::Values("framed", "buffered", "header"),
                       ::testing::Values("binary", "compact"), ::testing::Bool(), ::testing::Bool()),
    [](const auto& info) {
      return std::get<0>(info.param) + "_" + std::get<1>(info.param) +
             (std::get<2>(info.param) ? "_multiplexed" : "") +
             (std::get<3>(info.param) ? "_pyclient_cppserver" : "_cppclient_pyserver");
    });

// Resilience with the real peers: a C++ (libthrift) client keeps one
// connection to two python3-thrift servers; one is killed with SIGKILL and
// the client sees no failed call (the retry of unwritten requests and the
// reconnect backoff); with outlier detection on gateway errors the dead one
// is ejected.
TEST(ThriftResilience, KilledServerCostsTheClientNoFailedCall) {
  auto opts = sample_options_from_build();
  LocalDaemon d;
  int ports[2] = {free_port(), free_port()};
  pid_t pids[2];
  for (int i = 0; i < 2; ++i) {
    pids[i] = d.start_peer({"/usr/bin/python3", opts.peers_dir + "/server.py", "--host", "127.0.0.1",
                            "--port", std::to_string(ports[i]), "--name", "server-" + std::to_string(i)},
                           "server" + std::to_string(i));
    ASSERT_GT(pids[i], 0) << slurp(d.dir() + "/server" + std::to_string(i) + ".log");
  }
  int vip_port = free_port();
  std::string h = kHost;
  d.write_config("svc.yaml",
                 "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                 "metadata: {name: hello, namespace: interop}\n"
                 "spec:\n  hosts: [" + h + "]\n  addresses: [127.0.0.1]\n"
                 "  ports: [{number: " + std::to_string(vip_port) + ", name: tcp-metaprotocol-thrift-x}]\n"
                 "  endpoints:\n"
                 "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-x: " + std::to_string(ports[0]) + "}}\n"
                 "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-x: " + std::to_string(ports[1]) + "}}\n"
                 "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                 "metadata: {name: hello, namespace: interop}\n"
                 "spec:\n  host: " + h + "\n  trafficPolicy:\n"
                 "    outlierDetection: {consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 1m, "
                 "maxEjectionPercent: 50}\n");
  ASSERT_TRUE(d.start()) << d.log();
  auto client = [&](int calls) {
    return d.run_client({METANODE_CPP_PEER, "client", "--host", "127.0.0.1", "--port", std::to_string(vip_port),
                         "--calls", std::to_string(calls), "--method", "sayHello", "--quiet",
                         "--transport", "framed", "--protocol", "binary"});
  };
  auto warm = client(10);
  ASSERT_EQ(warm.ok, 10) << warm.output << d.log();
  EXPECT_EQ(warm.by_server.size(), 2u);  // both servers took calls
  kill(pids[1], SIGKILL);
  waitpid(pids[1], nullptr, 0);
  auto r = client(30);
  EXPECT_EQ(r.ok, 30) << r.first_error << d.log();
  EXPECT_EQ(r.by_server.size(), 1u);
  EXPECT_EQ(d.metric("metanode_outlier_ejections_total"), 1u);
  EXPECT_NE(d.admin("/clusters").find("failed_outlier_check"), std::string::npos);
}

// The data plane's features with the real peers: python3-thrift servers
// and client over THeader (whose info headers carry the attributes a
// route or a hash reads), one connection per client run.
class ThriftFeatures : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) ports_[i] = server("v" + std::to_string(i + 1));
    vip_port_ = free_port();
    service_ = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
               "metadata: {name: hello, namespace: interop}\n"
               "spec:\n  hosts: [" + std::string(kHost) + "]\n  addresses: [127.0.0.1]\n"
               "  ports: [{number: " + std::to_string(vip_port_) + ", name: tcp-metaprotocol-thrift-x}]\n"
               "  endpoints:\n";
    for (int i = 0; i < 2; ++i)
      service_ += "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-x: " + std::to_string(ports_[i]) +
                  "}, labels: {version: v" + std::to_string(i + 1) + "}}\n";
    d_.write_config("svc.yaml", service_);
    ASSERT_TRUE(d_.start()) << d_.log();
  }

  int server(const std::string& name, std::vector<std::string> extra = {}) {
    int port = free_port();
    std::vector<std::string> argv = {"/usr/bin/python3", sample_options_from_build().peers_dir + "/server.py",
                                     "--host", "127.0.0.1", "--port", std::to_string(port), "--name",
                                     "server-" + name, "--transport", "header"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_t pid = d_.start_peer(argv, "server-" + name);
    EXPECT_GT(pid, 0) << slurp(d_.dir() + "/server-" + name + ".log");
    return port;
  }

  int calls_seen(const std::string& name, const std::string& method = "sayHello") {
    std::string log = slurp(d_.dir() + "/server-" + name + ".log");
    int n = 0;
    for (size_t p = 0; (p = log.find("call " + method + "\n", p)) != std::string::npos; ++p) ++n;
    return n;
  }

  void apply(const std::string& file, const std::string& yaml) { d_.apply(file, yaml); }

  void router(const std::string& spec, const std::string& annotations = "") {
    apply("router.yaml", "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                         "metadata:\n  name: hello\n  namespace: interop\n" + annotations +
                         "spec:\n  hosts: [" + std::string(kHost) + "]\n" + spec);
  }

  void rule(const std::string& traffic_policy) {
    apply("svc.yaml", service_ + "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                                 "metadata: {name: hello, namespace: interop}\n"
                                 "spec:\n  host: " + std::string(kHost) + "\n" + traffic_policy +
                                 "  subsets:\n  - {name: v1, labels: {version: v1}}\n"
                                 "  - {name: v2, labels: {version: v2}}\n");
  }

  ClientSummary client(int calls, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {"/usr/bin/python3", sample_options_from_build().peers_dir + "/client.py",
                                     "--host", "127.0.0.1", "--port", std::to_string(vip_port_), "--calls",
                                     std::to_string(calls), "--method", "sayHello", "--transport", "header",
                                     "--quiet"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return d_.run_client(argv);
  }

  LocalDaemon d_;
  int ports_[2] = {0, 0}, vip_port_ = 0;
  std::string service_;
};

// consistentHash on a header (Aeraki's httpHeaderName, a THeader info
// header here): every call of one user lands on one server.
TEST_F(ThriftFeatures, ConsistentHashOnAHeaderSticksPerValue) {
  rule("  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: user}}\n");
  std::set<std::string> servers;
  for (int u = 0; u < 12; ++u) {
    std::string user = "user" + std::to_string(u);
    auto r = client(4, {"--header", "user=" + user});
    ASSERT_EQ(r.ok, 4) << r.output << d_.log();
    EXPECT_EQ(r.by_server.size(), 1u) << user << " was spread over servers";
    servers.insert(r.by_server.begin()->first);
  }
  EXPECT_EQ(servers.size(), 2u) << "twelve users on one server: probability 2^-11";
}

// Four tokens and no refill: six calls get a TApplicationException that
// the python client decodes and that says why.
TEST_F(ThriftFeatures, LocalRateLimitIsAnExceptionTheClientDecodes) {
  std::string h = kHost;
  router("  localRateLimit: {tokenBucket: {maxTokens: 4, tokensPerFill: 1, fillInterval: 1h}}\n"
         "  routes:\n  - name: all\n    route: [{destination: {host: " + h + "}}]\n");
  auto r = client(10);
  EXPECT_EQ(r.ok, 4) << r.output;
  EXPECT_EQ(r.errors, 6) << r.output;
  EXPECT_NE(r.first_error.find("rate limited"), std::string::npos) << r.first_error;
  EXPECT_EQ(calls_seen("v1") + calls_seen("v2"), 4);
}

// Routed to v1, mirrored to v2: the client sees v1 only, v2's own log
// counts every call.
TEST_F(ThriftFeatures, MirrorReachesTheOtherServerWhileTheClientSeesOnlyTheRoute) {
  rule("");
  std::string h = kHost;
  router("  routes:\n  - name: all\n    route: [{destination: {host: " + h + ", subset: v1}}]\n"
         "    mirror: {host: " + h + ", subset: v2}\n");
  auto r = client(12);
  ASSERT_EQ(r.ok, 12) << r.output << d_.log();
  EXPECT_EQ(r.by_server["server-v1"], 12) << r.output;
  EXPECT_TRUE(eventually([&] { return calls_seen("v2") == 12; })) << calls_seen("v2") << " mirrored";
  EXPECT_EQ(calls_seen("v1"), 12);
}

// metanode.io/timeout 300 ms before a server that takes 1.5 s: the
// daemon's exception reaches the client long before its own 10 s timeout.
TEST_F(ThriftFeatures, RouteTimeoutAnswersBeforeTheClientGivesUp) {
  int slow = server("slow", {"--delay-ms", "1500"});
  service_ = service_.substr(0, service_.find("  endpoints:\n")) + "  endpoints:\n" +
             "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-x: " + std::to_string(slow) + "}}\n";
  apply("svc.yaml", service_);
  std::string h = kHost;
  router("  routes:\n  - name: all\n    route: [{destination: {host: " + h + "}}]\n",
         "  annotations: {metanode.io/timeout: 300ms}\n");
  auto t0 = std::chrono::steady_clock::now();
  auto r = client(2);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.errors, 2) << r.output << d_.log();
  EXPECT_NE(r.first_error.find("upstream timed out"), std::string::npos) << r.first_error;
  EXPECT_LT(took, std::chrono::seconds(3)) << "answered by the daemon, not the server";
  EXPECT_EQ(d_.metric("metanode_upstream_rq_timeout_total"), 2u);
}

}  // namespace
}  // namespace metanode::testbed
