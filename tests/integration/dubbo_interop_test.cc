// Dubbo interop through metanoded with independent implementations:
// providers are sofa-rpc-node + dubbo-remoting (hessian.js) servers, and
// consumers are sofa-rpc-node and apache-dubbo-js clients, each keeping ONE
// connection; DubboJava runs Apache Dubbo Java providers and consumer. Shows per-request balancing, routing by method and by
// attachment, Dubbo status replies decoded by real consumers, an attachment
// added by a route and read back by hessian.js in the provider, heartbeats
// answered locally and one-way replies dropped.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <future>
#include <set>

#include "java_peer.h"
#include "local_daemon.h"

namespace metanode::testbed {
namespace {

constexpr char kHost[] = "com.example.demoservice";  // Aeraki names Dubbo services by interface

std::string peers() { return METANODE_DUBBO_PEERS_DIR; }

class DubboInterop : public ::testing::Test {
 protected:
  // The providers' implementation: sofa-rpc-node + dubbo-remoting here,
  // Apache Dubbo Java in DubboJava below. Same flags, same replies.
  virtual std::vector<std::string> provider_command() const { return {"node", peers() + "/provider.js"}; }
  // Extra metanoded flags.
  virtual std::vector<std::string> daemon_args() const { return {}; }

  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      ports_[i] = free_port();
      std::string v = "v" + std::to_string(i + 1);
      auto argv = provider_command();
      argv.insert(argv.end(), {"--host", "127.0.0.1", "--port", std::to_string(ports_[i]), "--name",
                               "dubbo-sample-server-" + v, "--ip", "127.0.0.1"});
      pids_[i] = d_.start_peer(argv, "provider-" + v);
      ASSERT_GT(pids_[i], 0) << slurp(d_.dir() + "/provider-" + v + ".log");
    }
    vip_port_ = free_port();
    std::string h = kHost;
    d_.write_config("svc.yaml",
                    "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                    "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                    "spec:\n  hosts: [" + h + "]\n  addresses: [127.0.0.1]\n"
                    "  ports: [{number: " + std::to_string(vip_port_) +
                    ", name: tcp-metaprotocol-dubbo-demo}]\n  endpoints:\n"
                    "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo-demo: " +
                    std::to_string(ports_[0]) + "}, labels: {version: v1}}\n"
                    "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo-demo: " +
                    std::to_string(ports_[1]) + "}, labels: {version: v2}}\n---\n"
                    "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                    "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                    "spec:\n  host: " + h + "\n  subsets:\n"
                    "  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n");
    ASSERT_TRUE(d_.start(daemon_args())) << d_.log();
  }

  void apply(const std::string& file, const std::string& yaml) { d_.apply(file, yaml); }

  void route(const std::string& routes) {
    apply("metarouter.yaml", "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                             "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                             "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n" + routes);
  }

  // One more provider (sofa-rpc-node), e.g. with --group or --delay-ms.
  int extra_provider(const std::string& name, std::vector<std::string> flags) {
    int port = free_port();
    std::vector<std::string> argv = provider_command();
    argv.insert(argv.end(), {"--host", "127.0.0.1", "--port", std::to_string(port), "--name",
                             "dubbo-sample-server-" + name, "--ip", "127.0.0.1"});
    argv.insert(argv.end(), flags.begin(), flags.end());
    extra_pids_[name] = d_.start_peer(argv, "provider-" + name);
    EXPECT_GT(extra_pids_[name], 0);
    return port;
  }

  // The ServiceEntry with exactly these provider ports (no labels), and
  // `more` documents after it.
  void service_with(const std::vector<int>& ports, const std::string& more = "") {
    std::string y = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                    "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                    "spec:\n  hosts: [" + std::string(kHost) + "]\n  addresses: [127.0.0.1]\n"
                    "  ports: [{number: " + std::to_string(vip_port_) +
                    ", name: tcp-metaprotocol-dubbo-demo}]\n  endpoints:\n";
    for (int p : ports)
      y += "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo-demo: " + std::to_string(p) + "}}\n";
    apply("svc.yaml", y + more);
  }

  // A consumer run: "sofa" (sofa-rpc-node), "dubbojs" (apache-dubbo-js) or
  // "java" (Apache Dubbo Java), one connection to the service's VIP.
  ClientSummary consumer(const std::string& impl, int calls, const std::string& method,
                         std::vector<std::string> extra = {}) {
    std::vector<std::string> argv =
        impl == "java" ? java_peer("Consumer") : std::vector<std::string>{"node", peers() + "/" + impl + "_consumer.js"};
    argv.insert(argv.end(), {"--host", "127.0.0.1", "--port", std::to_string(vip_port_), "--calls",
                             std::to_string(calls), "--method", method, "--quiet"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    return d_.run_client(argv);
  }

  // Sends raw bytes on a fresh connection and returns what comes back
  // within `wait_ms` (the connection stays open meanwhile).
  std::string raw_exchange(const std::string& bytes, int wait_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(vip_port_));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return "<no connect>";
    (void)!write(fd, bytes.data(), bytes.size());
    timeval tv{wait_ms / 1000, (wait_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, size_t(n));
    close(fd);
    return out;
  }

  // Calls the provider logged ("call <method>" lines), as the provider saw them.
  int provider_calls(int i, const std::string& method) { return provider_calls_of("v" + std::to_string(i + 1), method); }
  int provider_calls_of(const std::string& name, const std::string& method) {
    std::string log = slurp(d_.dir() + "/provider-" + name + ".log");
    int n = 0;
    for (size_t p = 0; (p = log.find("call " + method + "\n", p)) != std::string::npos; ++p) ++n;
    return n;
  }

  void rule(const std::string& traffic_policy) {
    std::string svc = slurp(d_.config_dir() + "/svc.yaml");
    apply("svc.yaml", svc.substr(0, svc.find("---\n")) +
                          "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                          "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                          "spec:\n  host: " + std::string(kHost) + "\n  trafficPolicy:\n" + traffic_policy +
                          "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n");
  }

  // 20 calls alternating two methods on one connection of `impl`'s
  // consumer: 10 per provider, a switch on every call.
  void every_request_balanced(const std::string& impl) {
    SCOPED_TRACE(impl);
      auto r = consumer(impl, 20, "alternate");
      ASSERT_EQ(r.status, 0) << impl << ": " << r.output << d_.log();
      EXPECT_EQ(r.ok, 20) << impl << ": " << r.first_error;
      EXPECT_EQ(r.by_server["dubbo-sample-server-v1"], 10) << impl;
      EXPECT_EQ(r.by_server["dubbo-sample-server-v2"], 10) << impl;
      EXPECT_EQ(r.switches, 19) << impl;
  }

  // Every call routed to v1 and mirrored to v2: `impl`'s consumer sees v1
  // only, each provider's own log counts all 12.
  void mirror_reaches_the_other_provider(const std::string& impl) {
    std::string h = kHost;
    route("  - name: all\n    route: [{destination: {host: " + h + ", subset: v1}}]\n"
          "    mirror: {host: " + h + ", subset: v2}\n");
    auto r = consumer(impl, 12, "sayHello");
    ASSERT_EQ(r.ok, 12) << r.output << d_.log();
    EXPECT_EQ(r.by_server["dubbo-sample-server-v1"], 12);
    EXPECT_TRUE(eventually([&] { return provider_calls(1, "sayHello") == 12; }))
        << provider_calls(1, "sayHello") << " mirrored calls reached v2";
    EXPECT_EQ(provider_calls(0, "sayHello"), 12);
    EXPECT_EQ(d_.metric("metanode_mirror_requests_total"), 12u);
  }

  // A provider that answers every call with an exception (it serves
  // another group) is ejected after the configured run of errors; the
  // consumer's calls then all go to the healthy one.
  void outlier_ejects_the_bad_provider(const std::string& impl) {
    int bad_port = extra_provider("bad", {"--group", "elsewhere"});
    service_with({ports_[0], bad_port},
                 "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                 "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                 "spec:\n  host: " + std::string(kHost) + "\n  trafficPolicy:\n"
                 "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1m, "
                 "maxEjectionPercent: 50}\n");
    auto r = consumer(impl, 40, "sayHello");
    EXPECT_EQ(r.errors, 2) << r.output;  // the run that tripped the detector
    EXPECT_EQ(r.ok + r.errors, 40);
    EXPECT_GE(d_.metric("metanode_outlier_ejections_total"), 1u);
    // Ejection is node-wide: a new connection, whichever worker takes it,
    // sees none of the bad provider.
    for (int i = 0; i < 4; ++i) {
      auto after = consumer(impl, 5, "sayHello");
      EXPECT_EQ(after.ok, 5) << after.output;
    }
    EXPECT_NE(d_.admin("/clusters").find("failed_outlier_check"), std::string::npos) << d_.admin("/clusters");
  }

  // Four tokens and no refill: the other six calls get the daemon's
  // overload reply, which `impl`'s consumer decodes as an error that says so.
  void local_rate_limit_replies(const std::string& impl) {
    std::string h = kHost;
    apply("metarouter.yaml",
          "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
          "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
          "spec:\n  hosts: [" + h + "]\n"
          "  localRateLimit: {tokenBucket: {maxTokens: 4, tokensPerFill: 1, fillInterval: 1h}}\n"
          "  routes:\n  - name: all\n    route: [{destination: {host: " + h + "}}]\n");
    auto r = consumer(impl, 10, "sayHello");
    EXPECT_EQ(r.ok, 4) << r.output;
    EXPECT_EQ(r.errors, 6);
    EXPECT_NE(r.first_error.find("rate limited"), std::string::npos) << r.first_error;
    EXPECT_EQ(provider_calls(0, "sayHello") + provider_calls(1, "sayHello"), 4);
    EXPECT_EQ(d_.metric("metanode_rate_limited_total"), 6u);
  }

  // Hashing on an attachment (Aeraki maps httpHeaderName to a metadata
  // key): every call of one user lands on one provider.
  void consistent_hash_sticks(const std::string& impl) {
    rule("    loadBalancer: {consistentHash: {httpHeaderName: user}}\n");
    std::set<std::string> servers;
    for (int u = 0; u < 12; ++u) {
      std::string user = "user" + std::to_string(u);
      auto r = consumer(impl, 4, "sayHello", {"--attach", "user=" + user});
      ASSERT_EQ(r.ok, 4) << r.output;
      EXPECT_EQ(r.by_server.size(), 1u) << user << " was spread over providers";
      servers.insert(r.by_server.begin()->first);
    }
    // Twelve users on two providers: all on one has probability 2^-11.
    EXPECT_EQ(servers.size(), 2u);
  }

  // metanode.io/timeout 300 ms in front of a provider that takes 1.5 s: the
  // daemon's timeout reply reaches `impl`'s consumer first.
  void route_timeout_answers_first(const std::string& impl) {
    service_with({extra_provider("slow", {"--delay-ms", "1500"})});
    std::string h = kHost;
    d_.write_config("metarouter.yaml",
                    "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                    "metadata:\n  name: dubbo-demo\n  namespace: meta-dubbo\n"
                    "  annotations: {metanode.io/timeout: 300ms}\n"
                    "spec:\n  hosts: [" + h + "]\n"
                    "  routes:\n  - name: all\n    route: [{destination: {host: " + h + "}}]\n");
    for (int i = 0; i < 100 && d_.admin("/config_dump").find("0.300s") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto r = consumer(impl, 2, "sayHello");
    EXPECT_EQ(r.ok, 0) << r.output;
    EXPECT_EQ(r.errors, 2);
    EXPECT_NE(r.first_error.find("timed out"), std::string::npos) << r.first_error;
    EXPECT_EQ(d_.metric("metanode_upstream_rq_timeout_total"), 2u);
  }

  LocalDaemon d_;
  pid_t pids_[2] = {0, 0};
  std::map<std::string, pid_t> extra_pids_;  // by extra_provider's name
  int ports_[2] = {0, 0};
  int vip_port_ = 0;
};

std::string corpus(const std::string& name) { return slurp(std::string(METANODE_CORPUS_DIR) + "/dubbo/" + name); }

TEST_F(DubboInterop, EveryRequestOfOneConnectionIsBalanced) {
  for (const char* impl : {"sofa", "dubbojs"}) every_request_balanced(impl);
}

TEST_F(DubboInterop, RoutesByMethodAndByAttachment) {
  std::string h = kHost;
  route("  - name: tagged\n    match: {attributes: {dubbo.tag: {exact: gray}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v2}}]\n"
        "  - name: hello\n    match: {attributes: {method: {exact: sayHello}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
        "  - name: rest\n    route: [{destination: {host: " + h + "}}]\n");
  for (const char* impl : {"sofa", "dubbojs"}) {
    auto r = consumer(impl, 20, "alternate");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.by_method_server["sayHello:dubbo-sample-server-v1"], 10) << impl;
    EXPECT_EQ(r.by_method_server["sayHello:dubbo-sample-server-v2"], 0) << impl;
    auto tagged = consumer(impl, 10, "sayHello", {"--attach", "dubbo.tag=gray"});
    ASSERT_EQ(tagged.status, 0) << tagged.output;
    EXPECT_EQ(tagged.by_server["dubbo-sample-server-v2"], 10) << impl << ": " << tagged.output;
  }
}

TEST_F(DubboInterop, NoRouteIsAServiceNotFoundReplyTheConsumerDecodes) {
  std::string h = kHost;
  route("  - name: hello\n    match: {attributes: {method: {exact: sayHello}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v1}}]\n");
  for (const char* impl : {"sofa", "dubbojs"}) {
    auto r = consumer(impl, 3, "sayGoodbye");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.errors, 3) << impl;
    EXPECT_NE(r.first_error.find("no route for method 'sayGoodbye'"), std::string::npos)
        << impl << ": " << r.first_error;
    auto ok = consumer(impl, 3, "sayHello");
    EXPECT_EQ(ok.ok, 3) << impl << ": the connection survives the error replies";
  }
}

TEST_F(DubboInterop, AttachmentAddedByTheRouteIsReadByHessianJs) {
  std::string h = kHost;
  route("  - name: echo\n    match: {attributes: {method: {exact: echoAttachment}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
        "    requestMutation: [{key: x-metanode, value: mutated}, {key: dubbo.tag, value: green}]\n");
  for (const char* impl : {"sofa", "dubbojs"}) {
    auto added = consumer(impl, 2, "echoAttachment", {"--arg", "x-metanode"});
    ASSERT_EQ(added.ok, 2) << impl << ": " << added.output << d_.log();
    ASSERT_FALSE(added.replies.empty()) << added.output;
    EXPECT_EQ(added.replies[0], "mutated") << impl;
  }
  auto replaced = consumer("sofa", 1, "echoAttachment", {"--arg", "dubbo.tag", "--attach", "dubbo.tag=gray"});
  ASSERT_FALSE(replaced.replies.empty()) << replaced.output;
  EXPECT_EQ(replaced.replies[0], "green") << "an existing attachment is replaced";
  EXPECT_EQ(d_.metric("metanode_mutation_unsupported_total"), 0u);
}

// A reply gaining attachments (response flag 1 -> 4, map appended) still
// decodes in both consumers' hessian.js.
TEST_F(DubboInterop, RepliesWithAddedAttachmentsDecodeInTheConsumers) {
  std::string h = kHost;
  route("  - name: all\n    route: [{destination: {host: " + h + ", subset: v1}}]\n"
        "    responseMutation: [{key: served-by, value: metanode}]\n");
  for (const char* impl : {"sofa", "dubbojs"}) {
    auto r = consumer(impl, 5, "sayHello");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.ok, 5) << impl << ": " << r.first_error << r.output;
    ASSERT_FALSE(r.replies.empty());
    EXPECT_EQ(r.replies[0], "Hello metanode, response from dubbo-sample-server-v1/127.0.0.1") << impl;
  }
  EXPECT_EQ(d_.metric("metanode_mutation_unsupported_total"), 0u);
}

TEST_F(DubboInterop, HeartbeatIsAnsweredLocally) {
  std::string reply = raw_exchange(corpus("java_heartbeat_req.bin"), 500);
  ASSERT_EQ(reply.size(), 17u) << "one heartbeat response frame";
  EXPECT_EQ(uint8_t(reply[2]), 0x22) << "event response, hessian2";
  EXPECT_EQ(uint8_t(reply[3]), 20) << "status OK";
  EXPECT_EQ(uint8_t(reply[11]), 43) << "same request id";
  EXPECT_EQ(d_.metric("metanode_heartbeats_answered_total"), 1u);
  EXPECT_EQ(d_.metric("metanode_upstream_cx_total"), 0u) << "never forwarded";
}

TEST_F(DubboInterop, OneWayRequestGetsNoReplyEvenWhenTheProviderSendsOne) {
  // Java's one-way sayHello to com.example.DemoService 1.0.0; sofa's provider
  // answers one-way requests anyway, and that answer must not reach the client.
  std::string reply = raw_exchange(corpus("java_req_oneway.bin"), 700);
  EXPECT_TRUE(reply.empty()) << reply.size() << " bytes came back";
  EXPECT_EQ(d_.metric("metanode_requests_oneway_total"), 1u);
  for (int i = 0; i < 50 && d_.metric("metanode_responses_orphaned_total") != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(d_.metric("metanode_responses_orphaned_total"), 1u);
}

// A two-way request whose body is malformed gets Dubbo's BAD_REQUEST (40)
// for its id, then its connection closes; nothing reaches a provider.
TEST_F(DubboInterop, MalformedRequestGetsBadRequestThenClose) {
  std::string f = corpus("java_req_oneway.bin");
  f[2] = char(0xc2);  // make it two-way
  f[16] = char(0x40);  // the body's first value: an unknown Hessian tag
  std::string reply = raw_exchange(f, 1000);
  ASSERT_GE(reply.size(), 16u) << "a status reply before the close";
  EXPECT_EQ(uint8_t(reply[3]), 40);
  EXPECT_EQ(uint8_t(reply[11]), 44) << "answers the request's own id";
  EXPECT_EQ(d_.metric("metanode_downstream_error_reply_total"), 1u);
  EXPECT_EQ(d_.metric("metanode_upstream_cx_total"), 0u);
}

// An upstream that refuses connections: the request already forwarded to the
// pool is answered with SERVER_ERROR (80) under the client's own request id,
// not the id the daemon used upstream.
TEST_F(DubboInterop, UpstreamFailureIsAnsweredWithTheClientsRequestId) {
  int dead = free_port();  // nothing listens here
  service_with({dead});
  std::string f = corpus("java_req_oneway.bin");
  f[2] = char(0xc2);  // two-way, request id 44
  std::string reply = raw_exchange(f, 1000);
  ASSERT_GE(reply.size(), 16u) << d_.log();
  EXPECT_EQ(uint8_t(reply[3]), 80) << "SERVER_ERROR";
  EXPECT_EQ(uint8_t(reply[11]), 44) << "the client's id, not the upstream one";
  EXPECT_EQ(d_.metric("metanode_upstream_cx_connect_fail_total"), 1u) << d_.log();
}

TEST_F(DubboInterop, MirrorReachesTheOtherProviderWhileTheConsumerSeesOnlyTheRoute) {
  mirror_reaches_the_other_provider("sofa");
}

TEST_F(DubboInterop, KilledProviderCostsTheConsumerNoFailedCall) {
  auto warm = consumer("sofa", 4, "sayHello");
  ASSERT_EQ(warm.ok, 4) << warm.output;
  kill(pids_[1], SIGKILL);
  waitpid(pids_[1], nullptr, 0);
  for (const char* impl : {"sofa", "dubbojs"}) {
    auto r = consumer(impl, 20, "sayHello");
    EXPECT_EQ(r.ok, 20) << impl << ": " << r.first_error << d_.log();
    EXPECT_EQ(r.by_server["dubbo-sample-server-v1"], 20) << impl;
  }
  EXPECT_GE(d_.metric("metanode_upstream_rq_retry_total"), 1u);
  EXPECT_LT(d_.metric("metanode_upstream_cx_connect_fail_total"), 20u);
}

// A provider that answers every call with an exception (hessian.js's own:
// it serves another group) is ejected after the configured run of errors;
// the consumer's calls then all go to the healthy one.
TEST_F(DubboInterop, OutlierDetectionEjectsAProviderThatAnswersErrors) { outlier_ejects_the_bad_provider("sofa"); }

// metanode.io/timeout: a provider slower than the route's timeout gets the
// consumer a SERVER_TIMEOUT-class error from the daemon, well before the
// consumer's own 3 s timeout.
TEST_F(DubboInterop, RouteTimeoutAnswersBeforeTheConsumerGivesUp) { route_timeout_answers_first("sofa"); }

TEST_F(DubboInterop, LocalRateLimitIsAnOverloadReplyTheConsumersDecode) { local_rate_limit_replies("sofa"); }

TEST_F(DubboInterop, ConsistentHashOnAnAttachmentSticksPerValue) { consistent_hash_sticks("sofa"); }

// A port named tcp-metaprotocol-auto-... is recognised per connection: the
// same service serves Dubbo consumers (and, in the Thrift tests, Thrift).
TEST_F(DubboInterop, AutoProtocolPortRecognisesDubbo) {
  std::string h = kHost;
  d_.write_config("svc.yaml",
                  "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                  "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
                  "spec:\n  hosts: [" + h + "]\n  addresses: [127.0.0.1]\n"
                  "  ports: [{number: " + std::to_string(vip_port_) + ", name: tcp-metaprotocol-auto-demo}]\n"
                  "  endpoints:\n  - {address: 127.0.0.1, ports: {tcp-metaprotocol-auto-demo: " +
                  std::to_string(ports_[0]) + "}, labels: {version: v1}}\n");
  for (int i = 0; i < 100 && d_.admin("/config_dump").find("codec.auto") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto r = consumer("sofa", 5, "sayHello");
  EXPECT_EQ(r.ok, 5) << r.output << d_.log();
  EXPECT_EQ(r.by_server["dubbo-sample-server-v1"], 5);
}

// ---- Apache Dubbo Java --------------------------------------------------------
// The same service with Apache Dubbo Java 3.2 providers (dubbo protocol,
// Hessian 2), called by the Java consumer and by the npm ones: the
// implementation most Dubbo users run, end to end through the daemon.
class DubboJava : public DubboInterop {
 protected:
  std::vector<std::string> provider_command() const override { return java_peer("Provider"); }
};

TEST_F(DubboJava, EveryRequestOfOneConnectionIsBalanced) {
  for (const char* impl : {"java", "sofa"}) every_request_balanced(impl);
}

TEST_F(DubboJava, RoutesByMethodAttachmentAndWeight) {
  std::string h = kHost;
  route("  - name: lane\n    match: {attributes: {lane: {exact: gray}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v2}}]\n"
        "  - name: hello\n    match: {attributes: {method: {exact: sayHello}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
        "  - name: split\n    route:\n"
        "    - {destination: {host: " + h + ", subset: v1}, weight: 20}\n"
        "    - {destination: {host: " + h + ", subset: v2}, weight: 80}\n");
  auto r = consumer("java", 20, "alternate");
  ASSERT_EQ(r.ok, 20) << r.output << d_.log();
  EXPECT_EQ(r.by_method_server["sayHello:dubbo-sample-server-v1"], 10);
  EXPECT_EQ(r.by_method_server["sayHello:dubbo-sample-server-v2"], 0);
  auto lane = consumer("java", 10, "sayHello", {"--attach", "lane=gray"});
  ASSERT_EQ(lane.ok, 10) << lane.output;
  EXPECT_EQ(lane.by_server["dubbo-sample-server-v2"], 10);
  // 20/80 over one connection: v1's share of 500 within 5 sigma of 100.
  auto split = consumer("java", 500, "sayGoodbye");
  ASSERT_EQ(split.ok, 500) << split.first_error;
  EXPECT_NEAR(split.by_server["dubbo-sample-server-v1"], 100, 45) << split.output;
  EXPECT_GT(split.switches, 100);
}

// Attachments a route adds are read by the Java provider (Hessian-Lite),
// and a reply that gained attachments decodes in the Java consumer.
TEST_F(DubboJava, RouteMutationsReachBothJavaSides) {
  std::string h = kHost;
  route("  - name: echo\n    match: {attributes: {method: {exact: echoAttachment}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
        "    requestMutation: [{key: x-metanode, value: mutated}, {key: lane, value: green}]\n"
        "    responseMutation: [{key: served-by, value: metanode}]\n");
  auto added = consumer("java", 2, "echoAttachment", {"--arg", "x-metanode"});
  ASSERT_EQ(added.ok, 2) << added.output << d_.log();
  EXPECT_EQ(added.replies[0], "mutated");
  auto replaced = consumer("java", 1, "echoAttachment", {"--arg", "lane", "--attach", "lane=gray"});
  ASSERT_EQ(replaced.ok, 1) << replaced.output;
  EXPECT_EQ(replaced.replies[0], "green") << "an existing attachment is replaced";
  auto kept = consumer("java", 1, "echoAttachment", {"--arg", "user", "--attach", "user=ada"});
  ASSERT_EQ(kept.ok, 1) << kept.output;
  EXPECT_EQ(kept.replies[0], "ada") << "the consumer's own attachments pass";
  EXPECT_EQ(d_.metric("metanode_mutation_unsupported_total"), 0u);
}

TEST_F(DubboJava, TheDaemonsErrorRepliesReachTheJavaConsumer) {
  std::string h = kHost;
  apply("metarouter.yaml",
        "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
        "metadata: {name: dubbo-demo, namespace: meta-dubbo}\n"
        "spec:\n  hosts: [" + h + "]\n"
        "  localRateLimit: {conditions: [{match: {attributes: {method: {exact: sayGoodbye}}}, "
        "tokenBucket: {maxTokens: 2, tokensPerFill: 1, fillInterval: 1h}}]}\n"
        "  routes:\n  - name: hello\n    match: {attributes: {method: {exact: sayHello}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v1}}]\n"
        "  - name: bye\n    match: {attributes: {method: {exact: sayGoodbye}}}\n"
        "    route: [{destination: {host: " + h + ", subset: v2}}]\n");
  auto none = consumer("java", 3, "echoAttachment", {"--arg", "x"});
  EXPECT_EQ(none.errors, 3) << none.output;
  EXPECT_NE(none.first_error.find("no route for method 'echoAttachment'"), std::string::npos) << none.first_error;
  auto limited = consumer("java", 5, "sayGoodbye");
  EXPECT_EQ(limited.ok, 2) << limited.output;
  EXPECT_EQ(limited.errors, 3);
  EXPECT_NE(limited.first_error.find("rate limited"), std::string::npos) << limited.first_error;
  EXPECT_EQ(provider_calls(1, "sayGoodbye"), 2);
  auto fine = consumer("java", 3, "sayHello");
  EXPECT_EQ(fine.ok, 3) << fine.output;
}

TEST_F(DubboJava, MirrorIsCountedByTheOtherJavaProvider) { mirror_reaches_the_other_provider("java"); }

TEST_F(DubboJava, KilledJavaProviderCostsTheConsumerNoFailedCall) {
  auto warm = consumer("java", 4, "sayHello");
  ASSERT_EQ(warm.ok, 4) << warm.output;
  kill(pids_[1], SIGKILL);
  waitpid(pids_[1], nullptr, 0);
  auto r = consumer("java", 20, "sayHello");
  EXPECT_EQ(r.ok, 20) << r.first_error << d_.log();
  EXPECT_EQ(r.by_server["dubbo-sample-server-v1"], 20);
}

TEST_F(DubboJava, RouteTimeoutAnswersBeforeTheJavaConsumerGivesUp) { route_timeout_answers_first("java"); }

// A Java provider stopped with SIGTERM shuts down gracefully: it tells each
// consumer connection it is read-only (Dubbo's READONLY event), answers
// what it has, and waits for its consumers to leave (up to 10 s) before it
// closes. The daemon drains its connections to it at once and sends nothing
// new there from any worker: a consumer calling all along loses no call and
// sees the rest go elsewhere, and the provider is let go in well under its
// wait. (A daemon that ignored the event would keep sending to it and hold
// it the whole 10 s.) The provider is slow (50 ms a call), so calls are in
// flight when it says so.
TEST_F(DubboJava, GracefulProviderShutdownCostsTheConsumerNoCall) {
  int slow = extra_provider("slow", {"--delay-ms", "50"});
  service_with({slow, ports_[1]});
  auto warm = consumer("java", 4, "sayHello");
  ASSERT_EQ(warm.ok, 4) << warm.output << d_.log();
  auto run = std::async(std::launch::async, [&] { return consumer("java", 120, "sayHello", {"--interval", "0.02"}); });
  // The consumer's JVM starts in about a second; by 2 s it is calling.
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  auto stopped_at = std::chrono::steady_clock::now();
  kill(extra_pids_["slow"], SIGTERM);
  // Dubbo would hold it 10 s for a daemon that ignored the event.
  int status = d_.processes().wait(extra_pids_["slow"], 8000);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - stopped_at);
  EXPECT_NE(status, -1) << "the provider still waits for the daemon to leave after " << took.count() << " ms";
  int served_by_slow = provider_calls_of("slow", "sayHello");
  auto r = run.get();
  EXPECT_EQ(r.errors, 0) << r.first_error << "\n" << d_.log();
  EXPECT_EQ(r.ok, 120) << r.output;
  EXPECT_GT(r.by_server["dubbo-sample-server-slow"], 0) << "it served until it said it was going";
  EXPECT_GT(r.by_server["dubbo-sample-server-v2"], 60) << "the rest went to the other provider";
  EXPECT_EQ(provider_calls_of("slow", "sayHello"), served_by_slow);
  EXPECT_GE(d_.metric("metanode_upstream_cx_going_away_total"), 1u) << d_.log();
}

// Ejection, local rate limit and consistent hashing with Java on both
// sides: the Java provider's "no such service" reply counts as an error,
// the Java consumer decodes the overload reply and sends the attachment
// the ring hashes on.
TEST_F(DubboJava, OutlierDetectionEjectsAJavaProviderThatAnswersErrors) { outlier_ejects_the_bad_provider("java"); }
TEST_F(DubboJava, LocalRateLimitIsAnOverloadReplyTheJavaConsumerDecodes) { local_rate_limit_replies("java"); }
TEST_F(DubboJava, ConsistentHashOnAJavaAttachmentSticksPerValue) { consistent_hash_sticks("java"); }

// An upgrade of the daemon under a Java consumer that keeps calling over
// its one long-lived connection: the successor takes the listening socket
// (--handover), the predecessor tells the consumer its connection is going
// (READONLY event), finishes the call in flight and closes; Dubbo connects
// again, to the successor, and no call fails (retries are off).
class DubboJavaUpgrade : public DubboJava {
 protected:
  std::string handover_ = "@metanode-test-dubbo-" + std::to_string(getpid());
  std::vector<std::string> daemon_args() const override { return {"--handover", handover_}; }
};

TEST_F(DubboJavaUpgrade, DaemonUpgradeCostsTheJavaConsumerNoCall) {
  auto run = std::async(std::launch::async, [&] { return consumer("java", 200, "sayHello", {"--interval", "0.02"}); });
  ASSERT_TRUE(eventually([&] { return provider_calls(0, "sayHello") + provider_calls(1, "sayHello") >= 20; },
                         std::chrono::seconds(20)));
  auto next = d_.processes().spawn({sample_options_from_build().metanoded, "--no-bpf", "--admin-address",
                                    "127.0.0.1:" + d_.admin_port_str(), "--config-dir", d_.config_dir(),
                                    "--handover", handover_},
                                   "", "", d_.dir() + "/successor.log");
  ASSERT_TRUE(next);
  ASSERT_TRUE(eventually([&] { return d_.log().find("handed over; drained") != std::string::npos; },
                         std::chrono::seconds(20)))
      << d_.log() << "\n--- successor:\n" << slurp(d_.dir() + "/successor.log");
  auto r = run.get();
  EXPECT_EQ(r.errors, 0) << r.first_error << "\n" << d_.log() << "\n--- successor:\n"
                         << slurp(d_.dir() + "/successor.log");
  EXPECT_EQ(r.ok, 200) << r.output;
  auto successor = metric(http_get("", "127.0.0.1:" + d_.admin_port_str(), "/stats/prometheus").value_or(""),
                          "metanode_requests_total");
  EXPECT_GT(successor, 0u) << "the consumer's later calls went through the successor";
}

// Across implementations: the npm consumers call Java providers (above, in
// the balancing test); here the Java consumer calls an npm provider.
TEST_F(DubboJava, JavaConsumerCallsAnNpmProvider) {
  int port = free_port();
  ASSERT_GT(d_.start_peer({"node", peers() + "/provider.js", "--host", "127.0.0.1", "--port", std::to_string(port),
                           "--name", "dubbo-sample-server-npm", "--ip", "127.0.0.1"},
                          "provider-npm"),
            0);
  service_with({port});
  auto r = consumer("java", 10, "alternate");
  EXPECT_EQ(r.ok, 10) << r.output << d_.log();
  EXPECT_EQ(r.by_server["dubbo-sample-server-npm"], 10);
}

}  // namespace
}  // namespace metanode::testbed
