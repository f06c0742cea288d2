#include "metanode/core/daemon.h"

#include <ifaddrs.h>
#include <malloc.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <fcntl.h>

#include <fstream>
#include <thread>
#include <sstream>

#include "metanode/bpf/maps.h"
#include "metanode/sys.h"
#include "metanode/core/admin.h"
#include "metanode/core/config_applier.h"
#include "metanode/core/pod_watcher.h"
#include "metanode/core/server.h"
#include "explain.h"
#include "handover.h"
#include "kube_pods.h"
#include "route_view.h"
#include "metanode/xds/k8s_config.h"
#include "metanode/xds/manifest_source.h"
#include "metanode/xds/xds_client.h"
#include "metanode/xds/snapshot.h"
#include "sandbox.h"

namespace metanode::core {
namespace asio = boost::asio;

namespace {

std::optional<uint32_t> first_node_address() {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return std::nullopt;
  std::optional<uint32_t> out;
  for (auto* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    uint32_t a = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    if ((a >> 24) == 127) continue;
    out = a;
    break;
  }
  freeifaddrs(ifs);
  return out;
}

std::string bpf_counters_text(bpf::Maps* maps) {
  if (!maps) return {};
  auto c = maps->counters();
  if (!c) return {};
  std::ostringstream o;
  o << "# HELP metanode_bpf_events_total Decisions of the kernel programs, by reason\n"
       "# TYPE metanode_bpf_events_total counter\n";
  for (const auto& x : *c) o << "metanode_bpf_events_total{event=\"" << x.name << "\"} " << x.value << "\n";
  return o.str();
}

// The configuration source the flags ask for: an xDS server, or manifests.
std::unique_ptr<xds::ConfigSource> make_source(const DaemonOptions& opts, const xds::IstioCaClient* ca) {
  if (opts.xds_address.empty()) return std::make_unique<xds::ManifestDirSource>(opts.config_dir);
  xds::XdsClientOptions xo;
  xo.server = opts.xds_address;
  xo.clusters = opts.xds_clusters;
  xo.cluster_tls = opts.xds_cluster_tls;
  xo.delta = opts.xds_delta;
  xo.first_response_timeout = opts.xds_first_response_timeout;
  xo.security = opts.xds_security;
  xo.security.cluster_id = opts.node.cluster_id;
  xo.ca = ca;
  auto id = opts.node;
  if (id.ip.empty())
    if (auto a = first_node_address()) id.ip = net::ipv4_str(*a);
  xo.node = xds::make_node(id);
  spdlog::info("xDS from {} as node {}", xo.server, xo.node.id());
  return std::make_unique<xds::XdsClient>(std::move(xo));
}

// /config_dump: the live resources in Envoy's ConfigDump shape.
std::string config_dump(const Server& server) {
  auto s = server.snapshot();
  return s ? xds::config_dump_json(s->resources, s->compiled_at, s->refused, s->compiled_at)
           : xds::config_dump_json({}, std::chrono::system_clock::now());
}

// One daemon holds a connection per pod connection and per upstream: the
// 1024 soft limit a shell hands down would cap the node at a few hundred.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rlim_t was = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    spdlog::info("fd limit raised from {} to {}", was, rl.rlim_cur);
}

}  // namespace

int run_daemon(const DaemonOptions& opts) {
  raise_fd_limit();
  // Message buffers above 128 KiB come from mmap and go back to the system
  // when freed; glibc's adaptive threshold would otherwise grow to 32 MiB
  // after the first large reply and keep that memory after clients leave.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  ServerOptions so;
  so.workers = opts.workers;
  so.intercept = opts.intercept;
  so.request_timeout = opts.request_timeout;
  so.downstream = opts.downstream;

  std::unique_ptr<bpf::Maps> maps;
  bpf::RuntimeConfig rc;
  if (opts.intercept) {
    if (opts.redirect) {
      so.redirect = *opts.redirect;
    } else {
      auto a = first_node_address();
      if (!a) {
        spdlog::critical("no non-loopback IPv4 address found; pass --redirect-address IP:PORT");
        return 2;
      }
      so.redirect = {*a, 15001};
    }
    bpf::InstallOptions io;
    io.cgroup_path = opts.cgroup.empty() ? sys::mount_point("cgroup2") : opts.cgroup;
    io.pin_dir = opts.pin_dir;
    io.skmsg = opts.skmsg;
    if (io.cgroup_path.empty()) {
      spdlog::critical("no cgroup2 mount found; pass --cgroup PATH or run with --no-bpf");
      return 2;
    }
    auto m = bpf::install_kernel(io);
    if (!m) {
      spdlog::critical("cannot install BPF interception: {}", m.error().message());
      return 1;
    }
    if (!m->notes.empty()) spdlog::warn("BPF install: {}", m->notes);
    maps = std::move(m->maps);
    rc.redirect = so.redirect;
    rc.skmsg = m->skmsg;
    rc.skmsg_upstream = opts.skmsg_upstream;
    rc.manage_all_netns = opts.pod_mode_all;
    rc.manage_host_netns = opts.manage_host_netns;
    spdlog::info("interception attached to cgroup {}, pinned under {}, redirect {}", io.cgroup_path,
                 io.pin_dir.empty() ? "/sys/fs/bpf/metanode" : io.pin_dir, so.redirect.str());
  }
  // Hitless restart (handover.h): a daemon already serving at --handover
  // hands us its listening sockets once our configuration is in; until
  // then it serves, and it owns the kernel side. Found (or our listener
  // bound) before the sandbox, which leaves no unlink.
  std::optional<Predecessor> predecessor;
  int handover_fd = -1;
  if (!opts.handover.empty()) {
    auto p = Predecessor::find(opts.handover);
    if (!p) {
      spdlog::critical("{}", p.error().message());
      return 1;
    }
    if (*p) {
      predecessor.emplace(std::move(**p));
      spdlog::info("handover: a daemon serves at {}: taking over from it once configured", opts.handover);
    } else if (auto l = listen_handover(opts.handover); l) {
      handover_fd = *l;
    } else {
      spdlog::critical("{}", l.error().message());
      return 1;
    }
  }
  // A failed start fails pods open, unless a predecessor still serves them.
  auto fail = [&](int code) {
    if (maps && !predecessor) (void)maps->disable();
    return code;
  };

  // From here on the daemon needs few privileges: drop the rest while this
  // is the only thread, so every thread started later inherits the sandbox.
  SandboxOptions sb;
  sb.intercept = opts.intercept;
  sb.enter_netns = opts.intercept && (!opts.pods_netns_dir.empty() || opts.pods_kubernetes);
  sb.seccomp = opts.seccomp;
  if (maps) sb.bpf_works_without_cap = [&] { return bool(maps->counters()); };
  auto sandbox = enter_sandbox(sb);
  if (!sandbox) {
    spdlog::critical("cannot drop privileges: {} (--no-seccomp runs without the system call filter)",
                     sandbox.error().message());
    return fail(1);
  }
  spdlog::info("{}", *sandbox);

  // The access log's writer thread starts inside the sandbox like the rest.
  std::unique_ptr<AccessLog> access_log;
  if (opts.access_log) {
    auto l = AccessLog::open(*opts.access_log);
    if (!l) {
      spdlog::critical("{}", l.error().message());
      return fail(2);
    }
    access_log = std::move(*l);
    so.access_log = access_log.get();
  }

  // Listen first (with interception: on the redirect address, so no pod is
  // ever redirected to nothing), then let configuration in. Taking over,
  // the predecessor listens until we are configured.
  Server server(so, maps.get());
  auto start_serving = [&]() -> bool {
    if (auto r = server.start(); !r) {
      spdlog::critical("data plane failed to start: {}", r.error().message());
      return false;
    }
    if (!maps) return true;
    if (auto r = maps->configure(rc); !r) {
      spdlog::critical("{}", r.error().message());
      return false;
    }
    for (uint16_t port : opts.exclude_ports)
      if (auto r = maps->exclude_port(0, port, true); !r) {
        spdlog::critical("{}", r.error().message());
        return false;
      }
    return true;
  };
  if (!predecessor) {
    // VIPs pinned by a previous run would be redirected to a daemon with no
    // configuration yet: they go direct until the applier adds them back
    // with the snapshot that serves them.
    if (maps)
      if (auto r = bpf::sync_services(*maps, {}); !r) {
        spdlog::critical("{}", r.error().message());
        return fail(1);
      }
    if (!start_serving()) return fail(1);
  }
  // The workload certificate first: xDS servers that want a client
  // certificate (Aeraki's RDS) get it on the first connect.
  std::unique_ptr<xds::IstioCaClient> ca;
  if (!opts.ca_address.empty()) {
    xds::IstioCaClient::Options co;
    co.address = opts.ca_address;
    co.security = opts.xds_security;
    co.security.cluster_id = opts.node.cluster_id;
    std::string ns = opts.node.namespace_.empty() ? "default" : opts.node.namespace_;
    std::string sa = opts.node.service_account.empty() ? "default" : opts.node.service_account;
    co.spiffe_id = "spiffe://" + opts.trust_domain + "/ns/" + ns + "/sa/" + sa;
    co.ttl = opts.cert_ttl;
    ca = std::make_unique<xds::IstioCaClient>(co);
    if (auto r = ca->start(); !r) spdlog::error("{} (retrying)", r.error().message());
  }
  ConfigApplier applier(server, maps.get());
  auto source = make_source(opts, ca.get());
  if (auto r = source->start(applier); !r) {
    spdlog::critical("configuration rejected: {}", r.error().message());
    server.stop();
    return fail(2);
  }
  if (auto e = applier.bind_error(); !e.empty()) {
    spdlog::critical("data plane failed to start: {}", e);
    source->stop();
    server.stop();
    return fail(1);
  }
  // Taking over: configured first (bounded), then the predecessor's
  // sockets; if it is gone by then, our own.
  std::vector<HandedSocket> handed;
  if (predecessor) {
    auto until = Clock::now() + opts.handover_wait;
    while (!source->synced() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!source->synced())
      spdlog::warn("handover: taking over still waiting for {}", source->waiting_for());
    if (auto got = predecessor->take(std::chrono::seconds(10)); got) {
      handed = std::move(*got);
      spdlog::info("handover: took {} listening sockets", handed.size());
      std::vector<std::pair<net::Endpoint, int>> data;
      std::erase_if(handed, [&](const HandedSocket& h) {
        if (h.role == "data") data.emplace_back(h.addr, h.fd);
        return h.role == "data";
      });
      server.inherit(std::move(data));
    } else {
      spdlog::warn("{}: starting on our own", got.error().message());
      predecessor.reset();
    }
    if (!start_serving()) {
      source->stop();
      close_all(handed);
      return fail(1);
    }
  }

  // The node's pods from the Kubernetes API, on the main loop.
  asio::io_context io;
  std::unique_ptr<KubePods> kube;
  if (opts.pods_kubernetes) {
    KubePodsOptions ko;
    auto api = opts.kube_api.empty() ? kube::ApiConfig::in_cluster() : kube::ApiConfig::from_url(opts.kube_api);
    if (!api) {
      spdlog::critical("--pods kubernetes: {}", api.error().message());
      source->stop();
      server.stop();
      return fail(2);
    }
    ko.api = std::move(*api);
    if (!opts.kube_token_file.empty()) ko.api.token_file = opts.kube_token_file;
    if (!opts.kube_ca_file.empty()) ko.api.ca_file = opts.kube_ca_file;
    ko.node_name = opts.node.node_name;
    ko.trust_domain = opts.trust_domain;
    ko.cluster_id = opts.node.cluster_id;
    ko.netns_dir = opts.kube_netns_dir;
    ko.netns_prefix = opts.kube_netns_prefix;
    kube = std::make_unique<KubePods>(io, std::move(ko), maps.get(), server);
    if (auto r = kube->start(); !r) {
      spdlog::critical("--pods kubernetes: {}", r.error().message());
      source->stop();
      server.stop();
      return fail(2);
    }
  }

  auto ready = [&] {
    if (!server.ready()) return AdminResponse{503, "text/plain", "not ready: data plane stopped or draining\n"};
    if (!source->synced())
      return AdminResponse{503, "text/plain", "not ready: waiting for " + source->waiting_for() + "\n"};
    if (kube && !kube->synced())
      return AdminResponse{503, "text/plain",
                           "not ready: waiting for pods from the Kubernetes API: " + kube->waiting_for() + "\n"};
    return AdminResponse{200, "text/plain", "ready\n"};
  };
  auto metrics = [&] {
    return AdminResponse{200, "text/plain; version=0.0.4",
                         render_prometheus(server.shards(), bpf_counters_text(maps.get()) + source->metrics_text() +
                                                                (kube ? kube->metrics_text() : "") +
                                                                (access_log ? access_log->metrics_text() : ""))};
  };
  auto get_only = [](const std::string& method) {
    return method == "GET" ? std::nullopt
                           : std::optional<AdminResponse>(AdminResponse{405, "text/plain", "GET only\n"});
  };
  const AdminResponse not_found{404, "text/plain", "not found\n"};
  // /explain?dst=VIP:PORT[&src=POD_IP][&attr.NAME=VALUE...][&format=json]
  auto explain = [&](const std::string& query) {
    auto q = parse_explain_query(query);
    if (!q) return AdminResponse{400, "text/plain", "explain: " + q.error().message() + "\n"};
    KernelView k;
    k.intercepting = maps != nullptr;
    k.all_pods = opts.pod_mode_all;
    if (maps) {
      if (auto s = maps->services()) k.services = std::move(*s);
      if (auto p = maps->pods()) k.pods = std::move(*p);
      if (auto x = maps->excluded_ports()) k.excluded = std::move(*x);
    }
    // The source pod's namespace: its identity by address, then the
    // namespace holding that identity.
    if (auto peers = server.peers(); peers && q->src) {
      if (auto id = peers->find(0, *q->src)) {
        k.src_pod = id->pod;
        for (const auto& [cookie, other] : peers->by_netns)
          if (other == id) k.src_netns = cookie;
      }
    }
    auto snap = server.snapshot();
    return q->json ? AdminResponse{200, "application/json", explain_json(*q, snap.get(), k)}
           : AdminResponse{200, "text/plain", explain_text(*q, snap.get(), k)};
  };
  // POST /drain (metanodectl drain): what SIGTERM does, without the exit.
  // Readiness fails, pods' new connects go direct, calls in flight finish
  // and client connections close at message boundaries; the daemon then
  // idles until it is stopped. On the main loop, which owns the maps.
  std::atomic<bool> drain_requested{false};
  auto drain_now = [&] {
    bool first = !drain_requested.exchange(true);
    if (first)
      asio::post(io, [&] {
        spdlog::info("drain requested through the admin endpoint: {} client connections",
                     server.client_connections());
        if (maps) (void)maps->disable();
        server.begin_drain();
      });
    return AdminResponse{202, "text/plain", first ? "draining\n" : "already draining\n"};
  };
  AdminServer admin(opts.admin, [&](const std::string& method, const std::string& path) {
    if (method == "POST" && path == "/drain") return drain_now();
    if (auto r = get_only(method)) return *r;
    if (path == "/ready" || path == "/healthz/ready") return ready();
    if (path == "/config_dump") return AdminResponse{200, "application/json", config_dump(server)};
    // Where the configuration comes from and how it is going: per stream and
    // type, version, nonce, last update, last NACK (not Envoy's: its own path).
    if (path == "/config_source") return AdminResponse{200, "application/json", source->status_json() + "\n"};
    if (path == "/clusters") return AdminResponse{200, "text/plain", server.clusters_text()};
    if (path == "/clusters?format=json") return AdminResponse{200, "application/json", server.clusters_json()};
    if (path == "/stats/prometheus" || path == "/stats") return metrics();
    if (path == "/routes") return AdminResponse{200, "text/plain", routes_text(server.snapshot().get())};
    if (path == "/routes?format=json")
      return AdminResponse{200, "application/json", routes_json(server.snapshot().get())};
    if (path == "/explain" || path.rfind("/explain?", 0) == 0)
      return explain(path.size() > 9 ? path.substr(9) : std::string());
    if (path == "/")
      return AdminResponse{200, "text/plain",
                           "/ready\n/config_dump\n/config_source\n/clusters[?format=json]\n/routes[?format=json]\n"
                           "/stats/prometheus\n" "POST /drain\n"
                           "/explain?dst=IP:PORT[&src=IP][&attr.NAME=VALUE...][&format=json]\n"};
    return not_found;
  });
  // What a scraper and the kubelet may reach on the node's address: the
  // metrics and readiness alone, never the configuration.
  std::optional<AdminServer> metrics_srv, readiness_srv;
  if (opts.metrics)
    metrics_srv.emplace(*opts.metrics, [&](const std::string& method, const std::string& path) {
      if (auto r = get_only(method)) return *r;
      return path == "/stats/prometheus" || path == "/metrics" ? metrics() : not_found;
    });
  if (opts.readiness)
    readiness_srv.emplace(*opts.readiness, [&](const std::string& method, const std::string& path) {
      if (auto r = get_only(method)) return *r;
      return path == "/healthz/ready" ? ready() : not_found;
    });
  // Each with its role in a handover and the address it is configured for.
  struct Http {
    AdminServer* srv;
    const char* role;
    net::Endpoint addr;
  };
  const Http http[] = {{&admin, "admin", opts.admin},
                       {metrics_srv ? &*metrics_srv : nullptr, "metrics", opts.metrics.value_or(net::Endpoint{})},
                       {readiness_srv ? &*readiness_srv : nullptr, "readiness", opts.readiness.value_or(net::Endpoint{})}};
  for (auto [a, role, want] : http) {
    if (!a) continue;
    if (auto r = a->start(take_socket(handed, role, want)); !r) {
      spdlog::critical("{}", r.error().message());
      source->stop();
      server.stop();
      return fail(1);
    }
  }
  spdlog::info("metanoded ready: admin http://{}/{}{}", admin.bound().str(),
               metrics_srv ? ", metrics http://" + metrics_srv->bound().str() + "/stats/prometheus" : "",
               readiness_srv ? ", readiness http://" + readiness_srv->bound().str() + "/healthz/ready" : "");
  std::optional<ConnectionReceiver> from_predecessor;
  if (predecessor) {
    // We accept on every socket now: the predecessor lets go of its copies
    // and finishes its calls, then passes us each client connection at a
    // message boundary. Its handover listener is ours for the next.
    if (auto r = predecessor->done(); !r) spdlog::warn("{}", r.error().message());
    handover_fd = take_socket(handed, "handover", {});
    close_all(handed);
    from_predecessor.emplace(io, predecessor->release(), [&server](int fd, const net::Endpoint& orig,
                                                                   uint64_t netns) { server.adopt(fd, orig, netns); });
    from_predecessor->start();
    predecessor.reset();
    if (handover_fd < 0) {
      if (auto l = listen_handover(opts.handover); l) handover_fd = *l;
      else spdlog::warn("{}: the next upgrade restarts cold", l.error().message());
    }
  }

  // Pods from the container runtime's namespace files, when asked to.
  std::unique_ptr<PodWatcher> pods;
  if (maps && !opts.pods_netns_dir.empty()) {
    pods = std::make_unique<PodWatcher>(*maps, opts.pods_netns_dir, opts.pods_netns_prefix);
    auto ch = pods->sync();
    spdlog::info("pods from {}/{}*: {} managed", opts.pods_netns_dir, opts.pods_netns_prefix, ch.added);
  }

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    spdlog::info("signal {}: shutting down", sig);
    io.stop();
  });

  // A successor asking for our sockets: every listening one, the handover
  // listener included. Once it accepts on them we stop (below).
  bool handed_over = false;
  int successor_conn = -1;  // after the handover: where our client connections go
  std::optional<HandoverServer> handover;
  if (handover_fd >= 0) {
    auto provide = [&] {
      std::vector<HandedSocket> out;
      for (auto& [ep, fd] : server.listening_sockets()) out.push_back({"data", ep, fd});
      for (const auto& h : http)
        if (h.srv) out.push_back({h.role, h.srv->bound(), ::fcntl(h.srv->native_handle(), F_DUPFD_CLOEXEC, 0)});
      out.push_back({"handover", {}, ::fcntl(handover->native_handle(), F_DUPFD_CLOEXEC, 0)});
      std::erase_if(out, [](const HandedSocket& h) { return h.fd < 0; });
      return out;
    };
    handover.emplace(io, handover_fd, provide, [&](int conn) {
      handed_over = true;
      successor_conn = conn;
      io.stop();
    });
    handover->start();
  }

  // Liveness for the kernel side: four beats per liveness window, so one
  // late beat never makes connect4 fail open spuriously.
  asio::steady_timer beat(io);
  std::function<void()> heartbeat = [&] {
    if (maps)
      if (auto r = maps->heartbeat(); !r) spdlog::error("heartbeat: {}", r.error().message());
    beat.expires_after(std::chrono::milliseconds(250));
    beat.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) heartbeat();
    });
  };
  heartbeat();

  // Pods from the runtime's namespace files: rescanned every second.
  asio::steady_timer pod_timer(io);
  std::function<void()> pod_scan = [&] {
    pod_timer.expires_after(opts.watch_interval);
    pod_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      if (pods) pods->sync();
      pod_scan();
    });
  };
  if (pods) pod_scan();
  asio::steady_timer kube_timer(io);
  std::function<void()> kube_scan = [&] {
    kube_timer.expires_after(opts.watch_interval);
    kube_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      kube->rescan();
      kube_scan();
    });
  };
  if (kube) kube_scan();

  io.run();

  if (handed_over) {
    // The successor serves new connections and owns the kernel side: stop
    // all that answers on the shared sockets or writes the maps, finish our
    // calls, then wait for our own SIGTERM (a DaemonSet's old pod gets one
    // once the new one is ready; exiting earlier would restart it).
    asio::io_context idle;
    asio::signal_set term(idle, SIGINT, SIGTERM);
    for (const auto& h : http)
      if (h.srv) h.srv->stop();
    if (kube) kube->stop();
    source->stop();
    if (ca) ca->stop();
    auto t0 = Clock::now();
    ConnectionSender to_successor(successor_conn);
    bool clean = server.drain(t0 + opts.drain_timeout, true,
                              [&](int fd, const net::Endpoint& orig, uint64_t netns) {
                                return to_successor.pass(fd, orig, netns);
                              });
    server.stop();
    to_successor.end();
    spdlog::info("handed over; drained in {} ms{}; exiting on SIGTERM",
                 std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count(),
                 clean ? "" : " (deadline reached; the rest are cut)");
    term.async_wait([](const boost::system::error_code&, int) {});
    idle.run();
    return 0;
  }

  // Fail open at once: new pod connects go direct while we drain. /ready
  // answers 503 from here on; calls in flight finish up to the deadline.
  if (maps) (void)maps->disable();
  auto t0 = Clock::now();
  bool clean = server.drain(t0 + opts.drain_timeout);
  spdlog::info("drained in {} ms{}",
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count(),
               clean ? "" : " (deadline reached; the rest are cut)");
  if (readiness_srv) readiness_srv->stop();
  if (metrics_srv) metrics_srv->stop();
  admin.stop();
  if (kube) kube->stop();
  source->stop();
  if (ca) ca->stop();
  server.stop();
  return 0;
}

}  // namespace metanode::core
