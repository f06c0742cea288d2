#include "metanode/codecs/codec.h"

#include "metanode/codecs/thrift.h"

namespace metanode::codecs {

const char* kind_name(MessageKind k) {
  switch (k) {
    case MessageKind::kRequest:
      return "request";
    case MessageKind::kOneway:
      return "oneway";
    case MessageKind::kResponse:
      return "response";
    case MessageKind::kException:
      return "exception";
    case MessageKind::kHeartbeatRequest:
      return "heartbeat_request";
    case MessageKind::kHeartbeatResponse:
      return "heartbeat_response";
  }
  return "unknown";
}

bool is_request(MessageKind k) {
  return k == MessageKind::kRequest || k == MessageKind::kOneway ||
         k == MessageKind::kHeartbeatRequest;
}

void Metadata::set(std::string key, std::string value) {
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

const std::string* Metadata::get(std::string_view key) const {
  for (const auto& kv : kv_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

std::unique_ptr<Codec> make_codec(std::string_view protocol, const Limits& limits) {
  if (protocol == "thrift") return std::make_unique<thrift::ThriftCodec>(limits);
  return nullptr;
}

}  // namespace metanode::codecs
