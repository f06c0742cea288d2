// The kernel side, complete (root; test-made namespaces and cgroups only).
// Where a connection lands is observed with netprobe: connects the daemon
// intercepts end at metanoded, which closes them (a netprobe "PING" is not
// Thrift); connects left alone reach a netprobe server that answers with
// the peer address it saw. A kube-proxy stand-in routes the service VIPs to
// the server pod, as a ClusterIP would, so "untouched" is observable too.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/json.hpp>

#include "local_daemon.h"
#include "metanode/bpf/maps.h"
#include "root_guard.h"
#include "testbed.h"

namespace metanode::testbed {
namespace {

namespace json = boost::json;
constexpr char kVip[] = "10.96.0.10";
constexpr int kClient = 10, kOptOut = 13, kServer = 11;

class Interception : public ::testing::Test {
 protected:
  void SetUp() override {
    METANODE_REQUIRE_ROOT();
    auto tb = Testbed::create("interception", "10.78");
    ASSERT_TRUE(tb) << tb.error().message();
    tb_ = std::move(tb.value());
    auto c = tb_->add_pod("client", kClient);
    auto o = tb_->add_pod("optout", kOptOut);
    auto s = tb_->add_pod("server", kServer);
    ASSERT_TRUE(c && o && s);
    client_ns_ = *c;
    optout_ns_ = *o;
    server_ns_ = *s;
    // kube-proxy stand-in: the VIP lives on the server pod, the node routes to it.
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {"ip", "-n", tb_->tag() + "-server", "addr", "add", std::string(kVip) + "/32", "dev", "lo"},
             {"ip", "-n", tb_->tag() + "-node", "route", "add", std::string(kVip) + "/32", "via",
              tb_->pod_ip(kServer)}})
      ASSERT_EQ(run(argv).status, 0);
    ASSERT_EQ(run({"sysctl", "-qw", "net.ipv4.ip_forward=1"}, tb_->node_ns()).status, 0);
    ASSERT_TRUE(tb_->spawn({METANODE_NETPROBE, "serve", "--port", "9090,9091,9092", "--name", "direct"},
                           server_ns_, "", tb_->work_dir() + "/direct.log"));
    // A host-netns server on loopback, for the "host processes untouched" case.
    host_port_ = free_port();
    ASSERT_TRUE(tb_->spawn({METANODE_NETPROBE, "serve", "--port", std::to_string(host_port_), "--bind",
                            "127.0.0.1", "--name", "host-direct"},
                           "", "", tb_->work_dir() + "/host.log"));
    config_dir_ = tb_->work_dir() + "/config";
    ASSERT_EQ(mkdir(config_dir_.c_str(), 0755), 0);
    std::ofstream(config_dir_ + "/svc.yaml") << service("mesh", kVip, 9090, tb_->pod_ip(kServer), 9090)
                                              << "---\n"
                                              << service("excluded", kVip, 9092, tb_->pod_ip(kServer), 9092)
                                              << "---\n"
                                              << service("loopback", "127.0.0.1", host_port_, "127.0.0.1", 1);
    for (int i = 0; i < 100 && !ready("direct.log") ; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    start_daemon();
  }

  static std::string service(const std::string& name, const std::string& vip, int port,
                             const std::string& ep, int ep_port) {
    return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
           "metadata: {name: " + name + ", namespace: t}\n"
           "spec:\n  hosts: [" + name + ".t.svc.cluster.local]\n  addresses: [" + vip + "]\n"
           "  ports: [{number: " + std::to_string(port) + ", name: tcp-metaprotocol-thrift-p}]\n"
           "  endpoints: [{address: " + ep + ", ports: {tcp-metaprotocol-thrift-p: " +
           std::to_string(ep_port) + "}}]\n";
  }

  bool ready(const std::string& log) {
    return slurp(tb_->work_dir() + "/" + log).find("listening") != std::string::npos;
  }

  // `wrap`: a command the daemon runs under (e.g. setpriv).
  void start_daemon(std::vector<std::string> extra = {}, std::vector<std::string> wrap = {}) {
    std::vector<std::string> argv = wrap;
    argv.insert(argv.end(), {sample_options_from_build().metanoded, "--config-dir", config_dir_,
                                     "--cgroup", tb_->cgroup(), "--redirect-address",
                                     tb_->node_ip() + ":15001", "--pin-dir", tb_->pin_dir(),
                                     "--admin-address", "127.0.0.1:15000", "--exclude-ports", "9092"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto pid = tb_->spawn(argv, tb_->node_ns(), tb_->daemon_cgroup(),
                          tb_->work_dir() + "/metanoded-" + std::to_string(++daemons_) + ".log");
    ASSERT_TRUE(pid);
    daemon_ = *pid;
    for (int i = 0; i < 250; ++i) {
      int status = 0;
      auto r = http_get(tb_->node_ns(), "127.0.0.1:15000", "/ready", &status);
      if (r && status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "daemon not ready: " << slurp(tb_->work_dir() + "/metanoded-" + std::to_string(daemons_) + ".log");
  }

  void stop_daemon(int sig) {
    kill(daemon_, sig);
    ASSERT_GE(tb_->wait(daemon_, 5000), 0);
  }

  // One probe connection from `netns` (in the pods cgroup unless `cgroup` given).
  std::string probe(const std::string& netns, const std::string& target, std::vector<std::string> extra = {},
                    std::string cgroup = "") {
    std::vector<std::string> argv = {METANODE_NETPROBE, "connect", target};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = tb_->exec(argv, netns, cgroup.empty() ? tb_->pods_cgroup() : cgroup, 10000);
    return r.out;
  }

  std::map<std::string, uint64_t> counters() {
    std::map<std::string, uint64_t> out;
    auto maps = bpf::open_pinned(tb_->pin_dir());
    if (!maps) return out;
    if (auto c = (*maps)->counters())
      for (const auto& x : *c) out[x.name] = x.value;
    return out;
  }

  std::string vip(int port) { return std::string(kVip) + ":" + std::to_string(port); }

  std::unique_ptr<Testbed> tb_;
  std::string client_ns_, optout_ns_, server_ns_, config_dir_;
  int host_port_ = 0, daemons_ = 0;
  pid_t daemon_ = -1;
};

bool intercepted(const std::string& out) { return out.find("closed") != std::string::npos; }
bool direct_from(const std::string& out, const std::string& ip) {
  return out.find("reply direct " + ip + ":") != std::string::npos;
}

TEST_F(Interception, OnlyManagedPodsToMeshServicesAreRedirected) {
  auto c0 = counters();
  std::string a = tb_->pod_ip(kClient);
  // Mesh service from a managed pod: lands on the daemon; the pod still sees the VIP.
  std::string out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(intercepted(out)) << out;
  EXPECT_NE(out.find("peer " + vip(9090)), std::string::npos) << "getpeername shows the VIP: " << out;
  // The same over a dual-stack socket (v4-mapped IPv6): connect6 + getpeername6.
  out = probe(client_ns_, vip(9090), {"--v6"});
  EXPECT_TRUE(intercepted(out)) << out;
  EXPECT_NE(out.find("peer ::ffff:" + vip(9090)), std::string::npos) << out;
  // Not a mesh service (no ServiceEntry for 9091): untouched.
  out = probe(client_ns_, vip(9091));
  EXPECT_TRUE(direct_from(out, a)) << out;
  // Excluded port (--exclude-ports 9092) of a mesh VIP: untouched.
  out = probe(client_ns_, vip(9092));
  EXPECT_TRUE(direct_from(out, a)) << out;
  // A pod that opted out: untouched.
  auto r = run({METANODE_CTL, "pod", "add", optout_ns_, "--opt-out", "--pin-dir", tb_->pin_dir()});
  ASSERT_EQ(r.status, 0) << r.out;
  out = probe(optout_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kOptOut))) << out;
  // A host process, even inside the attached cgroup, to a mesh VIP on loopback: untouched.
  out = probe("", "127.0.0.1:" + std::to_string(host_port_));
  EXPECT_NE(out.find("reply host-direct 127.0.0.1:"), std::string::npos) << out;

  auto c1 = counters();
  EXPECT_EQ(c1["redirected"] - c0["redirected"], 2u);
  EXPECT_GE(c1["skip_not_service"] - c0["skip_not_service"], 1u);
  EXPECT_EQ(c1["skip_excluded_port"] - c0["skip_excluded_port"], 1u);
  EXPECT_EQ(c1["skip_not_pod"] - c0["skip_not_pod"], 1u);
  EXPECT_EQ(c1["skip_host_netns"] - c0["skip_host_netns"], 1u);
  EXPECT_GE(c1["getpeername_rewrite"] - c0["getpeername_rewrite"], 2u);
}

TEST_F(Interception, ListedPodModeInterceptsOnlyRegisteredPods) {
  stop_daemon(SIGTERM);
  start_daemon({"--pods", "listed"});
  std::string out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kClient))) << "not registered yet: " << out;
  auto r = run({METANODE_CTL, "pod", "add", client_ns_, "--pin-dir", tb_->pin_dir()});
  ASSERT_EQ(r.status, 0) << r.out;
  out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(intercepted(out)) << out;
}

// In a cluster the runtime keeps one netns file per pod sandbox; the daemon
// learns pods from them (here: this testbed's namespaces named ...-client).
TEST_F(Interception, PodsLearnedFromTheRuntimesNetnsFiles) {
  stop_daemon(SIGTERM);
  start_daemon({"--pods", "netns-dir=/run/netns:" + tb_->tag() + "-client"});
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090)))) << "client pod learned at start";
  std::string out = probe(optout_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kOptOut))) << "not matching the prefix: " << out;
}

// A pod object as `kubectl get pod -o json` prints it (the kubectl fixture),
// renamed into `ns` on node-a with `ip` and, when given, the enrollment label.
std::string kube_pod(const std::string& name, const std::string& ns, const std::string& ip,
                     const std::string& mode = "") {
  json::value v = json::parse(slurp(METANODE_KUBE_DATA "/pod.json"));
  auto& meta = v.as_object()["metadata"].as_object();
  meta["name"] = name;
  meta["namespace"] = ns;
  meta.erase("uid");
  if (!mode.empty()) meta["labels"].as_object()["istio.io/dataplane-mode"] = mode;
  v.as_object()["spec"].as_object()["nodeName"] = "node-a";
  v.as_object()["status"].as_object()["podIP"] = ip;
  v.as_object()["status"].as_object()["podIPs"] = json::array{json::object{{"ip", ip}}};
  return json::serialize(v);
}

// In a cluster: this node's pods from the API server (tests/peers/kube, the
// protocol of kube-apiserver, in the node's namespace), enrolled by label,
// found on the node as the runtime's netns file that holds the pod's IP.
TEST_F(Interception, PodsFromTheKubernetesApiAreEnrolledByLabelAndLeaveWhenDeleted) {
  stop_daemon(SIGTERM);
  std::string w = tb_->work_dir();
  std::ofstream(w + "/token") << "node-token\n";
  ASSERT_TRUE(tb_->spawn({METANODE_KUBE_API_PEER, "--tls-dir", w, "--token-file", w + "/token", "--addr-file",
                          w + "/api.addr"},
                         tb_->node_ns(), "", w + "/kubeapi.log"));
  ASSERT_TRUE(eventually([&] { return !slurp(w + "/api.addr").empty(); })) << slurp(w + "/kubeapi.log");
  std::istringstream addrs(slurp(w + "/api.addr"));
  std::string api, control;
  addrs >> api >> control;
  auto apply = [&](const std::string& obj) {
    int status = 0;
    auto r = http_request(tb_->node_ns(), control, "POST", "/control/apply", obj, &status);
    ASSERT_EQ(status, 200) << r.value_or("no answer");
  };
  apply(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"apps","labels":{"istio.io/dataplane-mode":"metanode"}}})");
  apply(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"plain"}})");
  apply(kube_pod("client", "apps", tb_->pod_ip(kClient)));
  apply(kube_pod("optout", "apps", tb_->pod_ip(kOptOut), "none"));
  start_daemon({"--pods", "kubernetes", "--kube-api", "https://" + api, "--kube-token-file", w + "/token",
                "--kube-ca-file", w + "/ca.crt", "--node-name", "node-a", "--netns-dir",
                "/run/netns:" + tb_->tag() + "-"});
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090)))) << "enrolled by its namespace's label";
  std::string out = probe(optout_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kOptOut))) << "opted out by its own label: " << out;
  auto metrics = [&] { return http_get(tb_->node_ns(), "127.0.0.1:15000", "/stats/prometheus").value_or(""); };
  EXPECT_EQ(metric(metrics(), "metanode_pod_netns{state=\"managed\"}"), 1u) << metrics();
  // /explain knows the pod behind an address and what the kernel does with it.
  auto explain = [&](const std::string& src) {
    return http_get(tb_->node_ns(), "127.0.0.1:15000", "/explain?dst=" + vip(9090) + "&src=" + src).value_or("");
  };
  std::string why = explain(tb_->pod_ip(kClient));
  EXPECT_NE(why.find("redirected to the daemon: " + vip(9090) + " is a mesh service and pod apps/client (netns cookie"),
            std::string::npos) << why;
  why = explain(tb_->pod_ip(kOptOut));
  EXPECT_NE(why.find("pod apps/optout (netns cookie"), std::string::npos) << why;
  EXPECT_NE(why.find("is not managed (not enrolled"), std::string::npos) << why;

  // Deleted (a watch event): its namespace leaves mn_pods, connects go direct.
  int status = 0;
  http_request(tb_->node_ns(), control, "POST", "/control/delete?kind=Pod&namespace=apps&name=client", "", &status);
  ASSERT_EQ(status, 200);
  EXPECT_TRUE(eventually([&] { return direct_from(probe(client_ns_, vip(9090)), tb_->pod_ip(kClient)); }));
  // Back in a namespace without the label: not enrolled until the pod has it.
  apply(kube_pod("client", "plain", tb_->pod_ip(kClient)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kClient))) << out;
  apply(kube_pod("client", "plain", tb_->pod_ip(kClient), "metanode"));
  EXPECT_TRUE(eventually([&] { return intercepted(probe(client_ns_, vip(9090))); }));
  EXPECT_NE(slurp(w + "/metanoded-" + std::to_string(daemons_) + ".log")
                .find("pod plain/client enrolled: pod label istio.io/dataplane-mode=metanode"),
            std::string::npos);
}

// The daemon's upstream connects carry SO_MARK: even to a mesh VIP they are
// never sent back to the daemon.
TEST_F(Interception, DaemonsOwnConnectsAreNeverRedirected) {
  // A second service whose only endpoint is the first service's VIP.
  std::ofstream(config_dir_ + "/chain.yaml") << service("chain", "10.96.0.20", 9090, kVip, 9090);
  for (int i = 0; i < 200; ++i) {  // until the watcher has applied it
    auto dump = http_get(tb_->node_ns(), "127.0.0.1:15000", "/config_dump");
    if (dump && dump->find("10.96.0.20_9090") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto c0 = counters();
  auto gen = sample_options_from_build();
  setenv("METANODE_GEN_PY", gen.gen_py.c_str(), 1);
  // A real Thrift call makes the daemon connect upstream to 10.96.0.10:9090.
  tb_->exec({"/usr/bin/python3", gen.peers_dir + "/client.py", "--host", "10.96.0.20", "--port", "9090",
             "--calls", "1", "--quiet"},
            client_ns_, tb_->pods_cgroup(), 15000);
  auto c1 = counters();
  EXPECT_EQ(c1["redirected"] - c0["redirected"], 1u) << "only the client's connect";
  EXPECT_GE(c1["skip_daemon_sock"] - c0["skip_daemon_sock"], 1u);
  EXPECT_NE(slurp(tb_->work_dir() + "/direct.log").find("conn " + tb_->node_ip() + ":"), std::string::npos)
      << "the daemon reached the VIP's real backend directly";
}

TEST_F(Interception, StopFailsOpenRestartResumesWithThePinnedMaps) {
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090))));
  auto before = run({"bpftool", "-j", "map", "show", "pinned", tb_->pin_dir() + "/mn_services"});
  ASSERT_EQ(before.status, 0);

  // Clean stop: redirection is switched off at once.
  stop_daemon(SIGTERM);
  std::string out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kClient))) << out;

  // Restart: the new daemon adopts the pinned maps (same map id) and
  // interception resumes.
  start_daemon();
  auto after = run({"bpftool", "-j", "map", "show", "pinned", tb_->pin_dir() + "/mn_services"});
  auto id = [](const std::string& j) { return j.substr(0, j.find(',')); };
  EXPECT_EQ(id(after.out), id(before.out)) << "maps adopted, not recreated";
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090))));

  // Crash: within one second of the last heartbeat pods go direct.
  stop_daemon(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kClient))) << out;
  EXPECT_GE(counters()["skip_daemon_down"], 1u);
}

// Upgrade with --handover: pods connecting in a loop while a second daemon
// takes over are intercepted every time (no bypass, no refusal), and the
// old daemon's SIGTERM afterwards does not fail them open.
TEST_F(Interception, HandoverUpgradeNeverBypassesOrRefuses) {
  std::string name = "@metanode-test-" + tb_->tag();
  stop_daemon(SIGTERM);
  start_daemon({"--handover", name});
  pid_t old = daemon_;
  ASSERT_TRUE(intercepted(probe(client_ns_, vip(9090))));
  std::atomic<bool> stop{false};
  std::atomic<int> good{0}, bad{0};
  std::string last_bad;  // written by the loop, read after it is joined
  std::thread loop([&] {
    while (!stop) {
      std::string out = probe(client_ns_, vip(9090));
      if (intercepted(out)) ++good;
      else {
        ++bad;
        last_bad = out;
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  start_daemon({"--handover", name});  // /ready answers at once: the old one holds the port
  std::string old_log = tb_->work_dir() + "/metanoded-" + std::to_string(daemons_ - 1) + ".log";
  bool handed = false;
  for (int i = 0; i < 500 && !handed; ++i) {
    handed = slurp(old_log).find("handed over; drained") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(old, SIGTERM);
  EXPECT_EQ(tb_->wait(old, 5000), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the liveness window
  stop = true;
  loop.join();
  EXPECT_TRUE(handed) << slurp(old_log);
  EXPECT_GT(good.load(), 20);
  EXPECT_EQ(bad.load(), 0) << "a probe went direct or failed: " << last_bad;
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090))));
}

// No open proxy: a pod that dials the daemon's own address (not a
// redirected connect) names no service, so it is closed and nothing is
// dialled on its behalf.
TEST_F(Interception, DirectConnectToTheDaemonIsClosedNotProxied) {
  std::string out = probe(client_ns_, tb_->node_ip() + ":15001");
  EXPECT_TRUE(intercepted(out)) << out;
  auto m = http_get(tb_->node_ns(), "127.0.0.1:15000", "/stats/prometheus");
  ASSERT_TRUE(m);
  EXPECT_EQ(metric(*m, "metanode_downstream_cx_no_orig_dst_total"), 1u);
  EXPECT_EQ(metric(*m, "metanode_upstream_cx_total"), 0u);
}

// With interception the daemon keeps SO_MARK's capability (and CAP_BPF
// only on kernels that check it for map writes), nothing else, and
// interception keeps working under the sandbox.
TEST_F(Interception, DaemonKeepsOnlyTheCapabilitiesInterceptionNeeds) {
  constexpr uint64_t kBind = uint64_t(1) << 10, kNetAdmin = uint64_t(1) << 12, kBpf = uint64_t(1) << 39;
  uint64_t eff = proc_caps(daemon_, "CapEff");
  EXPECT_NE(eff & kNetAdmin, 0u) << proc_status(daemon_, "CapEff");
  EXPECT_EQ(eff & ~(kBind | kNetAdmin | kBpf), 0u) << proc_status(daemon_, "CapEff");
  EXPECT_EQ(proc_caps(daemon_, "CapBnd") & ~(kBind | kNetAdmin | kBpf), 0u) << proc_status(daemon_, "CapBnd");
  EXPECT_EQ(proc_status(daemon_, "NoNewPrivs"), "1");
#ifndef METANODE_SANITIZED  // no filter there: LeakSanitizer needs ptrace
  EXPECT_EQ(proc_status(daemon_, "Seccomp"), "2");
#endif
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090))));
}

// The capabilities the chart's DaemonSet adds (its rendered manifest,
// helm/rendered/metanode.yaml) as setpriv names them: "- BPF" -> "+bpf".
std::string chart_capabilities() {
  std::ifstream f(METANODE_RENDERED_CHART);
  std::string line, caps = "-all";
  bool in_add = false;
  while (std::getline(f, line)) {
    auto t = line.substr(std::min(line.size(), line.find_first_not_of(' ')));
    if (t.rfind("add:", 0) == 0) {
      in_add = true;
      continue;
    }
    if (!in_add || t.empty() || t[0] == '#') continue;
    if (t.rfind("- ", 0) != 0) break;
    std::string cap = t.substr(2);
    for (auto& ch : cap) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    caps += ",+" + cap;
  }
  return caps;
}

// What the chart grants is enough: from nothing pinned, the daemon loads,
// attaches and intercepts as root holding only the capabilities the
// DaemonSet adds (the bounding set caps what root gets at exec, as the
// container runtime does). Without NET_ADMIN the attach fails; without BPF
// the load does.
TEST_F(Interception, ChartsCapabilitiesAreEnoughToLoadAndIntercept) {
  std::string caps = chart_capabilities();
  ASSERT_NE(caps.find("+bpf"), std::string::npos) << caps;
  stop_daemon(SIGTERM);
  auto r = run({sample_options_from_build().metanoded, "--uninstall", "--pin-dir", tb_->pin_dir()});
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(direct_from(probe(client_ns_, vip(9090)), tb_->pod_ip(kClient)));
  start_daemon({}, {"/usr/bin/setpriv", "--bounding-set", caps, "--"});
  EXPECT_TRUE(intercepted(probe(client_ns_, vip(9090)))) << caps;
}

TEST_F(Interception, UninstallLeavesNoPinLinkOrAttachment) {
  auto progs = run({"bpftool", "cgroup", "show", tb_->cgroup()});
  ASSERT_NE(progs.out.find("mn_connect4"), std::string::npos) << progs.out;
  stop_daemon(SIGTERM);
  auto r = run({sample_options_from_build().metanoded, "--uninstall", "--pin-dir", tb_->pin_dir()});
  ASSERT_EQ(r.status, 0) << r.out;
  struct stat st {};
  EXPECT_NE(stat(tb_->pin_dir().c_str(), &st), 0) << "pin directory removed";
  progs = run({"bpftool", "cgroup", "show", tb_->cgroup()});
  EXPECT_EQ(progs.out.find("mn_"), std::string::npos) << "still attached: " << progs.out;
  std::string out = probe(client_ns_, vip(9090));
  EXPECT_TRUE(direct_from(out, tb_->pod_ip(kClient))) << out;
}

// 100k short connections through interception leave no entries behind:
// tuples are consumed at accept, sockets leave the sockhash when they close,
// socket storage dies with its socket.
TEST_F(Interception, HundredThousandConnectionsLeaveTheMapsEmpty) {
  const int n = 100000;
  auto c0 = counters();
  auto t0 = std::chrono::steady_clock::now();
  auto r = tb_->exec({METANODE_NETPROBE, "churn", vip(9090), "--count", std::to_string(n)}, client_ns_,
                     tb_->pods_cgroup(), 600000);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.status, 0) << r.out;
  auto c1 = counters();
  EXPECT_EQ(c1["redirected"] - c0["redirected"], uint64_t(n));
  EXPECT_EQ(c1["sockops_passive"] - c0["sockops_passive"], uint64_t(n));
  auto maps = bpf::open_pinned(tb_->pin_dir());
  ASSERT_TRUE(maps);
  size_t tuples = 0, socks = 0;
  for (int i = 0; i < 100; ++i) {  // the daemon closes its ends asynchronously
    tuples = (*maps)->pending_tuples().value();
    socks = (*maps)->sockets().value().size();
    if (tuples == 0 && socks == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(tuples, 0u);
  EXPECT_EQ(socks, 0u);
  std::cout << "[ numbers ] " << n << " intercepted connections in " << secs << " s; after: "
            << tuples << " tuples, " << socks << " sockhash entries\n";
}

// The kernel side without metanoded: this test installs the programs and
// plays the daemon (config, heartbeat), with netprobe listening at the
// redirect address asking getsockopt(SO_ORIGINAL_DST) like iptables-era tools.
TEST(KernelOnly, SoOriginalDstIsAnsweredOnTheAcceptedSocket) {
  METANODE_REQUIRE_ROOT();
  auto tb = Testbed::create("kernel-only", "10.79");
  ASSERT_TRUE(tb) << tb.error().message();
  auto client = (*tb)->add_pod("client", kClient);
  ASSERT_TRUE(client);
  bpf::InstallOptions io;
  io.cgroup_path = (*tb)->cgroup();
  io.pin_dir = (*tb)->pin_dir();
  auto inst = bpf::install_kernel(io);
  ASSERT_TRUE(inst) << inst.error().message();
  ASSERT_TRUE(inst->getsockopt) << inst->notes;
  auto& maps = *inst->maps;
  bpf::RuntimeConfig rc;
  rc.redirect = *net::parse_endpoint((*tb)->node_ip() + ":15001");
  ASSERT_TRUE(maps.configure(rc));
  ASSERT_TRUE(maps.upsert_service(*net::parse_endpoint(std::string(kVip) + ":9090"), 1));
  std::atomic<bool> stop{false};
  std::thread beat([&] {
    while (!stop) {
      (void)maps.heartbeat();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  auto pid = (*tb)->spawn({METANODE_NETPROBE, "accept", "--listen", (*tb)->node_ip() + ":15001"},
                          (*tb)->node_ns(), (*tb)->daemon_cgroup(), (*tb)->work_dir() + "/accept.log");
  ASSERT_TRUE(pid);
  for (int i = 0; i < 100 && slurp((*tb)->work_dir() + "/accept.log").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto r = (*tb)->exec({METANODE_NETPROBE, "connect", std::string(kVip) + ":9090"}, *client,
                       (*tb)->pods_cgroup(), 10000);
  stop = true;
  beat.join();
  EXPECT_NE(r.out.find("reply accepted"), std::string::npos) << r.out;
  (*tb)->wait(*pid, 3000);
  std::string log = slurp((*tb)->work_dir() + "/accept.log");
  EXPECT_NE(log.find("orig=" + std::string(kVip) + ":9090"), std::string::npos) << log;
}

}  // namespace
}  // namespace metanode::testbed
