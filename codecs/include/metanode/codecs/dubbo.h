// Dubbo 2 protocol ("dubbo://"), Hessian 2 serialization.
//
//   0-1  magic 0xdabb
//   2    flags: 0x80 request, 0x40 two-way, 0x20 event, low 5 bits serialization id
//   3    status (responses): 20 OK, 30/31 timeout, 40 bad request, 50 bad response,
//        60 service not found, 70 service error, 80 server error, 90 client error
//   4-11 request id (big endian)
//   12-15 body length
//
// Request body: dubbo version, service path, service version, method,
// parameter descriptor, one value per parameter, attachments map.
// Response body (status 20): response flag (0..5), then value / exception /
// nothing, then attachments for flags 3..5. Other statuses: an error string.
#pragma once

#include <cstdint>

#include "metanode/codecs/codec.h"

namespace metanode::codecs::dubbo {

constexpr uint16_t kMagic = 0xdabb;
constexpr uint8_t kFlagRequest = 0x80;
constexpr uint8_t kFlagTwoWay = 0x40;
constexpr uint8_t kFlagEvent = 0x20;
// The data of the event a provider sends each consumer when it shuts down.
constexpr char kReadonlyEvent[] = "R";
constexpr uint8_t kSerializationMask = 0x1f;
constexpr uint8_t kHessian2 = 2;
constexpr size_t kHeaderSize = 16;

enum Status : uint8_t {
  kOk = 20,
  kClientTimeout = 30,
  kServerTimeout = 31,
  kBadRequest = 40,
  kBadResponse = 50,
  kServiceNotFound = 60,
  kServiceError = 70,
  kServerError = 80,
  kClientError = 90,
  kServerThreadpoolExhausted = 100,
};

// Message::wire for Dubbo: the flag byte in bits 0-7, the status in 8-15.
constexpr uint8_t wire_flags(uint32_t w) { return uint8_t(w & 0xff); }
constexpr uint8_t wire_status(uint32_t w) { return uint8_t((w >> 8) & 0xff); }

class DubboCodec final : public Codec {
 public:
  explicit DubboCodec(const Limits& limits = {}) : limits_(limits) {}
  Protocol protocol() const override { return Protocol::kDubbo; }
  std::string wire_form(const Message& m) const override;  // "hessian2 twoway", ...
  DecodeResult decode(std::span<const uint8_t> in, Message& out) override;
  bool set_request_id(Bytes& frame, Message& msg, uint64_t id) override;
  void encode_error(const Message& req, ErrorKind kind, std::string_view text, Bytes& out) override;
  std::string response_code(const Message& reply) const override;
  std::string error_code(ErrorKind kind) const override;
  bool encode_heartbeat_reply(const Message& req, Bytes& out) override;
  bool mutate(Bytes& frame, Message& msg, const std::vector<KeyValue>& set) override;
  // Status 40 (bad request) for a two-way request whose header is intact.
  bool encode_decode_error(std::span<const uint8_t> in, std::string_view why, Bytes& out) override;

  // A response frame with status `status` whose body is the error string.
  static void encode_status(uint64_t id, uint8_t serialization, uint8_t status,
                            std::string_view text, Bytes& out);

 private:
  Limits limits_;
};

}  // namespace metanode::codecs::dubbo
