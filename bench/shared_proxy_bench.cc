// The shared proxy under pressure (no root: metanoded --no-bpf on loopback,
// the scripted fake Thrift upstream of the tests):
//   shared_proxy_bench soak [--conns 10000] [--active 16] [--rate 200] [--seconds 600] [--sample 30]
//     N connections from 200 source addresses ("pods") that each made a
//     call and sit mostly idle (a few are
//     woken every 100 ms), `active` connections calling at `rate`/s each;
//     every `sample` seconds the daemon's RSS, fds, CPU and the window's
//     p50/p99 and errors. Prints RSS per connection after warm-up.
//   shared_proxy_bench fairness [--seconds 10] [--flood-conns 8] [--flood-cpu M] [--same-service] [-- daemon flags...]
//     a quiet pod (127.0.0.3) calling 200/s, alone and then beside a pod
//     (127.0.0.2) that pipelines as fast as it can on `flood-conns`
//     connections: the quiet pod's p50/p99 and errors in both, and the
//     flood's rate.
//     The flood is a process of its own and floods a service of its own,
//     whose upstream runs in that process (--same-service: the quiet
//     pod's service); --flood-cpu M puts that process in a cgroup limited
//     to M millicores, as pods with `limits.cpu: Mm` would be (root).
//     --quiet-direct: the control, the quiet pod calling its upstream
//     directly (not through the daemon) beside the same flood.
// Timings are printed, never asserted.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fake_upstream.h"
#include "local_daemon.h"

using namespace metanode::testbed;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {




std::string service(int vip, int port, const std::string& name = "svc") {
  return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
         "metadata: {name: " + name + ", namespace: bench}\n"
         "spec:\n  hosts: [" + name + ".bench.svc.cluster.local]\n  addresses: [127.0.0.1]\n"
         "  ports: [{number: " + std::to_string(vip) + ", name: tcp-metaprotocol-thrift}]\n"
         "  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-thrift: " + std::to_string(port) + "}}]\n";
}

// Latencies of one window, from many threads.
struct Window {
  std::mutex mu;
  std::vector<double> us;
  long errors = 0;
  void add(double v, bool ok) {
    std::lock_guard<std::mutex> l(mu);
    if (ok) us.push_back(v);
    else ++errors;
  }
  // p50, p99, count, errors; resets.
  std::tuple<double, double, size_t, long> take() {
    std::lock_guard<std::mutex> l(mu);
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) { return us.empty() ? 0.0 : us[std::min(us.size() - 1, size_t(p * double(us.size())))]; };
    auto r = std::make_tuple(pct(0.5), pct(0.99), us.size(), errors);
    us.clear();
    errors = 0;
    return r;
  }
};

// One connection calling `rate` times a second until `stop`.
void steady(int vip, const std::string& source, int rate, std::atomic<bool>& stop, Window& w) {
  ThriftClient c(vip, source);
  auto period = std::chrono::microseconds(1000000 / std::max(1, rate));
  auto next = Clock::now();
  while (!stop) {
    next += period;
    auto t0 = Clock::now();
    auto r = c.call("get", 5000ms);
    w.add(std::chrono::duration<double, std::micro>(Clock::now() - t0).count(), r && r->type == 2);
    std::this_thread::sleep_until(next);
  }
}

int arg(int argc, char** argv, const char* name, int dflt) {
  for (int i = 2; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  return dflt;
}

void raise_nofile() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

int soak(int argc, char** argv) {
  int conns = arg(argc, argv, "--conns", 10000), active = arg(argc, argv, "--active", 16);
  int rate = arg(argc, argv, "--rate", 200), seconds = arg(argc, argv, "--seconds", 600);
  int sample = arg(argc, argv, "--sample", 30);
  FakeUpstream up("up");
  LocalDaemon d;
  int vip = free_port();
  d.write_config("svc.yaml", service(vip, up.port()));
  if (!d.start({"--workers", "2"})) {
    std::fprintf(stderr, "daemon did not start:\n%s", d.log().c_str());
    return 1;
  }
  pid_t pid = d.daemon_pid();
  std::this_thread::sleep_for(1s);
  long rss0 = proc_rss_kib(pid);
  int fds0 = proc_fds(pid);
  std::vector<std::unique_ptr<ThriftClient>> idle;
  idle.reserve(size_t(conns));
  long warm_errors = 0;
  for (int i = 0; i < conns; ++i) {
    // As 200 pods would hold them (the daemon limits connections per source).
    idle.push_back(std::make_unique<ThriftClient>(vip, "127.0.1." + std::to_string(1 + i % 200)));
    if (!idle.back()->call("get")) ++warm_errors;
  }
  std::this_thread::sleep_for(3s);  // parked
  long rss1 = proc_rss_kib(pid);
  int fds1 = proc_fds(pid);
  std::printf("baseline RSS %ld KiB, %d fds; with %d connections: RSS %ld KiB (%.0f bytes each), %d fds; "
              "warm-up errors %ld\n",
              rss0, fds0, conns, rss1, double(rss1 - rss0) * 1024 / conns, fds1, warm_errors);
  std::printf("%6s %9s %7s %6s %9s %9s %9s %7s\n", "t_s", "rss_kib", "fds", "cpu%", "calls", "p50_us",
              "p99_us", "errors");
  std::atomic<bool> stop{false};
  Window w;
  std::vector<std::thread> threads;
  for (int i = 0; i < active; ++i) threads.emplace_back([&] { steady(vip, "", rate, stop, w); });
  threads.emplace_back([&] {  // wakes a few idle connections every 100 ms
    std::mt19937 rng(7);
    while (!stop) {
      for (int k = 0; k < 10; ++k) {
        auto& c = idle[rng() % idle.size()];
        auto t0 = Clock::now();
        auto r = c->call("get", 5000ms);
        w.add(std::chrono::duration<double, std::micro>(Clock::now() - t0).count(), r && r->type == 2);
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  long total_errors = 0;
  double cpu_prev = proc_cpu_seconds(pid);
  auto t_start = Clock::now();
  for (int t = sample; t <= seconds; t += sample) {
    std::this_thread::sleep_until(t_start + std::chrono::seconds(t));
    double cpu = proc_cpu_seconds(pid);
    auto [p50, p99, n, errors] = w.take();
    total_errors += errors;
    std::printf("%6d %9ld %7d %6.1f %9zu %9.0f %9.0f %7ld\n", t, proc_rss_kib(pid), proc_fds(pid),
                100.0 * (cpu - cpu_prev) / sample, n, p50, p99, errors);
    std::fflush(stdout);
    cpu_prev = cpu;
  }
  stop = true;
  for (auto& t : threads) t.join();
  long rss_end = proc_rss_kib(pid);
  idle.clear();
  std::this_thread::sleep_for(5s);
  std::printf("errors %ld over %d s; RSS %ld KiB at the end, %ld KiB 5 s after the %d connections closed "
              "(baseline %ld), %d fds\n",
              total_errors, seconds, rss_end, proc_rss_kib(pid), conns, rss0, proc_fds(pid));
  return total_errors == 0 ? 0 : 1;
}

// One pod's flood: `conns` connections, each pipelining batches of 64 as
// fast as the daemon takes them, until `stop`.
struct Flood {
  std::atomic<bool> stop{false};
  std::atomic<long> replies{0}, errors{0};
  std::vector<std::unique_ptr<ThriftClient>> clients;
  std::vector<std::thread> threads;
  Flood(int vip, int conns) {
    for (int i = 0; i < conns; ++i) {
      clients.push_back(std::make_unique<ThriftClient>(vip, "127.0.0.2"));
      ThriftClient* c = clients.back().get();
      threads.emplace_back([this, c] {
        std::string batch;
        for (int k = 1; k <= 64; ++k) batch += thrift_message(1, "get", k);
        while (!stop && c->send_raw(batch)) {
        }
      });
      threads.emplace_back([this, c] {
        while (!stop)
          if (auto r = c->read_reply(1000ms)) ++(r->type == 2 ? replies : errors);
      });
    }
  }
  ~Flood() {
    stop = true;
    for (auto& c : clients) ::shutdown(c->fd(), SHUT_RDWR);
    for (auto& t : threads) t.join();
  }
};

// `shared_proxy_bench flood --conns N [--own-upstream]`: the flooding pod
// as a process of its own, so that it (and with --own-upstream the
// service it floods, as that service's pods would) can be given a CPU
// limit. Protocol on stdin/stdout: it prints "port P" (its upstream's, 0
// without one), floods the VIP of "go VIP", and prints "REPLIES ERRORS"
// at "stop".
int flood_process(int argc, char** argv) {
  std::unique_ptr<FakeUpstream> up;
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--own-upstream") == 0) up = std::make_unique<FakeUpstream>("flood-up");
  std::printf("port %d\n", up ? up->port() : 0);
  std::fflush(stdout);
  int vip = 0;
  if (std::scanf(" go %d", &vip) != 1) return 1;
  Flood f(vip, arg(argc, argv, "--conns", 8));
  char word[16];
  while (std::scanf(" %15s", word) == 1 && std::strcmp(word, "stop") != 0) {
  }
  std::printf("%ld %ld\n", f.replies.load(), f.errors.load());
  std::fflush(stdout);
  return 0;
}

// A cgroup with a CPU limit of `millicores`, as a pod's `resources.limits.cpu`
// makes it: cgroup v2's cpu.max where the cpu controller is there, else the
// v1 cpu controller's CFS quota. Removed when destroyed.
struct CpuLimit {
  std::string dir;
  explicit CpuLimit(int millicores) {
    std::ifstream mounts("/proc/mounts");
    std::string dev, path, type, opts, rest, v1, v2;
    while (mounts >> dev >> path >> type >> opts && std::getline(mounts, rest)) {
      std::string controllers = " " + slurp(path + "/cgroup.controllers") + " ";
      std::replace(controllers.begin(), controllers.end(), '\n', ' ');
      if (type == "cgroup2" && controllers.find(" cpu ") != std::string::npos) v2 = path;
      if (type == "cgroup" && ("," + opts + ",").find(",cpu,") != std::string::npos) v1 = path;
    }
    std::string base = !v2.empty() ? v2 : v1;
    if (base.empty()) return;
    dir = base + "/metanode-bench-flood-" + std::to_string(getpid());
    if (::mkdir(dir.c_str(), 0755) != 0) {
      dir.clear();
      return;
    }
    auto put = [](const std::string& f, const std::string& v) { std::ofstream(f) << v; };
    if (!v2.empty()) {
      put(v2 + "/cgroup.subtree_control", "+cpu");
      put(dir + "/cpu.max", std::to_string(millicores * 100) + " 100000");
    } else {
      put(dir + "/cpu.cfs_period_us", "100000");
      put(dir + "/cpu.cfs_quota_us", std::to_string(millicores * 100));
    }
  }
  bool add(pid_t pid) const {
    std::ofstream f(dir + "/cgroup.procs");
    f << pid;
    return bool(f.flush());
  }
  ~CpuLimit() {
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
};

int fairness(int argc, char** argv) {
  int seconds = arg(argc, argv, "--seconds", 10), flood_conns = arg(argc, argv, "--flood-conns", 8);
  int flood_cpu = arg(argc, argv, "--flood-cpu", 0);  // millicores; 0: no limit
  bool same_service = false, direct = false;
  std::vector<std::string> extra = {"--workers", "2"};
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--same-service") == 0) same_service = true;
    if (std::strcmp(argv[i], "--quiet-direct") == 0) direct = true;
    if (std::strcmp(argv[i], "--") == 0)
      for (int k = i + 1; k < argc; ++k) extra.push_back(argv[k]);
  }
  std::unique_ptr<CpuLimit> limit;
  if (flood_cpu > 0) {
    limit = std::make_unique<CpuLimit>(flood_cpu);
    if (limit->dir.empty()) {
      std::fprintf(stderr, "no cpu cgroup controller to limit the flood with\n");
      return 1;
    }
  }
  // The flooding pod, and unless --same-service the upstream it floods.
  int to_child[2], from_child[2];
  if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return 1;
  std::string conns = std::to_string(flood_conns);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::execl("/proc/self/exe", "shared_proxy_bench", "flood", "--conns", conns.c_str(),
            same_service ? "--same-service" : "--own-upstream", nullptr);
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  if (limit && !limit->add(pid)) std::fprintf(stderr, "could not move the flood into %s\n", limit->dir.c_str());
  FILE* child_in = ::fdopen(to_child[1], "w");
  FILE* child_out = ::fdopen(from_child[0], "r");
  int flood_up = 0;
  if (std::fscanf(child_out, " port %d", &flood_up) != 1) return 1;

  FakeUpstream up("up");
  LocalDaemon d;
  int vip = free_port(), flood_vip = same_service ? vip : free_port();
  d.write_config("svc.yaml", service(vip, up.port()));
  if (!same_service) d.write_config("flood.yaml", service(flood_vip, flood_up, "flood"));
  if (!d.start(extra)) {
    std::fprintf(stderr, "daemon did not start:\n%s", d.log().c_str());
    return 1;
  }
  auto quiet = [&](const char* label) {
    std::atomic<bool> stop{false};
    Window w;
    // The control: the quiet pod calling its upstream without the daemon.
    std::thread t([&] { steady(direct ? up.port() : vip, "127.0.0.3", 200, stop, w); });
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
    t.join();
    auto [p50, p99, n, errors] = w.take();
    std::printf("quiet pod %-12s calls %6zu  p50 %7.0f us  p99 %7.0f us  errors %ld\n", label, n, p50, p99, errors);
    return std::make_pair(p99, errors);
  };
  auto [alone, alone_errors] = quiet("alone");
  std::fprintf(child_in, "go %d\n", flood_vip);
  std::fflush(child_in);
  std::this_thread::sleep_for(1s);
  double cpu0 = proc_cpu_seconds(d.daemon_pid());
  auto t0 = Clock::now();
  auto [beside, beside_errors] = quiet("beside flood");
  double cpu = proc_cpu_seconds(d.daemon_pid()) - cpu0;
  double window = std::chrono::duration<double>(Clock::now() - t0).count() + 1;  // with the flood's warm-up
  std::fprintf(child_in, "stop\n");
  std::fflush(child_in);
  long replies = 0, errors = 0;
  if (std::fscanf(child_out, " %ld %ld", &replies, &errors) != 2) std::fprintf(stderr, "no counts from the flood\n");
  std::fclose(child_in);
  std::fclose(child_out);
  ::waitpid(pid, nullptr, 0);
  std::printf("flood (%s, %s): %.0f replies/s and %.0f error replies/s on %d connections; daemon CPU %.0f%%; "
              "quiet p99 beside it / alone = %.2f, quiet errors %ld\n",
              same_service ? "the quiet pod's service" : "a service of its own",
              flood_cpu ? (std::to_string(flood_cpu) + "m CPU limit").c_str() : "no CPU limit",
              double(replies) / window, double(errors) / window, flood_conns,
              100.0 * cpu / (window - 1), alone > 0 ? beside / alone : 0.0, alone_errors + beside_errors);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  raise_nofile();
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "soak") return soak(argc, argv);
  if (mode == "fairness") return fairness(argc, argv);
  if (mode == "flood") return flood_process(argc, argv);
  std::fprintf(stderr, "usage: %s soak|fairness [options] (see the file's header)\n", argv[0]);
  return 2;
}
