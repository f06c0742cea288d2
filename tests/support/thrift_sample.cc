#include "thrift_sample.h"

#include "local_daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace metanode::testbed {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}


bool write_atomically(const std::string& dir, const std::string& name, const std::string& content) {
  // The watcher only reads *.yaml; a dot-file is invisible until renamed.
  std::string tmp = dir + "/." + name + ".tmp";
  {
    std::ofstream out(tmp);
    out << content;
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), (dir + "/" + name).c_str()) == 0;
}

constexpr int kClientHost = 10, kV1Host = 11, kV2Host = 12;

std::string service_yaml(const Testbed& tb) {
  std::ostringstream y;
  y << "apiVersion: networking.istio.io/v1beta1\n"
       "kind: ServiceEntry\n"
       "metadata:\n"
       "  name: thrift-sample-server\n"
       "  namespace: meta-thrift\n"
       "spec:\n"
       "  hosts:\n"
       "  - "
    << ThriftSample::kHost
    << "\n"
       "  addresses:\n"
       "  - "
    << ThriftSample::kVip
    << "\n"
       "  ports:\n"
       "  - number: "
    << ThriftSample::kPort
    << "\n"
       "    name: tcp-metaprotocol-thrift-hello-server\n"
       "    protocol: TCP\n"
       "  resolution: STATIC\n"
       "  location: MESH_INTERNAL\n"
       "  endpoints:\n"
       "  - address: "
    << tb.pod_ip(kV1Host)
    << "\n"
       "    labels: {app: thrift-sample-server, version: v1}\n"
       "  - address: "
    << tb.pod_ip(kV2Host)
    << "\n"
       "    labels: {app: thrift-sample-server, version: v2}\n"
       "---\n"
       "apiVersion: networking.istio.io/v1beta1\n"
       "kind: DestinationRule\n"
       "metadata:\n"
       "  name: thrift-sample-server\n"
       "  namespace: meta-thrift\n"
       "spec:\n"
       "  host: "
    << ThriftSample::kHost
    << "\n"
       "  subsets:\n"
       "  - name: v1\n"
       "    labels: {version: v1}\n"
       "  - name: v2\n"
       "    labels: {version: v2}\n";
  return y.str();
}

}  // namespace

SampleOptions sample_options_from_build() {
  SampleOptions o;
  o.metanoded = env_or("METANODE_DAEMON", METANODE_DAEMON_PATH);
  o.peers_dir = env_or("METANODE_PEERS_DIR", METANODE_PEERS_DIR);
  o.gen_py = env_or("METANODE_GEN_PY", METANODE_GEN_PY_DIR);
  return o;
}

// A MetaRouter for the sample host with the given routes (YAML list items).
std::string meta_router(const std::string& routes) {
  return std::string("apiVersion: metaprotocol.aeraki.io/v1alpha1\n"
                     "kind: MetaRouter\n"
                     "metadata:\n"
                     "  name: test-metaprotocol-thrift-route\n"
                     "  namespace: meta-thrift\n"
                     "spec:\n"
                     "  hosts:\n"
                     "  - ") +
         ThriftSample::kHost + "\n  routes:\n" + routes;
}

std::string ThriftSample::method_route_yaml() {
  std::string h = kHost;
  return meta_router("  - name: v1\n"
                     "    match:\n"
                     "      attributes:\n"
                     "        method:\n"
                     "          exact: sayHello\n"
                     "    route:\n"
                     "    - destination: {host: " + h + ", subset: v1}\n"
                     "  - name: default\n"
                     "    route:\n"
                     "    - destination: {host: " + h + "}\n");
}

std::string ThriftSample::split_route_yaml(int v1, int v2) {
  std::string h = kHost;
  return meta_router("  - name: traffic-split\n"
                     "    route:\n"
                     "    - destination: {host: " + h + ", subset: v1}\n"
                     "      weight: " + std::to_string(v1) + "\n"
                     "    - destination: {host: " + h + ", subset: v2}\n"
                     "      weight: " + std::to_string(v2) + "\n");
}

std::string ThriftSample::server_netns(const std::string& version) const {
  return Testbed::ns_path(tb_.tag() + "-server-" + version);
}

std::string ThriftSample::server_ip(const std::string& version) const {
  return tb_.pod_ip(version == "v1" ? kV1Host : kV2Host);
}

Result<std::unique_ptr<ThriftSample>> ThriftSample::start(Testbed& tb, const SampleOptions& opts) {
  std::unique_ptr<ThriftSample> s(new ThriftSample(tb));
  s->opts_ = opts;
  setenv("METANODE_GEN_PY", opts.gen_py.c_str(), 1);  // inherited by the Python peers

  auto client = tb.add_pod("client", kClientHost);
  if (!client) return client.error();
  s->client_ns_ = *client;
  for (const auto& [ver, host] : {std::pair{"v1", kV1Host}, std::pair{"v2", kV2Host}}) {
    auto ns = tb.add_pod(std::string("server-") + ver, host);
    if (!ns) return ns.error();
    auto pid = tb.spawn({"/usr/bin/python3", opts.peers_dir + "/server.py", "--port",
                         std::to_string(kPort), "--name", std::string("thrift-sample-server-") + ver,
                         "--ip", tb.pod_ip(host)},
                        *ns, opts.servers_in_pods_cgroup ? tb.pods_cgroup() : "",
                        tb.work_dir() + "/server-" + ver + ".log");
    if (!pid) return pid.error();
  }

  // A kube-proxy stand-in: without interception the VIP leads straight to
  // the v1 pod, as a ClusterIP would. Interception must win over it, and a
  // dead daemon must fall back to it (fail open).
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"ip", "-n", tb.tag() + "-server-v1", "addr", "add", std::string(kVip) + "/32", "dev", "lo"},
           {"ip", "-n", tb.tag() + "-node", "route", "add", std::string(kVip) + "/32", "via",
            tb.pod_ip(kV1Host)}})
    if (run(argv).status != 0) return Error::invalid("cannot route the VIP for the fallback path");
  if (run({"sysctl", "-qw", "net.ipv4.ip_forward=1"}, tb.node_ns()).status != 0)
    return Error::invalid("cannot enable forwarding in the node namespace");

  s->config_dir_ = tb.work_dir() + "/config";
  if (mkdir(s->config_dir_.c_str(), 0755) != 0) return Error::errno_error("mkdir config");
  if (!write_atomically(s->config_dir_, "thrift-sample.yaml", service_yaml(tb)))
    return Error::errno_error("write config");

  std::vector<std::string> argv = {opts.metanoded,
                                   "--config-dir", s->config_dir_,
                                   "--cgroup", tb.cgroup(),
                                   "--redirect-address", tb.node_ip() + ":15001",
                                   "--pin-dir", tb.pin_dir(),
                                   "--admin-address", "127.0.0.1:15000"};
  if (!opts.skmsg) argv.push_back("--no-skmsg");
  if (opts.skmsg_upstream) argv.push_back("--skmsg-upstream");
  argv.insert(argv.end(), opts.daemon_args.begin(), opts.daemon_args.end());
  s->daemon_argv_ = argv;
  auto d = tb.spawn(argv, tb.node_ns(), tb.daemon_cgroup(), tb.work_dir() + "/metanoded.log");
  if (!d) return d.error();
  s->daemon_ = *d;

  // Ready when the admin says so and both servers listen.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    auto r = http_get(tb.node_ns(), "127.0.0.1:15000", "/ready", &status);
    bool servers = s->server_log("v1").find("listening") != std::string::npos &&
                   s->server_log("v2").find("listening") != std::string::npos;
    if (r && status == 200 && servers) return s;
    if (tb.wait(s->daemon_, 0) >= 0)
      return Error::invalid("metanoded exited during start-up:\n" + s->daemon_log());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Error::invalid("sample did not become ready in 15 s; daemon log:\n" + s->daemon_log());
}

std::string ThriftSample::admin(const std::string& path) {
  return http_get(tb_.node_ns(), "127.0.0.1:15000", path).value_or("");
}

std::string ThriftSample::config_version() {
  std::string dump = admin("/config_dump");
  auto p = dump.find("\"version_info\":\"");
  if (p == std::string::npos) return "";
  p += 16;
  return dump.substr(p, dump.find('"', p) - p);
}

Result<void> ThriftSample::set_meta_router(const std::string& yaml) {
  std::string before = config_version();
  std::string path = config_dir_ + "/metarouter.yaml";
  if (yaml.empty()) {
    if (unlink(path.c_str()) != 0) return Ok();  // nothing to remove: config unchanged
  } else if (!write_atomically(config_dir_, "metarouter.yaml", yaml)) {
    return Error::errno_error("write metarouter.yaml");
  }
  for (int i = 0; i < 100; ++i) {
    std::string now = config_version();
    if (!now.empty() && now != before) return Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Error::invalid("daemon did not apply the new MetaRouter within 5 s:\n" + daemon_log());
}

Result<ClientSummary> ThriftSample::run_client(int calls, const std::string& method, bool quiet) {
  std::vector<std::string> args = {"--calls", std::to_string(calls), "--method", method};
  if (quiet) args.push_back("--quiet");
  auto c = start_client(args);
  if (!c) return c.error();
  return finish_client(*c);
}

Result<ThriftSample::RunningClient> ThriftSample::start_client(const std::vector<std::string>& args) {
  std::string log = tb_.work_dir() + "/client-" + std::to_string(rand()) + ".log";
  std::vector<std::string> argv = {"/usr/bin/python3", opts_.peers_dir + "/client.py", "--port",
                                   std::to_string(kPort)};
  if (std::find(args.begin(), args.end(), "--host") == args.end()) {
    argv.push_back("--host");
    argv.push_back(kVip);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  auto pid = tb_.spawn(argv, client_ns_, tb_.pods_cgroup(), log);
  if (!pid) return pid.error();
  return RunningClient{*pid, log};
}

ClientSummary ThriftSample::finish_client(const RunningClient& c, int timeout_ms) {
  int status = tb_.wait(c.pid, timeout_ms);
  return parse_summary(slurp(c.log), status);
}

std::map<std::string, uint64_t> ThriftSample::bpf_counters() {
  std::map<std::string, uint64_t> out;
  std::istringstream in(admin("/stats/prometheus"));
  std::string line;
  const std::string prefix = "metanode_bpf_events_total{event=\"";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    auto q = line.find('"', prefix.size());
    out[line.substr(prefix.size(), q - prefix.size())] = std::stoull(line.substr(line.rfind(' ') + 1));
  }
  return out;
}

std::string ThriftSample::server_log(const std::string& version) {
  return slurp(tb_.work_dir() + "/server-" + version + ".log");
}

std::string ThriftSample::daemon_log() { return slurp(tb_.work_dir() + "/metanoded.log"); }

}  // namespace metanode::testbed
