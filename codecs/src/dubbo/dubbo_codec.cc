// Dubbo 2 framing and the Hessian 2 request/response bodies. Routing needs
// the attachments, which come after every argument: the body is walked value
// by value with hessian2::Reader (see docs/CODECS.md).
#include "metanode/codecs/dubbo.h"

#include <algorithm>

#include "../wire.h"
#include "hessian2.h"

namespace metanode::codecs::dubbo {
namespace {

struct Header {
  uint8_t flags = 0;
  uint8_t status = 0;
  uint64_t id = 0;
  uint32_t body_len = 0;
};

Header parse_header(std::span<const uint8_t> in) {
  wire::Reader r(in, 2);
  Header h;
  r.u8(h.flags);
  r.u8(h.status);
  r.be64(h.id);
  r.be32(h.body_len);
  return h;
}

// Counts the parameters in a JVM method descriptor such as
// "Ljava/lang/String;[IJ": one per primitive or class type, arrays prefix.
bool count_params(std::string_view d, size_t& n, std::string& err) {
  n = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    char c = d[i];
    if (c == '[') continue;
    if (c == 'L') {
      size_t semi = d.find(';', i);
      if (semi == std::string_view::npos) {
        err = "parameter descriptor: unterminated class type";
        return false;
      }
      i = semi;
    } else if (std::string_view("ZBCDFIJSV").find(c) == std::string_view::npos) {
      err = std::string("parameter descriptor: bad type char '") + c + "'";
      return false;
    }
    ++n;
  }
  return true;
}

bool is_generic(const std::string& m) { return m == "$invoke" || m == "$invokeAsync"; }

// Parsed request body, with where its attachments start.
struct RequestBody {
  std::string dubbo_version, path, version, method, descriptor;
  std::vector<hessian2::Reader::Entry> attachments;
  size_t attachments_at = 0;  // body offset; == body size when absent
  bool has_attachments = false;
};

bool parse_request(std::span<const uint8_t> body, RequestBody& rb, std::string& err) {
  hessian2::Reader r(body);
  if (!r.read_string(rb.dubbo_version) || !r.read_string(rb.path) || !r.read_string(rb.version) ||
      !r.read_string(rb.method) || !r.read_string(rb.descriptor)) {
    err = "request header fields: " + r.error();
    return false;
  }
  size_t params;
  if (!count_params(rb.descriptor, params, err)) return false;
  for (size_t i = 0; i < params; ++i) {
    // Generic calls name the real method in their first argument.
    if (i == 0 && is_generic(rb.method) && r.peek() && *r.peek() != 'N') {
      std::string real;
      if (!r.read_string(real)) {
        err = "generic call method name: " + r.error();
        return false;
      }
      rb.method = real;
      continue;
    }
    if (!r.skip()) {
      err = "argument " + std::to_string(i) + ": " + r.error();
      return false;
    }
  }
  rb.attachments_at = r.pos();
  if (r.at_end()) return true;  // very old clients send no attachments
  if (!r.read_map(rb.attachments, &rb.attachments_at)) {
    err = "attachments: " + r.error();
    return false;
  }
  rb.has_attachments = true;
  return true;
}

// Parsed response body (status OK): where the flag and attachments are.
struct ResponseBody {
  int64_t flag = -1;  // -1: no flag byte (a bare value, as dubbo-remoting 2.x sends)
  size_t flag_len = 0;
  std::vector<hessian2::Reader::Entry> attachments;
  size_t attachments_at = 0;
  bool has_attachments = false;
};

bool parse_response(std::span<const uint8_t> body, ResponseBody& rb) {
  hessian2::Reader r(body);
  auto t = r.peek();
  if (!t) return true;
  if (*t >= 0x90 && *t <= 0x95) {  // a one-byte int 0..5: the response flag
    int64_t f;
    r.read_int(f);
    rb.flag = f;
    rb.flag_len = r.pos();
  } else {
    return r.skip();
  }
  if (rb.flag != 2 && rb.flag != 5 && !r.skip()) return false;  // value or exception
  rb.attachments_at = r.pos();
  if (rb.flag >= 3) {
    if (!r.read_map(rb.attachments, &rb.attachments_at)) return false;
    rb.has_attachments = true;
  }
  return true;
}

void put_metadata(const std::vector<hessian2::Reader::Entry>& attachments, Metadata& md) {
  for (const auto& e : attachments)
    if (e.key && e.value) md.set(*e.key, *e.value);
}

// New attachments map: existing entries in order (replaced values written
// anew, everything else copied byte for byte), then the new keys.
Bytes rebuild_map(std::span<const uint8_t> body, const std::vector<hessian2::Reader::Entry>& old,
                  const std::vector<KeyValue>& set) {
  Bytes m{'H'};
  std::vector<bool> used(set.size(), false);
  for (const auto& e : old) {
    auto it = std::find_if(set.begin(), set.end(), [&](const KeyValue& kv) {
      return e.key && *e.key == kv.first && !e.value_is_composite;
    });
    if (it != set.end()) {
      used[size_t(it - set.begin())] = true;
      hessian2::write_string(m, it->first);
      hessian2::write_string(m, it->second);
    } else {
      m.insert(m.end(), body.begin() + ptrdiff_t(e.begin), body.begin() + ptrdiff_t(e.end));
    }
  }
  for (size_t i = 0; i < set.size(); ++i) {
    if (used[i]) continue;
    bool present = std::any_of(old.begin(), old.end(),
                               [&](const auto& e) { return e.key && *e.key == set[i].first; });
    if (present) continue;  // a composite value under that key: left as it was
    hessian2::write_string(m, set[i].first);
    hessian2::write_string(m, set[i].second);
  }
  m.push_back('Z');
  return m;
}

void put_header(Bytes& out, uint8_t flags, uint8_t status, uint64_t id, uint32_t len) {
  wire::put_be16(out, kMagic);
  out.push_back(flags);
  out.push_back(status);
  wire::put_be64(out, id);
  wire::put_be32(out, len);
}

}  // namespace

DecodeResult DubboCodec::decode(std::span<const uint8_t> in, Message& out) {
  if (in.size() >= 1 && in[0] != 0xda) return DecodeResult::fail("bad Dubbo magic at offset 0");
  if (in.size() >= 2 && in[1] != 0xbb) return DecodeResult::fail("bad Dubbo magic at offset 0");
  if (in.size() < kHeaderSize) return DecodeResult::need_more();
  Header h = parse_header(in);
  if (h.body_len > limits_.max_dubbo_body_bytes)
    return DecodeResult::fail("body length " + std::to_string(h.body_len) + " exceeds the limit of " +
                              std::to_string(limits_.max_dubbo_body_bytes));
  size_t size = kHeaderSize + h.body_len;
  if (in.size() < size) return DecodeResult::need_more();

  out.metadata.clear();
  out.size = size;
  out.request_id = h.id;
  out.id_offset = 4;
  out.wire = uint32_t(h.flags) | uint32_t(h.status) << 8;
  bool request = h.flags & kFlagRequest;
  auto body = in.subspan(kHeaderSize, h.body_len);

  if (h.flags & kFlagEvent) {
    out.kind = request ? MessageKind::kHeartbeatRequest : MessageKind::kHeartbeatResponse;
    // An event request whose data is the string "R" is READONLY (Dubbo's
    // Constants.READONLY_EVENT); any other event data is a heartbeat.
    std::string data;
    bool was_null = false;
    if (request && (h.flags & kSerializationMask) == kHessian2 && hessian2::Reader(body).read_string(data, &was_null) &&
        !was_null && data == kReadonlyEvent)
      out.kind = MessageKind::kGoingAway;
    return DecodeResult::done();
  }
  uint8_t ser = h.flags & kSerializationMask;
  if (request) {
    out.kind = (h.flags & kFlagTwoWay) ? MessageKind::kRequest : MessageKind::kOneway;
    if (ser != kHessian2)
      return DecodeResult::fail("serialization id " + std::to_string(ser) +
                                " is not supported (hessian2 only)");
    RequestBody rb;
    std::string err;
    if (!parse_request(body, rb, err)) return DecodeResult::fail("request " + std::to_string(h.id) + ": " + err);
    put_metadata(rb.attachments, out.metadata);
    // The frame's own fields win over attachments of the same name.
    out.metadata.set("interface", rb.path);
    out.metadata.set("method", rb.method);
    if (!rb.version.empty()) out.metadata.set("version", rb.version);
    return DecodeResult::done();
  }
  // Responses are relayed byte for byte; their body is read only for
  // attachments and the outcome, and never makes the frame an error.
  out.kind = h.status == kOk ? MessageKind::kResponse : MessageKind::kException;
  if (h.status == kOk && ser == kHessian2) {
    ResponseBody rb;
    if (parse_response(body, rb)) {
      if (rb.flag == 0 || rb.flag == 3) out.kind = MessageKind::kException;
      put_metadata(rb.attachments, out.metadata);
    }
  }
  return DecodeResult::done();
}

bool DubboCodec::set_request_id(Bytes& frame, Message& msg, uint64_t id) {
  if (frame.size() < kHeaderSize) return false;
  wire::set_be64(frame.data() + 4, id);
  msg.request_id = id;
  return true;
}

void DubboCodec::encode_status(uint64_t id, uint8_t serialization, uint8_t status,
                               std::string_view text, Bytes& out) {
  Bytes body;
  hessian2::write_string(body, text);
  put_header(out, serialization & kSerializationMask, status, id, uint32_t(body.size()));
  out.insert(out.end(), body.begin(), body.end());
}

namespace {
// A rate limit answers like an overloaded provider: Dubbo consumers treat
// THREADPOOL_EXHAUSTED as "try later or elsewhere", not as a bug.
uint8_t error_status(ErrorKind kind) {
  return kind == ErrorKind::kRouteNotFound ? kServiceNotFound
         : kind == ErrorKind::kNoUpstream  ? kServiceError
         : kind == ErrorKind::kOverLimit   ? kServerThreadpoolExhausted
                                           : kServerError;
}
}  // namespace

std::string DubboCodec::response_code(const Message& reply) const {
  return std::to_string(wire_status(reply.wire));
}

std::string DubboCodec::error_code(ErrorKind kind) const { return std::to_string(error_status(kind)); }

void DubboCodec::encode_error(const Message& req, ErrorKind kind, std::string_view text, Bytes& out) {
  uint8_t status = error_status(kind);
  uint8_t ser = wire_flags(req.wire) & kSerializationMask;
  encode_status(req.request_id, ser ? ser : kHessian2, status, text, out);
}

bool DubboCodec::encode_heartbeat_reply(const Message& req, Bytes& out) {
  uint8_t f = wire_flags(req.wire);
  if (!(f & kFlagTwoWay)) return false;
  put_header(out, uint8_t(kFlagEvent | (f & kSerializationMask)), kOk, req.request_id, 1);
  hessian2::write_null(out);
  return true;
}

bool DubboCodec::encode_decode_error(std::span<const uint8_t> in, std::string_view why, Bytes& out) {
  if (in.size() < kHeaderSize || in[0] != 0xda || in[1] != 0xbb) return false;
  Header h = parse_header(in);
  if (!(h.flags & kFlagRequest) || !(h.flags & kFlagTwoWay) || (h.flags & kFlagEvent)) return false;
  encode_status(h.id, kHessian2, kBadRequest, "metanode: malformed request: " + std::string(why), out);
  return true;
}

bool DubboCodec::mutate(Bytes& frame, Message& msg, const std::vector<KeyValue>& set) {
  if (set.empty()) return true;
  if (frame.size() < kHeaderSize) return false;
  Header h = parse_header(frame);
  if ((h.flags & kFlagEvent) || (h.flags & kSerializationMask) != kHessian2) return false;
  std::span<const uint8_t> body(frame.data() + kHeaderSize, frame.size() - kHeaderSize);
  Bytes nb;
  if (h.flags & kFlagRequest) {
    RequestBody rb;
    std::string err;
    if (!parse_request(body, rb, err)) return false;
    nb.assign(body.begin(), body.begin() + ptrdiff_t(rb.attachments_at));
    Bytes m = rebuild_map(body, rb.attachments, set);
    nb.insert(nb.end(), m.begin(), m.end());
  } else {
    if (h.status != kOk) return false;
    ResponseBody rb;
    if (!parse_response(body, rb) || rb.flag < 0) return false;
    // Flags 0..2 gain attachments by becoming 3..5 (still one byte).
    nb.push_back(uint8_t(0x90 + (rb.flag < 3 ? rb.flag + 3 : rb.flag)));
    nb.insert(nb.end(), body.begin() + ptrdiff_t(rb.flag_len), body.begin() + ptrdiff_t(rb.attachments_at));
    Bytes m = rebuild_map(body, rb.attachments, set);
    nb.insert(nb.end(), m.begin(), m.end());
  }
  Bytes out;
  out.reserve(kHeaderSize + nb.size());
  put_header(out, h.flags, h.status, h.id, uint32_t(nb.size()));
  out.insert(out.end(), nb.begin(), nb.end());
  Message again;
  Limits l = limits_;
  l.max_dubbo_body_bytes = std::max<uint32_t>(l.max_dubbo_body_bytes, uint32_t(nb.size()));
  if (DubboCodec(l).decode(out, again).status != DecodeStatus::kDone) return false;
  frame.swap(out);
  msg = std::move(again);
  return true;
}

std::string DubboCodec::wire_form(const Message& m) const {
  uint8_t f = wire_flags(m.wire);
  std::string s = (f & kSerializationMask) == kHessian2 ? "hessian2"
                                                        : "serialization-" + std::to_string(f & kSerializationMask);
  if (f & kFlagTwoWay) s += " twoway";
  if (f & kFlagEvent) s += " event";
  if (!(f & kFlagRequest)) s += " status-" + std::to_string(wire_status(m.wire));
  return s;
}

}  // namespace metanode::codecs::dubbo
