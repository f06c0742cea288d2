#include "metanode/net.h"

#include <arpa/inet.h>
#include <charconv>

namespace metanode::net {

std::optional<uint32_t> parse_ipv4(std::string_view s) {
  char buf[INET_ADDRSTRLEN];
  if (s.size() >= sizeof(buf)) return std::nullopt;
  s.copy(buf, s.size());
  buf[s.size()] = '\0';
  in_addr a{};
  if (inet_pton(AF_INET, buf, &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::optional<Endpoint> parse_endpoint(std::string_view s) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto addr = parse_ipv4(s.substr(0, colon));
  if (!addr) return std::nullopt;
  auto p = s.substr(colon + 1);
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || ptr != p.data() + p.size() || port > 65535) return std::nullopt;
  return Endpoint{*addr, static_cast<uint16_t>(port)};
}

std::string ipv4_str(uint32_t addr) {
  in_addr a{htonl(addr)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

std::string Endpoint::addr_str() const { return ipv4_str(addr); }
std::string Endpoint::str() const { return ipv4_str(addr) + ":" + std::to_string(port); }

}  // namespace metanode::net
