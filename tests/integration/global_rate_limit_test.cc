// MetaRouter globalRateLimit against Envoy's reference rate limit service
// (github.com/envoyproxy/ratelimit, built from the Go module proxy) backed
// by Debian's redis-server: two daemons (two nodes) share one limit, calls
// the limit does not match pass, and when the service is gone denyOnFail
// decides. Dubbo peers are sofa-rpc-node's provider and consumer, and
// Apache Dubbo Java's consumer, which decodes the limit's reply too.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <sys/stat.h>

#include "java_peer.h"
#include "local_daemon.h"
#include "testbed.h"

namespace metanode::testbed {
namespace {

constexpr char kHost[] = "com.example.demoservice";
constexpr char kRls[] = "rate-limit-server.meta-dubbo.svc.cluster.local";

std::string peers() { return METANODE_DUBBO_PEERS_DIR; }

class GlobalRateLimit : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_port_ = free_port();
    ASSERT_GT(rls_.start_peer({"/usr/bin/redis-server", "--port", std::to_string(redis_port_), "--bind",
                               "127.0.0.1", "--save", "", "--appendonly", "no"},
                              "redis", "Ready to accept connections"),
              0)
        << slurp(rls_.dir() + "/redis.log");
    std::string cfg = rls_.dir() + "/runtime/ratelimit/config";
    ASSERT_EQ(system(("mkdir -p " + cfg).c_str()), 0);
    std::ofstream(cfg + "/metanode.yaml")
        << "domain: metanode-test\n"
           "descriptors:\n"
           "  - key: method\n"
           "    value: sayHello\n"
           "    rate_limit: {unit: hour, requests_per_unit: 5}\n";
    grpc_port_ = free_port();
    int http = free_port(), debug = free_port();
    rls_pid_ = rls_.start_peer(
        {"/usr/bin/env", "USE_STATSD=false", "LOG_LEVEL=debug", "REDIS_SOCKET_TYPE=tcp",
         "REDIS_URL=127.0.0.1:" + std::to_string(redis_port_), "RUNTIME_ROOT=" + rls_.dir() + "/runtime",
         "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_WATCH_ROOT=false", "GRPC_HOST=127.0.0.1",
         "GRPC_PORT=" + std::to_string(grpc_port_), "HOST=127.0.0.1", "PORT=" + std::to_string(http),
         "DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + std::to_string(debug), METANODE_RATELIMIT_PEER},
        "ratelimit", "");
    ASSERT_GT(rls_pid_, 0);
    // Ready once its debug endpoint shows our domain loaded.
    ASSERT_TRUE(eventually([&] {
      return http_get("", "127.0.0.1:" + std::to_string(debug), "/rlconfig")
                 .value_or("")
                 .find("metanode-test") != std::string::npos;
    }, std::chrono::seconds(20)))
        << slurp(rls_.dir() + "/ratelimit.log");

    provider_port_ = free_port();
    ASSERT_GT(rls_.start_peer({"node", peers() + "/provider.js", "--host", "127.0.0.1", "--port",
                               std::to_string(provider_port_), "--name", "dubbo-sample-server-v1",
                               "--ip", "127.0.0.1"},
                              "provider"),
              0);
  }

  // One node: a daemon with the service on its own VIP port.
  void start_node(LocalDaemon& d, int vip_port, bool deny_on_fail) {
    std::string h = kHost;
    d.write_config("svc.yaml",
                   "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                   "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                   "spec:\n  hosts: [" + h + "]\n  addresses: [127.0.0.1]\n"
                   "  ports: [{number: " + std::to_string(vip_port) + ", name: tcp-metaprotocol-dubbo-demo}]\n"
                   "  endpoints:\n  - {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo-demo: " +
                   std::to_string(provider_port_) + "}}\n---\n"
                   "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                   "metadata: {name: rate-limit-server, namespace: meta-dubbo}\n"
                   "spec:\n  hosts: [" + kRls + "]\n"
                   "  ports: [{number: 8081, name: grpc-ratelimit}]\n"
                   "  endpoints:\n  - {address: 127.0.0.1, ports: {grpc-ratelimit: " +
                   std::to_string(grpc_port_) + "}}\n---\n"
                   "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                   "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                   "spec:\n  hosts: [" + h + "]\n"
                   "  globalRateLimit:\n"
                   "    domain: metanode-test\n"
                   "    match: {attributes: {method: {exact: sayHello}}}\n"
                   "    rateLimitService: outbound|8081||" + kRls + "\n"
                   "    requestTimeout: 2s\n"
                   "    denyOnFail: " + (deny_on_fail ? "true" : "false") + "\n"
                   "    descriptors: [{property: method, descriptorKey: method}]\n"
                   "  routes:\n  - name: all\n    route: [{destination: {host: " + h + "}}]\n");
    ASSERT_TRUE(d.start()) << d.log();
  }

  ClientSummary consumer(LocalDaemon& d, int vip_port, int calls, const std::string& method,
                         bool java = false) {
    std::vector<std::string> argv = {"node", peers() + "/sofa_consumer.js"};
    if (java) argv = java_peer("Consumer");
    argv.insert(argv.end(), {"--host", "127.0.0.1", "--port", std::to_string(vip_port), "--calls",
                             std::to_string(calls), "--method", method, "--quiet"});
    return d.run_client(argv);
  }

  LocalDaemon rls_;  // owns the peers: redis, the rate limit service, the provider
  pid_t rls_pid_ = 0;
  int redis_port_ = 0, grpc_port_ = 0, provider_port_ = 0;
};

TEST_F(GlobalRateLimit, OneLimitHoldsAcrossTwoNodes) {
  LocalDaemon a, b;
  int pa = free_port(), pb = free_port();
  start_node(a, pa, false);
  start_node(b, pb, false);
  auto ra = consumer(a, pa, 3, "sayHello");
  EXPECT_EQ(ra.ok, 3) << ra.output << a.log();
  auto rb = consumer(b, pb, 4, "sayHello");
  EXPECT_EQ(rb.ok, 2) << rb.output << b.log();  // 5 per hour for the two nodes together
  EXPECT_EQ(rb.errors, 2);
  EXPECT_NE(rb.first_error.find("rate limited"), std::string::npos) << rb.first_error;
  // A method the limit does not match is not sent to the service at all.
  uint64_t calls_before = b.metric("metanode_global_rate_limit_calls_total");
  auto other = consumer(b, pb, 4, "sayGoodbye");
  EXPECT_EQ(other.ok, 4) << other.output;
  EXPECT_EQ(b.metric("metanode_global_rate_limit_calls_total"), calls_before);
  EXPECT_EQ(a.metric("metanode_rate_limited_total") + b.metric("metanode_rate_limited_total"), 2u);
}

// The limit's reply reaches Apache Dubbo Java's consumer as the error it
// is, after the calls the service allowed.
TEST_F(GlobalRateLimit, JavaConsumerDecodesTheLimitsReply) {
  LocalDaemon a;
  int pa = free_port();
  start_node(a, pa, false);
  auto r = consumer(a, pa, 7, "sayHello", true);
  EXPECT_EQ(r.ok, 5) << r.output << a.log();  // 5 per hour
  EXPECT_EQ(r.errors, 2) << r.output;
  EXPECT_NE(r.first_error.find("rate limited"), std::string::npos) << r.first_error;
  EXPECT_EQ(a.metric("metanode_rate_limited_total"), 2u);
}

TEST_F(GlobalRateLimit, DenyOnFailDecidesWhenTheServiceIsGone) {
  LocalDaemon open, strict;
  int po = free_port(), ps = free_port();
  start_node(open, po, false);
  start_node(strict, ps, true);
  kill(rls_pid_, SIGKILL);
  waitpid(rls_pid_, nullptr, 0);
  auto ro = consumer(open, po, 3, "sayHello");
  EXPECT_EQ(ro.ok, 3) << ro.output;  // fail open
  auto rs = consumer(strict, ps, 3, "sayHello");
  EXPECT_EQ(rs.ok, 0) << rs.output;  // fail closed
  EXPECT_EQ(rs.errors, 3);
  EXPECT_GE(open.metric("metanode_global_rate_limit_error_total"), 3u);
  EXPECT_GE(strict.metric("metanode_global_rate_limit_error_total"), 3u);
}

}  // namespace
}  // namespace metanode::testbed
