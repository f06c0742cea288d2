// The shared proxy under pressure (no root: metanoded --no-bpf on loopback,
// the scripted fake Thrift upstream of the tests):
//   shared_proxy_bench soak [--conns 10000] [--active 16] [--rate 200] [--seconds 600] [--sample 30]
//     N connections from 200 source addresses ("pods") that each made a
//     call and sit mostly idle (a few are
//     woken every 100 ms), `active` connections calling at `rate`/s each;
//     every `sample` seconds the daemon's RSS, fds, CPU and the window's
//     p50/p99 and errors. Prints RSS per connection after warm-up.
//   shared_proxy_bench fairness [--seconds 10] [--flood-conns 8] [-- daemon flags...]
//     a quiet pod (127.0.0.3) calling 200/s, alone and then beside a pod
//     (127.0.0.2) that pipelines as fast as it can on `flood-conns`
//     connections: the quiet pod's p50/p99 and errors in both, and the
//     flood's rate.
// Timings are printed, never asserted.
#include <sys/resource.h>
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




std::string service(int vip, int port) {
  return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
         "metadata: {name: svc, namespace: bench}\n"
         "spec:\n  hosts: [svc.bench.svc.cluster.local]\n  addresses: [127.0.0.1]\n"
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

int fairness(int argc, char** argv) {
  int seconds = arg(argc, argv, "--seconds", 10), flood_conns = arg(argc, argv, "--flood-conns", 8);
  std::vector<std::string> extra = {"--workers", "2"};
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--") == 0)
      for (int k = i + 1; k < argc; ++k) extra.push_back(argv[k]);
  FakeUpstream up("up");
  LocalDaemon d;
  int vip = free_port();
  d.write_config("svc.yaml", service(vip, up.port()));
  if (!d.start(extra)) {
    std::fprintf(stderr, "daemon did not start:\n%s", d.log().c_str());
    return 1;
  }
  auto quiet = [&](const char* label) {
    std::atomic<bool> stop{false};
    Window w;
    std::thread t([&] { steady(vip, "127.0.0.3", 200, stop, w); });
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
    t.join();
    auto [p50, p99, n, errors] = w.take();
    std::printf("quiet pod %-12s calls %6zu  p50 %7.0f us  p99 %7.0f us  errors %ld\n", label, n, p50, p99, errors);
    return p99;
  };
  double alone = quiet("alone");
  std::atomic<bool> stop{false};
  std::atomic<long> flood_replies{0}, flood_errors{0};
  std::vector<std::unique_ptr<ThriftClient>> flood;
  std::vector<std::thread> threads;
  for (int i = 0; i < flood_conns; ++i) {
    flood.push_back(std::make_unique<ThriftClient>(vip, "127.0.0.2"));
    ThriftClient* c = flood.back().get();
    threads.emplace_back([c, &stop] {
      std::string batch;
      for (int k = 1; k <= 64; ++k) batch += thrift_message(1, "get", k);
      while (!stop && c->send_raw(batch)) {
      }
    });
    threads.emplace_back([c, &stop, &flood_replies, &flood_errors] {
      while (!stop)
        if (auto r = c->read_reply(1000ms)) ++(r->type == 2 ? flood_replies : flood_errors);
    });
  }
  std::this_thread::sleep_for(1s);
  long f0 = flood_replies, e0 = flood_errors;
  double loaded = quiet("beside flood");
  double flood_rate = double(flood_replies - f0) / seconds;
  double flood_error_rate = double(flood_errors - e0) / seconds;
  stop = true;
  for (auto& c : flood) ::shutdown(c->fd(), SHUT_RDWR);
  for (auto& t : threads) t.join();
  std::printf("flood: %.0f replies/s and %.0f error replies/s on %d connections; quiet p99 beside it / alone = %.2f\n",
              flood_rate, flood_error_rate, flood_conns, alone > 0 ? loaded / alone : 0.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  raise_nofile();
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "soak") return soak(argc, argv);
  if (mode == "fairness") return fairness(argc, argv);
  std::fprintf(stderr, "usage: %s soak|fairness [options] (see the file's header)\n", argv[0]);
  return 2;
}
