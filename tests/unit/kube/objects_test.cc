// Pod and Namespace objects as `kubectl get -o json` prints them, and the
// decisions made from them: enrollment and the workload name.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "metanode/kube/objects.h"
#include "metanode/net.h"

namespace metanode::kube {
namespace {
namespace json = boost::json;

json::value fixture() {
  std::ifstream f(METANODE_KUBE_DATA "/pod.json");
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

TEST(KubeObjects, PodFromKubectlOutput) {
  auto p = parse_pod(fixture());
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->meta.name, "thrift-sample-server-v2-7c9d5b8f6d-x2k8q");
  EXPECT_EQ(p->meta.namespace_, "meta-thrift");
  EXPECT_EQ(p->meta.uid, "9b1e4c2a-7f3d-4e8b-a1c6-0d2f5e7a8b94");
  EXPECT_EQ(p->meta.resource_version, "184467");
  EXPECT_FALSE(p->meta.deleting);
  EXPECT_EQ(p->node_name, "worker-1");
  EXPECT_EQ(p->service_account, "thrift-sample");
  EXPECT_EQ(p->phase, "Running");
  EXPECT_FALSE(p->host_network);
  ASSERT_EQ(p->containers.size(), 1u);
  EXPECT_EQ(p->containers[0], "thrift-sample-server");
  // Dual stack: the IPv4 one kept, once (podIP repeats podIPs[0]).
  ASSERT_EQ(p->ipv4.size(), 1u);
  EXPECT_EQ(net::ipv4_str(p->ipv4[0]), "10.244.1.17");
  EXPECT_EQ(workload_name(*p), "thrift-sample-server-v2") << "the Deployment, not the ReplicaSet";
  EXPECT_EQ(app_label(*p), "thrift-sample-server");
  EXPECT_EQ(version_label(*p), "v2");
  EXPECT_EQ(canonical_service(*p), "thrift-sample-server");
  EXPECT_EQ(canonical_revision(*p), "v2");
}

TEST(KubeObjects, MalformedObjectsNameWhatIsMissing) {
  EXPECT_FALSE(parse_pod(json::parse("[]")));
  auto r = parse_pod(json::parse(R"({"metadata":{"name":"a"}})"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("metadata.namespace"), std::string::npos) << r.error().message();
  r = parse_pod(json::parse(R"({"metadata":{"namespace":"a"}})"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("metadata.name"), std::string::npos) << r.error().message();
  // Wrong types are empty values, never a throw.
  auto p = parse_pod(json::parse(
      R"({"metadata":{"name":"a","namespace":"b","labels":{"app":7},"ownerReferences":"x"},
          "spec":{"hostNetwork":"yes","containers":[1,{"name":2}]},"status":{"podIPs":[{"ip":"not-an-ip"}],"podIP":3}})"));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->meta.labels.empty());
  EXPECT_FALSE(p->host_network);
  EXPECT_TRUE(p->ipv4.empty());
  EXPECT_EQ(p->service_account, "default");
  auto ns = parse_namespace(json::parse(R"({"metadata":{"name":"meta-thrift","labels":{"istio.io/dataplane-mode":"metanode"}}})"));
  ASSERT_TRUE(ns);
  EXPECT_EQ(ns->meta.labels.at("istio.io/dataplane-mode"), "metanode");
}

Pod pod_with(std::map<std::string, std::string> labels) {
  Pod p;
  p.meta.name = "p";
  p.meta.namespace_ = "n";
  p.meta.labels = std::move(labels);
  p.containers = {"app"};
  p.phase = "Running";
  return p;
}

TEST(KubeObjects, EnrollmentByPodOrNamespaceLabelWithOptOutAndExclusions) {
  Namespace enrolled_ns{{"n", "", "", "", {{kDataplaneModeLabel, "metanode"}}, {}, false}};
  Namespace plain_ns{{"n", "", "", "", {}, {}, false}};
  EXPECT_FALSE(enrollment(pod_with({}), nullptr).enrolled);
  EXPECT_FALSE(enrollment(pod_with({}), &plain_ns).enrolled);
  EXPECT_TRUE(enrollment(pod_with({}), &enrolled_ns).enrolled);
  EXPECT_TRUE(enrollment(pod_with({{kDataplaneModeLabel, "metanode"}}), &plain_ns).enrolled);
  EXPECT_TRUE(enrollment(pod_with({{kDataplaneModeLabel, "metanode"}}), nullptr).enrolled);
  auto out = enrollment(pod_with({{kDataplaneModeLabel, "none"}}), &enrolled_ns);
  EXPECT_FALSE(out.enrolled) << "the pod's opt-out wins over its namespace";
  EXPECT_STREQ(out.reason, "pod label istio.io/dataplane-mode=none");
  // Istio's ambient value is not ours.
  EXPECT_FALSE(enrollment(pod_with({{kDataplaneModeLabel, "ambient"}}), &plain_ns).enrolled);

  Pod host = pod_with({{kDataplaneModeLabel, "metanode"}});
  host.host_network = true;
  EXPECT_FALSE(enrollment(host, &enrolled_ns).enrolled);
  Pod sidecar = pod_with({});
  sidecar.containers.push_back("istio-proxy");
  EXPECT_STREQ(enrollment(sidecar, &enrolled_ns).reason, "sidecar injected");
  Pod injected = pod_with({});
  injected.meta.annotations["sidecar.istio.io/status"] = "{}";
  EXPECT_FALSE(enrollment(injected, &enrolled_ns).enrolled);
  Pod done = pod_with({});
  done.phase = "Succeeded";
  EXPECT_FALSE(enrollment(done, &enrolled_ns).enrolled);
  Pod terminating = pod_with({});
  terminating.meta.deleting = true;
  EXPECT_TRUE(enrollment(terminating, &enrolled_ns).enrolled) << "meshed until it is gone";
}

TEST(KubeObjects, WorkloadNamesAsIstioDerivesThem) {
  Pod p = pod_with({});
  p.meta.name = "standalone";
  EXPECT_EQ(workload_name(p), "standalone") << "no owner: the pod";
  p.owners = {{"ReplicaSet", "web-5d4f8c7b9", true}};
  EXPECT_EQ(workload_name(p), "web-5d4f8c7b9") << "no pod-template-hash: the ReplicaSet itself";
  p.meta.labels["pod-template-hash"] = "5d4f8c7b9";
  EXPECT_EQ(workload_name(p), "web");
  p.owners = {{"Job", "backup-29012345", true}};
  EXPECT_EQ(workload_name(p), "backup") << "a CronJob's Job";
  p.owners = {{"Job", "migrate", true}};
  EXPECT_EQ(workload_name(p), "migrate");
  p.owners = {{"StatefulSet", "db", true}};
  EXPECT_EQ(workload_name(p), "db");
  p.owners = {{"ConfigMap", "not-it", false}, {"DaemonSet", "agent", true}};
  EXPECT_EQ(workload_name(p), "agent") << "the controller among several owners";
  p.meta.labels = {{"app.kubernetes.io/name", "shop"}, {"app.kubernetes.io/version", "1.2"}};
  EXPECT_EQ(app_label(p), "shop");
  EXPECT_EQ(version_label(p), "1.2");
  p.meta.labels["app"] = "legacy";
  EXPECT_EQ(app_label(p), "legacy") << "Istio's app label first";
  // Istio's canonical service prefers the recommended label to app, and
  // its own label to both.
  EXPECT_EQ(canonical_service(p), "shop");
  EXPECT_EQ(canonical_revision(p), "1.2");
  p.meta.labels["service.istio.io/canonical-name"] = "storefront";
  p.meta.labels["service.istio.io/canonical-revision"] = "2024";
  EXPECT_EQ(canonical_service(p), "storefront");
  EXPECT_EQ(canonical_revision(p), "2024");
  p.meta.labels.clear();
  EXPECT_EQ(canonical_service(p), "agent") << "no label: the workload";
  EXPECT_EQ(canonical_revision(p), "latest");
}

}  // namespace
}  // namespace metanode::kube

#include "metanode/kube/pod_directory.h"

namespace metanode::kube {
namespace {

// Bounded: beyond its cap a directory refuses new objects (counted), keeps
// updating and deleting the ones it has.
TEST(PodDirectory, KeepsAtMostItsCapAndCountsTheRest) {
  PodDirectory d(2, 10);
  int changes = 0;
  d.on_change = [&] { ++changes; };
  auto pod = [](const std::string& name, const std::string& ip) {
    return json::parse(R"({"metadata":{"name":")" + name + R"(","namespace":"n"},"status":{"podIP":")" + ip + R"("}})");
  };
  auto h = d.pod_handler();
  h.replace({pod("a", "10.0.0.1"), pod("b", "10.0.0.2"), pod("c", "10.0.0.3")});
  EXPECT_EQ(d.pods().size(), 2u);
  EXPECT_EQ(d.rejected(), 1u);
  h.event(EventType::kAdded, pod("d", "10.0.0.4"));
  EXPECT_EQ(d.pods().size(), 2u);
  EXPECT_EQ(d.rejected(), 2u);
  EXPECT_EQ(changes, 1) << "a refused object changes nothing";
  h.event(EventType::kModified, pod("a", "10.0.0.9"));
  EXPECT_EQ(net::ipv4_str(d.pods().at("n/a").ipv4.at(0)), "10.0.0.9");
  h.event(EventType::kDeleted, pod("b", "10.0.0.2"));
  h.event(EventType::kAdded, pod("d", "10.0.0.4"));
  EXPECT_EQ(d.pods().count("n/d"), 1u) << "room again";
  auto ns = d.namespace_handler();
  ns.replace({json::parse(R"({"metadata":{"name":"n","labels":{"istio.io/dataplane-mode":"metanode"}}})")});
  ASSERT_NE(d.find_namespace("n"), nullptr);
  EXPECT_TRUE(d.enrollment(d.pods().at("n/a")).enrolled);
  EXPECT_EQ(d.find_namespace("other"), nullptr);
}

}  // namespace
}  // namespace metanode::kube
