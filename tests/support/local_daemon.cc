#include "local_daemon.h"

#include <arpa/inet.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace metanode::testbed {

int bind_loopback(int& port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  port = ntohs(sa.sin_port);
  return fd;
}

// A port for something another process will bind later: below the
// ephemeral range, so no client socket of a test running alongside (some
// open thousands) can take it as its source port in the meantime.
int free_port() {
  static thread_local std::mt19937 rng(std::random_device{}() ^ uint32_t(getpid()));
  int low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low;
  int lo = 10000, hi = std::max(lo + 1000, low) - 1;
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = lo + int(rng() % uint32_t(hi - lo + 1));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    if (fd >= 0) close(fd);
    if (ok) return port;
  }
  int port = 0;  // a crowded range: fall back to the kernel's choice
  int fd = bind_loopback(port);
  if (fd >= 0) close(fd);
  return port;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t metric(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + " ", 0) == 0) return std::stoull(line.substr(name.size() + 1));
  return ~0ull;
}

ClientSummary parse_summary(const std::string& output, int status) {
  ClientSummary s;
  s.status = status;
  s.output = output;
  auto p = output.find("SUMMARY ");
  if (p == std::string::npos) return s;
  std::string json = output.substr(p + 8, output.find('\n', p) - p - 8);
  google::protobuf::Struct st;
  if (!google::protobuf::util::JsonStringToMessage(json, &st).ok()) return s;
  const auto& f = st.fields();
  auto num = [&](const char* k) { return f.count(k) ? int(f.at(k).number_value()) : 0; };
  s.calls = num("calls");
  s.ok = num("ok");
  s.errors = num("errors");
  s.switches = num("switches");
  s.transport_errors = num("transport_errors");
  s.ok_after_last_error = num("ok_after_last_error");
  if (f.count("by_server"))
    for (const auto& [k, v] : f.at("by_server").struct_value().fields()) s.by_server[k] = int(v.number_value());
  if (f.count("by_method_server"))
    for (const auto& [k, v] : f.at("by_method_server").struct_value().fields())
      s.by_method_server[k] = int(v.number_value());
  if (f.count("error_messages") && f.at("error_messages").list_value().values_size() > 0)
    s.first_error = f.at("error_messages").list_value().values(0).string_value();
  if (f.count("replies"))
    for (const auto& v : f.at("replies").list_value().values()) s.replies.push_back(v.string_value());
  return s;
}

LocalDaemon::LocalDaemon() {
  char tmpl[] = "/tmp/metanode-local-XXXXXX";
  if (mkdtemp(tmpl)) dir_ = tmpl;
  mkdir(config_dir().c_str(), 0755);
  setenv("METANODE_GEN_PY", sample_options_from_build().gen_py.c_str(), 1);
}

LocalDaemon::~LocalDaemon() {
  procs_.kill_all();
  if (!dir_.empty() && !std::getenv("METANODE_KEEP_TESTBED")) run({"rm", "-rf", dir_});
}

void LocalDaemon::apply(const std::string& name, const std::string& yaml) {
  std::string before = admin("/config_dump");
  write_config(name, yaml);
  for (int i = 0; i < 100 && admin("/config_dump") == before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

void LocalDaemon::write_config(const std::string& name, const std::string& yaml) {
  std::string tmp = config_dir() + "/." + name + ".tmp";
  std::ofstream(tmp) << yaml;
  std::rename(tmp.c_str(), (config_dir() + "/" + name).c_str());
}

pid_t LocalDaemon::start_peer(const std::vector<std::string>& argv, const std::string& log,
                              const std::string& ready) {
  std::string path = dir_ + "/" + log + ".log";
  auto pid = procs_.spawn(argv, "", "", path);
  if (!pid) return 0;
  if (ready.empty()) return *pid;
  for (int i = 0; i < 300; ++i) {
    if (slurp(path).find(ready) != std::string::npos) return *pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

LocalDaemon::LoopbackService LocalDaemon::serve_thrift_sample(const std::string& more_yaml) {
  LoopbackService s{free_port(), free_port()};
  if (!start_peer({"/usr/bin/python3", sample_options_from_build().peers_dir + "/server.py", "--host", "127.0.0.1",
                   "--port", std::to_string(s.upstream), "--name", "server-v1"},
                  "server"))
    return {};
  std::string host = ThriftSample::kHost;
  write_config("svc.yaml",
               "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
               "metadata: {name: thrift-sample-server, namespace: meta-thrift}\n"
               "spec:\n  hosts: [" + host + "]\n  addresses: [127.0.0.1]\n"
               "  ports: [{number: " + std::to_string(s.vip) + ", name: tcp-metaprotocol-thrift-hello}]\n"
               "  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-hello: " +
               std::to_string(s.upstream) + "}}]\n" + (more_yaml.empty() ? "" : "---\n" + more_yaml));
  return s;
}

bool LocalDaemon::start(const std::vector<std::string>& extra, bool manifests) {
  admin_port_ = free_port();
  std::vector<std::string> argv = {sample_options_from_build().metanoded, "--no-bpf", "--admin-address",
                                   "127.0.0.1:" + std::to_string(admin_port_)};
  if (manifests) argv.insert(argv.end(), {"--config-dir", config_dir()});
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto pid = procs_.spawn(argv, "", "", dir_ + "/daemon.log");
  if (!pid) return false;
  daemon_pid_ = *pid;
  for (int i = 0; i < 300; ++i) {
    if (admin("/ready") == "ready\n") return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

ClientSummary LocalDaemon::run_client(const std::vector<std::string>& argv, int timeout_ms) {
  std::string log = dir_ + "/client" + std::to_string(++clients_) + ".log";
  auto pid = procs_.spawn(argv, "", "", log);
  if (!pid) return {};
  int status = procs_.wait(*pid, timeout_ms);
  return parse_summary(slurp(log), status);
}

std::string LocalDaemon::admin(const std::string& path) {
  return http_get("", "127.0.0.1:" + std::to_string(admin_port_), path).value_or("");
}

}  // namespace metanode::testbed
