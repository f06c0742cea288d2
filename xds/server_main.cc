// metanode-xds: the embedded control plane. Serves Istio ServiceEntry and
// DestinationRule plus Aeraki MetaRouter manifests from a directory as xDS
// (ADS and Aeraki's RDS service) to any number of metanoded nodes; an edit
// is pushed within a second. Flag parsing and wiring only.
#include <getopt.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>

#include "metanode/xds/manifest_source.h"
#include "metanode/xds/xds_server.h"

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: metanode-xds --config-dir DIR [--listen HOST:PORT] [--log-level LEVEL]\n"
               "  --config-dir DIR    Istio/Aeraki manifests (watched with inotify)\n"
               "  --listen HOST:PORT  gRPC address for ADS and RDS (default 127.0.0.1:15010)\n"
               "  --log-level LEVEL   trace|debug|info|warn|error (info)\n");
}
}  // namespace

int main(int argc, char** argv) {
  // Signals are taken synchronously by main; every thread started later
  // (the watcher's, gRPC's) inherits them blocked.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::string dir, listen = "127.0.0.1:15010";
  enum { kDir = 1, kListen, kLog, kHelp };
  static const option longopts[] = {{"config-dir", required_argument, nullptr, kDir},
                                    {"listen", required_argument, nullptr, kListen},
                                    {"log-level", required_argument, nullptr, kLog},
                                    {"help", no_argument, nullptr, kHelp},
                                    {nullptr, 0, nullptr, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
    switch (c) {
      case kDir: dir = optarg; break;
      case kListen: listen = optarg; break;
      case kLog: spdlog::set_level(spdlog::level::from_str(optarg)); break;
      case kHelp: usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (dir.empty()) {
    usage(stderr);
    return 2;
  }
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  metanode::xds::ManifestTranslator translator;  // main, then the watcher thread
  auto res = metanode::xds::load_manifest_dir(dir, translator);
  if (!res) {
    spdlog::critical("configuration rejected: {}", res.error().message());
    return 2;
  }
  metanode::xds::XdsServer server;
  std::mutex mu;
  std::string version = server.update(*res);
  auto reload = [&] {
    auto t0 = std::chrono::steady_clock::now();
    auto next = metanode::xds::load_manifest_dir(dir, translator);
    auto t1 = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> l(mu);
    if (!next) {
      spdlog::error("configuration change rejected, still serving {}: {}", version,
                    next.error().message());
      return;
    }
    std::string v = server.update(*next);  // unchanged resources are not pushed
    auto t2 = std::chrono::steady_clock::now();
    if (v == version) return;
    version = v;
    auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
    spdlog::info("serving {}: {} listeners, {} clusters, {} route configurations (read and translated in {} ms, "
                 "versioned and queued in {} ms)",
                 v, next->listeners.size(), next->clusters.size(), next->routes.size(), ms(t1 - t0), ms(t2 - t1));
  };
  metanode::xds::DirWatcher watcher(dir, reload);
  if (auto r = watcher.start(); !r) {
    spdlog::critical("{}", r.error().message());
    return 1;
  }
  auto port = server.start(listen);
  if (!port) {
    spdlog::critical("{}", port.error().message());
    return 1;
  }
  spdlog::info("metanode-xds serving {} on port {} (ADS and RDS): {} listeners, {} clusters", dir,
               *port, res->listeners.size(), res->clusters.size());
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: stopping", sig);
  watcher.stop();
  server.stop();
  return 0;
}
