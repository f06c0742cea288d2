// The data plane in process: a real Server (--no-bpf, one worker so the
// per-worker state under test is deterministic) on loopback, scripted fake
// Thrift upstreams, a blocking client. Each test names the behaviour whose
// absence would turn it red.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <map>
#include <thread>

#include "edit_resource.h"
#include "data_plane_fixture.h"

namespace metanode::core {
namespace {

using namespace std::chrono_literals;

// Without retries of unwritten requests and connect backoff, half of these
// calls would fail (round robin onto a port nobody listens on).
TEST_F(DataPlane, DeadEndpointCostsNoFailedCalls) {
  FakeUpstream a("a");
  int dead = testbed::free_port();
  configure({service_yaml(vip_port_, {{a.port(), "v1"}, {dead, "v1"}})});
  auto r = calls(40);
  EXPECT_EQ(r["a"], 40);
  EXPECT_GE(counter(Counter::upstream_rq_retry), 1u);
  // One connect attempt per backoff period, not one per request.
  EXPECT_LT(counter(Counter::upstream_cx_connect_fail), 10u);
}

TEST_F(DataPlane, OnlyHostDownFailsFastInsteadOfConnectingPerRequest) {
  int dead = testbed::free_port();
  configure({service_yaml(vip_port_, {{dead, "v1"}})});
  auto r = calls(30);
  EXPECT_EQ(r["exception"], 30);  // every call answered, as an error
  EXPECT_LT(counter(Counter::upstream_cx_connect_fail), 10u);
  EXPECT_GE(counter(Counter::upstream_rq_backoff_fail_fast), 20u);
}

TEST_F(DataPlane, OutlierDetectionEjectsTheHostThatAnswersErrors) {
  FakeUpstream good("good");
  FakeUpstream bad("bad", [](const std::string&) { return FakeUpstream::Action{Act::kException}; });
  configure({service_yaml(vip_port_, {{good.port(), "v1"}, {bad.port(), "v1"}}),
             rule_yaml("  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, "
                       "interval: 1s, baseEjectionTime: 1m, maxEjectionPercent: 50}\n")});
  auto r = calls(60);
  EXPECT_EQ(r["exception"], 3);  // the three that tripped the detector
  EXPECT_EQ(r["good"], 57);
  EXPECT_EQ(counter(Counter::outlier_ejections), 1u);
  EXPECT_NE(server_->clusters_text().find("failed_outlier_check"), std::string::npos)
      << server_->clusters_text();
  // Host state is keyed by address: an unrelated configuration change keeps
  // the ejection.
  configure({service_yaml(vip_port_, {{good.port(), "v1"}, {bad.port(), "v1"}}),
             rule_yaml("  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, "
                       "interval: 1s, baseEjectionTime: 1m, maxEjectionPercent: 50}\n"
                       "    loadBalancer: {simple: RANDOM}\n")});
  r = calls(30);
  EXPECT_EQ(r["good"], 30);
}

// Envoy's cap: with 10% allowed, the first of two failing hosts is ejected
// (0% were), the second is not (50% are); calls keep being answered.
TEST_F(DataPlane, MaxEjectionPercentCapsEjections) {
  auto fail = [](const std::string&) { return FakeUpstream::Action{Act::kException}; };
  FakeUpstream bad1("bad1", fail), bad2("bad2", fail);
  configure({service_yaml(vip_port_, {{bad1.port(), "v1"}, {bad2.port(), "v1"}}),
             rule_yaml("  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 10}\n")});
  auto r = calls(10);
  EXPECT_EQ(r["exception"], 10);
  EXPECT_EQ(bad1.requests() + bad2.requests(), 10);
  EXPECT_EQ(counter(Counter::outlier_ejections), 1u);
  EXPECT_GE(counter(Counter::outlier_ejection_overflow), 1u);
}

// The value of the one line of `metric` carrying every label in `labels`.
double metric_value(const std::string& text, const std::string& metric,
                    const std::vector<std::string>& labels) {
  std::istringstream in(text);
  std::string line;
  double found = -1;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.rfind(metric + "{", 0) != 0) continue;
    if (!std::all_of(labels.begin(), labels.end(),
                     [&](const std::string& l) { return line.find(l) != std::string::npos; }))
      continue;
    found = std::stod(line.substr(line.rfind(' ') + 1));
    ++n;
  }
  return n == 1 ? found : -double(n) - 1;  // -1: none, -3: two, ...
}

// Istio's standard metrics, checked against what was sent: framed binary
// calls of 20 bytes answered with 28, and calls no route matches answered
// by the daemon with Istio's NR flag, every one counted.
TEST_F(DataPlane, IstioMetricsCountEveryRequestWithItsSizesAndFlags) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}), rule_yaml(""),
             "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
             "metadata: {name: svc, namespace: ns}\n"
             "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n"
             "  - name: get\n    match: {attributes: {method: {exact: get}}}\n"
             "    route: [{destination: {host: " + kHost + ", subset: v1}}]\n"});
  ASSERT_EQ(testbed::thrift_message(1, "get", 1).size(), 20u);
  ASSERT_EQ(testbed::thrift_message(2, "get", 1, "a").size(), 28u);
  EXPECT_EQ(calls(10, "get")["a"], 10);
  EXPECT_EQ(calls(3, "put")["exception"], 3);
  std::string text = render_prometheus(server_->shards(), "");
  std::vector<std::string> ok = {"reporter=\"source\"", "destination_service=\"" + std::string(kHost) + "\"",
                                 "destination_service_name=\"svc\"", "destination_service_namespace=\"ns\"",
                                 "destination_version=\"v1\"", "request_protocol=\"thrift\"",
                                 "response_code=\"ok\"", "response_flags=\"-\"", "source_workload=\"unknown\""};
  EXPECT_EQ(metric_value(text, "istio_requests_total", ok), 10) << text;
  EXPECT_EQ(metric_value(text, "istio_request_bytes_sum", ok), 200);
  EXPECT_EQ(metric_value(text, "istio_response_bytes_sum", ok), 280);
  EXPECT_EQ(metric_value(text, "istio_request_duration_milliseconds_count", ok), 10);
  auto bucket = ok;
  bucket.push_back("le=\"+Inf\"");
  EXPECT_EQ(metric_value(text, "istio_request_duration_milliseconds_bucket", bucket), 10);
  bucket.back() = "le=\"10\"";  // 20-byte requests: in the bucket up to 10 bytes, none
  EXPECT_EQ(metric_value(text, "istio_request_bytes_bucket", bucket), 0);
  bucket.back() = "le=\"25\"";
  EXPECT_EQ(metric_value(text, "istio_request_bytes_bucket", bucket), 10);
  std::vector<std::string> nr = {"destination_service=\"" + std::string(kHost) + "\"",
                                 "destination_version=\"unknown\"", "response_code=\"exception\"",
                                 "response_flags=\"NR\""};
  EXPECT_EQ(metric_value(text, "istio_requests_total", nr), 3) << text;
}

// istiod names the workload behind each endpoint in its metadata; the
// metrics carry it as destination_workload, per endpoint.
TEST_F(DataPlane, DestinationWorkloadComesFromIstiodsEndpointMetadata) {
  FakeUpstream a("a"), b("b");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}, {b.port(), "v2"}}), rule_yaml("")},
            [&](xds::Resources& r) {
              auto tag = [&](envoy::config::endpoint::v3::ClusterLoadAssignment& cla) {
                for (auto& loc : *cla.mutable_endpoints())
                  for (auto& lbe : *loc.mutable_lb_endpoints()) {
                    uint32_t port = lbe.endpoint().address().socket_address().port_value();
                    if (port != uint32_t(a.port())) continue;  // b's stays untold
                    (*(*lbe.mutable_metadata()->mutable_filter_metadata())["istio"].mutable_fields())["workload"]
                        .set_string_value("svc-v1;ns-apps;svc;v1;Kubernetes");
                  }
              };
              for (auto& cla : r.endpoints) tag(xds::edit(cla));
              for (auto& c : r.clusters) tag(*xds::edit(c).mutable_load_assignment());
            });
  auto seen = calls(10, "get");
  ASSERT_EQ(seen["a"] + seen["b"], 10);
  std::string text = render_prometheus(server_->shards(), "");
  EXPECT_EQ(metric_value(text, "istio_requests_total",
                         {"destination_workload=\"svc-v1\"", "destination_workload_namespace=\"ns-apps\"",
                          "destination_version=\"unknown\"", "destination_canonical_service=\"svc\"",
                          "destination_canonical_revision=\"v1\"", "destination_cluster=\"Kubernetes\""}),
            seen["a"])
      << text;
  EXPECT_EQ(metric_value(text, "istio_requests_total",
                         {"destination_workload=\"unknown\"", "destination_workload_namespace=\"ns\"",
                          "destination_canonical_service=\"unknown\""}),
            seen["b"])
      << "untold: unknown, the service's namespace\n" << text;
}

TEST_F(DataPlane, MirrorCopiesEveryRequestAndNeverDelaysTheCall) {
  FakeUpstream v1("v1");
  // The mirror never answers: if its reply were awaited, every call would time out.
  FakeUpstream v2("v2", [](const std::string&) { return FakeUpstream::Action{Act::kSilent}; });
  configure({service_yaml(vip_port_, {{v1.port(), "v1"}, {v2.port(), "v2"}}), rule_yaml(""),
             "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
             "metadata: {name: svc, namespace: ns}\n"
             "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n"
             "  - name: all\n    route: [{destination: {host: " + kHost + ", subset: v1}}]\n"
             "    mirror: {host: " + kHost + ", subset: v2}\n"});
  auto r = calls(20);
  EXPECT_EQ(r["v1"], 20);
  EXPECT_TRUE(testbed::eventually([&] { return v2.requests() == 20; })) << v2.requests();
  EXPECT_EQ(counter(Counter::mirror_requests), 20u);
  EXPECT_EQ(v1.requests(), 20);
}

TEST_F(DataPlane, MirrorPercentageMirrorsThatShare) {
  FakeUpstream v1("v1"), v2("v2");
  configure({service_yaml(vip_port_, {{v1.port(), "v1"}, {v2.port(), "v2"}}), rule_yaml(""),
             "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
             "metadata: {name: svc, namespace: ns}\n"
             "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n"
             "  - name: all\n    route: [{destination: {host: " + kHost + ", subset: v1}}]\n"
             "    mirror: {host: " + kHost + ", subset: v2}\n    mirrorPercentage: {value: 25}\n"});
  const int n = 400;
  auto r = calls(n);
  EXPECT_EQ(r["v1"], n);
  ASSERT_TRUE(testbed::eventually([&] { return int(counter(Counter::mirror_requests)) == v2.requests(); }));
  double p = double(v2.requests()) / n;
  EXPECT_NEAR(p, 0.25, 5 * std::sqrt(0.25 * 0.75 / n)) << v2.requests();
}

std::string router_with(const std::string& annotations) {
  return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
         "metadata:\n  name: svc\n  namespace: ns\n  annotations:\n" + annotations +
         "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n"
         "  - name: all\n    route: [{destination: {host: " + kHost + "}}]\n";
}

TEST_F(DataPlane, RouteTimeoutAnswersWithAnError) {
  FakeUpstream silent("silent", [](const std::string&) { return FakeUpstream::Action{Act::kSilent}; });
  configure({service_yaml(vip_port_, {{silent.port(), "v1"}}),
             router_with("    metanode.io/timeout: 300ms\n")});
  auto r = calls(2);
  EXPECT_EQ(r["exception"], 2);  // answered (by the daemon's 300 ms, not the client's 5 s)
  EXPECT_EQ(counter(Counter::upstream_rq_timeout), 2u);
}

// A per-try timeout resends an idempotent method elsewhere; a method not
// listed as idempotent is never sent twice.
TEST_F(DataPlane, PerTryTimeoutRetriesOnlyIdempotentMethods) {
  FakeUpstream silent("silent", [](const std::string&) { return FakeUpstream::Action{Act::kSilent}; });
  FakeUpstream fine("fine");
  configure({service_yaml(vip_port_, {{silent.port(), "v1"}, {fine.port(), "v1"}}),
             router_with("    metanode.io/timeout: 1s\n"
                         "    metanode.io/retries: '{attempts: 2, perTryTimeout: 200ms, "
                         "retryOn: gateway-error, idempotentMethods: [get]}'\n")});
  auto gets = calls(6, "get");
  EXPECT_EQ(gets["fine"], 6);
  int silent_before = silent.requests();
  auto puts = calls(6, "put");
  EXPECT_GE(puts["exception"], 1);  // round robin sent some to the silent host: not retried
  EXPECT_EQ(puts["exception"] + puts["fine"], 6);
  EXPECT_EQ(silent.requests() - silent_before + fine.requests() - 6, 6)
      << "each put reached exactly one upstream";
}

// Reads what arrives on `fd` until `wait` passes with nothing new or the
// peer closes.
std::string read_all(int fd, std::chrono::milliseconds wait) {
  std::string in;
  char buf[65536];
  for (pollfd p{fd, POLLIN, 0}; ::poll(&p, 1, int(wait.count())) == 1;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r <= 0) break;
    in.append(buf, size_t(r));
  }
  return in;
}

// An attempt that timed out while its connection was still opening is
// retried elsewhere; when that connection comes up, the request must not
// leave on it too (it would run twice, or after its caller was told it
// timed out). The "opening" host's listen queue is full, so the daemon's
// SYN is dropped until the test makes room; without the stale queue
// entries dropped, the three retried gets arrive there.
TEST_F(DataPlane, RequestRetriedWhileItsConnectionOpenedIsNotSentThereToo) {
  FakeUpstream fine("fine");
  int port = 0;
  int lfd = testbed::bind_loopback(port);
  ASSERT_EQ(::listen(lfd, 0), 0);
  int filler = socket(AF_INET, SOCK_STREAM, 0);  // fills the queue of one
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(filler, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  configure({service_yaml(vip_port_, {{port, "v1"}, {fine.port(), "v1"}}),
             rule_yaml("  trafficPolicy:\n    connectionPool: {tcp: {connectTimeout: 10s}}\n"),
             router_with("    metanode.io/retries: '{attempts: 1, perTryTimeout: 200ms, "
                         "retryOn: gateway-error, idempotentMethods: [get]}'\n")});
  auto r = calls(6, "get");
  EXPECT_EQ(r["fine"], 6);
  ASSERT_GE(counter(Counter::upstream_rq_retry), 1u) << "no call was queued on the opening host";
  // Room in the queue: the daemon's next SYN (1 s, then 3 s) connects.
  int f = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(f, 0);
  ::close(f);
  ::close(filler);
  pollfd pfd{lfd, POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 8000), 1) << "the daemon never connected";
  int conn = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(conn, 0);
  std::string got = read_all(conn, 500ms);
  EXPECT_EQ(got.size(), 0u) << "requests already retried elsewhere were sent on the old connection";
  ::close(conn);
  ::close(lfd);
}

// An attempt that timed out while its write was stuck (an upstream that
// stopped reading) is retried elsewhere while that write still reads the
// frame. The retry must not touch those bytes: without its own copy, the
// second attempt's completed write frees the frame (this route keeps none
// after a write) and the stuck write goes on from freed memory (ASan:
// use-after-free in sendmsg; otherwise EFAULT and a truncated frame).
TEST_F(DataPlane, RetryWhileTheFirstWriteIsStuckLeavesThatWriteIntact) {
  FakeUpstream fine("fine");
  int port = 0;
  int lfd = testbed::bind_loopback(port);
  ASSERT_EQ(::listen(lfd, 4), 0);
  configure({service_yaml(vip_port_, {{port, "v1"}, {fine.port(), "v1"}}),
             router_with("    metanode.io/timeout: 10s\n"
                         "    metanode.io/retries: '{attempts: 1, perTryTimeout: 300ms, "
                         "retryOn: gateway-error, idempotentMethods: [get]}'\n")});
  // Larger than what the loopback socket buffers take from a peer that
  // does not read.
  const std::string payload(12u << 20, 'x');
  auto big_call = [&](int32_t seqid) {
    std::string m = testbed::thrift_message(2, "get", seqid, payload);  // a string in field 0
    m[7] = 1;                                                            // as a call's argument
    return m;
  };
  ThriftClient c(vip_port_);
  for (int i = 1; i <= 2; ++i) {
    ASSERT_TRUE(c.send_raw(big_call(i)));
    auto rep = c.read_reply(8000ms);
    ASSERT_TRUE(rep.has_value()) << "call " << i;
    EXPECT_EQ(rep->text, "fine");
  }
  ASSERT_GE(counter(Counter::upstream_rq_retry), 1u) << "no call went to the stuck host";
  int conn = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(conn, 0);
  std::string got = read_all(conn, 1000ms);
  // Exactly one frame (a second call queued behind the stuck write was
  // retried before it left), byte for byte but its id.
  std::string want = big_call(1);
  constexpr size_t kIdAt = 4 + 4 + 4 + 3;  // length, version, name length, "get"
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(got.compare(0, kIdAt, want, 0, kIdAt), 0);
  EXPECT_EQ(got.compare(kIdAt + 4, std::string::npos, want, kIdAt + 4, std::string::npos), 0)
      << "the stuck write's bytes changed under it";
  ::close(conn);
  ::close(lfd);
}

TEST_F(DataPlane, ResetAfterWriteIsRetriedForIdempotentMethods) {
  FakeUpstream closer("closer", [](const std::string&) { return FakeUpstream::Action{Act::kClose}; });
  FakeUpstream fine("fine");
  configure({service_yaml(vip_port_, {{closer.port(), "v1"}, {fine.port(), "v1"}}),
             router_with("    metanode.io/retries: '{attempts: 1, retryOn: reset, idempotentMethods: [get]}'\n")});
  auto gets = calls(6, "get");
  EXPECT_EQ(gets["fine"], 6);
  auto puts = calls(6, "put");
  EXPECT_GE(puts["exception"], 1);
}

TEST_F(DataPlane, ConsistentHashOnSourceAddressSticksPerClient) {
  FakeUpstream a("a"), b("b"), c("c");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}, {b.port(), "v1"}, {c.port(), "v1"}}),
             rule_yaml("  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, "
                       "maglev: {tableSize: 1021}}\n")});
  std::set<std::string> used;
  for (const char* src : {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"}) {
    auto r = calls(5, "get", src);
    EXPECT_EQ(r.size(), 1u) << src << " went to " << r.size() << " servers";
    // A second connection from the same address lands on the same server.
    auto again = calls(3, "get", src);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again.begin()->first, r.begin()->first);
    used.insert(r.begin()->first);
  }
  EXPECT_GE(used.size(), 2u);  // different clients spread
}

TEST_F(DataPlane, ConsistentHashOnAnAttributeSticksPerValue) {
  FakeUpstream a("a"), b("b"), c("c");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}, {b.port(), "v1"}, {c.port(), "v1"}}),
             rule_yaml("  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: method}\n")});
  std::set<std::string> used;
  for (int m = 0; m < 8; ++m) {
    auto r = calls(4, "method" + std::to_string(m));
    EXPECT_EQ(r.size(), 1u);
    used.insert(r.begin()->first);
  }
  EXPECT_GE(used.size(), 2u);
}

TEST_F(DataPlane, EndpointWeightsAreHonouredByRoundRobin) {
  FakeUpstream a("a"), b("b");
  configure({service_yaml(vip_port_, {{a.port(), "v1", 1}, {b.port(), "v1", 3}})});
  auto r = calls(40);
  EXPECT_EQ(r["a"], 10);
  EXPECT_EQ(r["b"], 30);
}

// A host that leaves the configuration is drained: the call in flight on it
// completes, then its connection closes, and new calls go to the others.
TEST_F(DataPlane, RemovedEndpointIsDrainedNotCut) {
  FakeUpstream slow("slow", [](const std::string&) {
    return FakeUpstream::Action{Act::kReply, std::chrono::milliseconds(400)};
  });
  FakeUpstream other("other");
  configure({service_yaml(vip_port_, {{slow.port(), "v1"}})});
  ThriftClient c(vip_port_);
  ASSERT_TRUE(c.send_raw(testbed::thrift_message(1, "get", 7)));
  ASSERT_TRUE(testbed::eventually([&] { return slow.requests() == 1; }));
  configure({service_yaml(vip_port_, {{other.port(), "v1"}})});
  auto r = c.read_reply(std::chrono::milliseconds(3000));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text, "slow");
  EXPECT_EQ(r->seqid, 7);
  EXPECT_TRUE(testbed::eventually([&] { return slow.open_connections() == 0; }));
  EXPECT_EQ(calls(3)["other"], 3);
}

}  // namespace
}  // namespace metanode::core

namespace metanode::core {
namespace {

std::string pool_rule(const std::string& pool) {
  return rule_yaml("  trafficPolicy:\n    connectionPool: " + pool + "\n");
}

TEST_F(DataPlane, MaxRequestsPerConnectionRetiresConnections) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}), pool_rule("{http: {maxRequestsPerConnection: 5}}")});
  EXPECT_EQ(calls(20)["a"], 20);
  EXPECT_EQ(a.connections(), 4);
  EXPECT_GE(counter(Counter::upstream_cx_max_requests), 4u);
}

TEST_F(DataPlane, IdleTimeoutClosesPooledConnections) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}), pool_rule("{http: {idleTimeout: 200ms}}")});
  EXPECT_EQ(calls(1)["a"], 1);
  EXPECT_TRUE(testbed::eventually([&] { return a.open_connections() == 0; }));
  EXPECT_EQ(counter(Counter::upstream_cx_idle_timeout), 1u);
  EXPECT_EQ(calls(1)["a"], 1);  // and a new one is opened when needed
}

TEST_F(DataPlane, MaxRequestsRefusesTheExcess) {
  FakeUpstream slow("slow", [](const std::string&) {
    return FakeUpstream::Action{Act::kReply, std::chrono::milliseconds(300)};
  });
  configure({service_yaml(vip_port_, {{slow.port(), "v1"}}), pool_rule("{http: {http2MaxRequests: 2}}")});
  auto r = concurrent_calls(vip_port_, 5);
  EXPECT_EQ(r["slow"], 2);
  EXPECT_EQ(r["exception"], 3);
  EXPECT_EQ(counter(Counter::upstream_rq_overflow), 3u);
}

TEST_F(DataPlane, MaxConnectionsCapsConnectionsPerHost) {
  FakeUpstream slow("slow", [](const std::string&) {
    return FakeUpstream::Action{Act::kReply, std::chrono::milliseconds(100)};
  });
  configure({service_yaml(vip_port_, {{slow.port(), "v1"}}), pool_rule("{tcp: {maxConnections: 1}}")});
  auto r = concurrent_calls(vip_port_, 4);
  EXPECT_EQ(r["slow"], 4);          // multiplexed on the one connection
  EXPECT_EQ(slow.connections(), 1);  // without the limit the pool opens a second
}

TEST_F(DataPlane, MaxPendingRefusesRequestsWaitingForAConnection) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}), pool_rule("{http: {http1MaxPendingRequests: 1}}")});
  // Four requests in one write: all arrive before the first connect completes.
  ThriftClient c(vip_port_);
  std::string burst;
  for (int i = 1; i <= 4; ++i) burst += testbed::thrift_message(1, "get", i);
  ASSERT_TRUE(c.send_raw(burst));
  std::map<std::string, int> out;
  for (int i = 0; i < 4; ++i) {
    auto r = c.read_reply(std::chrono::milliseconds(5000));
    out[!r ? "" : r->type == 3 ? "exception" : r->text]++;
  }
  EXPECT_EQ(out["a"], 1);
  EXPECT_EQ(out["exception"], 3);
  EXPECT_EQ(counter(Counter::upstream_rq_pending_overflow), 3u);
}

// The daemon runs in this process, so its upstream socket is one of ours:
// find the one connected to the fake and read its options.
TEST_F(DataPlane, TcpKeepaliveIsSetOnUpstreamSockets) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}),
             pool_rule("{tcp: {tcpKeepalive: {probes: 3, time: 45s, interval: 7s}}}")});
  EXPECT_EQ(calls(1)["a"], 1);
  int found = -1;
  DIR* d = opendir("/proc/self/fd");
  ASSERT_NE(d, nullptr);
  while (dirent* e = readdir(d)) {
    int fd = atoi(e->d_name);
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 && peer.sin_family == AF_INET &&
        ntohs(peer.sin_port) == a.port())
      found = fd;
  }
  closedir(d);
  ASSERT_GE(found, 0);
  int on = 0, cnt = 0, idle = 0, intvl = 0;
  socklen_t l = sizeof(int);
  getsockopt(found, SOL_SOCKET, SO_KEEPALIVE, &on, &l);
  getsockopt(found, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &l);
  getsockopt(found, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &l);
  getsockopt(found, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &l);
  EXPECT_EQ(on, 1);
  EXPECT_EQ(cnt, 3);
  EXPECT_EQ(idle, 45);
  EXPECT_EQ(intvl, 7);
}

std::string limited_router(const std::string& rate_limit) {
  return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
         "metadata: {name: svc, namespace: ns}\n"
         "spec:\n  hosts: [" + std::string(kHost) + "]\n  localRateLimit:\n" + rate_limit +
         "  routes:\n  - name: all\n    route: [{destination: {host: " + kHost + "}}]\n";
}

TEST_F(DataPlane, LocalRateLimitAnswersOverLimitAndKeepsStateAcrossUpdates) {
  FakeUpstream a("a");
  std::string router = limited_router("    tokenBucket: {maxTokens: 3, tokensPerFill: 1, fillInterval: 1h}\n");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}), router});
  auto r = calls(5);
  EXPECT_EQ(r["a"], 3);
  EXPECT_EQ(r["exception"], 2);
  EXPECT_EQ(a.requests(), 3);  // refused requests never reach the upstream
  EXPECT_EQ(counter(Counter::rate_limited), 2u);
  // A configuration change elsewhere must not refill the bucket.
  FakeUpstream other("other");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}, {other.port(), "v2"}}), router});
  EXPECT_EQ(calls(2)["exception"], 2);
}

TEST_F(DataPlane, LocalRateLimitConditionsLimitOnlyWhatTheyMatch) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}),
             limited_router("    conditions:\n    - match: {attributes: {method: {exact: put}}}\n"
                            "      tokenBucket: {maxTokens: 1, fillInterval: 1h}\n")});
  EXPECT_EQ(calls(3, "put")["a"], 1);
  EXPECT_EQ(calls(5, "get")["a"], 5);  // no listener-wide bucket: unlimited
}

TEST_F(DataPlane, LocalRateLimitRefills) {
  FakeUpstream a("a");
  configure({service_yaml(vip_port_, {{a.port(), "v1"}}),
             limited_router("    tokenBucket: {maxTokens: 1, tokensPerFill: 1, fillInterval: 200ms}\n")});
  EXPECT_EQ(calls(2)["a"], 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(calls(1)["a"], 1);
}

TEST_F(DataPlane, DuplicateReplyIsCountedAsOrphanedAndDropped) {
  FakeUpstream twice("twice", [](const std::string&) { return FakeUpstream::Action{Act::kReplyTwice}; });
  configure({service_yaml(vip_port_, {{twice.port(), "v1"}})});
  ThriftClient c(vip_port_);
  auto r = c.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text, "twice");
  EXPECT_TRUE(testbed::eventually([&] { return counter(Counter::responses_orphaned) == 1; }));
  EXPECT_FALSE(c.read_reply(std::chrono::milliseconds(300)).has_value()) << "the duplicate reached the client";
}

// Pipelined Thrift calls on one connection routed to a slow and a fast
// endpoint: the replies leave in the order the calls came (a pipelining
// Thrift client reads them so), however they complete. An unrouted call
// between them is answered in its place too.
TEST_F(DataPlane, PipelinedThriftRepliesLeaveInRequestOrder) {
  FakeUpstream slow("slow", [](const std::string&) {
    return FakeUpstream::Action{Act::kReply, std::chrono::milliseconds(300)};
  });
  FakeUpstream fast("fast");
  configure({service_yaml(vip_port_, {{slow.port(), "v1"}, {fast.port(), "v2"}}),
             rule_yaml(""),
             "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
             "metadata: {name: svc, namespace: ns}\n"
             "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n"
             "  - name: slow\n    match: {attributes: {method: {exact: slow}}}\n"
             "    route: [{destination: {host: " + kHost + ", subset: v1}}]\n"
             "  - name: get\n    match: {attributes: {method: {exact: get}}}\n"
             "    route: [{destination: {host: " + kHost + ", subset: v2}}]\n"});
  ThriftClient c(vip_port_);
  ASSERT_TRUE(c.send_raw(testbed::thrift_message(1, "slow", 1) + testbed::thrift_message(1, "nothing", 2) +
                         testbed::thrift_message(1, "get", 3) + testbed::thrift_message(1, "get", 4)));
  std::vector<int32_t> order;
  std::vector<std::string> from;
  for (int i = 0; i < 4; ++i) {
    auto r = c.read_reply(std::chrono::milliseconds(3000));
    ASSERT_TRUE(r.has_value()) << i;
    order.push_back(r->seqid);
    from.push_back(r->type == 3 ? "exception" : r->text);
  }
  EXPECT_EQ(order, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(from, (std::vector<std::string>{"slow", "exception", "fast", "fast"}));
  // And the connection goes on, in order, with nothing held.
  auto r = c.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text, "fast");
}

TEST_F(DataPlane, PoolOpensASecondConnectionOnlyWhenTheFirstIsBusy) {
  FakeUpstream slow("slow", [](const std::string&) {
    return FakeUpstream::Action{Act::kReply, std::chrono::milliseconds(200)};
  });
  configure({service_yaml(vip_port_, {{slow.port(), "v1"}})});
  EXPECT_EQ(calls(5)["slow"], 5);  // one at a time: one connection is enough
  EXPECT_EQ(slow.connections(), 1);
  auto r = concurrent_calls(vip_port_, 4);
  EXPECT_EQ(r["slow"], 4);
  EXPECT_EQ(slow.connections(), 2);  // the cap per host and worker
}

}  // namespace
}  // namespace metanode::core
