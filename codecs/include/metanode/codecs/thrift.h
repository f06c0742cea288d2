// Apache Thrift: transports framed, unframed ("buffered") and THeader;
// protocols binary (strict and old non-strict) and compact; multiplexed
// service names. The wire form is detected from the first message of a
// connection and then held: a Thrift peer never switches mid-stream.
#pragma once

#include <cstdint>
#include <string_view>

#include "metanode/codecs/codec.h"

namespace metanode::codecs::thrift {

enum class Transport : uint8_t { kUnknown = 0, kFramed = 1, kUnframed = 2, kHeader = 3 };
enum class Protocol : uint8_t { kUnknown = 0, kBinary = 1, kBinaryNonStrict = 2, kCompact = 3 };

// TMessageType values as on the wire.
enum MessageType : uint8_t { kCall = 1, kReply = 2, kException = 3, kOneway = 4 };

// TApplicationException::TApplicationExceptionType values we send.
enum AppExceptionType : int32_t {
  kAppUnknown = 0,
  kAppUnknownMethod = 1,
  kAppInternalError = 6,
  kAppProtocolError = 7,
  kAppLoadShedding = 10,
};

// Message::wire packs the detected form: transport in bits 0-3, protocol in
// bits 4-7 (for THeader, the payload's protocol).
constexpr uint32_t pack_wire(Transport t, Protocol p) {
  return uint32_t(t) | uint32_t(p) << 4;
}
constexpr Transport wire_transport(uint32_t w) { return Transport(w & 0xf); }
constexpr Protocol wire_protocol(uint32_t w) { return Protocol((w >> 4) & 0xf); }

const char* transport_name(Transport t);
const char* protocol_name(Protocol p);

class ThriftCodec final : public Codec {
 public:
  explicit ThriftCodec(const Limits& limits = {}) : limits_(limits) {}
  metanode::Protocol protocol() const override { return metanode::Protocol::kThrift; }
  std::string wire_form(const Message& m) const override;  // "framed/binary", ...
  DecodeResult decode(std::span<const uint8_t> in, Message& out) override;
  bool set_request_id(Bytes& frame, Message& msg, uint64_t id) override;
  void encode_error(const Message& req, ErrorKind kind, std::string_view text,
                    Bytes& out) override;
  // THeader frames carry info headers; other wire forms have nowhere to put
  // metadata, so mutation is refused for them.
  bool mutate(Bytes& frame, Message& msg, const std::vector<KeyValue>& set) override;
  // PROTOCOL_ERROR when the message header (name, seqid) of a call parses.
  bool encode_decode_error(std::span<const uint8_t> in, std::string_view why, Bytes& out) override;

  // Builds a complete message in the given wire form (used for errors and by
  // tests and benchmarks to produce traffic).
  static void encode_app_exception(uint32_t wire, std::string_view method, int32_t seqid,
                                   int32_t type, std::string_view text, Bytes& out);

 private:
  Limits limits_;
  Transport transport_ = Transport::kUnknown;
  Protocol protocol_ = Protocol::kUnknown;
};

}  // namespace metanode::codecs::thrift
