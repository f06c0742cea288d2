// IPv4 endpoints in host byte order, with parsing and printing. The BPF ABI
// keeps network order; conversion happens only in bpf/src/maps.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace metanode::net {

struct Endpoint {
  uint32_t addr = 0;  // IPv4, host order
  uint16_t port = 0;  // host order

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
  friend auto operator<=>(const Endpoint&, const Endpoint&) = default;
  std::string str() const;
  std::string addr_str() const;
};

// "a.b.c.d" -> host-order address.
std::optional<uint32_t> parse_ipv4(std::string_view s);
// "a.b.c.d:port" -> endpoint.
std::optional<Endpoint> parse_endpoint(std::string_view s);
std::string ipv4_str(uint32_t addr);

struct EndpointHash {
  size_t operator()(const Endpoint& e) const noexcept {
    return std::hash<uint64_t>()((uint64_t(e.addr) << 16) | e.port);
  }
};

}  // namespace metanode::net
