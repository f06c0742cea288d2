// xDS -> snapshot, one resource at a time: what a NACK names, what still
// applies beside a bad resource, and the forms istiod really sends.
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"
#include "edit_resource.h"
#include "udpa/type/v1/typed_struct.pb.h"
#include "xds/type/v3/typed_struct.pb.h"

namespace metanode::xds {
namespace {

constexpr char kHost[] = "thrift-sample-server.meta-thrift.svc.cluster.local";

// Aeraki's tutorial (demo/metaprotocol-thrift): the Service as a ServiceEntry,
// its DestinationRule, and one MetaRouter at a time.
const char* kTutorialService = R"(
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: thrift-sample-server, namespace: meta-thrift}
spec:
  hosts: [thrift-sample-server.meta-thrift.svc.cluster.local]
  addresses: [10.96.0.10]
  ports: [{number: 9090, name: tcp-metaprotocol-thrift-hello-server, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 10.1.0.11, labels: {version: v1}}
  - {address: 10.1.0.12, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: thrift-sample-server, namespace: meta-thrift}
spec:
  host: thrift-sample-server.meta-thrift.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
)";

const char* kMetaRouterV1 = R"(
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-thrift-route
  namespace: meta-thrift
spec:
  hosts:
    - thrift-sample-server.meta-thrift.svc.cluster.local
  routes:
    - name: v1
      match:
        attributes:
          method:
            exact: sayHello
      route:
        - destination:
            host: thrift-sample-server.meta-thrift.svc.cluster.local
            subset: v1
)";

const char* kTrafficSplit = R"(
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-thrift-route
  namespace: meta-thrift
spec:
  hosts:
    - thrift-sample-server.meta-thrift.svc.cluster.local
  routes:
    - name: traffic-split
      match:
        attributes:
          method:
            exact: sayHello
      route:
        - destination:
            host: thrift-sample-server.meta-thrift.svc.cluster.local
            subset: v1
          weight: 20
        - destination:
            host: thrift-sample-server.meta-thrift.svc.cluster.local
            subset: v2
          weight: 80
)";

envoy::config::route::v3::RouteConfiguration text_route(const std::string& text) {
  envoy::config::route::v3::RouteConfiguration rc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &rc)) << text;
  return rc;
}

void expect_route_equals(const std::vector<ManifestFile>& files, const std::string& expected) {
  auto r = translate_manifests(files);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->routes.size(), 1u);
  auto want = text_route(expected);
  std::string diff;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  EXPECT_TRUE(d.Compare(want, *r->routes[0])) << diff;
}

// Golden: what Aeraki's route generation (internal/xds cache_mgr.go
// constructRoute/defaultRoute, then utils.go metaProtocolRoute2HttpRoute)
// produces for the tutorial, message for message: one virtual host "dummy"
// on "*", match prefix "/" plus exact_match headers, subset cluster names,
// weighted clusters with total_weight.
TEST(AerakiGolden, NoMetaRouterIsOneDefaultRoute) {
  expect_route_equals({{"svc.yaml", kTutorialService}}, std::string(R"(
    name: "thrift-sample-server.meta-thrift.svc.cluster.local_9090"
    virtual_hosts {
      name: "dummy" domains: "*"
      routes { name: "default" match { prefix: "/" }
               route { cluster: "outbound|9090||thrift-sample-server.meta-thrift.svc.cluster.local" } }
    })"));
}

TEST(AerakiGolden, RouteByMethodToV1) {
  expect_route_equals({{"svc.yaml", kTutorialService}, {"mr.yaml", kMetaRouterV1}}, R"(
    name: "thrift-sample-server.meta-thrift.svc.cluster.local_9090"
    virtual_hosts {
      name: "dummy" domains: "*"
      routes { name: "v1"
               match { prefix: "/" headers { name: "method" exact_match: "sayHello" } }
               route { cluster: "outbound|9090|v1|thrift-sample-server.meta-thrift.svc.cluster.local" } }
    })");
}

TEST(AerakiGolden, TrafficSplitTwentyEighty) {
  expect_route_equals({{"svc.yaml", kTutorialService}, {"mr.yaml", kTrafficSplit}}, R"(
    name: "thrift-sample-server.meta-thrift.svc.cluster.local_9090"
    virtual_hosts {
      name: "dummy" domains: "*"
      routes { name: "traffic-split"
               match { prefix: "/" headers { name: "method" exact_match: "sayHello" } }
               route { weighted_clusters {
                 clusters { name: "outbound|9090|v1|thrift-sample-server.meta-thrift.svc.cluster.local" weight { value: 20 } }
                 clusters { name: "outbound|9090|v2|thrift-sample-server.meta-thrift.svc.cluster.local" weight { value: 80 } }
                 total_weight { value: 100 } } } }
    })");
}

Resources tutorial() {
  auto r = translate_manifests({{"svc.yaml", kTutorialService}, {"mr.yaml", kTrafficSplit}});
  EXPECT_TRUE(r) << r.error().message();
  return r ? std::move(r.value()) : Resources{};
}

// The listener filter as istiod sends it, with the TypedStruct's value in
// `json` (protojson, camelCase).
envoy::config::listener::v3::Listener listener_with(const std::string& name, const std::string& ip,
                                                    const std::string& filter, const std::string& json,
                                                    bool xds_typed_struct) {
  envoy::config::listener::v3::Listener l;
  l.set_name(name);
  l.mutable_address()->mutable_socket_address()->set_address(ip);
  l.mutable_address()->mutable_socket_address()->set_port_value(9090);
  auto* f = l.add_filter_chains()->add_filters();
  f->set_name(filter);
  google::protobuf::Struct value;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &value).ok()) << json;
  if (xds_typed_struct) {
    ::xds::type::v3::TypedStruct ts;
    ts.set_type_url(kMetaProtocolProxyType);
    *ts.mutable_value() = value;
    f->mutable_typed_config()->PackFrom(ts);
  } else {
    udpa::type::v1::TypedStruct ts;
    ts.set_type_url(kMetaProtocolProxyType);
    *ts.mutable_value() = value;
    f->mutable_typed_config()->PackFrom(ts);
  }
  return l;
}

// Keys as Aeraki's protojson.Marshal writes them, deprecated `codec` and
// `applicationProtocol` still set, and fields we do not model (tracing).
const char* kIstiodFilterJson = R"({
  "statPrefix": "outbound|9090||thrift-sample-server.meta-thrift.svc.cluster.local",
  "applicationProtocol": "thrift",
  "codec": {"name": "aeraki.meta_protocol.codec.thrift"},
  "rds": {"configSource": {"resourceApiVersion": "V3", "apiConfigSource": {"apiType": "GRPC",
          "transportApiVersion": "V3", "grpcServices": [{"envoyGrpc": {"clusterName": "aeraki-xds"}}]}},
          "routeConfigName": "thrift-sample-server.meta-thrift.svc.cluster.local_9090"},
  "metaProtocolFilters": [{"name": "aeraki.meta_protocol.filters.metadata_exchange"},
                          {"name": "aeraki.meta_protocol.filters.router"}],
  "tracing": {"clientSampling": {"value": 100}}
})";

TEST(Compile, ListenerFromIstiodTypedStructEitherName) {
  for (bool xds_name : {false, true}) {
    Resources r = tutorial();
    r.listeners.clear();
    r.listeners.push_back(share(listener_with("10.96.0.10_9090", "10.96.0.10",
                                              "envoy.filters.network.meta_protocol_proxy", kIstiodFilterJson,
                                              xds_name)));
    auto c = compile_snapshot(std::move(r));
    ASSERT_TRUE(c.rejects.empty()) << c.rejects[0].str();
    ASSERT_EQ(c.snapshot->listeners.size(), 1u);
    const auto& l = c.snapshot->listeners[0];
    EXPECT_EQ(l.protocol, Protocol::kThrift);
    EXPECT_EQ(l.rds_cluster, "aeraki-xds");
    EXPECT_EQ(l.route_name, std::string(kHost) + "_9090");
    EXPECT_EQ(l.service_host, kHost);
    ASSERT_NE(l.routes, nullptr);
  }
}

// A filter we do not execute, or a setting we do not honour, rejects the
// listener by name instead of serving it without them.
TEST(Compile, UnexecutedFilterOrSettingRejectsTheListener) {
  std::string global = kIstiodFilterJson;
  global.replace(global.find("aeraki.meta_protocol.filters.metadata_exchange"),
                 std::string("aeraki.meta_protocol.filters.metadata_exchange").size(),
                 "aeraki.meta_protocol.filters.global_ratelimit");
  std::string idle = kIstiodFilterJson;
  idle.replace(idle.find("\"tracing\""), 0, "\"idleTimeout\": \"30s\", ");
  for (const auto& [json, want] : {std::pair{global, std::string("global_ratelimit' is not supported")},
                                   std::pair{idle, std::string("idle_timeout")}}) {
    Resources r = tutorial();
    r.listeners.clear();
    r.listeners.push_back(share(listener_with("10.96.0.10_9090", "10.96.0.10",
                                              "envoy.filters.network.meta_protocol_proxy", json, false)));
    auto c = compile_snapshot(std::move(r));
    ASSERT_EQ(c.rejects.size(), 1u) << json;
    EXPECT_EQ(c.rejects[0].name, "10.96.0.10_9090");
    EXPECT_NE(c.rejects[0].reason.find(want), std::string::npos) << c.rejects[0].reason;
    EXPECT_TRUE(c.snapshot->listeners.empty());
  }
}

// istiod sends every listener of the mesh; those without our filter are
// not ours and not an error.
TEST(Compile, OtherListenersAreIgnoredNotRejected) {
  Resources r = tutorial();
  envoy::config::listener::v3::Listener tcp;
  tcp.set_name("10.96.0.99_80");
  tcp.mutable_address()->mutable_socket_address()->set_address("10.96.0.99");
  tcp.mutable_address()->mutable_socket_address()->set_port_value(80);
  auto* f = tcp.add_filter_chains()->add_filters();
  f->set_name("envoy.filters.network.tcp_proxy");
  f->mutable_typed_config()->set_type_url("type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy");
  r.listeners.push_back(share(tcp));
  envoy::config::listener::v3::Listener virt;  // istiod's virtualOutbound has no socket we model
  virt.set_name("virtualOutbound");
  r.listeners.push_back(share(virt));
  auto c = compile_snapshot(std::move(r));
  EXPECT_TRUE(c.rejects.empty()) << c.rejects[0].str();
  EXPECT_EQ(c.snapshot->listeners.size(), 1u);
}

TEST(Compile, BadResourcesAreNamedAndTheRestApplies) {
  Resources r = tutorial();
  // A second service whose route config has a bad regex, and an endpoint
  // assignment with a bad address for the v2 subset.
  auto bad_route = *r.routes[0];
  bad_route.set_name("broken_9090");
  bad_route.mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()->mutable_headers(0)
      ->mutable_safe_regex_match()->set_regex("(unclosed");
  r.routes.push_back(share(bad_route));
  for (auto& cla : r.endpoints)
    if (cla->cluster_name() == std::string("outbound|9090|v2|") + kHost)
      edit(cla).mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_endpoint()->mutable_address()
          ->mutable_socket_address()->set_address("not-an-ip");
  // A MetaProtocol filter whose config is not a MetaProtocolProxy.
  auto wrong = listener_with("10.96.0.11_9090", "10.96.0.11", "envoy.filters.network.meta_protocol_proxy",
                             "{}", false);
  wrong.mutable_filter_chains(0)->mutable_filters(0)->mutable_typed_config()->set_type_url(
      "type.googleapis.com/google.protobuf.Empty");
  r.listeners.push_back(share(wrong));
  // Two listeners on one address: the second is refused.
  auto dup = *r.listeners[0];
  dup.set_name("duplicate");
  r.listeners.push_back(share(dup));

  auto c = compile_snapshot(std::move(r));
  std::map<std::string, std::string> by;  // "<type> <name>" -> reason
  for (const auto& x : c.rejects) by[short_type(x.type_url) + " " + x.name] = x.reason;
  ASSERT_EQ(by.size(), 4u) << testing::PrintToString(by);
  EXPECT_NE(by["RouteConfiguration broken_9090"].find("bad regex"), std::string::npos);
  EXPECT_NE(by[std::string("ClusterLoadAssignment outbound|9090|v2|") + kHost].find("not-an-ip"),
            std::string::npos);
  EXPECT_NE(by["Listener 10.96.0.11_9090"].find("google.protobuf.Empty"), std::string::npos);
  EXPECT_NE(by["Listener duplicate"].find("used by two listeners"), std::string::npos);

  // The rest applies: the tutorial listener with its routes, v1 with its
  // endpoint, v2 kept (routes name it) but without endpoints.
  const auto& s = *c.snapshot;
  ASSERT_EQ(s.listeners.size(), 1u);
  ASSERT_NE(s.listeners[0].routes, nullptr);
  EXPECT_EQ(s.find_cluster(std::string("outbound|9090|v1|") + kHost)->endpoints.size(), 1u);
  ASSERT_NE(s.find_cluster(std::string("outbound|9090|v2|") + kHost), nullptr);
  EXPECT_TRUE(s.find_cluster(std::string("outbound|9090|v2|") + kHost)->endpoints.empty());
  EXPECT_EQ(s.routes.count("broken_9090"), 0u);
  // /config_dump shows only what was accepted.
  EXPECT_EQ(s.resources.listeners.size(), 1u);
  EXPECT_EQ(s.resources.routes.size(), 1u);
}

// istiod's endpoint metadata names the workload: "NAME;NAMESPACE;...".
TEST(Compile, EndpointWorkloadFromIstioMetadata) {
  Resources r = tutorial();
  auto set = [&](const std::string& subset, const std::string& value) {
    for (auto& cla : r.endpoints)
      if (cla->cluster_name() == "outbound|9090|" + subset + "|" + kHost)
        (*(*edit(cla).mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_metadata()->mutable_filter_metadata())["istio"]
              .mutable_fields())["workload"]
            .set_string_value(value);
  };
  set("v1", "thrift-sample-server-v1;meta-thrift;thrift-sample-server;v1;Kubernetes");
  set("v2", "bare-name");
  auto s = build_snapshot(std::move(r));
  ASSERT_TRUE(s) << s.error().message();
  const auto& v1 = (*s)->find_cluster(std::string("outbound|9090|v1|") + kHost)->endpoints.at(0);
  EXPECT_EQ(v1.workload, "thrift-sample-server-v1");
  EXPECT_EQ(v1.workload_namespace, "meta-thrift");
  const auto& v2 = (*s)->find_cluster(std::string("outbound|9090|v2|") + kHost)->endpoints.at(0);
  EXPECT_EQ(v2.workload, "bare-name");
  EXPECT_EQ(v2.workload_namespace, "");
}

TEST(Compile, BuildSnapshotIsAllOrNothing) {
  Resources r = tutorial();
  edit(r.routes[0]).mutable_virtual_hosts(0)->mutable_routes(0)->clear_route();
  auto s = build_snapshot(std::move(r));
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("no route action"), std::string::npos);
}

}  // namespace
}  // namespace metanode::xds
