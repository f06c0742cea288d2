// metanodectl: inspection from the command line.
//   metanodectl decode FILE [--protocol auto|thrift|dubbo]
//   metanodectl bpf [--pin-dir DIR]
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "metanode/bpf/maps.h"
#include "metanode/codecs/inspect.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage:\n"
               "  metanodectl decode FILE [--protocol auto|thrift|dubbo]\n"
               "      one JSON line per message (offset, size, kind, request id, metadata);\n"
               "      exit 1 with an error line at the offset where the stream stops making sense\n"
               "  metanodectl bpf [--pin-dir DIR]\n"
               "      the pinned maps, decoded: services and decision counters\n");
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

int bpf(int argc, char** argv) {
  std::string pin = "/sys/fs/bpf/metanode";
  for (int i = 0; i < argc; ++i)
    if (!std::strcmp(argv[i], "--pin-dir") && i + 1 < argc) pin = argv[++i];
  auto maps = metanode::bpf::open_pinned(pin);
  if (!maps) {
    std::fprintf(stderr, "metanodectl: %s\n", maps.error().message().c_str());
    return 1;
  }
  auto services = (*maps)->services();
  std::printf("services (mn_services):\n");
  if (services)
    for (const auto& [vip, id] : *services) std::printf("  %-21s listener %u\n", vip.str().c_str(), id);
  auto counters = (*maps)->counters();
  std::printf("decisions (mn_counters, summed over CPUs):\n");
  if (counters)
    for (const auto& c : *counters) std::printf("  %-22s %llu\n", c.name.c_str(), (unsigned long long)c.value);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  if (!std::strcmp(argv[1], "decode")) return decode(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "bpf")) return bpf(argc - 2, argv + 2);
  return usage();
}
