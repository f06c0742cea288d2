// The one interface every wire protocol implements (after Aeraki's
// MetaProtocol codec contract): decode a message into routing metadata
// without consuming a partial frame, rewrite the request id for shared
// upstream connections, answer errors and heartbeats in the protocol's own
// form. No exceptions: results are values.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metanode/protocol.h"

namespace metanode::codecs {

using Bytes = std::vector<uint8_t>;

enum class DecodeStatus : uint8_t {
  kNeedMoreData,  // nothing consumed; call again with more bytes
  kDone,          // one message of Message::size bytes is at the front
  kError,         // the stream stopped making sense; close the connection
};

enum class MessageKind : uint8_t {
  kRequest,            // expects a response with the same request id
  kOneway,             // request without a response
  kResponse,           // normal reply
  kException,          // error reply (still a reply: matched by id)
  kHeartbeatRequest,   // answered locally, never routed
  kHeartbeatResponse,  // dropped
  // The peer takes no new requests on this connection and will close it
  // once its calls are answered (Dubbo's READONLY event, which a provider
  // sends to every consumer when it shuts down gracefully).
  kGoingAway,
};

const char* kind_name(MessageKind k);
bool is_request(MessageKind k);

// Routing attributes of one message ("method", "interface", headers, ...).
// A flat vector: messages carry a handful of keys and lookups are linear
// scans over cache-resident data, cheaper than any map for that size.
class Metadata {
 public:
  void set(std::string key, std::string value);
  const std::string* get(std::string_view key) const;
  size_t size() const { return kv_.size(); }
  void clear() { kv_.clear(); }
  auto begin() const { return kv_.begin(); }
  auto end() const { return kv_.end(); }

 private:
  std::vector<std::pair<std::string, std::string>> kv_;
};

struct Message {
  MessageKind kind = MessageKind::kRequest;
  uint64_t request_id = 0;
  size_t size = 0;  // bytes of this whole message on the wire, framing included
  Metadata metadata;
  // Codec-private facts needed to re-encode this message or answer it in the
  // same wire form (e.g. Thrift transport and protocol, where the id sits).
  uint32_t id_offset = 0;
  uint32_t wire = 0;
  // Set by the proxy, not the codec: a two-way request's place in the
  // order its connection's replies must leave in (0: as they complete).
  uint64_t order = 0;
};

struct DecodeResult {
  DecodeStatus status = DecodeStatus::kNeedMoreData;
  std::string error;  // set with kError: what was wrong and at which offset
  static DecodeResult need_more() { return {}; }
  static DecodeResult done() { return {DecodeStatus::kDone, {}}; }
  static DecodeResult fail(std::string why) { return {DecodeStatus::kError, std::move(why)}; }
};

// Why the proxy answers a request itself instead of forwarding a reply.
enum class ErrorKind : uint8_t {
  kRouteNotFound,    // Dubbo 60 / Thrift UNKNOWN_METHOD
  kNoUpstream,       // Dubbo 70 / Thrift INTERNAL_ERROR
  kUpstreamFailure,  // Dubbo 80 / Thrift INTERNAL_ERROR
  kTimeout,          // Dubbo 31 (server timeout) / Thrift INTERNAL_ERROR
  kOverLimit,        // Dubbo 100 (server threadpool exhausted) / Thrift INTERNAL_ERROR
};

struct Limits {
  uint32_t max_message_bytes = 16u << 20;   // larger frames are a decode error
  uint32_t max_dubbo_body_bytes = 8u << 20;  // Dubbo's own default payload limit
};

using KeyValue = std::pair<std::string, std::string>;

// One instance per connection: it may learn the wire form from the first
// bytes and keep it for the rest of the stream.
class Codec {
 public:
  virtual ~Codec() = default;
  // Auto's: the recognised protocol once it is known.
  virtual Protocol protocol() const = 0;
  // How `m` (decoded here) was framed and encoded, for inspection
  // (metanodectl decode): Thrift's transport/protocol, Dubbo's
  // serialization and flags. Nothing outside the codecs reads Message::wire.
  virtual std::string wire_form(const Message& m) const {
    (void)m;
    return {};
  }

  // Decodes the message at the front of `in`. Never consumes: on kDone the
  // caller removes out.size bytes itself. A partial message yields
  // kNeedMoreData no matter where it is cut.
  virtual DecodeResult decode(std::span<const uint8_t> in, Message& out) = 0;

  // Sets the request id of `msg`, whose bytes are `frame`, to `id`. May
  // change the frame's length (variable-length ids); updates msg.
  virtual bool set_request_id(Bytes& frame, Message& msg, uint64_t id) = 0;

  // Appends a protocol-native error reply to `req` to `out`.
  virtual void encode_error(const Message& req, ErrorKind kind, std::string_view text,
                            Bytes& out) = 0;

  // Istio's response_code for a reply (decoded by this codec), and for the
  // error reply encode_error() writes for `kind`: the protocol's own status
  // where it has one (Dubbo's status byte), else "ok" or "exception".
  virtual std::string response_code(const Message& reply) const {
    return reply.kind == MessageKind::kException ? "exception" : "ok";
  }
  virtual std::string error_code(ErrorKind kind) const {
    (void)kind;
    return "exception";
  }

  // Appends the reply to a heartbeat request; false when the protocol has
  // none or the request wants no reply.
  virtual bool encode_heartbeat_reply(const Message& req, Bytes& out) {
    (void)req;
    (void)out;
    return false;
  }

  // After decode() failed on `in`: a protocol-native error reply for the
  // malformed request at its front, when enough of it (the request id) is
  // readable; false otherwise. The connection is closed after it is sent.
  virtual bool encode_decode_error(std::span<const uint8_t> in, std::string_view why, Bytes& out) {
    (void)in;
    (void)why;
    (void)out;
    return false;
  }

  // Adds or replaces metadata carried on the wire (Dubbo attachments, Thrift
  // THeader info headers) in `frame`, then re-decodes it into `msg`. False
  // when the wire form has nowhere to carry them; the frame is then unchanged.
  virtual bool mutate(Bytes& frame, Message& msg, const std::vector<KeyValue>& set) {
    (void)frame;
    (void)msg;
    (void)set;
    return false;
  }
};

// One per connection, from the one table of codecs (codec.cc).
std::unique_ptr<Codec> make_codec(Protocol protocol, const Limits& limits = {});

// Recognises a protocol from the first bytes of a stream: "dubbo" (magic
// 0xdabb), "thrift" (framed, THeader, strict binary or compact), "" when
// more bytes are needed, "unknown" when it is neither.
std::string_view sniff_protocol(std::span<const uint8_t> first);

}  // namespace metanode::codecs
