// One edit costs what it changed: the translator keeps what unchanged hosts
// generated, the client keeps the objects of resources resent unchanged,
// and the compiler reuses what it made of them. Each test checks both
// sides: what did not change is the very same object, what changed (or
// depends on what changed) is new and correct.
#include <gtest/gtest.h>

#include <string>

#include "edit_resource.h"
#include "envoy/service/discovery/v3/discovery.pb.h"
#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"
#include "metanode/xds/xds_update.h"

namespace metanode::xds {
namespace {

std::string host(int i) { return "svc" + std::to_string(i) + ".ns.svc.cluster.local"; }

// Service i: a VIP, v1/v2 endpoints and subsets, and a MetaRouter sending
// method "a" to `a_to` (a host, subset v1) and the rest 20/80 to its own
// subsets.
std::string service(int i, int a_to, int v1_weight = 20) {
  std::string h = host(i), n = std::to_string(i);
  return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
         "metadata: {name: svc" + n + ", namespace: ns}\n"
         "spec:\n  hosts: [" + h + "]\n  addresses: [10.96.0." + n + "]\n"
         "  ports: [{number: 9090, name: tcp-metaprotocol-thrift-x}]\n"
         "  endpoints: [{address: 10.1." + n + ".1, labels: {version: v1}}, "
         "{address: 10.1." + n + ".2, labels: {version: v2}}]\n"
         "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
         "metadata: {name: svc" + n + ", namespace: ns}\n"
         "spec:\n  host: " + h + "\n"
         "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n"
         "---\napiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
         "metadata: {name: svc" + n + ", namespace: ns}\n"
         "spec:\n  hosts: [" + h + "]\n  routes:\n"
         "  - name: a\n    match: {attributes: {method: {exact: a}}}\n"
         "    route: [{destination: {host: " + host(a_to) + ", subset: v1}}]\n"
         "  - name: split\n    route:\n"
         "    - {destination: {host: " + h + ", subset: v1}, weight: " + std::to_string(v1_weight) + "}\n"
         "    - {destination: {host: " + h + ", subset: v2}, weight: " + std::to_string(100 - v1_weight) + "}\n";
}

// Three services; service 0's method "a" goes to service 2.
std::vector<ManifestFile> three() {
  return {{"s0.yaml", service(0, 2)}, {"s1.yaml", service(1, 1)}, {"s2.yaml", service(2, 2)}};
}

Resources translated(const std::vector<ManifestFile>& files) {
  auto r = translate_manifests(files);
  EXPECT_TRUE(r) << r.error().message();
  return r ? std::move(r.value()) : Resources{};
}

std::string route_name(int i) { return host(i) + "_9090"; }
std::string cluster(int i, const std::string& subset) { return "outbound|9090|" + subset + "|" + host(i); }

template <class T>
Shared<T>& named(std::vector<Shared<T>>& list, const std::string& name) {
  for (auto& m : list)
    if (resource_name(*m) == name) return m;
  ADD_FAILURE() << "no resource " << name;
  return list.front();
}

TEST(IncrementalCompile, OneEditedRouteConfigurationCompilesOneTable) {
  Resources r = translated(three());
  auto first = compile_snapshot(r);
  ASSERT_TRUE(first.rejects.empty()) << first.rejects[0].str();
  EXPECT_EQ(first.reused, 0u);
  const Snapshot& s1 = *first.snapshot;

  edit(named(r.routes, route_name(1))).mutable_virtual_hosts(0)->mutable_routes(1)->set_name("renamed");
  auto second = compile_snapshot(r, &s1);
  ASSERT_TRUE(second.rejects.empty());
  const Snapshot& s2 = *second.snapshot;
  // 9 clusters, 3 tables, 3 listeners; one table compiled.
  EXPECT_EQ(second.compiled, 1u);
  EXPECT_EQ(second.reused, 14u);
  for (const auto& [name, c] : s1.clusters) EXPECT_EQ(s2.clusters.at(name), c) << name;
  EXPECT_EQ(s2.routes.at(route_name(0)), s1.routes.at(route_name(0)));
  EXPECT_EQ(s2.routes.at(route_name(2)), s1.routes.at(route_name(2)));
  ASSERT_NE(s2.routes.at(route_name(1)), s1.routes.at(route_name(1)));
  EXPECT_EQ(s2.routes.at(route_name(1))->routes[1].name, "renamed");
  // Every listener serves the table live in its own snapshot.
  for (const auto& l : s2.listeners) EXPECT_EQ(l.routes, s2.routes.at(l.route_name)) << l.name;
}

TEST(IncrementalCompile, ChangedAssignmentRecompilesItsClusterAndTheTablesThatNameIt) {
  Resources r = translated(three());
  auto first = compile_snapshot(r);
  const Snapshot& s1 = *first.snapshot;

  edit(named(r.endpoints, cluster(2, "v1")))
      .mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_endpoint()->mutable_address()
      ->mutable_socket_address()->set_address("10.9.9.9");
  auto second = compile_snapshot(r, &s1);
  ASSERT_TRUE(second.rejects.empty());
  const Snapshot& s2 = *second.snapshot;
  // The cluster, service 2's own table and service 0's (its method "a"
  // goes to service 2's v1): three compiled.
  EXPECT_EQ(second.compiled, 3u);
  const auto& changed = s2.clusters.at(cluster(2, "v1"));
  ASSERT_NE(changed, s1.clusters.at(cluster(2, "v1")));
  ASSERT_EQ(changed->endpoints.size(), 1u);
  EXPECT_EQ(changed->endpoints[0].address.str(), "10.9.9.9:9090");
  for (const auto& [name, c] : s1.clusters)
    if (name != cluster(2, "v1")) {
      EXPECT_EQ(s2.clusters.at(name), c) << name;
    }
  EXPECT_EQ(s2.routes.at(route_name(1)), s1.routes.at(route_name(1)));
  for (int i : {0, 2}) {
    const auto& t = s2.routes.at(route_name(i));
    ASSERT_NE(t, s1.routes.at(route_name(i))) << i;
    EXPECT_EQ(t->routes[0].clusters[0].cluster, changed) << i;  // method "a" -> svc2 v1
  }
}

TEST(IncrementalCompile, ARejectedResourceIsNamedAgainEveryTime) {
  Resources r = translated(three());
  edit(named(r.endpoints, cluster(1, "v2")))
      .mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_endpoint()->mutable_address()
      ->mutable_socket_address()->set_address("not-an-ip");
  auto* h = edit(named(r.routes, route_name(2))).mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()
                ->add_headers();
  h->set_name("m");
  h->mutable_safe_regex_match()->set_regex("(");
  auto first = compile_snapshot(r);
  ASSERT_EQ(first.rejects.size(), 2u);
  auto second = compile_snapshot(r, first.snapshot.get());
  ASSERT_EQ(second.rejects.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(second.rejects[i].name, first.rejects[i].name);
    EXPECT_EQ(second.rejects[i].reason, first.rejects[i].reason);
  }
  // Only the refused table is compiled again. The cluster kept without its
  // bad assignment is reused (so is the table naming it) and the
  // assignment still named.
  EXPECT_EQ(second.compiled, 1u);
  const auto& kept = second.snapshot->clusters.at(cluster(1, "v2"));
  EXPECT_EQ(kept, first.snapshot->clusters.at(cluster(1, "v2")));
  EXPECT_TRUE(kept->endpoints.empty());
  EXPECT_EQ(second.snapshot->routes.count(route_name(2)), 0u);
  for (const auto& a : second.snapshot->resources.endpoints) EXPECT_NE(a->cluster_name(), cluster(1, "v2"));
}

template <class T>
envoy::service::discovery::v3::DiscoveryResponse response(const char* type, const std::vector<Shared<T>>& list) {
  envoy::service::discovery::v3::DiscoveryResponse r;
  r.set_type_url(type);
  for (const auto& m : list) r.add_resources()->PackFrom(*m);
  return r;
}

// State of the world resends every cluster on each change: those that
// arrive with the bytes they had keep their objects.
TEST(MergeDigests, ResentUnchangedResourcesKeepTheirObjects) {
  Resources sent = translated(three());
  Resources held;
  Digests digests;
  ASSERT_TRUE(merge_update(update_of(response(kClusterType, sent.clusters)), held, &digests));
  ASSERT_EQ(held.clusters.size(), 9u);
  std::map<std::string, const void*> before;
  for (const auto& c : held.clusters) before[c->name()] = c.get();

  edit(named(sent.clusters, cluster(1, ""))).mutable_connect_timeout()->set_seconds(7);
  ASSERT_TRUE(merge_update(update_of(response(kClusterType, sent.clusters)), held, &digests));
  ASSERT_EQ(held.clusters.size(), 9u);
  for (const auto& c : held.clusters) {
    if (c->name() == cluster(1, "")) {
      EXPECT_NE(c.get(), before[c->name()]);
      EXPECT_EQ(c->connect_timeout().seconds(), 7);
    } else {
      EXPECT_EQ(c.get(), before[c->name()]) << c->name();
    }
  }
  // A cluster left out of the next set is gone, and so is its digest.
  sent.clusters.erase(sent.clusters.begin());
  ASSERT_TRUE(merge_update(update_of(response(kClusterType, sent.clusters)), held, &digests));
  EXPECT_EQ(held.clusters.size(), 8u);
  EXPECT_EQ(digests.by_type[kClusterType].size(), 8u);

  // Without digests nothing is kept: every resource is decoded again.
  Resources plain = held;
  ASSERT_TRUE(merge_update(update_of(response(kClusterType, sent.clusters)), plain));
  EXPECT_NE(plain.clusters[0].get(), held.clusters[0].get());
}

// A directory with one edited file: the other hosts' resources are the
// objects generated before, the edited host's are new.
TEST(ManifestTranslatorCache, UnchangedHostsKeepTheirResources) {
  ManifestTranslator t;
  auto files = three();
  auto r1 = t.translate(files);
  ASSERT_TRUE(r1) << r1.error().message();
  files[1].content = service(1, 1, 50);
  auto r2 = t.translate(files);
  ASSERT_TRUE(r2) << r2.error().message();
  ASSERT_EQ(r2->routes.size(), 3u);
  ASSERT_EQ(r2->clusters.size(), 9u);
  auto same = [](const auto& a, const auto& b, const std::string& edited) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      bool of_edited = resource_name(*a[i]).find(edited) != std::string::npos;
      EXPECT_EQ(a[i] == b[i], !of_edited) << resource_name(*a[i]);
    }
  };
  same(r1->listeners, r2->listeners, "10.96.0.1_");
  same(r1->clusters, r2->clusters, host(1));
  same(r1->endpoints, r2->endpoints, host(1));
  same(r1->routes, r2->routes, host(1));
  const auto& split = named(r2->routes, route_name(1))->virtual_hosts(0).routes(1).route().weighted_clusters();
  EXPECT_EQ(split.clusters(0).weight().value(), 50u);

  // A file that does not translate changes nothing; fixed, the cache holds.
  files[2].content = "kind: [";
  EXPECT_FALSE(t.translate(files));
  files[2].content = service(2, 2);
  auto r3 = t.translate(files);
  ASSERT_TRUE(r3) << r3.error().message();
  EXPECT_EQ(named(r3->routes, route_name(0)), named(r2->routes, route_name(0)));
  EXPECT_EQ(named(r3->routes, route_name(1)), named(r2->routes, route_name(1)));
  EXPECT_EQ(named(r3->routes, route_name(2)), named(r2->routes, route_name(2)));
}

}  // namespace
}  // namespace metanode::xds
