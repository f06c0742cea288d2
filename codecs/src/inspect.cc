#include "metanode/codecs/inspect.h"

#include <cstdio>

#include "metanode/codecs/dubbo.h"
#include "metanode/codecs/thrift.h"

namespace metanode::codecs {

std::string json_escape(std::string_view s) {
  std::string o;
  o.reserve(s.size() + 2);
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\r':
        o += "\\r";
        break;
      case '\t':
        o += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          o += buf;
        } else {
          o += char(c);
        }
    }
  }
  return o;
}

std::string wire_name(std::string_view protocol, const Message& m) {
  if (protocol == "thrift")
    return std::string(thrift::transport_name(thrift::wire_transport(m.wire))) + "/" +
           thrift::protocol_name(thrift::wire_protocol(m.wire));
  if (protocol == "dubbo") {
    uint8_t f = dubbo::wire_flags(m.wire);
    std::string s = (f & dubbo::kSerializationMask) == dubbo::kHessian2
                        ? "hessian2"
                        : "serialization-" + std::to_string(f & dubbo::kSerializationMask);
    if (f & dubbo::kFlagTwoWay) s += " twoway";
    if (f & dubbo::kFlagEvent) s += " event";
    if (!(f & dubbo::kFlagRequest)) s += " status-" + std::to_string(dubbo::wire_status(m.wire));
    return s;
  }
  return "";
}

std::string message_json(std::string_view protocol, const Message& m, size_t offset) {
  std::string o = "{\"offset\":" + std::to_string(offset) + ",\"size\":" + std::to_string(m.size) +
                  ",\"protocol\":\"" + json_escape(protocol) + "\",\"wire\":\"" +
                  json_escape(wire_name(protocol, m)) + "\",\"kind\":\"" + kind_name(m.kind) +
                  "\",\"request_id\":" + std::to_string(m.request_id) + ",\"metadata\":{";
  bool first = true;
  for (const auto& [k, v] : m.metadata) {
    if (!first) o += ",";
    first = false;
    o += "\"" + json_escape(k) + "\":\"" + json_escape(v) + "\"";
  }
  return o + "}}";
}

StreamReport decode_stream(std::span<const uint8_t> bytes, std::string_view protocol,
                           const Limits& limits) {
  StreamReport r;
  auto codec = make_codec(protocol, limits);
  if (!codec) {
    r.lines = "{\"offset\":0,\"error\":\"unknown protocol '" + json_escape(protocol) + "'\"}\n";
    return r;
  }
  while (r.consumed < bytes.size()) {
    Message m;
    auto d = codec->decode(bytes.subspan(r.consumed), m);
    if (d.status == DecodeStatus::kNeedMoreData) {
      r.lines += "{\"offset\":" + std::to_string(r.consumed) + ",\"error\":\"truncated: " +
                 std::to_string(bytes.size() - r.consumed) +
                 " bytes at the end do not make a whole message\"}\n";
      return r;
    }
    if (d.status == DecodeStatus::kError) {
      r.lines += "{\"offset\":" + std::to_string(r.consumed) + ",\"error\":\"" + json_escape(d.error) +
                 "\"}\n";
      return r;
    }
    r.lines += message_json(codec->protocol(), m, r.consumed) + "\n";
    r.consumed += m.size;
    ++r.messages;
  }
  r.ok = true;
  return r;
}

}  // namespace metanode::codecs
