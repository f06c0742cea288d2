// Configuration at scale: N services (ServiceEntry + DestinationRule with
// two subsets + a 20/80 MetaRouter each) with E endpoints apiece, served by
// a real metanode-xds process and pulled by this process as metanoded does
// (XdsClient -> ConfigApplier -> Server). Prints the time from start to a
// complete first configuration, the daemon side's memory, and the time from
// one edited MetaRouter / one edited endpoint to applied.
//
//   build/bench/xds_scale_bench [--services 10000] [--endpoints 10] [--delta]
#include <spdlog/spdlog.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "metanode/core/config_applier.h"
#include "metanode/core/server.h"
#include "metanode/xds/xds_client.h"
#include "local_daemon.h"

using namespace std::chrono;
using metanode::xds::Resources;

namespace {

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

std::string service(int i, int endpoints, int v1_weight, int first_port) {
  std::string host = "svc" + std::to_string(i) + ".scale.svc.cluster.local";
  std::string vip = "10.96." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
  std::ostringstream y;
  y << "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
    << "metadata: {name: svc" << i << ", namespace: scale}\n"
    << "spec:\n  hosts: [" << host << "]\n  addresses: [" << vip << "]\n"
    << "  ports: [{number: 9090, name: tcp-metaprotocol-thrift-x}]\n  endpoints:\n";
  for (int e = 0; e < endpoints; ++e)
    y << "  - {address: 10." << (1 + e) << "." << (i / 250) << "." << (i % 250 + 1) << ", ports: {tcp-metaprotocol-thrift-x: "
      << first_port << "}, labels: {version: v" << (e % 2 + 1) << "}}\n";
  y << "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
    << "metadata: {name: svc" << i << ", namespace: scale}\n"
    << "spec:\n  host: " << host << "\n  subsets:\n"
    << "  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
    << "---\napiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
    << "metadata: {name: svc" << i << ", namespace: scale}\n"
    << "spec:\n  hosts: [" << host << "]\n  routes:\n  - name: split\n    route:\n"
    << "    - {destination: {host: " << host << ", subset: v1}, weight: " << v1_weight << "}\n"
    << "    - {destination: {host: " << host << ", subset: v2}, weight: " << (100 - v1_weight) << "}\n";
  return y.str();
}

void write_file(const std::string& dir, const std::string& name, const std::string& text) {
  std::string tmp = dir + "/." + name;
  std::ofstream(tmp) << text;
  std::rename(tmp.c_str(), (dir + "/" + name).c_str());
}

// The daemon's applier, timed.
class TimedSink : public metanode::xds::ConfigSink {
 public:
  explicit TimedSink(metanode::xds::ConfigSink& inner) : inner_(inner) {}
  metanode::xds::Applied apply(Resources r, const std::string& origin, bool partial) override {
    auto t = steady_clock::now();
    auto a = inner_.apply(std::move(r), origin, partial);
    std::lock_guard<std::mutex> l(mu_);
    last_apply_ms_ = duration<double, std::milli>(steady_clock::now() - t).count();
    last_compiled_ = a.compiled;
    last_reused_ = a.reused;
    last_ = a.snapshot;
    ++applies_;
    cv_.notify_all();
    return a;
  }
  void refused(const std::string& o, const metanode::Error& e) override { inner_.refused(o, e); }
  // Waits for an applied snapshot that satisfies `pred`; returns when it did.
  steady_clock::time_point wait(const std::function<bool(const metanode::xds::Snapshot&)>& pred) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return last_ && pred(*last_); });
    return steady_clock::now();
  }
  double last_apply_ms() {
    std::lock_guard<std::mutex> l(mu_);
    return last_apply_ms_;
  }
  // "apply 12.3 ms: 5 compiled, 69995 unchanged"
  std::string last_apply() {
    std::lock_guard<std::mutex> l(mu_);
    char buf[128];
    std::snprintf(buf, sizeof(buf), "apply %.1f ms: %zu compiled, %zu unchanged", last_apply_ms_, last_compiled_,
                  last_reused_);
    return buf;
  }

 private:
  metanode::xds::ConfigSink& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const metanode::xds::Snapshot> last_;
  double last_apply_ms_ = 0;
  size_t last_compiled_ = 0, last_reused_ = 0;
  int applies_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int services = 10000, endpoints = 10;
  bool delta = false;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--delta") delta = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--services") services = std::atoi(argv[i + 1]);
    if (a == "--endpoints") endpoints = std::atoi(argv[i + 1]);
  }
  spdlog::set_level(spdlog::level::warn);
  char tmpl[] = "/tmp/metanode-scale-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  for (int i = 0; i < services; ++i) write_file(dir, "svc" + std::to_string(i) + ".yaml", service(i, endpoints, 20, 9090));

  int port = metanode::testbed::free_port();
  std::string log = dir + ".xds.log";
  auto t_spawn = steady_clock::now();
  pid_t xds = fork();
  if (xds == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(METANODE_XDS_BIN, METANODE_XDS_BIN, "--config-dir", dir.c_str(), "--listen",
          ("127.0.0.1:" + std::to_string(port)).c_str(), "--log-level", "info", nullptr);
    _exit(127);
  }
  // metanode-xds up (translated and serving) before the client starts, so
  // the first-sync time is not a reconnect backoff.
  for (;;) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    if (ss.str().find("serving") != std::string::npos) break;
    if (waitpid(xds, nullptr, WNOHANG) == xds) return 1;
    std::this_thread::sleep_for(milliseconds(20));
  }
  auto t_serving = steady_clock::now();
  std::printf("metanode-xds: %d manifest files read, translated and serving after %.2f s\n", services,
              duration<double>(t_serving - t_spawn).count());
  long rss0 = rss_kib();
  metanode::core::ServerOptions so;
  so.intercept = true;  // binds only the redirect address, as with BPF
  so.redirect = {0x7f000001, uint16_t(metanode::testbed::free_port())};
  so.workers = 2;
  metanode::core::Server server(so, nullptr);
  if (!server.start()) return 1;
  metanode::core::ConfigApplier applier(server, nullptr);
  TimedSink sink(applier);
  metanode::xds::XdsClientOptions xo;
  xo.server = "127.0.0.1:" + std::to_string(port);
  xo.node.set_id("scale-bench");
  xo.backoff_base = milliseconds(50);
  xo.delta = delta;
  metanode::xds::XdsClient client(xo);
  if (!client.start(sink)) return 1;
  auto all_routes = [&](const metanode::xds::Snapshot& s) {
    return int(s.listeners.size()) == services && int(s.routes.size()) == services;
  };
  auto t_sync = sink.wait(all_routes);
  while (!client.synced()) std::this_thread::sleep_for(milliseconds(5));
  long rss1 = rss_kib();
  std::string last_sync_apply = sink.last_apply();
  // The whole state compiled from nothing, as at start-up (the applies
  // above compile what each response changed).
  double full_compile = 0;
  {
    auto live = server.snapshot();
    auto t = steady_clock::now();
    auto c = metanode::xds::compile_snapshot(live->resources);
    full_compile = duration<double, std::milli>(steady_clock::now() - t).count();
    if (!c.rejects.empty()) return 1;
  }
  std::printf("services %d, endpoints %d (%d clusters, %d endpoint entries)\n", services,
              services * endpoints, services * 3, services * endpoints * 2);
  std::printf("daemon: first complete configuration %.2f s after it connected\n",
              duration<double>(t_sync - t_serving).count());
  std::printf("daemon side memory: %.1f MiB RSS (%.1f MiB before)\n", rss1 / 1024.0, rss0 / 1024.0);
  std::printf("the whole state compiled from nothing: %.1f ms; the last apply of the sync: %s\n", full_compile,
              last_sync_apply.c_str());

  // One MetaRouter edited.
  std::string target = "svc" + std::to_string(services / 2) + ".scale.svc.cluster.local_9090";
  auto wall = [] {
    auto now = system_clock::now();
    auto t = system_clock::to_time_t(now);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%H:%M:%S", std::localtime(&t));
    return std::string(buf) + "." + std::to_string(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  };
  std::printf("edit written at %s\n", wall().c_str());
  auto t0 = steady_clock::now();
  write_file(dir, "svc" + std::to_string(services / 2) + ".yaml", service(services / 2, endpoints, 70, 9090));
  auto t1 = sink.wait([&](const metanode::xds::Snapshot& s) {
    auto it = s.routes.find(target);
    return it != s.routes.end() && it->second->routes[0].clusters[0].weight == 70;
  });
  std::printf("applied at %s\n", wall().c_str());
  std::printf("one MetaRouter edited -> applied: %.0f ms (%s)\n", duration<double, std::milli>(t1 - t0).count(),
              sink.last_apply().c_str());

  // One endpoint's port edited.
  std::string cl = "outbound|9090|v1|svc" + std::to_string(services / 3) + ".scale.svc.cluster.local";
  t0 = steady_clock::now();
  write_file(dir, "svc" + std::to_string(services / 3) + ".yaml", service(services / 3, endpoints, 20, 9191));
  t1 = sink.wait([&](const metanode::xds::Snapshot& s) {
    auto* c = s.find_cluster(cl);
    return c && !c->endpoints.empty() && c->endpoints[0].address.port == 9191;
  });
  std::printf("one endpoint edited -> applied: %.0f ms (%s)\n", duration<double, std::milli>(t1 - t0).count(),
              sink.last_apply().c_str());
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("daemon side max RSS %.1f MiB\n", ru.ru_maxrss / 1024.0);

  // Where the time went on the control plane's side.
  {
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line))
      if (line.find(" serving ") != std::string::npos) std::printf("  metanode-xds: %s\n", line.c_str());
  }
  client.stop();
  server.stop();
  kill(xds, SIGTERM);
  waitpid(xds, nullptr, 0);
  std::system(("rm -rf " + dir + " " + log).c_str());
  return 0;
}
