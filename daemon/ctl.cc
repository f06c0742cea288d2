// metanodectl: inspection from the command line.
//   metanodectl decode FILE [--protocol auto|thrift|dubbo]
//   metanodectl bpf [--pin-dir DIR]
//   metanodectl pod add|del NETNS [--opt-out] [--pin-dir DIR]
//   metanodectl exclude add|del PORT [--netns NETNS] [--pin-dir DIR]
//   metanodectl status | explain VIP:PORT | routes | clusters | drain | config   (the running daemon's admin endpoint)
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "metanode/bpf/maps.h"
#include "ctl_admin.h"
#include "metanode/codecs/inspect.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage:\n"
               "  metanodectl decode FILE [--protocol auto|thrift|dubbo]\n"
               "      one JSON line per message (offset, size, kind, request id, metadata);\n"
               "      exit 1 with an error line at the offset where the stream stops making sense\n"
               "  metanodectl bpf [--pin-dir DIR]\n"
               "      the pinned maps, decoded: services, pods, excluded ports, decision\n"
               "      counters, live socket-to-socket connections\n"
               "  metanodectl pod add|del NETNS [--opt-out] [--pin-dir DIR]\n"
               "      manage (or opt out) the pod whose network namespace is NETNS\n"
               "      (/run/netns/NAME or /proc/PID/ns/net); see metanoded --pods listed\n"
               "  metanodectl exclude add|del PORT [--netns NETNS] [--pin-dir DIR]\n"
               "      never intercept connects to PORT (from NETNS, or from every pod)\n"
               "From the running daemon (--admin IP:PORT, default 127.0.0.1:15000):\n"
               "  metanodectl status [-o json]\n"
               "      ready or why not, requests, connections, rejected reloads, pods;\n"
               "      exit 3 when not ready\n"
               "  metanodectl explain VIP:PORT [--src POD_IP] [--attr KEY=VALUE]... [-o json]\n"
               "      what a connect and a request with these attributes would meet: the\n"
               "      kernel's decision, listener, each route's verdict, clusters, endpoints\n"
               "  metanodectl routes [-o json]\n"
               "      every listener's routes as executed: matchers, weighted clusters,\n"
               "      mirrors, timeouts, retries\n"
               "  metanodectl clusters [-o json]\n"
               "      every cluster, its endpoints, their weights, request counts and health\n"
               "  metanodectl drain [--timeout-ms N] [-o json]\n"
               "      what SIGTERM does, without the exit: readiness fails, pods connect\n"
               "      direct, calls in flight finish, client connections close between\n"
               "      messages; waits until none is left (exit 1 if some are at the timeout)\n"
               "  metanodectl config\n"
               "      the live configuration (JSON, as /config_dump)\n");
  return 2;
}

int decode(int argc, char** argv) {
  std::string file, protocol = "auto";
  for (int i = 0; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--protocol") && i + 1 < argc)
      protocol = argv[++i];
    else if (file.empty())
      file = argv[i];
    else
      return usage();
  }
  if (file.empty()) return usage();
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "metanodectl: cannot read %s\n", file.c_str());
    return 2;
  }
  std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto r = metanode::codecs::decode_stream(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), b.size()), protocol);
  std::fputs(r.lines.c_str(), stdout);
  if (!r.ok) {
    std::fprintf(stderr, "metanodectl: %s: stopped at offset %zu of %zu after %zu messages\n",
                 file.c_str(), r.consumed, b.size(), r.messages);
    return 1;
  }
  return 0;
}

struct Common {
  std::string pin = "/sys/fs/bpf/metanode";
  std::string netns;
  bool opt_out = false;
  std::vector<std::string> positional;
};

Common parse_common(int argc, char** argv) {
  Common c;
  for (int i = 0; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--pin-dir") && i + 1 < argc)
      c.pin = argv[++i];
    else if (!std::strcmp(argv[i], "--netns") && i + 1 < argc)
      c.netns = argv[++i];
    else if (!std::strcmp(argv[i], "--opt-out"))
      c.opt_out = true;
    else
      c.positional.push_back(argv[i]);
  }
  return c;
}

std::unique_ptr<metanode::bpf::Maps> open_maps(const std::string& pin) {
  auto maps = metanode::bpf::open_pinned(pin);
  if (!maps) {
    std::fprintf(stderr, "metanodectl: %s (is metanoded installed?)\n", maps.error().message().c_str());
    return nullptr;
  }
  return std::move(maps.value());
}

int bpf(int argc, char** argv) {
  Common c = parse_common(argc, argv);
  auto maps = open_maps(c.pin);
  if (!maps) return 1;
  std::printf("services (mn_services):\n");
  if (auto services = maps->services())
    for (const auto& [vip, id] : *services) std::printf("  %-21s listener %u\n", vip.str().c_str(), id);
  std::printf("pods (mn_pods; empty in manage-all mode):\n");
  if (auto pods = maps->pods())
    for (const auto& [netns, flags] : *pods)
      std::printf("  netns %-20llu %s\n", (unsigned long long)netns,
                  flags & metanode::bpf::kPodOptOut ? "opt-out" : "managed");
  std::printf("excluded ports (mn_excl):\n");
  if (auto ex = maps->excluded_ports())
    for (const auto& [netns, port] : *ex)
      std::printf("  %-5u %s\n", port, netns ? ("netns " + std::to_string(netns)).c_str() : "all pods");
  std::printf("decisions (mn_counters, summed over CPUs):\n");
  if (auto counters = maps->counters())
    for (const auto& x : *counters)
      std::printf("  %-22s %llu\n", x.name.c_str(), (unsigned long long)x.value);
  auto socks = maps->sockets();
  auto pending = maps->pending_tuples();
  std::printf("socket-to-socket (mn_sock_hash): %zu sockets; handshakes pending (mn_tuple): %zu\n",
              socks ? socks->size() : 0, pending ? *pending : 0);
  if (socks)
    for (const auto& e : *socks) std::printf("  %s -> %s\n", e.local.str().c_str(), e.remote.str().c_str());
  return 0;
}

int pod(int argc, char** argv) {
  Common c = parse_common(argc, argv);
  if (c.positional.size() != 2 || (c.positional[0] != "add" && c.positional[0] != "del")) return usage();
  auto cookie = metanode::bpf::netns_cookie(c.positional[1]);
  if (!cookie) {
    std::fprintf(stderr, "metanodectl: %s\n", cookie.error().message().c_str());
    return 1;
  }
  auto maps = open_maps(c.pin);
  if (!maps) return 1;
  auto r = c.positional[0] == "add"
               ? maps->set_pod(*cookie, c.opt_out ? metanode::bpf::kPodOptOut : metanode::bpf::kPodManaged)
               : maps->remove_pod(*cookie);
  if (!r) {
    std::fprintf(stderr, "metanodectl: %s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("netns %s (cookie %llu): %s\n", c.positional[1].c_str(), (unsigned long long)*cookie,
              c.positional[0] == "del" ? "removed" : c.opt_out ? "opted out" : "managed");
  return 0;
}

int exclude(int argc, char** argv) {
  Common c = parse_common(argc, argv);
  if (c.positional.size() != 2 || (c.positional[0] != "add" && c.positional[0] != "del")) return usage();
  char* end = nullptr;
  unsigned long port = std::strtoul(c.positional[1].c_str(), &end, 10);
  if (*end || port == 0 || port > 65535) return usage();
  uint64_t cookie = 0;
  if (!c.netns.empty()) {
    auto ck = metanode::bpf::netns_cookie(c.netns);
    if (!ck) {
      std::fprintf(stderr, "metanodectl: %s\n", ck.error().message().c_str());
      return 1;
    }
    cookie = *ck;
  }
  auto maps = open_maps(c.pin);
  if (!maps) return 1;
  if (auto r = maps->exclude_port(cookie, uint16_t(port), c.positional[0] == "add"); !r) {
    std::fprintf(stderr, "metanodectl: %s\n", r.error().message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  if (!std::strcmp(argv[1], "decode")) return decode(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "bpf")) return bpf(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "pod")) return pod(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "exclude")) return exclude(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "status")) return metanode::ctl::status(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "explain")) return metanode::ctl::explain(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "drain")) return metanode::ctl::drain(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "clusters")) return metanode::ctl::passthrough(argc - 2, argv + 2, "/clusters", "/clusters?format=json");
  if (!std::strcmp(argv[1], "routes"))
    return metanode::ctl::passthrough(argc - 2, argv + 2, "/routes", "/routes?format=json");
  if (!std::strcmp(argv[1], "config"))
    return metanode::ctl::passthrough(argc - 2, argv + 2, "/config_dump", "/config_dump");
  return usage();
}
