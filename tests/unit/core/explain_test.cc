// /explain over a snapshot compiled from real manifests and kernel views of
// each kind: every verdict names its reason.
#include <gtest/gtest.h>

#include "explain.h"
#include "route_view.h"
#include "metanode/xds/k8s_config.h"

namespace metanode::core {
namespace {

constexpr char kManifests[] = R"(apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: hello, namespace: meta-thrift}
spec:
  hosts: [hello.meta-thrift.svc.cluster.local]
  addresses: [10.96.0.10]
  ports: [{number: 9090, name: tcp-metaprotocol-thrift-hello}]
  endpoints:
  - {address: 10.244.1.7, ports: {tcp-metaprotocol-thrift-hello: 9090}, labels: {version: v1}}
  - {address: 10.244.1.8, ports: {tcp-metaprotocol-thrift-hello: 9090}, labels: {version: v2}, weight: 3}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: hello, namespace: meta-thrift}
spec:
  host: hello.meta-thrift.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: hello, namespace: meta-thrift}
spec:
  hosts: [hello.meta-thrift.svc.cluster.local]
  routes:
  - name: goodbye-to-v1
    match: {attributes: {method: {exact: sayGoodbye}}}
    route: [{destination: {host: hello.meta-thrift.svc.cluster.local, subset: v1}}]
  - name: hello-split
    match: {attributes: {method: {prefix: sayHe}}}
    route:
    - {destination: {host: hello.meta-thrift.svc.cluster.local, subset: v1}, weight: 20}
    - {destination: {host: hello.meta-thrift.svc.cluster.local, subset: v2}, weight: 80}
)";

class Explain : public ::testing::Test {
 protected:
  void SetUp() override {
    auto res = xds::translate_manifests({{"hello.yaml", kManifests}});
    ASSERT_TRUE(res) << res.error().message();
    auto snap = xds::build_snapshot(std::move(*res));
    ASSERT_TRUE(snap) << snap.error().message();
    snap_ = *snap;
    k_.intercepting = true;
    k_.services[*net::parse_endpoint("10.96.0.10:9090")] = 1;
  }
  std::string text(const std::string& query) {
    auto q = parse_explain_query(query);
    EXPECT_TRUE(q) << q.error().message();
    return q ? explain_text(*q, snap_.get(), k_) : "";
  }
  std::shared_ptr<const xds::Snapshot> snap_;
  KernelView k_;
};

TEST_F(Explain, RoutedSplitShowsEachRoutesVerdictAndTheWeights) {
  k_.src_netns = 4097;
  k_.src_pod = "apps/client";
  k_.pods[4097] = 1;
  std::string t = text("dst=10.96.0.10:9090&src=10.244.1.9&attr.method=sayHello");
  EXPECT_NE(t.find("kernel:   redirected to the daemon: 10.96.0.10:9090 is a mesh service and pod apps/client "
                   "(netns cookie 4097) is managed"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("listener: 10.96.0.10_9090 (thrift, service hello.meta-thrift.svc.cluster.local"),
            std::string::npos) << t;
  EXPECT_NE(t.find("route:    goodbye-to-v1: no: attribute method: wants exact 'sayGoodbye', request has 'sayHello'"),
            std::string::npos) << t;
  EXPECT_NE(t.find("route:    hello-split: matches"), std::string::npos) << t;
  EXPECT_NE(t.find("cluster:  outbound|9090|v1|hello.meta-thrift.svc.cluster.local weight 20 (20.0%)"),
            std::string::npos) << t;
  EXPECT_NE(t.find("weight 80 (80.0%)"), std::string::npos) << t;
  EXPECT_NE(t.find("  endpoint 10.244.1.8:9090 weight 3"), std::string::npos) << t;
  EXPECT_NE(t.find("outcome:  forwarded"), std::string::npos) << t;
  auto q = parse_explain_query("dst=10.96.0.10:9090&attr.method=sayHello&format=json");
  ASSERT_TRUE(q);
  std::string j = explain_json(*q, snap_.get(), k_);
  EXPECT_NE(j.find("\"kernel\":{\"redirected\":true"), std::string::npos) << j;
  EXPECT_NE(j.find("{\"name\":\"hello-split\",\"matched\":true,\"why\":\"\"}"), std::string::npos) << j;
  EXPECT_NE(j.find("\"endpoints\":[{\"address\":\"10.244.1.7:9090\",\"weight\":1}]"), std::string::npos) << j;
}

TEST_F(Explain, UnroutedIsAnsweredByTheDaemonWithNR) {
  std::string t = text("dst=10.96.0.10:9090&attr.method=other");
  EXPECT_NE(t.find("managed pods only (0 in mn_pods; give src=POD_IP to check one)"), std::string::npos) << t;
  EXPECT_NE(t.find("hello-split: no: attribute method: wants prefix 'sayHe', request has 'other'"),
            std::string::npos) << t;
  EXPECT_NE(t.find("outcome:  answered by the daemon: no route (response flag NR)"), std::string::npos) << t;
  t = text("dst=10.96.0.10:9090");
  EXPECT_NE(t.find("request has none"), std::string::npos) << t;
}

TEST_F(Explain, KernelSaysWhyAConnectGoesDirect) {
  std::string t = text("dst=10.96.0.99:9090");
  EXPECT_NE(t.find("direct: 10.96.0.99:9090 is not a mesh service (not in mn_services)"), std::string::npos) << t;
  EXPECT_NE(t.find("outcome:  the daemon never sees the connection"), std::string::npos) << t;
  EXPECT_EQ(t.find("listener:"), std::string::npos) << t;
  k_.excluded = {{0, 9090}};
  EXPECT_NE(text("dst=10.96.0.10:9090").find("direct: port 9090 is excluded"), std::string::npos);
  k_.excluded.clear();
  k_.src_netns = 7;
  k_.pods[7] = 2;
  EXPECT_NE(text("dst=10.96.0.10:9090").find("opted out in mn_pods"), std::string::npos);
  k_.pods.clear();
  EXPECT_NE(text("dst=10.96.0.10:9090").find("is not managed (not enrolled"), std::string::npos);
  k_.all_pods = true;
  EXPECT_NE(text("dst=10.96.0.10:9090").find("redirected"), std::string::npos);
  k_ = {};  // --no-bpf
  t = text("dst=127.0.0.1:1");
  EXPECT_NE(t.find("no interception (--no-bpf)"), std::string::npos) << t;
  EXPECT_NE(t.find("closed at accept: no listener for 127.0.0.1:1"), std::string::npos) << t;
}

TEST_F(Explain, RoutesViewListsEveryRouteAsExecuted) {
  std::string t = routes_text(snap_.get());
  EXPECT_NE(t.find("10.96.0.10_9090  thrift  hello.meta-thrift.svc.cluster.local  routes "), std::string::npos) << t;
  EXPECT_NE(t.find("  goodbye-to-v1: method exact 'sayGoodbye'\n"
                   "    -> outbound|9090|v1|hello.meta-thrift.svc.cluster.local\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("  hello-split: method prefix 'sayHe'\n"
                   "    -> outbound|9090|v1|hello.meta-thrift.svc.cluster.local weight 20\n"
                   "    -> outbound|9090|v2|hello.meta-thrift.svc.cluster.local weight 80\n"),
            std::string::npos) << t;
  std::string j = routes_json(snap_.get());
  EXPECT_NE(j.find("{\"name\":\"hello-split\",\"match\":[\"method prefix 'sayHe'\"],\"clusters\":["
                   "{\"name\":\"outbound|9090|v1|hello.meta-thrift.svc.cluster.local\",\"weight\":20}"),
            std::string::npos) << j;
  EXPECT_EQ(routes_text(nullptr), "no listeners\n");
}

TEST(ExplainQuery, ParametersAreCheckedAndDecoded) {
  auto q = parse_explain_query("dst=10.0.0.1:80&attr.interface=org.apache.Demo%24Inner&attr.x=a+b");
  ASSERT_TRUE(q) << q.error().message();
  EXPECT_EQ(*q->attrs.get("interface"), "org.apache.Demo$Inner");
  EXPECT_EQ(*q->attrs.get("x"), "a b");
  EXPECT_FALSE(q->src);
  EXPECT_FALSE(q->json);
  EXPECT_TRUE(parse_explain_query("dst=10.0.0.1:80&format=json")->json);
  EXPECT_EQ(parse_explain_query("dst=10.0.0.1:80&format=xml").error().message(), "format: 'xml' is not json or text");
  EXPECT_EQ(parse_explain_query("src=10.0.0.1").error().message(), "dst=IP:PORT is required");
  EXPECT_EQ(parse_explain_query("dst=nope").error().message(), "dst: 'nope' is not IPv4:PORT");
  EXPECT_NE(parse_explain_query("dst=1.2.3.4:5&methd=x").error().message().find("unknown parameter 'methd'"),
            std::string::npos);
}

}  // namespace
}  // namespace metanode::core
