// Manifests -> xDS -> snapshot: what Aeraki would generate, and errors that
// name file, object and field.
#include <gtest/gtest.h>

#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"
#include "udpa/type/v1/typed_struct.pb.h"

namespace metanode::xds {
namespace {

const char* kService = R"(
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: thrift-sample-server
  namespace: meta-thrift
spec:
  hosts:
  - thrift-sample-server.meta-thrift.svc.cluster.local
  addresses:
  - 10.96.0.10
  ports:
  - number: 9090
    name: tcp-metaprotocol-thrift-hello-server
    protocol: TCP
  endpoints:
  - address: 10.1.0.11
    labels: {version: v1}
  - address: 10.1.0.12
    labels: {version: v2}
    ports: {tcp-metaprotocol-thrift-hello-server: 9191}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: thrift-sample-server
  namespace: meta-thrift
spec:
  host: thrift-sample-server
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
spec: {}
)";

const char* kRouter = R"(
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
  - name: traffic-split
    route:
    - destination: {host: thrift-sample-server.meta-thrift.svc.cluster.local, subset: v1}
      weight: 20
    - destination: {host: thrift-sample-server.meta-thrift.svc.cluster.local, subset: v2}
      weight: 80
)";

constexpr char kHost[] = "thrift-sample-server.meta-thrift.svc.cluster.local";

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto p = s.find(from);
  if (p != std::string::npos) s.replace(p, from.size(), to);
  return s;
}

Result<std::shared_ptr<const Snapshot>> compile(std::vector<ManifestFile> files) {
  auto r = translate_manifests(files);
  if (!r) return r.error();
  return build_snapshot(std::move(r.value()));
}

TEST(K8sConfig, ServiceEntryBecomesAerakiShapedXds) {
  auto r = translate_manifests({{"svc.yaml", kService}});
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->listeners.size(), 1u);
  EXPECT_EQ(r->listeners[0]->name(), "10.96.0.10_9090");
  // As istiod passes Aeraki's EnvoyFilter patch: the filter by its Envoy
  // name, its config a udpa TypedStruct holding protojson (camelCase).
  const auto& f = r->listeners[0]->filter_chains(0).filters(0);
  EXPECT_EQ(f.name(), "envoy.filters.network.meta_protocol_proxy");
  ASSERT_EQ(f.typed_config().type_url(), "type.googleapis.com/udpa.type.v1.TypedStruct");
  udpa::type::v1::TypedStruct ts;
  ASSERT_TRUE(f.typed_config().UnpackTo(&ts));
  EXPECT_EQ(ts.type_url(), "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy");
  const auto& v = ts.value().fields();
  EXPECT_EQ(v.at("statPrefix").string_value(), std::string("outbound|9090||") + kHost);
  EXPECT_EQ(v.at("applicationProtocol").string_value(), "thrift");
  const auto& rds = v.at("rds").struct_value().fields();
  EXPECT_EQ(rds.at("routeConfigName").string_value(), std::string(kHost) + "_9090");
  const auto& api = rds.at("configSource").struct_value().fields().at("apiConfigSource").struct_value().fields();
  EXPECT_EQ(api.at("apiType").string_value(), "GRPC");
  EXPECT_EQ(api.at("grpcServices").list_value().values(0).struct_value().fields().at("envoyGrpc")
                .struct_value().fields().at("clusterName").string_value(),
            "aeraki-xds");
  std::vector<std::string> clusters;
  for (const auto& c : r->clusters) clusters.push_back(c->name());
  EXPECT_EQ(clusters, (std::vector<std::string>{std::string("outbound|9090||") + kHost,
                                                std::string("outbound|9090|v1|") + kHost,
                                                std::string("outbound|9090|v2|") + kHost}));
  ASSERT_EQ(r->routes.size(), 1u);
  EXPECT_EQ(r->routes[0]->name(), std::string(kHost) + "_9090");
  ASSERT_EQ(r->routes[0]->virtual_hosts(0).routes_size(), 1);
  EXPECT_EQ(r->routes[0]->virtual_hosts(0).routes(0).route().cluster(),
            std::string("outbound|9090||") + kHost);
}

TEST(K8sConfig, SnapshotHasSubsetsWithTheirEndpoints) {
  auto s = compile({{"svc.yaml", kService}});
  ASSERT_TRUE(s) << s.error().message();
  const Snapshot& snap = **s;
  const Listener* l = snap.find_listener({(10u << 24) | (96u << 16) | 10u, 9090});
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->protocol, Protocol::kThrift);
  EXPECT_EQ(l->service_host, kHost);
  ASSERT_NE(l->routes, nullptr);
  const Cluster* v2 = snap.find_cluster(std::string("outbound|9090|v2|") + kHost);
  ASSERT_NE(v2, nullptr);
  ASSERT_EQ(v2->endpoints.size(), 1u);
  EXPECT_EQ(v2->endpoints[0].address.str(), "10.1.0.12:9191");  // port from endpoint ports map
  EXPECT_EQ(v2->subset, "v2");
  EXPECT_EQ(snap.find_cluster(std::string("outbound|9090||") + kHost)->endpoints.size(), 2u);
}

TEST(K8sConfig, MetaRouterBecomesRoutesInOrder) {
  auto s = compile({{"svc.yaml", kService}, {"route.yaml", kRouter}});
  ASSERT_TRUE(s) << s.error().message();
  const auto& routes = (*s)->listeners[0].routes->routes;
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].name, "v1");
  ASSERT_EQ(routes[0].match.size(), 1u);
  EXPECT_EQ(routes[0].match[0].name, "method");
  EXPECT_EQ(routes[0].clusters[0].name, std::string("outbound|9090|v1|") + kHost);
  ASSERT_NE(routes[0].clusters[0].cluster, nullptr);
  EXPECT_EQ(routes[1].total_weight, 100u);
  EXPECT_EQ(routes[1].clusters[0].weight, 20u);
  EXPECT_EQ(routes[1].clusters[1].weight, 80u);
}

// /config_dump in Envoy's ConfigDump shape (tests/integration/xds_peers_test.cc
// decodes it with the real Go types).
TEST(K8sConfig, ResourcesRenderAsEnvoysConfigDump) {
  auto r = translate_manifests({{"svc.yaml", kService}, {"route.yaml", kRouter}});
  ASSERT_TRUE(r);
  r->version = "v7";
  std::string j = config_dump_json(*r, std::chrono::system_clock::time_point(std::chrono::seconds(1796292000)));
  EXPECT_EQ(j.rfind("{\"configs\":[{\"@type\":\"type.googleapis.com/envoy.admin.v3.ClustersConfigDump\","
                    "\"version_info\":\"v7\",\"dynamic_active_clusters\":[{\"version_info\":\"v7\",\"cluster\":"
                    "{\"@type\":\"type.googleapis.com/envoy.config.cluster.v3.Cluster\"",
                    0),
            0u) << j;
  EXPECT_NE(j.find("\"last_updated\":\"2026-12-03T10:00:00.000Z\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"dynamic_listeners\":[{\"name\":\"10.96.0.10_9090\",\"active_state\":{\"version_info\""),
            std::string::npos) << j;
  EXPECT_NE(j.find("\"route_config\":{\"@type\":\"type.googleapis.com/envoy.config.route.v3.RouteConfiguration\""),
            std::string::npos) << j;
  EXPECT_NE(j.find("\"weighted_clusters\""), std::string::npos) << j;
  EXPECT_NE(j.find("aeraki.meta_protocol.codec.thrift"), std::string::npos);
  EXPECT_EQ(j.find("error_state"), std::string::npos) << "nothing refused";

  // Refused: the live route's newest version, and a listener never accepted.
  std::string route = r->routes[0]->name();
  auto at = std::chrono::system_clock::time_point(std::chrono::seconds(1796292060));
  j = config_dump_json(*r, at, {{kRouteType, route, "bad regex"}, {kListenerType, "10.96.0.99_9090", "no address"}}, at);
  EXPECT_NE(j.find("\"last_updated\":\"2026-12-03T10:01:00.000Z\",\"error_state\":{\"details\":\"bad regex\","
                   "\"last_update_attempt\":\"2026-12-03T10:01:00.000Z\"}}]}]}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("{\"name\":\"10.96.0.99_9090\",\"error_state\":{\"details\":\"no address\""), std::string::npos)
      << j;
}


// Every DestinationRule traffic policy field metanode accepts reaches the
// compiled cluster, with Istio's inheritance: subset over port-level over
// the rule's own.
TEST(K8sConfig, TrafficPolicyReachesTheClusters) {
  std::string dr = R"(
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: thrift-sample-server, namespace: meta-thrift}
spec:
  host: thrift-sample-server
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 3, connectTimeout: 250ms, tcpKeepalive: {probes: 4, time: 60s, interval: 5s}}
      http: {http1MaxPendingRequests: 7, http2MaxRequests: 9, maxRequestsPerConnection: 100,
             maxRetries: 2, idleTimeout: 30s}
    outlierDetection:
      consecutiveGatewayErrors: 2
      consecutive5xxErrors: 4
      interval: 500ms
      baseEjectionTime: 1m
      maxEjectionPercent: 50
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer:
        consistentHash: {useSourceIp: true, maglev: {tableSize: 251}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: user, ringHash: {minimumRingSize: 2048}}
  - name: v2
    labels: {version: v2}
)";
  std::string svc = kService;
  svc = svc.substr(0, svc.find("---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule"));
  auto s = compile({{"svc.yaml", svc}, {"dr.yaml", dr}});
  ASSERT_TRUE(s) << s.error().message();
  const Cluster* all = (*s)->find_cluster(std::string("outbound|9090||") + kHost);
  const Cluster* v1 = (*s)->find_cluster(std::string("outbound|9090|v1|") + kHost);
  const Cluster* v2 = (*s)->find_cluster(std::string("outbound|9090|v2|") + kHost);
  ASSERT_TRUE(all && v1 && v2);
  // Port-level settings replace the rule's load balancer for port 9090.
  EXPECT_EQ(all->lb, LbPolicy::kMaglev);
  EXPECT_EQ(all->maglev_table_size, 251u);
  EXPECT_EQ(v1->lb, LbPolicy::kRingHash);
  EXPECT_EQ(v1->ring_size, 2048u);
  EXPECT_EQ(v2->lb, LbPolicy::kMaglev);  // inherits the port level
  for (const Cluster* c : {all, v1, v2}) {
    EXPECT_EQ(c->outlier.consecutive_gateway_errors, 2u) << c->name;
    EXPECT_EQ(c->outlier.consecutive_errors, 4u);
    EXPECT_EQ(c->outlier.interval.count(), 500);
    EXPECT_EQ(c->outlier.base_ejection_time.count(), 60000);
    EXPECT_EQ(c->outlier.max_ejection_percent, 50u);
    EXPECT_EQ(c->connect_timeout.count(), 250);
    EXPECT_EQ(c->pool.max_connections, 3u);
    EXPECT_EQ(c->pool.max_pending_requests, 7u);
    EXPECT_EQ(c->pool.max_requests, 9u);
    EXPECT_EQ(c->pool.max_requests_per_connection, 100u);
    EXPECT_EQ(c->pool.max_retries, 2u);
    EXPECT_EQ(c->pool.idle_timeout.count(), 30000);
    EXPECT_TRUE(c->pool.keepalive);
    EXPECT_EQ(c->pool.keepalive_probes, 4u);
    EXPECT_EQ(c->pool.keepalive_time_s, 60u);
    EXPECT_EQ(c->pool.keepalive_interval_s, 5u);
  }
  // The hash policy sits on the route (Envoy hashes per route).
  const auto& route = (*s)->listeners[0].routes->routes[0];
  EXPECT_TRUE(route.hash_source_ip);
  EXPECT_TRUE(route.hash_keys.empty());
}

TEST(K8sConfig, LocalRateLimitReachesTheListener) {
  std::string router = replace(kRouter, "  routes:\n  - name: v1",
                               "  localRateLimit:\n"
                               "    tokenBucket: {maxTokens: 10, tokensPerFill: 5, fillInterval: 1s}\n"
                               "    conditions:\n"
                               "    - match: {attributes: {method: {exact: sayHello}}}\n"
                               "      tokenBucket: {maxTokens: 2, fillInterval: 1m}\n"
                               "  routes:\n  - name: v1");
  // Through the generated xDS (a TypedStruct whose filter config is an Any)
  // and back: what metanode-xds serves is what the daemon compiles.
  auto s = compile({{"svc.yaml", kService}, {"route.yaml", router}});
  ASSERT_TRUE(s) << s.error().message();
  const auto& rl = (*s)->listeners[0].local_rate_limit;
  ASSERT_NE(rl, nullptr);
  ASSERT_NE(rl->bucket, nullptr);
  EXPECT_EQ(rl->bucket->max_tokens(), 10u);
  ASSERT_EQ(rl->conditions.size(), 1u);
  EXPECT_EQ(rl->conditions[0].bucket->max_tokens(), 2u);
  ASSERT_EQ(rl->conditions[0].match.size(), 1u);
  EXPECT_EQ(rl->conditions[0].match[0].name, "method");
  // Compiled again (a new snapshot): the same buckets, state and all.
  auto again = compile({{"svc.yaml", kService}, {"route.yaml", router}});
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->listeners[0].local_rate_limit->bucket, rl->bucket);
}

TEST(K8sConfig, GlobalRateLimitReachesTheListenerAndItsServiceACluster) {
  std::string rls =
      "---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
      "metadata: {name: rls, namespace: meta-thrift}\n"
      "spec:\n  hosts: [rls.meta-thrift.svc.cluster.local]\n  ports: [{number: 8081, name: grpc}]\n"
      "  endpoints: [{address: 10.1.0.50}]\n";
  std::string router = replace(kRouter, "  routes:\n  - name: v1",
                               "  globalRateLimit:\n"
                               "    domain: prod\n"
                               "    match: {attributes: {method: {exact: sayHello}}}\n"
                               "    rateLimitService: outbound|8081||rls.meta-thrift.svc.cluster.local\n"
                               "    requestTimeout: 50ms\n"
                               "    denyOnFail: true\n"
                               "    descriptors: [{property: method, descriptorKey: m}]\n"
                               "  routes:\n  - name: v1");
  auto s = compile({{"svc.yaml", std::string(kService) + rls}, {"route.yaml", router}});
  ASSERT_TRUE(s) << s.error().message();
  const auto& g = (*s)->listeners[0].global_rate_limit;
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->domain, "prod");
  EXPECT_EQ(g->timeout.count(), 50);
  EXPECT_TRUE(g->deny_on_fail);
  EXPECT_EQ(g->service_cluster, "outbound|8081||rls.meta-thrift.svc.cluster.local");
  ASSERT_EQ(g->descriptors.size(), 1u);
  EXPECT_EQ(g->descriptors[0], (std::pair<std::string, std::string>{"method", "m"}));
  ASSERT_EQ(g->match.size(), 1u);
  // The service's plain gRPC port became a cluster (no listener).
  const Cluster* c = (*s)->find_cluster("outbound|8081||rls.meta-thrift.svc.cluster.local");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->endpoints.size(), 1u);
  EXPECT_EQ(c->endpoints[0].address.str(), "10.1.0.50:8081");
  EXPECT_EQ((*s)->listeners.size(), 1u);
}

TEST(K8sConfig, AnnotationsSetTimeoutAndRetries) {
  std::string router = replace(kRouter, "  namespace: meta-thrift\nspec:",
                               "  namespace: meta-thrift\n  annotations:\n"
                               "    metanode.io/timeout: 2s\n"
                               "    metanode.io/retries: '{attempts: 3, perTryTimeout: 300ms, "
                               "retryOn: \"connect-failure,gateway-error\", idempotentMethods: [sayHello]}'\n"
                               "spec:");
  auto s = compile({{"svc.yaml", kService}, {"route.yaml", router}});
  ASSERT_TRUE(s) << s.error().message();
  for (const auto& r : (*s)->listeners[0].routes->routes) {
    EXPECT_EQ(r.timeout.count(), 2000);
    EXPECT_EQ(r.retry.num_retries, 3u);
    EXPECT_EQ(r.retry.per_try_timeout.count(), 300);
    EXPECT_TRUE(r.retry.on_reset);
    EXPECT_TRUE(r.retry.on_timeout);
    EXPECT_FALSE(r.retry.on_error_reply);
    ASSERT_EQ(r.retry.retriable.size(), 1u);
    std::string m = "sayHello", other = "sayBye";
    EXPECT_TRUE(r.retry.retriable[0].matches(&m));
    EXPECT_FALSE(r.retry.retriable[0].matches(&other));
  }
  // Without the annotation: unwritten requests get one retry, nothing else.
  auto plain = compile({{"svc.yaml", kService}, {"route.yaml", kRouter}});
  ASSERT_TRUE(plain);
  const auto& r = (*plain)->listeners[0].routes->routes[0];
  EXPECT_EQ(r.retry.num_retries, 1u);
  EXPECT_FALSE(r.retry.on_reset || r.retry.on_timeout || r.retry.on_error_reply);
}

struct BadCase {
  const char* name;
  std::string yaml;
  std::vector<std::string> expect;  // substrings of the error
};


class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, IsRejectedNamingFileObjectAndField) {
  const auto& c = GetParam();
  auto s = compile({{"svc.yaml", kService}, {"bad.yaml", c.yaml}});
  ASSERT_FALSE(s) << c.name;
  for (const auto& e : c.expect)
    EXPECT_NE(s.error().message().find(e), std::string::npos)
        << "missing '" << e << "' in: " << s.error().message();
}

INSTANTIATE_TEST_SUITE_P(
    K8sConfig, BadConfig,
    ::testing::Values(
        BadCase{"yaml_syntax", "kind: [unclosed", {"bad.yaml", "does not parse"}},
        BadCase{"unknown_subset",
                replace(kRouter, "subset: v1\n", "subset: v3\n"),
                {"bad.yaml", "MetaRouter meta-thrift/test-metaprotocol-thrift-route",
                 "spec.routes[0].route[0].destination.subset", "unknown subset 'v3'", "v1, v2"}},
        BadCase{"unknown_host",
                replace(kRouter, "host: thrift-sample-server.meta-thrift.svc.cluster.local\n        subset: v1",
                        "host: nope.meta-thrift.svc.cluster.local\n        subset: v1"),
                {"bad.yaml", "spec.routes[0].route[0].destination.host", "nope"}},
        BadCase{"no_destination",
                replace(kRouter, "    route:\n    - destination:\n        host: thrift-sample-server.meta-thrift.svc.cluster.local\n        subset: v1\n", ""),
                {"spec.routes[0].route", "at least one destination"}},
        BadCase{"bad_weight", replace(kRouter, "weight: 20", "weight: lots"),
                {"spec.routes[1].route[0].weight", "not a number"}},
        BadCase{"bad_vip",
                "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: x}\n"
                "spec:\n  hosts: [x.default.svc.cluster.local]\n  addresses: [not-an-ip]\n",
                {"bad.yaml", "ServiceEntry default/x", "spec.addresses[0]", "not-an-ip"}},
        BadCase{"bad_regex",
                replace(kRouter, "exact: sayHello", "regex: \"(unclosed\""),
                {"route[0] 'v1' match", "bad regex"}},
        BadCase{"bad_host_name",
                "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: x}\n"
                "spec:\n  hosts: [\"a b\"]\n",
                {"ServiceEntry default/x", "spec.hosts[0]", "not a valid host name"}},
        BadCase{"bad_utf8",
                "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: x}\n"
                "spec:\n  host: thrift-sample-server.meta-thrift.svc.cluster.local\n"
                "  subsets: [{name: v1, labels: {version: \"\xff\"}}]\n",
                {"spec.subsets[0].labels", "not valid UTF-8"}},
        BadCase{"http_only_pool_setting",
                replace(kService, "  host: thrift-sample-server\n  subsets:",
                        "  host: thrift-sample-server\n  trafficPolicy:\n    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}\n  subsets:"),
                {"DestinationRule meta-thrift/thrift-sample-server",
                 "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy", "HTTP-only"}},
        BadCase{"global_rate_limit_unknown_service",
                replace(kRouter, "  routes:\n  - name: v1",
                        "  globalRateLimit: {domain: x, rateLimitService: \"outbound|8081||nope.ns.svc.cluster.local\", "
                        "descriptors: [{property: method, descriptorKey: method}]}\n  routes:\n  - name: v1"),
                {"MetaRouter meta-thrift/test-metaprotocol-thrift-route", "spec.globalRateLimit.rateLimitService",
                 "no service port's cluster"}},
        BadCase{"global_rate_limit_without_descriptors",
                replace(kRouter, "  routes:\n  - name: v1",
                        "  globalRateLimit: {domain: x, rateLimitService: y}\n  routes:\n  - name: v1"),
                {"spec.globalRateLimit.descriptors", "at least one"}},
        BadCase{"gateways",
                replace(kRouter, "  routes:\n  - name: v1", "  gateways: [istio-system/gw]\n  routes:\n  - name: v1"),
                {"spec.gateways", "not served"}},
        BadCase{"rate_limit_without_interval",
                replace(kRouter, "  routes:\n  - name: v1",
                        "  localRateLimit: {tokenBucket: {maxTokens: 1}}\n  routes:\n  - name: v1"),
                {"spec.localRateLimit.tokenBucket.fillInterval", "required"}},
        BadCase{"rate_limit_condition_typo",
                replace(kRouter, "  routes:\n  - name: v1",
                        "  localRateLimit:\n    conditions:\n    - {matches: {}, tokenBucket: {maxTokens: 1, fillInterval: 1s}}\n"
                        "  routes:\n  - name: v1"),
                {"spec.localRateLimit.conditions[0].matches", "not supported"}},
        BadCase{"typo_in_route_field",
                replace(kRouter, "  - name: traffic-split\n", "  - name: traffic-split\n    mirrorPercent: {value: 5}\n"),
                {"spec.routes[1].mirrorPercent", "not supported", "mirrorPercentage"}},
        BadCase{"passthrough",
                replace(kService, "  host: thrift-sample-server\n  subsets:",
                        "  host: thrift-sample-server\n  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n  subsets:"),
                {"spec.trafficPolicy.loadBalancer.simple", "PASSTHROUGH"}},
        BadCase{"cookie_hash",
                replace(kService, "  host: thrift-sample-server\n  subsets:",
                        "  host: thrift-sample-server\n  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: x}}}}\n  subsets:"),
                {"spec.trafficPolicy.loadBalancer.consistentHash.httpCookie", "not supported"}},
        BadCase{"min_health_percent",
                replace(kService, "  host: thrift-sample-server\n  subsets:",
                        "  host: thrift-sample-server\n  trafficPolicy: {outlierDetection: {minHealthPercent: 50}}\n  subsets:"),
                {"spec.trafficPolicy.outlierDetection.minHealthPercent"}},
        BadCase{"bad_duration",
                replace(kService, "  host: thrift-sample-server\n  subsets:",
                        "  host: thrift-sample-server\n  trafficPolicy: {outlierDetection: {interval: soon}}\n  subsets:"),
                {"spec.trafficPolicy.outlierDetection.interval", "not a duration"}},
        BadCase{"retry_after_write_needs_idempotent_methods",
                replace(kRouter, "  namespace: meta-thrift\nspec:",
                        "  namespace: meta-thrift\n  annotations: {metanode.io/retries: '{attempts: 2, retryOn: reset}'}\nspec:"),
                {"metadata.annotations.metanode.io/retries.idempotentMethods", "may have run"}},
        BadCase{"unknown_annotation",
                replace(kRouter, "  namespace: meta-thrift\nspec:",
                        "  namespace: meta-thrift\n  annotations: {metanode.io/timout: 1s}\nspec:"),
                {"metadata.annotations.metanode.io/timout", "unknown metanode annotation"}},
        BadCase{"export_to_namespace",
                replace(kService, "  host: thrift-sample-server\n  subsets:",
                        "  host: thrift-sample-server\n  exportTo: [\".\"]\n  subsets:"),
                {"spec.exportTo", "only \"*\""}},
        BadCase{"duplicate_dr",
                "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: dup, namespace: meta-thrift}\n"
                "spec:\n  host: thrift-sample-server\n  subsets: [{name: v1, labels: {version: v1}}]\n",
                {"DestinationRule meta-thrift/dup", "spec.host", "already has DestinationRule"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(K8sConfig, ShortHostsResolveInTheObjectsNamespace) {
  std::string router = replace(kRouter, "  - thrift-sample-server.meta-thrift.svc.cluster.local\n  routes",
                               "  - thrift-sample-server\n  routes");
  auto s = compile({{"svc.yaml", kService}, {"route.yaml", router}});
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ((*s)->listeners[0].routes->routes.size(), 2u);
}

}  // namespace
}  // namespace metanode::xds
