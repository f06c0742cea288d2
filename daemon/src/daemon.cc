#include "metanode/core/daemon.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <fstream>
#include <sstream>

#include "metanode/bpf/maps.h"
#include "metanode/sys.h"
#include "metanode/core/admin.h"
#include "metanode/core/pod_watcher.h"
#include "metanode/core/server.h"
#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {
namespace asio = boost::asio;

namespace {

Result<std::shared_ptr<const xds::Snapshot>> load_snapshot(const std::string& dir, uint64_t version) {
  auto files = xds::read_manifest_dir(dir);
  if (!files) return files.error();
  auto res = xds::translate_manifests(*files);
  if (!res) return res.error();
  res->version = std::to_string(version);
  return xds::build_snapshot(std::move(res.value()));
}


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

std::vector<net::Endpoint> listener_addresses(const xds::Snapshot& s) {
  std::vector<net::Endpoint> v;
  for (const auto& l : s.listeners) v.push_back(l.address);
  return v;
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

}  // namespace

int run_daemon(const DaemonOptions& opts) {
  uint64_t version = 1;
  auto snap = load_snapshot(opts.config_dir, version);
  if (!snap) {
    spdlog::critical("configuration rejected: {}", snap.error().message());
    return 2;
  }
  spdlog::info("configuration {}: {} listeners, {} clusters, {} route tables", opts.config_dir,
               (*snap)->listeners.size(), (*snap)->clusters.size(), (*snap)->routes.size());

  ServerOptions so;
  so.workers = opts.workers;
  so.intercept = opts.intercept;
  so.request_timeout = opts.request_timeout;

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
    if (!m->notes.empty()) spdlog::warn("kernel features: {}", m->notes);
    maps = std::move(m->maps);
    rc.redirect = so.redirect;
    rc.skmsg = m->skmsg;
    rc.skmsg_upstream = opts.skmsg_upstream;
    rc.manage_all_netns = opts.pod_mode_all;
    rc.manage_host_netns = opts.manage_host_netns;
    spdlog::info("interception attached to cgroup {}, pinned under {}, redirect {}", io.cgroup_path,
                 io.pin_dir.empty() ? "/sys/fs/bpf/metanode" : io.pin_dir, so.redirect.str());
  }

  Server server(so, maps.get());
  server.publish(*snap);
  if (auto r = server.start(); !r) {
    spdlog::critical("data plane failed to start: {}", r.error().message());
    return 1;
  }
  // Redirect only once something listens at the redirect address.
  if (maps) {
    if (auto r = maps->configure(rc); !r) {
      spdlog::critical("{}", r.error().message());
      return 1;
    }
    if (auto r = bpf::sync_services(*maps, listener_addresses(**snap)); !r) {
      spdlog::critical("{}", r.error().message());
      return 1;
    }
    for (uint16_t port : opts.exclude_ports)
      if (auto r = maps->exclude_port(0, port, true); !r) {
        spdlog::critical("{}", r.error().message());
        return 1;
      }
  }

  AdminServer admin(opts.admin, [&](const std::string& method, const std::string& path) {
    if (method != "GET") return AdminResponse{405, "text/plain", "GET only\n"};
    if (path == "/ready") {
      bool ok = server.ready();
      return AdminResponse{ok ? 200 : 503, "text/plain", ok ? "ready\n" : "not ready\n"};
    }
    if (path == "/config_dump") {
      auto s = server.snapshot();
      return AdminResponse{200, "application/json",
                           s ? xds::resources_to_json(s->resources) + "\n" : "{}\n"};
    }
    if (path == "/clusters") return AdminResponse{200, "text/plain", server.clusters_text()};
    if (path == "/stats/prometheus" || path == "/stats")
      return AdminResponse{200, "text/plain; version=0.0.4",
                           render_prometheus(server.shards(), bpf_counters_text(maps.get()))};
    if (path == "/")
      return AdminResponse{200, "text/plain",
                           "/ready\n/config_dump\n/clusters\n/stats/prometheus\n"};
    return AdminResponse{404, "text/plain", "not found\n"};
  });
  if (auto r = admin.start(); !r) {
    spdlog::critical("{}", r.error().message());
    if (maps) (void)maps->disable();
    return 1;
  }
  spdlog::info("metanoded ready: admin http://{}/", admin.bound().str());

  // Pods from the container runtime's namespace files, when asked to.
  std::unique_ptr<PodWatcher> pods;
  if (maps && !opts.pods_netns_dir.empty()) {
    pods = std::make_unique<PodWatcher>(*maps, opts.pods_netns_dir, opts.pods_netns_prefix);
    auto ch = pods->sync();
    spdlog::info("pods from {}/{}*: {} managed", opts.pods_netns_dir, opts.pods_netns_prefix, ch.added);
  }

  asio::io_context io;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    spdlog::info("signal {}: shutting down", sig);
    io.stop();
  });

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

  // The embedded control plane: notice edited manifests, apply them whole or
  // not at all (the last good configuration stays in force).
  asio::steady_timer watch(io);
  std::string fingerprint = xds::manifest_dir_fingerprint(opts.config_dir);
  std::function<void()> watcher = [&] {
    watch.expires_after(opts.watch_interval);
    watch.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      if (pods) pods->sync();
      std::string fp = xds::manifest_dir_fingerprint(opts.config_dir);
      if (fp != fingerprint) {
        fingerprint = fp;
        auto next = load_snapshot(opts.config_dir, ++version);
        if (!next) {
          server.control_stats().inc(Counter::config_reload_rejected);
          spdlog::error("configuration change rejected, keeping version {}: {}",
                        server.snapshot()->version, next.error().message());
        } else {
          server.publish(*next);
          if (maps)
            if (auto r = bpf::sync_services(*maps, listener_addresses(**next)); !r)
              spdlog::error("{}", r.error().message());
          spdlog::info("configuration version {} applied: {} listeners, {} clusters",
                       (*next)->version, (*next)->listeners.size(), (*next)->clusters.size());
        }
      }
      watcher();
    });
  };
  watcher();

  io.run();

  // Fail open at once: new pod connects go direct while we drain.
  if (maps) (void)maps->disable();
  admin.stop();
  server.stop();
  return 0;
}

}  // namespace metanode::core
