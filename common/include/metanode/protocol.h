// The RPC protocols a listener speaks, named in one place: configuration
// is checked with parse_protocol(), codecs are made from the enum
// (codecs::make_codec), labels and logs print protocol_name().
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace metanode {

enum class Protocol : uint8_t {
  kThrift,
  kDubbo,
  kAuto,  // recognised from the first bytes of each connection (a metanode extension)
};

inline constexpr std::string_view kProtocolNames = "thrift, dubbo, auto";

inline std::string_view protocol_name(Protocol p) {
  switch (p) {
    case Protocol::kThrift:
      return "thrift";
    case Protocol::kDubbo:
      return "dubbo";
    case Protocol::kAuto:
      return "auto";
  }
  return "auto";
}

inline std::optional<Protocol> parse_protocol(std::string_view name) {
  for (Protocol p : {Protocol::kThrift, Protocol::kDubbo, Protocol::kAuto})
    if (protocol_name(p) == name) return p;
  return std::nullopt;
}

}  // namespace metanode
