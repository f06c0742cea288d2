// What the kernel programs cost and save, measured side by side in one run
// (root; builds its own namespaces and cgroup, like the tests):
//
//   connect: connect()+close() from a pod to a server in the node namespace
//     none       programs not attached
//     bystander  programs attached, destination not a mesh service (what
//                every other connect on the node pays)
//     redirect   destination a mesh VIP: rewritten to the server
//   message ping-pong (64 B, 4 KiB, 64 KiB) over one connection:
//     tcp        programs attached, sk_msg off (redirected connect, TCP path)
//     skmsg      redirected connect, sockets in mn_sock_hash: socket to socket
//     none       programs not attached, plain TCP to the server
//
// Runs are interleaved (A B C A B C ...) and reported as median [min-max] of
// the per-run medians, with ratios to "none".
//
//   sudo build/bench/kernel_bench [--runs 5] [--connects 2000] [--messages 5000] [--cpu N]
//
// --cpu N pins client and server to one CPU: on a VM an idle vCPU takes tens
// of microseconds to wake for a cross-CPU wakeup, which otherwise swamps the
// path cost being measured (runs then come out bimodal).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "metanode/bpf/maps.h"
#include "metanode/sys.h"
#include "bench_util.h"
#include "testbed.h"

using namespace metanode;
using bench::addr;
using bench::full_io;
using bench::median;
using Clock = std::chrono::steady_clock;

namespace {

// Client side, run in the pod: prints one number, the median in ns.
int client(int argc, char** argv) {
  std::string mode = argv[2], target = argv[3];
  size_t size = std::stoul(argv[4]);
  int n = std::stoi(argv[5]);
  sockaddr_in sa = addr(target);
  std::vector<double> ns;
  ns.reserve(size_t(n));
  if (mode == "connect") {
    for (int i = 0; i < n; ++i) {
      auto t0 = Clock::now();
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      linger lg{1, 0};  // RST: no TIME_WAIT pile-up over thousands of connects
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return 1;
      close(fd);
      ns.push_back(double(std::chrono::nanoseconds(Clock::now() - t0).count()));
    }
  } else {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return 1;
    std::vector<char> buf(size, 'x');
    for (int i = 0; i < n + 100; ++i) {
      auto t0 = Clock::now();
      if (!full_io(fd, buf.data(), size, false) || !full_io(fd, buf.data(), size, true)) return 1;
      if (i >= 100) ns.push_back(double(std::chrono::nanoseconds(Clock::now() - t0).count()));
    }
    close(fd);
  }
  std::printf("%.0f\n", median(ns));
  return 0;
}

// Echo server in the node namespace, inside the attached cgroup so sockops
// sees its accepted sockets (the daemon's place). Messages of a connection
// are all `size` bytes, announced by the first 4 bytes... simpler: echo
// whatever arrives.
void serve(int lfd) {
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    std::thread([fd] {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::vector<char> buf(1 << 17);
      for (;;) {
        ssize_t r = read(fd, buf.data(), buf.size());
        if (r <= 0 || !full_io(fd, buf.data(), size_t(r), false)) break;
      }
      close(fd);
    }).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 5 && std::string(argv[1]) == "client") return client(argc, argv);
  int runs = 5, connects = 2000, messages = 5000, cpu = -1;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs")) runs = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--connects")) connects = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--messages")) messages = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--cpu")) cpu = std::stoi(argv[++i]);
  }
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);  // threads created later inherit it
  }
  auto tb = testbed::Testbed::create("kernel-bench", "10.80");
  if (!tb) {
    std::fprintf(stderr, "%s\n", tb.error().message().c_str());
    return 1;
  }
  auto pod = (*tb)->add_pod("client", 10);
  if (!pod) return 1;
  const std::string exe = bench::self_exe();

  // This process becomes "the daemon": in the daemon cgroup, listening in
  // the node namespace. It moves back before the testbed removes the cgroup.
  std::string home_cgroup;
  {
    FILE* f = std::fopen("/proc/self/cgroup", "r");
    char line[4096];
    while (f && std::fgets(line, sizeof(line), f))
      if (!std::strncmp(line, "0::", 3)) home_cgroup = std::string(line + 3, std::strcspn(line + 3, "\n"));
    if (f) std::fclose(f);
  }
  {
    FILE* f = std::fopen(((*tb)->daemon_cgroup() + "/cgroup.procs").c_str(), "w");
    if (!f) return 1;
    std::fprintf(f, "%d", getpid());
    std::fclose(f);
  }
  std::string server = (*tb)->node_ip() + ":15001";
  int lfd = -1;
  std::thread([&] {
    int ns = open((*tb)->node_ns().c_str(), O_RDONLY | O_CLOEXEC);
    setns(ns, CLONE_NEWNET);
    sockaddr_in sa = addr(server);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    listen(lfd, 4096);
    serve(lfd);
  }).detach();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  std::string vip = "10.96.0.10:9090", nonmesh = (*tb)->node_ip() + ":15001";
  std::unique_ptr<bpf::Maps> maps;
  std::atomic<bool> beating{true};
  std::thread beat([&] {
    while (beating) {
      if (maps) (void)maps->heartbeat();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  auto install = [&](bool skmsg) {
    bpf::InstallOptions io;
    io.cgroup_path = (*tb)->cgroup();
    io.pin_dir = (*tb)->pin_dir();
    auto r = bpf::install_kernel(io);
    if (!r) {
      std::fprintf(stderr, "install: %s\n", r.error().message().c_str());
      std::exit(1);
    }
    bpf::RuntimeConfig rc;
    rc.redirect = *net::parse_endpoint(server);
    rc.skmsg = skmsg;
    (void)r->maps->configure(rc);
    (void)r->maps->upsert_service(*net::parse_endpoint(vip), 1);
    maps = std::move(r->maps);
  };
  auto uninstall = [&] {
    maps.reset();
    (void)bpf::uninstall_kernel((*tb)->pin_dir());
  };
  auto measure = [&](const char* mode, const std::string& target, size_t size, int n) {
    std::vector<std::string> argv = {exe, "client", mode, target, std::to_string(size), std::to_string(n)};
    if (cpu >= 0) argv.insert(argv.begin(), {"taskset", "-c", std::to_string(cpu)});
    auto r = (*tb)->exec(argv, *pod, (*tb)->pods_cgroup(), 120000);
    return r.status == 0 ? std::stod(r.out) : -1.0;
  };

  std::map<std::string, std::vector<double>> res;
  for (int run = 0; run < runs; ++run) {
    uninstall();
    res["connect none"].push_back(measure("connect", nonmesh, 0, connects));
    for (size_t sz : {64u, 4096u, 65536u})
      res["pingpong " + std::to_string(sz) + " none"].push_back(measure("pingpong", nonmesh, sz, messages));
    install(true);
    res["connect bystander"].push_back(measure("connect", nonmesh, 0, connects));
    res["connect redirect"].push_back(measure("connect", vip, 0, connects));
    for (size_t sz : {64u, 4096u, 65536u})
      res["pingpong " + std::to_string(sz) + " skmsg"].push_back(measure("pingpong", vip, sz, messages));
    uninstall();
    install(false);
    for (size_t sz : {64u, 4096u, 65536u})
      res["pingpong " + std::to_string(sz) + " tcp"].push_back(measure("pingpong", vip, sz, messages));
  }
  beating = false;
  beat.join();
  uninstall();
  if (FILE* f = std::fopen((sys::mount_point("cgroup2") + home_cgroup + "/cgroup.procs").c_str(), "w")) {
    std::fprintf(f, "%d", getpid());
    std::fclose(f);
  }

  auto cell = [&](const std::string& k) {
    auto v = res[k];
    std::sort(v.begin(), v.end());
    char b[96];
    std::snprintf(b, sizeof(b), "%.1f us [%.1f-%.1f]", median(v) / 1000, v.front() / 1000, v.back() / 1000);
    return std::string(b);
  };
  auto ratio = [&](const std::string& k, const std::string& base) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.2f", median(res[k]) / median(res[base]));
    return std::string(b);
  };
  std::printf("| measure | none (no programs) | with programs | ratio |\n|---|---|---|---|\n");
  std::printf("| connect+close, non-mesh destination | %s | %s | %s |\n", cell("connect none").c_str(),
              cell("connect bystander").c_str(), ratio("connect bystander", "connect none").c_str());
  std::printf("| connect+close, mesh VIP (redirected) | %s | %s | %s |\n", cell("connect none").c_str(),
              cell("connect redirect").c_str(), ratio("connect redirect", "connect none").c_str());
  for (const char* sz : {"64", "4096", "65536"}) {
    std::string base = std::string("pingpong ") + sz + " none";
    std::printf("| ping-pong %s B, redirected, TCP path | %s | %s | %s |\n", sz, cell(base).c_str(),
                cell(std::string("pingpong ") + sz + " tcp").c_str(),
                ratio(std::string("pingpong ") + sz + " tcp", base).c_str());
    std::printf("| ping-pong %s B, redirected, sk_msg | %s | %s | %s |\n", sz, cell(base).c_str(),
                cell(std::string("pingpong ") + sz + " skmsg").c_str(),
                ratio(std::string("pingpong ") + sz + " skmsg", base).c_str());
  }
  std::printf("(median [min-max] of %d interleaved runs; connect: %d per run; ping-pong: %d round trips per run; %s)\n",
              runs, connects, messages, cpu >= 0 ? ("client and server pinned to CPU " + std::to_string(cpu)).c_str()
                                                  : "not pinned");
  return 0;
}
