// Configuration over gRPC xDS with real, independent peers:
//  - go-control-plane's server (the library Aeraki's RDS server is built on)
//    feeding metanoded --xds-address: ADS (CDS, EDS, LDS) and Aeraki's RDS
//    service, ACK/NACK, a bad resource, a server that goes away or talks
//    garbage;
//  - metanode-xds read by a Go client that decodes everything with the real
//    Envoy and Aeraki Go types, and by several metanoded at once.
// Traffic is real too: python3-thrift servers and clients on loopback.
#include <arpa/inet.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <thread>

#include "edit_resource.h"
#include "local_daemon.h"
#include "metanode/xds/k8s_config.h"

namespace metanode::testbed {
namespace {

using namespace std::chrono_literals;
constexpr char kHost[] = "thrift-sample-server.meta-thrift.svc.cluster.local";

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The value of a labelled Prometheus sample, or ~0 when absent.
uint64_t labelled(const std::string& text, const std::string& series) {
  auto p = text.find(series + " ");
  if (p == std::string::npos) return ~0ull;
  return std::stoull(text.substr(p + series.size() + 1));
}

// Something on loopback that is not an xDS server: `on_accept` gets each
// connection and says whether to keep it open (closed when this goes).
class RawServer {
 public:
  explicit RawServer(std::function<bool(int)> on_accept) {
    fd_ = bind_loopback(port_);
    listen(fd_, 16);
    timeval tv{0, 100000};  // accept() wakes to see done_
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    thread_ = std::thread([this, on_accept] {
      while (!done_) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        ++accepted_;
        if (on_accept(c)) held_.push_back(c);
        else close(c);
      }
    });
  }
  ~RawServer() {
    done_ = true;
    thread_.join();
    for (int c : held_) close(c);
    close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int accepted() const { return accepted_; }

 private:
  int fd_ = -1, port_ = 0;
  std::atomic<bool> done_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;
  std::thread thread_;
};

class XdsPeers : public ::testing::Test {
 protected:
  void SetUp() override {
    auto peers = sample_options_from_build().peers_dir;
    for (int i = 0; i < 2; ++i) {
      ports_[i] = free_port();
      ASSERT_TRUE(d_.start_peer({"/usr/bin/python3", peers + "/server.py", "--host", "127.0.0.1", "--port",
                                 std::to_string(ports_[i]), "--name",
                                 std::string("thrift-sample-server-v") + char('1' + i)},
                                "server" + std::to_string(i)));
    }
    vip_port_ = free_port();
  }

  // Aeraki's tutorial service on loopback, plus an optional MetaRouter.
  std::string service(const std::string& name, int vip_port) const {
    std::string host = name + ".meta-thrift.svc.cluster.local";
    return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
           "metadata: {name: " + name + ", namespace: meta-thrift}\n"
           "spec:\n  hosts: [" + host + "]\n  addresses: [127.0.0.1]\n"
           "  ports: [{number: " + std::to_string(vip_port) + ", name: tcp-metaprotocol-thrift-hello}]\n"
           "  endpoints:\n"
           "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-hello: " + std::to_string(ports_[0]) +
           "}, labels: {version: v1}}\n"
           "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-hello: " + std::to_string(ports_[1]) +
           "}, labels: {version: v2}}\n---\n"
           "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
           "metadata: {name: " + name + ", namespace: meta-thrift}\n"
           "spec:\n  host: " + host + "\n  subsets:\n"
           "  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
  }
  static std::string split(int v1, int v2) {
    return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
           "metadata: {name: split, namespace: meta-thrift}\n"
           "spec:\n  hosts: [" + std::string(kHost) + "]\n  routes:\n  - name: traffic-split\n"
           "    route:\n"
           "    - {destination: {host: " + kHost + ", subset: v1}, weight: " + std::to_string(v1) + "}\n"
           "    - {destination: {host: " + kHost + ", subset: v2}, weight: " + std::to_string(v2) + "}\n";
  }

  // Manifests -> xDS resources -> the JSON array of Any the Go server reads.
  static xds::Resources translate(const std::vector<std::string>& docs) {
    std::vector<xds::ManifestFile> files;
    for (size_t i = 0; i < docs.size(); ++i) files.push_back({"doc" + std::to_string(i) + ".yaml", docs[i]});
    auto r = xds::translate_manifests(files);
    EXPECT_TRUE(r) << r.error().message();
    return r ? std::move(r.value()) : xds::Resources{};
  }
  void write_resources(const xds::Resources& r) {
    std::string out = "[";
    auto add = [&](const google::protobuf::Message& m) {
      google::protobuf::Any a;
      a.PackFrom(m);
      std::string j;
      EXPECT_TRUE(google::protobuf::util::MessageToJsonString(a, &j).ok());
      out += (out.size() > 1 ? ",\n" : "") + j;
    };
    for (const auto& m : r.clusters) add(*m);
    for (const auto& m : r.endpoints) add(*m);
    for (const auto& m : r.listeners) add(*m);
    for (const auto& m : r.routes) add(*m);
    std::string tmp = resources_file() + ".tmp";
    std::ofstream(tmp) << out << "]\n";
    std::rename(tmp.c_str(), resources_file().c_str());
  }
  std::string resources_file() const { return d_.dir() + "/resources.json"; }

  // go-control-plane's server on `port` (0: any). Returns its port.
  int start_go_server(int port = 0) {
    go_log_ = "go-server" + std::to_string(++go_starts_);
    go_pid_ = d_.start_peer({METANODE_XDS_SERVER_PEER, "-listen", "127.0.0.1:" + std::to_string(port),
                             "-resources", resources_file()},
                            go_log_, "listening ");
    EXPECT_NE(go_pid_, 0) << go_output();
    auto log = go_output();
    auto p = log.find("listening ");
    return p == std::string::npos ? 0 : std::stoi(log.substr(p + 10));
  }
  // metanode-xds serving the sample service from config_dir(). Its port.
  int start_metanode_xds() {
    d_.write_config("svc.yaml", service("thrift-sample-server", vip_port_));
    int port = free_port();
    bool ok = d_.start_peer({METANODE_XDS_BIN, "--config-dir", d_.config_dir(), "--listen",
                             "127.0.0.1:" + std::to_string(port)},
                            "metanode-xds", "serving");
    return ok ? port : 0;
  }
  std::string go_output() const { return slurp(d_.dir() + "/" + go_log_ + ".log"); }
  void push(const xds::Resources& r) {
    write_resources(r);
    size_t before = count(go_output(), "LOADED ");
    kill(go_pid_, SIGHUP);
    ASSERT_TRUE(eventually([&] { return count(go_output(), "LOADED ") > before; })) << go_output();
  }
  static size_t count(const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
  }

  ClientSummary calls(LocalDaemon& d, int n, int port) {
    return d.run_client({"/usr/bin/python3", sample_options_from_build().peers_dir + "/client.py", "--host",
                         "127.0.0.1", "--port", std::to_string(port), "--calls", std::to_string(n),
                         "--quiet"});
  }

  LocalDaemon d_;
  int ports_[2] = {0, 0};
  int vip_port_ = 0;
  pid_t go_pid_ = 0;
  std::string go_log_;
  int go_starts_ = 0;
};

// The whole path through an independent control plane: CDS -> EDS -> LDS
// over ADS, RDS on Aeraki's service (cluster aeraki-xds, defaulting to the
// ADS server), every response ACKed; then a 20/80 MetaRouter pushed live.
TEST_F(XdsPeers, GoControlPlaneFeedsTheDaemon) {
  write_resources(translate({service("thrift-sample-server", vip_port_)}));
  int port = start_go_server();
  ASSERT_GT(port, 0);
  ASSERT_TRUE(d_.start({"--xds-address", "127.0.0.1:" + std::to_string(port), "--node-id", "node-a"}, false))
      << d_.log() << go_output();

  auto r = calls(d_, 100, vip_port_);
  ASSERT_EQ(r.ok, 100) << r.output << d_.log();
  EXPECT_EQ(r.by_server["thrift-sample-server-v1"], 50);
  EXPECT_EQ(r.switches, 99);
  auto out = go_output();
  EXPECT_TRUE(contains(out, "NODE node-a"));
  for (const char* t : {"cluster.v3.Cluster v1", "endpoint.v3.ClusterLoadAssignment v1",
                        "listener.v3.Listener v1", "route.v3.RouteConfiguration v1"})
    EXPECT_TRUE(contains(out, std::string("ACK type.googleapis.com/envoy.config.") + t)) << t << "\n" << out;
  EXPECT_FALSE(contains(out, "NACK")) << out;
  auto dump = d_.admin("/config_source");
  EXPECT_TRUE(contains(dump, "\"stream\":\"rds:aeraki-xds\",\"target\":\"127.0.0.1:" + std::to_string(port)))
      << dump;
  // /config_dump is Envoy's ConfigDump: the real Go types decode it strictly.
  std::ofstream(d_.dir() + "/config_dump.json") << d_.admin("/config_dump");
  auto decoded = run({METANODE_XDS_CLIENT_PEER, "-config-dump", d_.dir() + "/config_dump.json"});
  EXPECT_EQ(decoded.status, 0) << decoded.out;
  EXPECT_TRUE(contains(decoded.out, "listeners=1 routes=1")) << decoded.out;
  auto m = d_.admin("/stats/prometheus");
  EXPECT_EQ(labelled(m, "metanode_xds_connected{stream=\"ads\"}"), 1u) << m;
  EXPECT_EQ(labelled(m, "metanode_xds_updates_total{type=\"RouteConfiguration\",stream=\"rds:aeraki-xds\"}"), 1u);

  push(translate({service("thrift-sample-server", vip_port_), split(20, 80)}));
  ASSERT_TRUE(eventually([&] { return contains(d_.admin("/config_dump"), "traffic-split"); })) << d_.log();
  r = calls(d_, 1000, vip_port_);
  ASSERT_EQ(r.ok, 1000) << r.output;
  // 20% of 1000 +- 5 sigma (sigma = sqrt(1000 * 0.2 * 0.8) = 12.6).
  EXPECT_NEAR(r.by_server["thrift-sample-server-v1"], 200, 63);
}

// The same through delta xDS (--xds-delta): subscriptions as differences,
// updates and removals per resource, the versions held said again to a
// restarted server.
TEST_F(XdsPeers, GoControlPlaneDeltaFeedsTheDaemon) {
  int vip2 = free_port();
  write_resources(translate({service("thrift-sample-server", vip_port_), service("second", vip2)}));
  int port = start_go_server();
  ASSERT_TRUE(d_.start({"--xds-address", "127.0.0.1:" + std::to_string(port), "--xds-delta"}, false))
      << d_.log() << go_output();
  auto r = calls(d_, 100, vip_port_);
  ASSERT_EQ(r.ok, 100) << r.output << d_.log();
  EXPECT_EQ(r.by_server["thrift-sample-server-v1"], 50);
  EXPECT_EQ(calls(d_, 10, vip2).ok, 10);
  auto out = go_output();
  for (const char* t : {"cluster.v3.Cluster", "endpoint.v3.ClusterLoadAssignment", "listener.v3.Listener",
                        "route.v3.RouteConfiguration"})
    EXPECT_TRUE(contains(out, std::string("DELTA-ACK type.googleapis.com/envoy.config.") + t)) << t << "\n" << out;
  EXPECT_TRUE(contains(out, "DELTA-SUBSCRIBE type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment "))
      << out;
  EXPECT_TRUE(contains(d_.admin("/config_source"), "\"variant\":\"delta\""));

  // A change and a removal in one push: the split applies, the second
  // service's resources are removed.
  push(translate({service("thrift-sample-server", vip_port_), split(20, 80)}));
  ASSERT_TRUE(eventually([&] {
    auto dump = d_.admin("/config_dump");
    return contains(dump, "traffic-split") && !contains(dump, "127.0.0.1_" + std::to_string(vip2));
  })) << d_.log();
  r = calls(d_, 1000, vip_port_);
  ASSERT_EQ(r.ok, 1000) << r.output;
  EXPECT_NEAR(r.by_server["thrift-sample-server-v1"], 200, 63);

  // A restarted server is told what the daemon holds.
  kill(go_pid_, SIGKILL);
  d_.processes().wait(go_pid_, 3000);
  ASSERT_EQ(start_go_server(port), port);
  ASSERT_TRUE(eventually([&] {
    return contains(go_output(), "DELTA-INITIAL type.googleapis.com/envoy.config.cluster.v3.Cluster 3");
  }, 20s)) << go_output() << d_.log();
  EXPECT_EQ(calls(d_, 10, vip_port_).ok, 10);
}

// A push with one bad resource: that resource is NACKed by name and reason,
// the rest of the push applies, and the bad one keeps its last good version.
TEST_F(XdsPeers, OneBadResourceIsNackedTheRestApplies) {
  int vip2 = free_port();
  write_resources(translate({service("thrift-sample-server", vip_port_)}));
  int port = start_go_server();
  ASSERT_TRUE(d_.start({"--xds-address", "127.0.0.1:" + std::to_string(port)}, false)) << d_.log();

  // The next version: a second service (fine), and the first service's
  // route configuration with a regex that does not compile.
  auto next = translate({service("thrift-sample-server", vip_port_), service("second", vip2)});
  for (auto& rc : next.routes)
    if (rc->name() == std::string(kHost) + "_" + std::to_string(vip_port_)) {
      auto* h = xds::edit(rc).mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()->add_headers();
      h->set_name("method");
      h->mutable_safe_regex_match()->set_regex("(unclosed");
    }
  push(next);
  ASSERT_TRUE(eventually([&] { return contains(go_output(), "NACK type.googleapis.com/envoy.config.route"); }))
      << go_output() << d_.log();
  auto out = go_output();
  EXPECT_TRUE(contains(out, "RouteConfiguration " + std::string(kHost) + "_" + std::to_string(vip_port_) +
                                ": route_config"))
      << out;
  EXPECT_TRUE(contains(out, "bad regex")) << out;
  // The good part applied: the second service answers.
  ASSERT_TRUE(eventually([&] { return calls(d_, 1, vip2).ok == 1; })) << d_.log();
  // The bad route kept its last good version: the first service still works.
  auto r = calls(d_, 20, vip_port_);
  EXPECT_EQ(r.ok, 20) << r.output << d_.log();
  auto m = d_.admin("/stats/prometheus");
  // go-control-plane resends the version it holds; the repeats are NACKed
  // after a growing pause (1 s, 2 s, 4 s, ...): a few, not a storm (without
  // the pause: over a hundred in half a second).
  auto rejects = labelled(m, "metanode_xds_rejects_total{type=\"RouteConfiguration\",stream=\"rds:aeraki-xds\"}");
  EXPECT_GE(rejects, 1u);
  EXPECT_LE(rejects, 10u)
      << m;
  EXPECT_TRUE(contains(d_.admin("/config_source"), "bad regex"));
  // /config_dump shows the refusal where Envoy does: the route's entry holds
  // its last good version and an error_state with the reason (decoded by
  // the real Go types); the second service's has none.
  std::ofstream(d_.dir() + "/config_dump.json") << d_.admin("/config_dump");
  auto decoded = run({METANODE_XDS_CLIENT_PEER, "-config-dump", d_.dir() + "/config_dump.json"});
  EXPECT_EQ(decoded.status, 0) << decoded.out;
  EXPECT_TRUE(contains(decoded.out, "CONFIGDUMP clusters=6 endpoints=6 listeners=2 routes=2")) << decoded.out;
  EXPECT_TRUE(contains(decoded.out, "ERRORSTATE routes " + std::string(kHost) + "_" + std::to_string(vip_port_) +
                                        ": route_config"))
      << decoded.out;
  EXPECT_EQ(count(decoded.out, "ERRORSTATE"), 1u) << decoded.out;
}

// The control plane goes away: traffic goes on with the last good
// configuration, the daemon says so, and comes back when the server does.
TEST_F(XdsPeers, ServerAwayKeepsTheLastGoodConfigurationAndReconnects) {
  write_resources(translate({service("thrift-sample-server", vip_port_)}));
  int port = start_go_server();
  ASSERT_TRUE(d_.start({"--xds-address", "127.0.0.1:" + std::to_string(port)}, false)) << d_.log();
  kill(go_pid_, SIGKILL);
  d_.processes().wait(go_pid_, 3000);
  ASSERT_TRUE(eventually([&] {
    return labelled(d_.admin("/stats/prometheus"), "metanode_xds_connected{stream=\"ads\"}") == 0;
  }));
  auto r = calls(d_, 50, vip_port_);
  EXPECT_EQ(r.ok, 50) << r.output;
  EXPECT_EQ(d_.admin("/ready"), "ready\n");  // a synced daemon stays ready
  // A new server on the same port with a new version: picked up after backoff.
  write_resources(translate({service("thrift-sample-server", vip_port_), split(100, 0)}));
  ASSERT_EQ(start_go_server(port), port);
  ASSERT_TRUE(eventually([&] { return contains(d_.admin("/config_dump"), "traffic-split"); }, 20s))
      << d_.log();
  r = calls(d_, 20, vip_port_);
  EXPECT_EQ(r.by_server["thrift-sample-server-v1"], 20) << r.output;
}

// Something that is not an xDS server: the daemon never crashes, is not
// ready, says what it waits for, and keeps retrying.
TEST_F(XdsPeers, GarbageServerIsRetriedNeverTrusted) {
  RawServer garbage([](int c) {
    const char junk[] = "HTTP/1.1 200 OK\r\n\r\n\x00\x01\x02garbage that is not HTTP/2";
    (void)!write(c, junk, sizeof(junk));
    return false;
  });
  EXPECT_FALSE(d_.start({"--xds-address", garbage.address()}, false));
  EXPECT_TRUE(eventually([&] { return garbage.accepted() >= 2; }, 15s)) << d_.log();
  auto ready = d_.admin("/ready");
  EXPECT_TRUE(contains(ready, "not ready: waiting for Cluster from ads")) << ready;
  EXPECT_EQ(kill(d_.daemon_pid(), 0), 0) << "daemon must still run";
}

// As in a real mesh: istiod's 15012 over TLS with the service-account token
// and cluster id, a workload certificate from the Istio CA (CSR with the
// daemon's SPIFFE id, token-authenticated), and Aeraki's RDS port that
// requires that certificate. The test makes its own CA; the peers are
// go-control-plane servers and a CA speaking istio.io/api's real service.
TEST_F(XdsPeers, TlsTokenAndWorkloadCertificateAsInAMesh) {
  std::string dir = d_.dir();
  std::ofstream(dir + "/san.ext") << "subjectAltName=DNS:istiod.istio-system.svc\n";
  std::ofstream(dir + "/aeraki-san.ext") << "subjectAltName=DNS:aeraki.istio-system.svc\n";
  std::ofstream(dir + "/token") << "secret-token\n";
  std::ofstream(dir + "/wrong-token") << "not-the-token\n";
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            dir + "/root.key", "-out", dir + "/root.pem", "-days", "1", "-subj", "/O=metanode test mesh"},
           {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            dir + "/server.key", "-out", dir + "/server.csr", "-subj", "/O=istiod"},
           {"openssl", "x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/root.pem", "-CAkey",
            dir + "/root.key", "-CAcreateserial", "-out", dir + "/server.pem", "-days", "1", "-extfile",
            dir + "/san.ext"},
           // Aeraki's own certificate: its name, not istiod's.
           {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            dir + "/aeraki.key", "-out", dir + "/aeraki.csr", "-subj", "/O=aeraki"},
           {"openssl", "x509", "-req", "-in", dir + "/aeraki.csr", "-CA", dir + "/root.pem", "-CAkey",
            dir + "/root.key", "-CAcreateserial", "-out", dir + "/aeraki.pem", "-days", "1", "-extfile",
            dir + "/aeraki-san.ext"}})
    ASSERT_EQ(run(argv).status, 0) << argv[1];
  auto port_of = [&](const std::string& log) {
    auto out = slurp(dir + "/" + log + ".log");
    auto p = out.find("listening ");
    return p == std::string::npos ? 0 : std::stoi(out.substr(p + 10));
  };
  std::string spiffe = "spiffe://cluster.local/ns/metanode-system/sa/metanode";
  ASSERT_TRUE(d_.start_peer({METANODE_CA_PEER, "-cert", dir + "/server.pem", "-key", dir + "/server.key",
                             "-root-cert", dir + "/root.pem", "-root-key", dir + "/root.key", "-token",
                             "secret-token", "-identity", spiffe},
                            "ca", "listening "));
  write_resources(translate({service("thrift-sample-server", vip_port_)}));
  std::vector<std::string> tls = {"-tls-cert", dir + "/server.pem", "-tls-key", dir + "/server.key"};
  auto istiod = tls;
  istiod.insert(istiod.end(), {"-token", "secret-token", "-cluster-id", "Kubernetes"});
  std::vector<std::string> aeraki = {"-tls-cert", dir + "/aeraki.pem", "-tls-key", dir + "/aeraki.key",
                                     "-client-ca", dir + "/root.pem"};
  std::vector<std::string> plain;  // older Aeraki releases: RDS in plaintext
  for (auto [name, extra] :
       {std::pair{"istiod", istiod}, std::pair{"aeraki", aeraki}, std::pair{"aeraki-plain", plain}}) {
    std::vector<std::string> argv = {METANODE_XDS_SERVER_PEER, "-listen", "127.0.0.1:0", "-resources",
                                     resources_file()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_TRUE(d_.start_peer(argv, name, "listening ")) << name;
  }
  auto daemon_args = [&](const std::string& token, const std::string& aeraki_peer = "aeraki",
                         const std::string& aeraki_tls = "aeraki.istio-system.svc") {
    std::vector<std::string> a = {
        "--xds-address", "127.0.0.1:" + std::to_string(port_of("istiod")), "--xds-cluster",
        "aeraki-xds=127.0.0.1:" + std::to_string(port_of(aeraki_peer)), "--xds-root-cert", dir + "/root.pem",
        "--xds-server-name", "istiod.istio-system.svc", "--xds-token-file", dir + "/" + token, "--ca-address",
        "127.0.0.1:" + std::to_string(port_of("ca")), "--cert-ttl", "4"};
    if (!aeraki_tls.empty()) a.insert(a.end(), {"--xds-cluster-tls", "aeraki-xds=" + aeraki_tls});
    return a;
  };
  ASSERT_TRUE(d_.start(daemon_args("token"), false)) << d_.log() << slurp(dir + "/istiod.log")
                                                     << slurp(dir + "/aeraki.log") << slurp(dir + "/ca.log");
  EXPECT_EQ(calls(d_, 20, vip_port_).ok, 20);
  auto ca = slurp(dir + "/ca.log");
  EXPECT_TRUE(contains(ca, "CSR spiffe://cluster.local/ns/metanode-system/sa/default")) << ca;
  EXPECT_TRUE(contains(ca, "ISSUED " + spiffe + " 4s")) << ca;
  // Renewed at half its lifetime, with a new key and CSR each time.
  EXPECT_TRUE(eventually([&] { return count(slurp(dir + "/ca.log"), "ISSUED ") >= 3; }, 15s))
      << slurp(dir + "/ca.log") << d_.log();
  EXPECT_TRUE(contains(d_.log(), "workload certificate for spiffe://cluster.local/ns/metanode-system/sa/default renewed"));
  EXPECT_TRUE(contains(slurp(dir + "/aeraki.log"), "CLIENT " + spiffe)) << slurp(dir + "/aeraki.log");
  EXPECT_TRUE(contains(slurp(dir + "/aeraki.log"), "ACK type.googleapis.com/envoy.config.route.v3"));
  EXPECT_FALSE(contains(slurp(dir + "/istiod.log"), "DENIED"));

  // The wrong token: istiod and the CA refuse, the daemon never becomes ready.
  LocalDaemon other;
  EXPECT_FALSE(other.start(daemon_args("wrong-token"), false));
  EXPECT_TRUE(contains(slurp(dir + "/istiod.log"), "DENIED token")) << slurp(dir + "/istiod.log");
  EXPECT_TRUE(contains(other.admin("/ready"), "not ready: waiting for Cluster")) << other.admin("/ready");
  EXPECT_TRUE(contains(other.log(), "16 authentication failure")) << other.log();

  // Aeraki verified as istiod (no --xds-cluster-tls): its certificate does
  // not carry that name, so routes never come and the daemon is not ready.
  {
    LocalDaemon as_istiod;
    EXPECT_FALSE(as_istiod.start(daemon_args("token", "aeraki", ""), false));
    EXPECT_TRUE(contains(as_istiod.admin("/ready"), "RouteConfiguration from rds:aeraki-xds"))
        << as_istiod.admin("/ready");
  }

  // Aeraki in plaintext: routes come, and neither the token nor a client
  // certificate goes to it, while istiod still gets both over TLS. The
  // first daemon leaves the loopback "VIP" port to this one.
  kill(d_.daemon_pid(), SIGTERM);
  ASSERT_TRUE(eventually([&] { return d_.admin("/ready").empty(); }, 15s));
  LocalDaemon plaintext;
  ASSERT_TRUE(plaintext.start(daemon_args("token", "aeraki-plain", "plaintext"), false)) << plaintext.log();
  EXPECT_EQ(calls(plaintext, 20, vip_port_).ok, 20);
  auto plain_log = slurp(dir + "/aeraki-plain.log");
  EXPECT_TRUE(contains(plain_log, "STREAM /envoy.service.route.v3.RouteDiscoveryService/StreamRoutes "
                                  "authorization headers 0"))
      << plain_log;
  EXPECT_FALSE(contains(plain_log, "authorization headers 1")) << plain_log;
  EXPECT_FALSE(contains(plain_log, "CLIENT ")) << plain_log;
  EXPECT_TRUE(contains(slurp(dir + "/istiod.log"), "authorization headers 1"));
}

// A server that accepts and then says nothing (no HTTP/2 settings, no
// response): the stream is restarted after the first-response timeout, and
// again, never hanging on it.
TEST_F(XdsPeers, SilentServerStreamIsRestarted) {
  RawServer silent([](int) { return true; });  // open and silent
  EXPECT_FALSE(d_.start({"--xds-address", silent.address(), "--xds-first-response-timeout-ms", "500"}, false));
  EXPECT_TRUE(eventually([&] { return count(d_.log(), "no response in 500 ms, restarting the stream") >= 2; }, 20s))
      << d_.log();
  EXPECT_TRUE(contains(d_.admin("/ready"), "not ready: waiting for Cluster"));
  EXPECT_EQ(kill(d_.daemon_pid(), 0), 0);
}

// The other direction: metanode-xds read with go-control-plane's generated
// Envoy types and Aeraki's own MetaProtocolProxy type (unknown fields
// refused, Envoy's and Aeraki's validation rules applied).
TEST_F(XdsPeers, MetanodeXdsSpeaksRealEnvoyAndAerakiTypes) {
  int port = start_metanode_xds();
  ASSERT_GT(port, 0);
  std::string log = d_.dir() + "/go-client.log";
  auto pid = d_.processes().spawn({METANODE_XDS_CLIENT_PEER, "-server", "127.0.0.1:" + std::to_string(port),
                                   "-nack", "type.googleapis.com/envoy.config.listener.v3.Listener"},
                                  "", "", log);
  ASSERT_TRUE(pid);
  EXPECT_EQ(d_.processes().wait(*pid, 20000), 0) << slurp(log);
  auto out = slurp(log);
  std::string p = std::to_string(vip_port_);
  EXPECT_TRUE(contains(out, "RESPONSE ads type.googleapis.com/envoy.config.cluster.v3.Cluster "));
  EXPECT_TRUE(contains(out, "outbound|" + p + "|v1|" + kHost + ",outbound|" + p + "|v2|" + kHost +
                                ",outbound|" + p + "||" + kHost))
      << out;
  EXPECT_TRUE(contains(out, "envoy.config.listener.v3.Listener")) << out;
  EXPECT_TRUE(contains(out, "127.0.0.1_" + p));
  EXPECT_TRUE(contains(out, "RESPONSE rds type.googleapis.com/envoy.config.route.v3.RouteConfiguration"));
  EXPECT_TRUE(contains(out, std::string(kHost) + "_" + p));
  EXPECT_TRUE(contains(out, "SYNCED"));
  EXPECT_FALSE(contains(out, "ERROR")) << out;
  EXPECT_TRUE(contains(slurp(d_.dir() + "/metanode-xds.log"), "NACKed Listener"));
}

// An edit pushes each client only what changed: one RouteConfiguration,
// not the listeners, clusters and endpoints again.
TEST_F(XdsPeers, MetanodeXdsPushesOnlyWhatChanged) {
  int port = start_metanode_xds();
  ASSERT_GT(port, 0);
  std::string log = d_.dir() + "/go-client.log";
  auto pid = d_.processes().spawn(
      {METANODE_XDS_CLIENT_PEER, "-server", "127.0.0.1:" + std::to_string(port), "-updates", "1", "-timeout", "20s"},
      "", "", log);
  ASSERT_TRUE(pid);
  ASSERT_TRUE(eventually([&] { return contains(slurp(log), "SYNCED"); })) << slurp(log);
  d_.write_config("split.yaml", split(20, 80));
  EXPECT_EQ(d_.processes().wait(*pid, 20000), 0) << slurp(log);
  auto out = slurp(log);
  auto after = out.substr(out.find("SYNCED"));
  EXPECT_EQ(count(after, "RESPONSE "), 1u) << out;
  EXPECT_TRUE(contains(after, "RESPONSE rds type.googleapis.com/envoy.config.route.v3.RouteConfiguration")) << out;
}

// One metanode-xds, several daemons (one state of the world, one delta):
// each gets the configuration, and an edit reaches all of them.
TEST_F(XdsPeers, OneControlPlaneManyDaemons) {
  int port = start_metanode_xds();
  ASSERT_GT(port, 0);
  std::string xds = "127.0.0.1:" + std::to_string(port);
  // Two daemons bind the same loopback VIP (SO_REUSEPORT), as two nodes
  // would each bind their own.
  LocalDaemon other;
  ASSERT_TRUE(d_.start({"--xds-address", xds, "--node-id", "node-a"}, false)) << d_.log();
  ASSERT_TRUE(other.start({"--xds-address", xds, "--node-id", "node-b", "--xds-delta"}, false)) << other.log();
  auto t0 = std::chrono::steady_clock::now();
  d_.write_config("split.yaml", split(100, 0));
  for (auto* d : {&d_, &other})
    EXPECT_TRUE(eventually([&] { return contains(d->admin("/config_dump"), "traffic-split"); })) << d->log();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("edit reached both daemons in %lld ms\n", static_cast<long long>(ms));
  auto r = calls(d_, 40, vip_port_);
  EXPECT_EQ(r.by_server["thrift-sample-server-v1"], 40) << r.output;
  auto xlog = slurp(d_.dir() + "/metanode-xds.log");
  EXPECT_TRUE(contains(xlog, "node 'node-a'"));
  EXPECT_TRUE(contains(xlog, "node 'node-b'"));
}

}  // namespace
}  // namespace metanode::testbed
