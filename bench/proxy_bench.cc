// One RPC hop, side by side (root; builds its own namespaces): a Thrift
// framed-binary client pod and server pod on a node bridge, with the paths
//   direct      client -> server pod IP                  (the physical limit)
//   haproxy     client -> HAProxy mode tcp on the node -> server (the peer a user would pick)
//   metanode    client -> metanoded --no-bpf on the node -> server (layer 7, per request routing)
//   metanode+bpf client -> service VIP, redirected by connect4, sk_msg to
//               metanoded -> server
// measured in interleaved rounds (A B C D A B C D ...). Closed loop: every
// connection keeps one request outstanding. The load generator speaks Thrift
// itself (pre-encoded requests, seqids checked) on one epoll thread.
// Two upstreams in the server pod, each behind every path:
//   nonblocking  libthrift's TNonblockingServer (one event loop): saturates
//                after the proxies do, so it cannot flatter a slow path
//   threads      a thread per connection answering the frame as its reply:
//                cheap per call, but a wake-up per call per connection
// Reported per path: requests/s, p50/p99 latency, and CPU per request of
// the proxy, the upstream and the load generator (a slow peer shows as
// its own cost, not as the proxy's), as median [min-max] over rounds, with
// ratios to direct on the same upstream.
// --features adds a layer-7 metanoded per feature, interleaved with the
// rest, its ratios to the plain one showing what the feature costs:
//   mirror      every request also mirrored (to the same upstream)
//   ratelimit   a local rate limit whose bucket never empties (the check)
//   routes10    ten regex routes that do not match before the one that does
//
//   sudo build/bench/proxy_bench [--rounds 5] [--seconds 3] [--conns 1,16] [--sizes 64,1024]
//                                [--upstreams nonblocking,threads] [--workers N (metanoded's)]
//                                [--features mirror,ratelimit,routes10]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "local_daemon.h"
#include "bench_util.h"
#include "testbed.h"

using namespace metanode;
using bench::addr;
using bench::full_io;
using bench::median;
using Clock = std::chrono::steady_clock;

namespace {

void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

// sayHello(payload) as a framed binary call; the seqid sits at offset 24.
std::vector<uint8_t> request(size_t payload) {
  std::vector<uint8_t> m;
  put32(m, 0x80010001);
  put32(m, 8);
  m.insert(m.end(), {'s', 'a', 'y', 'H', 'e', 'l', 'l', 'o'});
  put32(m, 0);
  m.insert(m.end(), {11, 0, 1});
  put32(m, uint32_t(payload));
  m.insert(m.end(), payload, 'x');
  m.push_back(0);
  std::vector<uint8_t> f;
  put32(f, uint32_t(m.size()));
  f.insert(f.end(), m.begin(), m.end());
  return f;
}
constexpr size_t kSeqidOffset = 4 + 4 + 4 + 8;

// The server: one thread per connection, answers each call with the same
// frame turned into a REPLY (same name, same seqid): cheap and valid.
int server(int port) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(lfd, 1024) != 0) return 1;
  std::printf("listening\n");
  std::fflush(stdout);
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::thread([fd] {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::vector<uint8_t> buf(1 << 20);
      size_t have = 0;
      for (;;) {
        ssize_t r = read(fd, buf.data() + have, buf.size() - have);
        if (r <= 0) break;
        have += size_t(r);
        size_t off = 0;
        while (have - off >= 4) {
          uint32_t len = uint32_t(buf[off]) << 24 | uint32_t(buf[off + 1]) << 16 | uint32_t(buf[off + 2]) << 8 |
                         buf[off + 3];
          if (have - off < 4 + size_t(len)) break;
          buf[off + 7] = 2;  // CALL -> REPLY
          if (!full_io(fd, buf.data() + off, 4 + len, false)) goto done;
          off += 4 + len;
        }
        std::memmove(buf.data(), buf.data() + off, have - off);
        have -= off;
      }
    done:
      close(fd);
    }).detach();
  }
}

struct Conn {
  int fd = -1;
  std::vector<uint8_t> req, in;
  uint32_t seq = 0;
  Clock::time_point sent;
};

// The load generator: prints "qps p50_us p99_us errors cpu_seconds".
int load(const std::string& target, int conns, size_t payload, double seconds) {
  sockaddr_in sa = addr(target);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> cs(static_cast<size_t>(conns));
  auto base = request(payload);
  auto send = [&](Conn& c) {
    ++c.seq;
    c.req[kSeqidOffset] = uint8_t(c.seq >> 24);
    c.req[kSeqidOffset + 1] = uint8_t(c.seq >> 16);
    c.req[kSeqidOffset + 2] = uint8_t(c.seq >> 8);
    c.req[kSeqidOffset + 3] = uint8_t(c.seq);
    c.sent = Clock::now();
    return full_io(c.fd, c.req.data(), c.req.size(), false);
  };
  for (auto& c : cs) {
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return 1;
    c.req = base;
    epoll_event ev{EPOLLIN, {.ptr = &c}};
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  }
  std::vector<double> lat;
  lat.reserve(1 << 20);
  long errors = 0, done = 0;
  auto warm_end = Clock::now() + std::chrono::milliseconds(300);
  auto end = warm_end + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (auto& c : cs) send(c);
  epoll_event evs[64];
  uint8_t buf[65536];
  while (Clock::now() < end) {
    int n = epoll_wait(ep, evs, 64, 100);
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(evs[i].data.ptr);
      ssize_t r = read(c.fd, buf, sizeof(buf));
      if (r <= 0) return 1;
      c.in.insert(c.in.end(), buf, buf + r);
      while (c.in.size() >= 4) {
        uint32_t len = uint32_t(c.in[0]) << 24 | uint32_t(c.in[1]) << 16 | uint32_t(c.in[2]) << 8 | c.in[3];
        if (c.in.size() < 4 + size_t(len)) break;
        auto now = Clock::now();
        uint32_t seq = uint32_t(c.in[kSeqidOffset]) << 24 | uint32_t(c.in[kSeqidOffset + 1]) << 16 |
                       uint32_t(c.in[kSeqidOffset + 2]) << 8 | c.in[kSeqidOffset + 3];
        if (seq != c.seq || c.in[7] != 2) ++errors;
        if (now >= warm_end) {
          lat.push_back(std::chrono::duration<double, std::micro>(now - c.sent).count());
          ++done;
        }
        c.in.erase(c.in.begin(), c.in.begin() + 4 + len);
        if (!send(c)) return 1;
      }
    }
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p * lat.size()))]; };
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto secs = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  std::printf("%.0f %.1f %.1f %ld %.4f\n", double(done) / seconds, pct(0.5), pct(0.99), errors,
              secs(ru.ru_utime) + secs(ru.ru_stime));
  return 0;
}


std::vector<int> ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) v.push_back(std::stoi(x));
  return v;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) v.push_back(x);
  return v;
}

// One upstream kind in the server pod and the ports each path reaches it on.
struct Upstream {
  std::string kind;
  int port;          // in the server pod
  int haproxy_port;  // on the node
  int l7_port;       // metanoded --no-bpf on the node
  std::string vip;   // intercepted by the BPF daemon, port 9090
  pid_t pid = -1;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "server") return server(std::stoi(argv[2]));
  if (argc > 5 && std::string(argv[1]) == "load")
    return load(argv[2], std::stoi(argv[3]), std::stoul(argv[4]), std::stod(argv[5]));
  int rounds = 5;
  double seconds = 3;
  std::vector<int> conns = {1, 16}, sizes = {64, 1024};
  std::vector<std::string> kinds = {"nonblocking", "threads"};
  std::string workers;  // metanoded's --workers; empty: its default (one per core)
  std::vector<std::string> features;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::stod(argv[++i]);
    else if (!std::strcmp(argv[i], "--conns")) conns = ints(argv[++i]);
    else if (!std::strcmp(argv[i], "--sizes")) sizes = ints(argv[++i]);
    else if (!std::strcmp(argv[i], "--upstreams")) kinds = words(argv[++i]);
    else if (!std::strcmp(argv[i], "--workers")) workers = argv[++i];
    else if (!std::strcmp(argv[i], "--features")) features = words(argv[++i]);
  }
  const std::string exe = bench::self_exe();

  auto tb = testbed::Testbed::create("proxy-bench", "10.81");
  if (!tb) {
    std::fprintf(stderr, "%s\n", tb.error().message().c_str());
    return 1;
  }
  auto client = (*tb)->add_pod("client", 10);
  auto srv = (*tb)->add_pod("server", 11);
  if (!client || !srv) return 1;
  std::string node = (*tb)->node_ip(), server_ip = (*tb)->pod_ip(11);
  std::vector<Upstream> ups;
  for (size_t k = 0; k < kinds.size(); ++k) {
    Upstream u{kinds[k], 9090 + int(k), 19091 + 2 * int(k), 19092 + 2 * int(k), "10.96.0." + std::to_string(10 + k)};
    std::vector<std::string> argv;
    if (u.kind == "nonblocking")
      argv = {METANODE_CPP_PEER, "server", "--port", std::to_string(u.port), "--name", "bench", "--nonblocking"};
    else if (u.kind == "threads")
      argv = {exe, "server", std::to_string(u.port)};
    else {
      std::fprintf(stderr, "unknown upstream '%s' (nonblocking, threads)\n", u.kind.c_str());
      return 2;
    }
    auto pid = (*tb)->spawn(argv, *srv, "", (*tb)->work_dir() + "/server-" + u.kind + ".log");
    if (!pid) return 1;
    u.pid = *pid;
    ups.push_back(u);
  }

  // HAProxy, TCP mode, the defaults a user would start from.
  std::string cfg = (*tb)->work_dir() + "/haproxy.cfg";
  {
    std::ofstream h(cfg);
    h << "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n"
         "  timeout client 60s\n  timeout server 60s\n";
    for (const auto& u : ups)
      h << "listen " << u.kind << "\n  bind " << node << ":" << u.haproxy_port << "\n  server s1 " << server_ip
        << ":" << u.port << "\n";
  }
  auto haproxy = (*tb)->spawn({"haproxy", "-f", cfg, "-db"}, (*tb)->node_ns(), "", (*tb)->work_dir() + "/haproxy.log");

  // metanoded twice: as a plain L7 proxy on the node address, and
  // intercepting the client pod's connects to a VIP (sk_msg on).
  auto se = [&](const Upstream& u, const std::string& vip, int port) {
    std::string name = "bench-" + u.kind;
    return "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
           "metadata: {name: " + name + ", namespace: b}\nspec:\n  hosts: [" + name + ".b.svc.cluster.local]\n"
           "  addresses: [" + vip + "]\n  ports: [{number: " + std::to_string(port) +
           ", name: tcp-metaprotocol-thrift-b}]\n  endpoints: [{address: " + server_ip +
           ", ports: {tcp-metaprotocol-thrift-b: " + std::to_string(u.port) + "}}]\n";
  };
  std::string d1 = (*tb)->work_dir() + "/l7", d2 = (*tb)->work_dir() + "/bpf";
  mkdir(d1.c_str(), 0755);
  mkdir(d2.c_str(), 0755);
  for (const auto& u : ups) {
    std::ofstream(d1 + "/" + u.kind + ".yaml") << se(u, node, u.l7_port);
    std::ofstream(d2 + "/" + u.kind + ".yaml") << se(u, u.vip, 9090);
  }
  std::string daemon = testbed::sample_options_from_build().metanoded;
  std::vector<std::string> l7_argv = {daemon, "--no-bpf", "--config-dir", d1, "--admin-address", "127.0.0.1:15000"};
  std::vector<std::string> bpf_argv = {daemon, "--config-dir", d2, "--cgroup", (*tb)->cgroup(), "--redirect-address",
                                       node + ":15001", "--pin-dir", (*tb)->pin_dir(), "--admin-address",
                                       "127.0.0.1:15002"};
  for (auto* a : {&l7_argv, &bpf_argv})
    if (!workers.empty()) a->insert(a->end(), {"--workers", workers});
  // One more L7 daemon per feature, on ports of its own.
  auto feature_router = [&](const Upstream& u, const std::string& f) -> std::string {
    std::string host = "bench-" + u.kind + ".b.svc.cluster.local";
    std::string head = "---\napiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\n"
                       "metadata: {name: bench-" + u.kind + ", namespace: b}\nspec:\n  hosts: [" + host + "]\n";
    std::string all = "  - name: all\n    route: [{destination: {host: " + host + "}}]\n";
    if (f == "mirror") return head + "  routes:\n" + all + "    mirror: {host: " + host + "}\n";
    if (f == "ratelimit")
      return head + "  localRateLimit: {tokenBucket: {maxTokens: 1000000000, tokensPerFill: 1000000000, "
                    "fillInterval: 1s}}\n  routes:\n" + all;
    if (f == "routes10") {
      std::string r = head + "  routes:\n";
      for (int i = 0; i < 10; ++i)
        r += "  - name: r" + std::to_string(i) + "\n    match: {attributes: {method: {regex: '^say(Goodbye|Bye)" +
             std::to_string(i) + "[a-z]*$'}}}\n    route: [{destination: {host: " + host + "}}]\n";
      return r + all;
    }
    return "";
  };
  struct Feature {
    std::string name;
    pid_t pid;
    std::vector<int> ports;  // per upstream
  };
  std::vector<Feature> feats;
  for (size_t f = 0; f < features.size(); ++f) {
    if (feature_router(ups[0], features[f]).empty()) {
      std::fprintf(stderr, "unknown feature '%s' (mirror, ratelimit, routes10)\n", features[f].c_str());
      return 2;
    }
    std::string dir = (*tb)->work_dir() + "/feature-" + features[f];
    mkdir(dir.c_str(), 0755);
    Feature ft{features[f], -1, {}};
    for (size_t k = 0; k < ups.size(); ++k) {
      int port = 19200 + int(f) * 10 + int(k);
      ft.ports.push_back(port);
      std::ofstream(dir + "/" + ups[k].kind + ".yaml") << se(ups[k], node, port) << feature_router(ups[k], features[f]);
    }
    std::vector<std::string> a = {daemon, "--no-bpf", "--config-dir", dir, "--admin-address",
                                  "127.0.0.1:" + std::to_string(15010 + f)};
    if (!workers.empty()) a.insert(a.end(), {"--workers", workers});
    auto pid = (*tb)->spawn(a, (*tb)->node_ns(), "", dir + ".log");
    if (!pid) return 1;
    ft.pid = *pid;
    feats.push_back(ft);
  }
  auto l7 = (*tb)->spawn(l7_argv, (*tb)->node_ns(), "", (*tb)->work_dir() + "/l7.log");
  auto bpfd = (*tb)->spawn(bpf_argv, (*tb)->node_ns(), (*tb)->daemon_cgroup(), (*tb)->work_dir() + "/bpf.log");
  if (!haproxy || !l7 || !bpfd) return 1;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  struct Path {
    std::string name;
    std::string target;
    pid_t proxy;
  };
  auto paths_of = [&](const Upstream& u) {
    std::vector<Path> p = {{"direct", server_ip + ":" + std::to_string(u.port), -1},
                           {"haproxy", node + ":" + std::to_string(u.haproxy_port), *haproxy},
                           {"metanode", node + ":" + std::to_string(u.l7_port), *l7},
                           {"metanode+bpf", u.vip + ":9090", *bpfd}};
    size_t k = size_t(&u - ups.data());
    for (const auto& f : feats) p.push_back({"metanode " + f.name, node + ":" + std::to_string(f.ports[k]), f.pid});
    return p;
  };
  struct Sample {
    double qps, p50, p99, proxy_us, upstream_us, client_us;
  };
  auto key = [](const Upstream& u, int c, int sz, const std::string& path) {
    return u.kind + "/" + std::to_string(c) + "/" + std::to_string(sz) + "/" + path;
  };
  std::map<std::string, std::vector<Sample>> res;
  for (int r = 0; r < rounds; ++r)
    for (int c : conns)
      for (int sz : sizes)
        for (const auto& u : ups)
          for (const auto& p : paths_of(u)) {
            double proxy0 = p.proxy > 0 ? testbed::proc_cpu_seconds(p.proxy) : 0;
            double up0 = testbed::proc_cpu_seconds(u.pid);
            auto out = (*tb)->exec({exe, "load", p.target, std::to_string(c), std::to_string(sz),
                                    std::to_string(seconds)},
                                   *client, (*tb)->pods_cgroup(), int(seconds * 1000) + 30000);
            double proxy1 = p.proxy > 0 ? testbed::proc_cpu_seconds(p.proxy) : 0;
            double up1 = testbed::proc_cpu_seconds(u.pid);
            Sample s{};
            long errors = 0;
            double client_cpu = 0;
            std::istringstream in(out.out);
            in >> s.qps >> s.p50 >> s.p99 >> errors >> client_cpu;
            if (out.status != 0 || errors)
              std::fprintf(stderr, "%s/%s: status %d errors %ld\n", u.kind.c_str(), p.name.c_str(), out.status, errors);
            // Per request over the whole run (the 0.3 s warm-up included in
            // both the CPU and, scaled, the count).
            double n = s.qps * (seconds + 0.3);
            if (n > 0) {
              s.proxy_us = (proxy1 - proxy0) / n * 1e6;
              s.upstream_us = (up1 - up0) / n * 1e6;
              s.client_us = client_cpu / n * 1e6;
            }
            res[key(u, c, sz, p.name)].push_back(s);
          }

  auto med = [](std::vector<double> v) { return median(std::move(v)); };
  std::printf("| upstream | conns | payload | path | req/s (x direct) | p50 us | p99 us | CPU us/req: proxy | upstream | client |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  std::map<std::string, std::pair<double, double>> plain;  // upstream/conns/size -> metanode's req/s, proxy CPU
  std::string feature_rows;
  for (const auto& u : ups)
    for (int c : conns)
      for (int sz : sizes) {
        double direct_qps = 0;
        for (const auto& p : paths_of(u)) {
          auto& v = res[key(u, c, sz, p.name)];
          std::vector<double> q, a, b, pc, uc, cc;
          for (auto& s : v) {
            q.push_back(s.qps), a.push_back(s.p50), b.push_back(s.p99);
            pc.push_back(s.proxy_us), uc.push_back(s.upstream_us), cc.push_back(s.client_us);
          }
          double mq = med(q);
          if (p.name == "direct") direct_qps = mq;
          auto [mn, mx] = std::minmax_element(q.begin(), q.end());
          char proxy_s[32] = "-";
          if (p.proxy > 0) std::snprintf(proxy_s, sizeof(proxy_s), "%.1f", med(pc));
          std::printf("| %s | %d | %d B | %s | %.0f [%.0f-%.0f] (%.2f) | %.1f | %.1f | %s | %.1f | %.1f |\n",
                      u.kind.c_str(), c, sz, p.name.c_str(), mq, *mn, *mx, direct_qps > 0 ? mq / direct_qps : 0,
                      med(a), med(b), proxy_s, med(uc), med(cc));
          std::string where = key(u, c, sz, "");
          if (p.name == "metanode") plain[where] = {mq, med(pc)};
          if (p.name.rfind("metanode ", 0) == 0 && plain.count(where)) {
            // The ratio per round (each feature run beside the plain one) is
            // what the noise of this host lets through; the median of those.
            auto& base = res[key(u, c, sz, "metanode")];
            std::vector<double> rq, rc;
            for (size_t i = 0; i < v.size() && i < base.size(); ++i) {
              if (base[i].qps > 0) rq.push_back(v[i].qps / base[i].qps);
              if (base[i].proxy_us > 0) rc.push_back(v[i].proxy_us / base[i].proxy_us);
            }
            char row[256];
            std::snprintf(row, sizeof(row), "| %s | %d | %d B | %s | %.2f | %.2f |\n", u.kind.c_str(), c, sz,
                          p.name.substr(9).c_str(), med(rq), med(rc));
            feature_rows += row;
          }
        }
      }
  std::printf("(median [min-max] of %d interleaved rounds, %.0f s each after 0.3 s warm-up; closed loop)\n",
              rounds, seconds);
  if (!feature_rows.empty()) {
    std::printf("\n| upstream | conns | payload | feature | req/s x plain metanode | proxy CPU/req x plain |\n");
    std::printf("|---|---|---|---|---|---|\n%s", feature_rows.c_str());
    std::printf("(median of the per-round ratios)\n");
  }
  return 0;
}
