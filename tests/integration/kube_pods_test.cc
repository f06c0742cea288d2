// --pods kubernetes without the kernel (--no-bpf): the daemon lists and
// watches this node's pods from an API server over HTTPS with a bearer
// token, and labels each client's requests with its pod's identity
// (Istio's source_* labels), found by the client's address. No
// kube-apiserver can be had here: tests/peers/kube is a small server that
// speaks its protocol (lists with resourceVersion, chunked watch events,
// bookmarks, 410 Expired) and is fed pods as `kubectl get pod -o json`
// prints them (tests/unit/kube/data/pod.json).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "local_daemon.h"

namespace metanode::testbed {
namespace {
namespace json = boost::json;

class KubePods : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = d_.dir();
    write(dir + "/token", "token-one\n");         // what the daemon sends
    write(dir + "/server-token", "token-one\n");  // what the API server wants
    auto pid = d_.processes().spawn({METANODE_KUBE_API_PEER, "--tls-dir", dir, "--token-file",
                                     dir + "/server-token", "--addr-file", dir + "/api.addr",
                                     "--bookmark-interval", "200ms", "--max-page", "1"},
                                    "", "", dir + "/kubeapi.log");
    ASSERT_TRUE(pid);
    ASSERT_TRUE(eventually([&] { return !slurp(dir + "/api.addr").empty(); })) << slurp(dir + "/kubeapi.log");
    std::istringstream addrs(slurp(dir + "/api.addr"));
    addrs >> api_ >> control_;
    // The upstream, and the service in front of it on a loopback "VIP".
    auto svc = d_.serve_thrift_sample();
    ASSERT_NE(svc.upstream, 0);
    upstream_ = svc.upstream;
    vip_port_ = svc.vip;
    apply(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"meta-thrift",
              "labels":{"istio.io/dataplane-mode":"metanode","kubernetes.io/metadata.name":"meta-thrift"}}})");
    // Not enrolled; with it the namespace list comes in two pages (--max-page 1).
    apply(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}})");
    // The fixture pod on this node at 127.0.0.21; a pod of another node at .22.
    apply(pod("thrift-sample-server-v2-7c9d5b8f6d-x2k8q", "node-a", "127.0.0.21", "v2"));
    apply(pod("elsewhere-5b7c9d-abcde", "node-b", "127.0.0.22", "v1"));
  }

  static void write(const std::string& path, const std::string& s) { std::ofstream(path) << s; }

  // The kubectl fixture, renamed, on `node` with `ip` and version label `version`.
  static std::string pod(const std::string& name, const std::string& node, const std::string& ip,
                         const std::string& version) {
    std::ifstream f(METANODE_KUBE_DATA "/pod.json");
    std::stringstream ss;
    ss << f.rdbuf();
    json::value v = json::parse(ss.str());
    auto& o = v.as_object();
    o["metadata"].as_object()["name"] = name;
    o["metadata"].as_object().erase("uid");
    o["metadata"].as_object()["labels"].as_object()["version"] = version;
    o["spec"].as_object()["nodeName"] = node;
    o["status"].as_object()["podIP"] = ip;
    o["status"].as_object()["podIPs"] = json::array{json::object{{"ip", ip}}};
    return json::serialize(v);
  }

  std::string control(const std::string& path, const std::string& body = "") {
    int status = 0;
    auto r = http_request("", control_, "POST", path, body, &status);
    EXPECT_EQ(status, 200) << path << ": " << r.value_or("(no answer)");
    return r.value_or("");
  }
  void apply(const std::string& obj, bool hidden = false) {
    control(std::string("/control/apply") + (hidden ? "?hidden=true" : ""), obj);
  }

  bool start_daemon() {
    return d_.start({"--pods", "kubernetes", "--kube-api", "https://" + api_, "--kube-token-file",
                     d_.dir() + "/token", "--kube-ca-file", d_.dir() + "/ca.crt", "--node-name", "node-a"});
  }

  ClientSummary call_from(const std::string& source, int calls) {
    return d_.run_client({"/usr/bin/python3", sample_options_from_build().peers_dir + "/client.py", "--host",
                          "127.0.0.1", "--port", std::to_string(vip_port_), "--source", source, "--calls",
                          std::to_string(calls), "--quiet"});
  }

  // istio_requests_total of the series whose labels contain all of `parts`.
  uint64_t requests(const std::vector<std::string>& parts) {
    std::istringstream in(d_.admin("/stats/prometheus"));
    uint64_t total = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("istio_requests_total{", 0) != 0) continue;
      bool all = true;
      for (const auto& p : parts) all = all && line.find(p) != std::string::npos;
      if (all) total += std::stoull(line.substr(line.rfind(' ') + 1));
    }
    return total;
  }

  LocalDaemon d_;
  std::string api_, control_;
  int upstream_ = 0, vip_port_ = 0;
};

const std::vector<std::string> kPodV2 = {
    "source_workload=\"thrift-sample-server-v2\"", "source_workload_namespace=\"meta-thrift\"",
    "source_principal=\"spiffe://cluster.local/ns/meta-thrift/sa/thrift-sample\"",
    "source_app=\"thrift-sample-server\"", "source_version=\"v2\"",
    "source_canonical_service=\"thrift-sample-server\"", "source_canonical_revision=\"v2\"",
    "source_cluster=\"Kubernetes\""};

TEST_F(KubePods, ClientsRequestsCarryTheirPodsIdentity) {
  ASSERT_TRUE(start_daemon()) << d_.log();
  // Lists are read in pages (the server gives one object a page here): two
  // namespaces, two pages, the second asked with the first's continue token.
  EXPECT_NE(d_.admin("/stats/prometheus").find("metanode_kube_list_pages_total{resource=\"namespaces\"} 2"),
            std::string::npos)
      << d_.admin("/stats/prometheus");
  std::string reqs = http_get("", control_, "/control/requests").value_or("");
  EXPECT_NE(reqs.find("limit=500\\u0026continue=page%2F"), std::string::npos) << reqs;  // & JSON-escaped
  auto r = call_from("127.0.0.21", 5);
  ASSERT_EQ(r.ok, 5) << r.output << d_.log();
  EXPECT_EQ(requests(kPodV2), 5u) << d_.admin("/stats/prometheus");
  // A pod of another node is not in this daemon's list: unknown, as Istio writes it.
  r = call_from("127.0.0.22", 3);
  ASSERT_EQ(r.ok, 3) << r.output;
  EXPECT_EQ(requests({"source_workload=\"unknown\"", "source_principal=\"unknown\""}), 3u);
  EXPECT_EQ(requests({"source_workload=\"elsewhere\""}), 0u);
  // The pod's labels change (a watch event): connections made after it say so.
  apply(pod("thrift-sample-server-v2-7c9d5b8f6d-x2k8q", "node-a", "127.0.0.21", "v3"));
  ASSERT_TRUE(eventually([&] {
    call_from("127.0.0.21", 1);
    return requests({"source_version=\"v3\""}) > 0;
  })) << d_.log();
  auto m = d_.admin("/stats/prometheus");
  EXPECT_NE(m.find("metanode_kube_synced{resource=\"pods\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("metanode_pods{state=\"enrolled\"} 1"), std::string::npos) << "by its namespace's label";
  EXPECT_NE(m.find("metanode_kube_lists_total{resource=\"pods\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(d_.log().find("pod meta-thrift/thrift-sample-server-v2-7c9d5b8f6d-x2k8q enrolled: namespace label"),
            std::string::npos)
      << d_.log();
  auto st = run({"/bin/sh", "-c", std::string(METANODE_CTL) + " status --admin 127.0.0.1:" + d_.admin_port_str()});
  EXPECT_EQ(st.status, 0) << st.out;
  EXPECT_NE(st.out.find("pods         1 enrolled (Kubernetes API)"), std::string::npos) << st.out;
}

// The API server forgets old versions (etcd compaction) while the watch is
// down and a pod goes meanwhile: the daemon is told 410, lists again and
// sees it gone. The rotated token is the one sent after that.
TEST_F(KubePods, ExpiredWatchListsAgainWithTheRotatedToken) {
  ASSERT_TRUE(start_daemon()) << d_.log();
  ASSERT_EQ(call_from("127.0.0.21", 2).ok, 2);
  ASSERT_EQ(requests(kPodV2), 2u);
  write(d_.dir() + "/token", "token-two\n");
  write(d_.dir() + "/server-token", "token-two\n");
  control("/control/delete?kind=Pod&namespace=meta-thrift&name=thrift-sample-server-v2-7c9d5b8f6d-x2k8q&hidden=true");
  control("/control/compact");
  ASSERT_TRUE(eventually([&] {
    return testbed::metric(d_.admin("/stats/prometheus"), "metanode_pods{state=\"enrolled\"}") == 0;
  })) << d_.admin("/stats/prometheus") << d_.log();
  auto m = d_.admin("/stats/prometheus");
  EXPECT_NE(m.find("metanode_kube_expired_total{resource=\"pods\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("metanode_kube_lists_total{resource=\"pods\"} 2"), std::string::npos) << m;
  EXPECT_NE(m.find("metanode_kube_errors_total{resource=\"pods\"} 0"), std::string::npos) << m;
  // The identity went with the pod.
  ASSERT_EQ(call_from("127.0.0.21", 2).ok, 2);
  EXPECT_EQ(requests(kPodV2), 2u);
  EXPECT_EQ(requests({"source_workload=\"unknown\""}), 2u);
  // Every request was authorized: the new token was read for the ones after the rotation.
  json::value reqs = json::parse(http_get("", control_, "/control/requests").value_or("[]"));
  ASSERT_GE(reqs.as_array().size(), 4u);
  for (const auto& r : reqs.as_array()) EXPECT_TRUE(r.at("authorized").as_bool()) << json::serialize(r);
}

// Not ready until the lists are in; an API server that refuses us says
// why on /ready, and the daemon gets there once the token is right.
TEST_F(KubePods, ReadinessWaitsForTheListsAndSaysWhatIsWrong) {
  write(d_.dir() + "/token", "wrong\n");
  EXPECT_FALSE(start_daemon()) << "ready without the pods";
  auto ready = d_.admin("/ready");
  EXPECT_NE(ready.find("waiting for pods from the Kubernetes API"), std::string::npos) << ready;
  EXPECT_NE(ready.find("HTTP 401: Unauthorized"), std::string::npos) << ready;
  EXPECT_GE(testbed::metric(d_.admin("/stats/prometheus"), "metanode_kube_errors_total{resource=\"pods\"}"), 1u);
  write(d_.dir() + "/token", "token-one\n");
  EXPECT_TRUE(eventually([&] { return d_.admin("/ready") == "ready\n"; }, std::chrono::seconds(40)))
      << d_.admin("/ready");
}

// The API server is verified by name as well as by address; a server
// whose certificate another CA signed, or that names other addresses, is
// refused.
TEST_F(KubePods, TlsChecksTheServersCaAndItsNameOrAddress) {
  std::string port = api_.substr(api_.rfind(':') + 1);
  ASSERT_TRUE(d_.start({"--pods", "kubernetes", "--kube-api", "https://localhost:" + port, "--kube-token-file",
                        d_.dir() + "/token", "--kube-ca-file", d_.dir() + "/ca.crt", "--node-name", "node-a"}))
      << "the certificate names localhost: " << d_.log();
  // Another API server's CA does not vouch for this one.
  std::string other = d_.dir() + "/other";
  ASSERT_EQ(mkdir(other.c_str(), 0755), 0);
  // It listens on 127.0.0.2, which its certificate does not name.
  ASSERT_TRUE(d_.processes().spawn({METANODE_KUBE_API_PEER, "--tls-dir", other, "--addr-file", other + "/api.addr",
                                    "--listen", "127.0.0.2:0"},
                                   "", "", other + "/kubeapi.log"));
  ASSERT_TRUE(eventually([&] { return !slurp(other + "/api.addr").empty(); }));
  LocalDaemon d2;
  d2.write_config("empty.yaml", "");
  EXPECT_FALSE(d2.start({"--pods", "kubernetes", "--kube-api", "https://" + api_, "--kube-token-file",
                         d_.dir() + "/token", "--kube-ca-file", other + "/ca.crt", "--node-name", "node-a"}));
  auto ready = d2.admin("/ready");
  EXPECT_NE(ready.find("TLS with https://127.0.0.1:" + port), std::string::npos) << ready;
  EXPECT_NE(ready.find("certificate verify failed"), std::string::npos) << ready;
  std::string other_api = slurp(other + "/api.addr");
  other_api = other_api.substr(0, other_api.find(' '));
  LocalDaemon d3;
  d3.write_config("empty.yaml", "");
  EXPECT_FALSE(d3.start({"--pods", "kubernetes", "--kube-api", "https://" + other_api, "--kube-token-file",
                         d_.dir() + "/token", "--kube-ca-file", other + "/ca.crt", "--node-name", "node-a"}))
      << "the right CA, but the certificate does not name " << other_api;
  ready = d3.admin("/ready");
  EXPECT_NE(ready.find("TLS with https://" + other_api), std::string::npos) << ready;
  EXPECT_NE(ready.find("certificate verify failed"), std::string::npos) << ready;
}

// The cluster's CA rotates: the API server serves a certificate from a new
// CA and ends its watches, and the kubelet replaces the pod's ca.crt. The
// daemon reads the changed file before its next request and goes on
// watching; with the old CA it could never connect again.
TEST_F(KubePods, RotatedCaFileIsReadAgain) {
  ASSERT_TRUE(start_daemon()) << d_.log();
  json::value rotated = json::parse(control("/control/rotate-ca"));
  std::string next_ca = std::string(rotated.at("ca").as_string());
  // Until the file is replaced the new certificate is refused.
  ASSERT_TRUE(eventually([&] {
    return testbed::metric(d_.admin("/stats/prometheus"), "metanode_kube_errors_total{resource=\"pods\"}") > 0;
  }, std::chrono::seconds(30))) << d_.log();
  // Replaced as the kubelet does it (a new file, renamed in).
  write(d_.dir() + "/ca.crt.new", slurp(next_ca));
  ASSERT_EQ(rename((d_.dir() + "/ca.crt.new").c_str(), (d_.dir() + "/ca.crt").c_str()), 0);
  apply(pod("thrift-sample-server-v3-6f7d8c9b5-k2j4m", "node-a", "127.0.0.23", "v3"));
  ASSERT_TRUE(eventually([&] {
    return call_from("127.0.0.23", 1).ok == 1 && requests({"source_version=\"v3\""}) > 0;
  }, std::chrono::seconds(30)))
      << d_.admin("/stats/prometheus") << d_.log();
  EXPECT_NE(d_.log().find("ca.crt changed, read again"), std::string::npos) << d_.log();
}

TEST(KubePodsStart, WithoutANodeNameOrAnAPIServerItSaysWhatToPass) {
  LocalDaemon d;
  d.write_config("empty.yaml", "");
  auto bin = sample_options_from_build().metanoded;
  auto r = run({"/bin/sh", "-c", "env -u NODE_NAME -u KUBERNETES_SERVICE_HOST " + bin +
                                     " --no-bpf --admin-address 127.0.0.1:0 --config-dir " + d.config_dir() +
                                     " --pods kubernetes --node-name n 2>&1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("KUBERNETES_SERVICE_HOST is not set (pass --kube-api URL)"), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", "env -u NODE_NAME " + bin + " --no-bpf --admin-address 127.0.0.1:0 --config-dir " +
                                d.config_dir() + " --pods kubernetes --kube-api https://127.0.0.1:1 2>&1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("NODE_NAME or --node-name"), std::string::npos) << r.out;
  r = run({"/bin/sh", "-c", bin + " --no-bpf --config-dir " + d.config_dir() + " --kube-api https://x 2>&1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("go with --pods kubernetes"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace metanode::testbed
