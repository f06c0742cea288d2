// metanode's own xDS client and server on loopback, in process: state of
// the world merging, ACK/NACK, pushes. (Against independent peers:
// tests/integration/xds_peers_test.cc.)
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "edit_resource.h"
#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"
#include "metanode/xds/xds_client.h"
#include "metanode/xds/xds_server.h"

namespace metanode::xds {
namespace {

using namespace std::chrono_literals;
using envoy::service::discovery::v3::DiscoveryResponse;

Resources tutorial(const std::string& extra = "") {
  auto r = translate_manifests({{"svc.yaml", R"(
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: s, namespace: ns}
spec:
  hosts: [s.ns.svc.cluster.local]
  addresses: [10.96.0.10]
  ports: [{number: 9090, name: tcp-metaprotocol-thrift-x}]
  endpoints: [{address: 10.1.0.11, labels: {version: v1}}, {address: 10.1.0.12, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: s, namespace: ns}
spec:
  host: s.ns.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
)" + extra}});
  EXPECT_TRUE(r) << r.error().message();
  return r ? std::move(r.value()) : Resources{};
}

const char* kToV1 = R"(
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: r, namespace: ns}
spec:
  hosts: [s.ns.svc.cluster.local]
  routes: [{name: to-v1, route: [{destination: {host: s.ns.svc.cluster.local, subset: v1}}]}]
)";

template <class T>
DiscoveryResponse response(const char* type, const std::vector<T>& list) {
  DiscoveryResponse r;
  r.set_type_url(type);
  r.set_version_info("7");
  for (const auto& m : list) r.add_resources()->PackFrom(*m);
  return r;
}

TEST(MergeResponse, ClustersReplaceEndpointsMerge) {
  Resources state = tutorial();
  ASSERT_EQ(state.clusters.size(), 3u);
  // A CDS response with one cluster is the whole set: two are gone.
  ASSERT_TRUE(merge_response(response(kClusterType, std::vector{state.clusters[1]}), state));
  EXPECT_EQ(state.clusters.size(), 1u);
  EXPECT_EQ(state.version, "7");
  // An EDS response with one assignment updates that one, keeps the rest.
  auto cla = state.endpoints[0];
  edit(cla).mutable_endpoints(0)->mutable_lb_endpoints()->Clear();
  ASSERT_TRUE(merge_response(response(kEndpointType, std::vector{cla}), state));
  ASSERT_EQ(state.endpoints.size(), 3u);
  for (const auto& e : state.endpoints)
    if (e->cluster_name() == cla->cluster_name()) {
      EXPECT_EQ(e->endpoints(0).lb_endpoints_size(), 0);
    }
}

TEST(MergeResponse, DeltaUpsertsAndRemovesByName) {
  Resources state = tutorial();
  envoy::service::discovery::v3::DeltaDiscoveryResponse d;
  d.set_type_url(kClusterType);
  d.set_system_version_info("9");
  auto* res = d.add_resources();
  res->set_name(state.clusters[0]->name());
  res->set_version("h1");
  auto changed = *state.clusters[0];
  changed.mutable_connect_timeout()->set_seconds(7);
  res->mutable_resource()->PackFrom(changed);
  d.add_removed_resources(state.clusters[2]->name());
  auto u = update_of(d);
  EXPECT_FALSE(u.replace);  // delta never replaces a whole set
  EXPECT_EQ(u.versions.at(state.clusters[0]->name()), "h1");
  std::string removed = state.clusters[2]->name();
  ASSERT_TRUE(merge_update(u, state));
  ASSERT_EQ(state.clusters.size(), 2u);
  for (const auto& c : state.clusters) {
    EXPECT_NE(c->name(), removed);
    if (c->name() == changed.name()) {
      EXPECT_EQ(c->connect_timeout().seconds(), 7);
    }
  }
}

TEST(MergeResponse, UndecodableResourceChangesNothing) {
  Resources state = tutorial();
  auto r = response(kListenerType, state.listeners);
  r.add_resources()->set_type_url(kClusterType);  // a Cluster in a Listener response
  auto bad = merge_response(r, state);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("resource[1]"), std::string::npos);
  EXPECT_EQ(state.listeners.size(), 1u);
  r = response(kListenerType, state.listeners);
  r.mutable_resources(0)->set_value("\xff\xff garbage");
  EXPECT_FALSE(merge_response(r, state));
  EXPECT_FALSE(merge_response(response("type.googleapis.com/envoy.Unknown", state.listeners), state));
}

// A sink that compiles like the daemon's applier and records what it saw.
class RecordingSink : public ConfigSink {
 public:
  Applied apply(Resources res, const std::string&, bool) override {
    auto c = compile_snapshot(std::move(res));
    std::lock_guard<std::mutex> l(mu_);
    last_ = c.snapshot;
    ++applies_;
    cv_.notify_all();
    return {c.snapshot, c.rejects, true};
  }
  void refused(const std::string&, const Error&) override {}
  bool wait(const std::function<bool(const Snapshot&)>& pred) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, 10s, [&] { return last_ && pred(*last_); });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const Snapshot> last_;
  int applies_ = 0;
};

bool routed_to(const Snapshot& s, const std::string& route) {
  return s.listeners.size() == 1 && s.listeners[0].routes && !s.listeners[0].routes->routes.empty() &&
         s.listeners[0].routes->routes[0].name == route;
}

// Our server serving `initial`, and our client pulling from it into a sink.
struct Pair {
  explicit Pair(const Resources& initial, bool delta = false) {
    server.update(initial);
    auto port = server.start("127.0.0.1:0");
    EXPECT_TRUE(port);
    XdsClientOptions o;
    o.server = "127.0.0.1:" + std::to_string(port ? *port : 0);
    o.node.set_id("sidecar~10.0.0.1~t.ns~ns.svc.cluster.local");
    o.delta = delta;
    client = std::make_unique<XdsClient>(o);
    EXPECT_TRUE(client->start(sink));
  }
  ~Pair() { client->stop(); }
  XdsServer server;
  RecordingSink sink;
  std::unique_ptr<XdsClient> client;
};

TEST(XdsStreams, ClientSyncsFromServerAndFollowsPushes) {
  Pair p(tutorial());
  auto& [server, sink, c] = p;
  XdsClient& client = *c;
  ASSERT_TRUE(sink.wait([](const Snapshot& s) { return routed_to(s, "default"); }));
  for (int i = 0; i < 200 && !client.synced(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(client.synced()) << client.waiting_for();
  // The listener's RDS source is aeraki-xds, reached at the ADS server.
  EXPECT_NE(client.status_json().find("\"stream\":\"rds:aeraki-xds\""), std::string::npos);

  server.update(tutorial(kToV1));
  ASSERT_TRUE(sink.wait([](const Snapshot& s) { return routed_to(s, "to-v1"); }));
  auto st = server.stats();
  EXPECT_EQ(st.nacks, 0u);
  EXPECT_EQ(st.streams_active, 2u);  // ADS and RDS
  // Four initial responses and one pushed route: nothing else was resent.
  EXPECT_EQ(st.responses, 5u);
}

// Delta both ways: the same sync, a route change sent alone, and a removed
// service's resources removed by name.
TEST(XdsStreams, DeltaSyncPushAndRemoval) {
  auto two = tutorial(R"(
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: t, namespace: ns}
spec:
  hosts: [t.ns.svc.cluster.local]
  addresses: [10.96.0.11]
  ports: [{number: 9090, name: tcp-metaprotocol-thrift-x}]
  endpoints: [{address: 10.1.0.13}]
)");
  Pair p(two, true);
  auto& [server, sink, c] = p;
  XdsClient& client = *c;
  ASSERT_TRUE(sink.wait([](const Snapshot& s) { return s.listeners.size() == 2 && s.routes.size() == 2; }));
  for (int i = 0; i < 200 && !client.synced(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(client.synced()) << client.waiting_for();
  EXPECT_NE(client.status_json().find("\"variant\":\"delta\""), std::string::npos);
  auto before = server.stats().responses;
  server.update(tutorial(kToV1));  // t is gone, s routes to v1
  ASSERT_TRUE(sink.wait([](const Snapshot& s) {
    return s.listeners.size() == 1 && routed_to(s, "to-v1") && !s.find_cluster("outbound|9090||t.ns.svc.cluster.local");
  }));
  // One response per type that changed: clusters (t's removed), endpoints
  // (t's removed), the listener (t's removed), routes (s changed, t's gone).
  EXPECT_EQ(server.stats().responses - before, 4u);
  EXPECT_EQ(server.stats().nacks, 0u);
}

TEST(XdsStreams, BadRouteIsNackedOnceAndNotResent) {
  auto bad = tutorial();
  auto* h = edit(bad.routes[0]).mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()->add_headers();
  h->set_name("m");
  h->mutable_safe_regex_match()->set_regex("(");
  Pair p(bad);
  auto& [server, sink, c] = p;
  XdsClient& client = *c;
  for (int i = 0; i < 500 && server.stats().nacks == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(server.stats().nacks, 1u);
  EXPECT_NE(client.status_json().find("bad regex"), std::string::npos) << client.status_json();
  EXPECT_NE(client.metrics_text().find("metanode_xds_rejects_total{type=\"RouteConfiguration\",stream=\"rds:aeraki-xds\"} 1"),
            std::string::npos)
      << client.metrics_text();
  // The fix is pushed and ACKed.
  server.update(tutorial());
  ASSERT_TRUE(sink.wait([](const Snapshot& s) { return routed_to(s, "default"); }));
  EXPECT_EQ(server.stats().nacks, 1u);
}

TEST(NodeIdentity, IstioSidecarShape) {
  NodeIdentity n;
  n.pod_name = "metanode-abc";
  n.namespace_ = "istio-system";
  n.ip = "10.0.0.5";
  n.labels["app"] = "metanode";
  n.service_account = "metanode";
  auto node = make_node(n);
  EXPECT_EQ(node.id(), "sidecar~10.0.0.5~metanode-abc.istio-system~istio-system.svc.cluster.local");
  const auto& f = node.metadata().fields();
  EXPECT_EQ(f.at("NAMESPACE").string_value(), "istio-system");
  EXPECT_EQ(f.at("CLUSTER_ID").string_value(), "Kubernetes");
  EXPECT_EQ(f.at("INSTANCE_IPS").string_value(), "10.0.0.5");
  EXPECT_EQ(f.at("SERVICE_ACCOUNT").string_value(), "metanode");
  EXPECT_EQ(f.at("LABELS").struct_value().fields().at("app").string_value(), "metanode");
}

}  // namespace
}  // namespace metanode::xds
