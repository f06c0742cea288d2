#include "metanode/codecs/codec.h"

#include "metanode/codecs/dubbo.h"
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
    case MessageKind::kGoingAway:
      return "going_away";
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

std::string_view sniff_protocol(std::span<const uint8_t> b) {
  if (b.size() < 2) return "";
  if (b[0] == 0xda && b[1] == 0xbb) return "dubbo";
  if (b[0] == 0x80 && b[1] == 0x01) return "thrift";                // unframed strict binary
  if (b[0] == 0x82 && (b[1] & 0x1f) == 1) return "thrift";          // unframed compact
  if (b.size() < 6) return "";
  if (b[4] == 0x0f && b[5] == 0xff) return "thrift";                // THeader
  if (b[4] == 0x80 && b[5] == 0x01) return "thrift";                // framed binary
  if (b[4] == 0x82 && (b[5] & 0x1f) == 1) return "thrift";          // framed compact
  return "unknown";
}

namespace {

// Learns the protocol from the first bytes, then is that codec.
class AutoCodec final : public Codec {
 public:
  explicit AutoCodec(const Limits& l) : limits_(l) {}
  Protocol protocol() const override { return inner_ ? inner_->protocol() : Protocol::kAuto; }
  std::string wire_form(const Message& m) const override { return inner_ ? inner_->wire_form(m) : std::string(); }
  DecodeResult decode(std::span<const uint8_t> in, Message& out) override {
    if (!inner_) {
      auto p = sniff_protocol(in);
      if (p.empty()) return DecodeResult::need_more();
      auto known = parse_protocol(p);
      if (!known || *known == Protocol::kAuto) return DecodeResult::fail("neither Dubbo nor Thrift at offset 0");
      inner_ = make_codec(*known, limits_);
    }
    return inner_->decode(in, out);
  }
  bool set_request_id(Bytes& f, Message& m, uint64_t id) override {
    return inner_ && inner_->set_request_id(f, m, id);
  }
  void encode_error(const Message& req, ErrorKind k, std::string_view t, Bytes& out) override {
    if (inner_) inner_->encode_error(req, k, t, out);
  }
  bool encode_heartbeat_reply(const Message& req, Bytes& out) override {
    return inner_ && inner_->encode_heartbeat_reply(req, out);
  }
  std::string response_code(const Message& reply) const override {
    return inner_ ? inner_->response_code(reply) : Codec::response_code(reply);
  }
  std::string error_code(ErrorKind kind) const override {
    return inner_ ? inner_->error_code(kind) : Codec::error_code(kind);
  }
  bool mutate(Bytes& f, Message& m, const std::vector<KeyValue>& set) override {
    return inner_ && inner_->mutate(f, m, set);
  }
  // Every call is forwarded: a malformed request after a good one gets the
  // recognised protocol's own error reply, as on a port of that protocol.
  bool encode_decode_error(std::span<const uint8_t> in, std::string_view why, Bytes& out) override {
    return inner_ && inner_->encode_decode_error(in, why, out);
  }

 private:
  Limits limits_;
  std::unique_ptr<Codec> inner_;
};

}  // namespace

std::unique_ptr<Codec> make_codec(Protocol protocol, const Limits& limits) {
  switch (protocol) {
    case Protocol::kThrift:
      return std::make_unique<thrift::ThriftCodec>(limits);
    case Protocol::kDubbo:
      return std::make_unique<dubbo::DubboCodec>(limits);
    case Protocol::kAuto:
      return std::make_unique<AutoCodec>(limits);
  }
  return nullptr;
}

}  // namespace metanode::codecs
