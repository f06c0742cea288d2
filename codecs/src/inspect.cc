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

std::string message_json(std::string_view protocol, std::string_view wire, const Message& m, size_t offset) {
  std::string o = "{\"offset\":" + std::to_string(offset) + ",\"size\":" + std::to_string(m.size) +
                  ",\"protocol\":\"" + json_escape(protocol) + "\",\"wire\":\"" +
                  json_escape(wire) + "\",\"kind\":\"" + kind_name(m.kind) +
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
  auto known = parse_protocol(protocol);
  auto codec = known ? make_codec(*known, limits) : nullptr;
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
    r.lines += message_json(protocol_name(codec->protocol()), codec->wire_form(m), m, r.consumed) + "\n";
    r.consumed += m.size;
    ++r.messages;
  }
  r.ok = true;
  return r;
}

}  // namespace metanode::codecs
