// Thrift decoding in two layers, as the wire is built: a transport finds
// where a message starts and ends (frame length, THeader envelope, or for
// unframed streams the end of the argument struct), a protocol reads the
// message header (name, type, seqid) inside it. See docs/CODECS.md.
#include <algorithm>
#include <cstring>
#include <string>

#include "../wire.h"
#include "metanode/codecs/thrift.h"

namespace metanode::codecs::thrift {
namespace {

using wire::Reader;

enum class Parse { kOk, kNeedMore, kBad };

constexpr uint32_t kBinaryVersionMask = 0xffff0000;
constexpr uint32_t kBinaryVersion1 = 0x80010000;
constexpr uint8_t kCompactProtocolId = 0x82;
constexpr uint8_t kCompactVersion = 1;
constexpr uint16_t kHeaderMagic = 0x0fff;
constexpr int kMaxDepth = 64;  // nesting deeper than any real IDL; bounds recursion

struct MsgHeader {
  std::string_view name;
  uint8_t type = 0;
  int32_t seqid = 0;
  size_t seqid_offset = 0;  // absolute offset in the buffer handed to the parser
};

struct Ctx {
  std::string* err;
  uint32_t max_bytes;
  Parse bad(std::string why) {
    *err = std::move(why);
    return Parse::kBad;
  }
};

std::string at(size_t off) { return " at offset " + std::to_string(off); }

// ---- message headers ----------------------------------------------------

Parse binary_header(Reader& r, bool strict, MsgHeader& h, Ctx& c) {
  size_t start = r.pos();
  uint32_t word;
  if (!r.be32(word)) return Parse::kNeedMore;
  uint32_t name_len;
  if (strict) {
    if ((word & kBinaryVersionMask) != kBinaryVersion1)
      return c.bad("bad binary protocol version" + at(start));
    h.type = uint8_t(word & 0xff);
    if (!r.be32(name_len)) return Parse::kNeedMore;
  } else {
    name_len = word;
  }
  if (name_len > c.max_bytes || int32_t(name_len) < 0)
    return c.bad("method name length " + std::to_string(int32_t(name_len)) + at(start));
  if (!r.str(name_len, h.name)) return Parse::kNeedMore;
  if (!strict && !r.u8(h.type)) return Parse::kNeedMore;
  h.seqid_offset = r.pos();
  uint32_t seq;
  if (!r.be32(seq)) return Parse::kNeedMore;
  h.seqid = int32_t(seq);
  return Parse::kOk;
}

Parse compact_header(Reader& r, MsgHeader& h, Ctx& c) {
  size_t start = r.pos();
  uint8_t id, vt;
  if (!r.u8(id)) return Parse::kNeedMore;
  if (id != kCompactProtocolId) return c.bad("bad compact protocol id" + at(start));
  if (!r.u8(vt)) return Parse::kNeedMore;
  if ((vt & 0x1f) != kCompactVersion) return c.bad("bad compact version" + at(start));
  h.type = vt >> 5;
  h.seqid_offset = r.pos();
  uint64_t v;
  bool overlong;
  if (!r.varint(v, overlong, 5)) return Parse::kNeedMore;
  if (overlong || v > 0xffffffffu) return c.bad("bad seqid varint" + at(h.seqid_offset));
  h.seqid = int32_t(uint32_t(v));
  size_t len_at = r.pos();
  if (!r.varint(v, overlong, 5)) return Parse::kNeedMore;
  if (overlong || v > c.max_bytes) return c.bad("bad method name length" + at(len_at));
  if (!r.str(size_t(v), h.name)) return Parse::kNeedMore;
  return Parse::kOk;
}

Parse message_header(Reader& r, Protocol p, MsgHeader& h, Ctx& c) {
  switch (p) {
    case Protocol::kBinary:
      return binary_header(r, true, h, c);
    case Protocol::kBinaryNonStrict:
      return binary_header(r, false, h, c);
    case Protocol::kCompact:
      return compact_header(r, h, c);
    default:
      return c.bad("unknown protocol");
  }
}

// ---- skipping values (unframed transport) ---------------------------------

// Binary protocol type ids.
enum : uint8_t {
  T_STOP = 0, T_VOID = 1, T_BOOL = 2, T_BYTE = 3, T_DOUBLE = 4, T_I16 = 6, T_I32 = 8,
  T_I64 = 10, T_STRING = 11, T_STRUCT = 12, T_MAP = 13, T_SET = 14, T_LIST = 15, T_UUID = 16,
};

int binary_fixed_width(uint8_t t) {
  switch (t) {
    case T_BOOL:
    case T_BYTE:
      return 1;
    case T_I16:
      return 2;
    case T_I32:
      return 4;
    case T_DOUBLE:
    case T_I64:
      return 8;
    case T_UUID:
      return 16;
    default:
      return 0;
  }
}

Parse binary_skip(Reader& r, uint8_t type, int depth, Ctx& c);

Parse binary_skip_n(Reader& r, uint8_t type, uint32_t n, int depth, Ctx& c) {
  if (int w = binary_fixed_width(type)) {
    uint64_t bytes = uint64_t(n) * uint64_t(w);
    if (bytes > c.max_bytes) return c.bad("collection too large" + at(r.pos()));
    return r.skip(size_t(bytes)) ? Parse::kOk : Parse::kNeedMore;
  }
  for (uint32_t i = 0; i < n; ++i) {
    // Every remaining element needs at least one byte: a declared count the
    // buffer cannot possibly hold is either "need more" or, past the limit, bad.
    if (r.remaining() == 0) return Parse::kNeedMore;
    if (Parse p = binary_skip(r, type, depth, c); p != Parse::kOk) return p;
  }
  return Parse::kOk;
}

Parse binary_skip(Reader& r, uint8_t type, int depth, Ctx& c) {
  if (depth > kMaxDepth) return c.bad("nesting deeper than " + std::to_string(kMaxDepth));
  if (int w = binary_fixed_width(type)) return r.skip(size_t(w)) ? Parse::kOk : Parse::kNeedMore;
  size_t start = r.pos();
  switch (type) {
    case T_STRING: {
      uint32_t len;
      if (!r.be32(len)) return Parse::kNeedMore;
      if (len > c.max_bytes) return c.bad("string length " + std::to_string(int32_t(len)) + at(start));
      return r.skip(len) ? Parse::kOk : Parse::kNeedMore;
    }
    case T_STRUCT:
      for (;;) {
        uint8_t ft;
        if (!r.u8(ft)) return Parse::kNeedMore;
        if (ft == T_STOP) return Parse::kOk;
        if (!r.skip(2)) return Parse::kNeedMore;  // field id
        if (Parse p = binary_skip(r, ft, depth + 1, c); p != Parse::kOk) return p;
      }
    case T_MAP: {
      uint8_t kt, vt;
      uint32_t n;
      if (!r.u8(kt) || !r.u8(vt) || !r.be32(n)) return Parse::kNeedMore;
      if (n > c.max_bytes) return c.bad("map size" + at(start));
      for (uint32_t i = 0; i < n; ++i) {
        if (r.remaining() == 0) return Parse::kNeedMore;
        if (Parse p = binary_skip(r, kt, depth + 1, c); p != Parse::kOk) return p;
        if (Parse p = binary_skip(r, vt, depth + 1, c); p != Parse::kOk) return p;
      }
      return Parse::kOk;
    }
    case T_SET:
    case T_LIST: {
      uint8_t et;
      uint32_t n;
      if (!r.u8(et) || !r.be32(n)) return Parse::kNeedMore;
      if (n > c.max_bytes) return c.bad("list size" + at(start));
      return binary_skip_n(r, et, n, depth + 1, c);
    }
    default:
      return c.bad("unknown binary type " + std::to_string(type) + at(start));
  }
}

// Compact protocol type ids.
enum : uint8_t {
  C_STOP = 0, C_TRUE = 1, C_FALSE = 2, C_BYTE = 3, C_I16 = 4, C_I32 = 5, C_I64 = 6,
  C_DOUBLE = 7, C_BINARY = 8, C_LIST = 9, C_SET = 10, C_MAP = 11, C_STRUCT = 12, C_UUID = 13,
};

Parse compact_varint(Reader& r, uint64_t& v, int max_bytes, Ctx& c) {
  size_t start = r.pos();
  bool overlong;
  if (!r.varint(v, overlong, max_bytes)) return Parse::kNeedMore;
  if (overlong) return c.bad("overlong varint" + at(start));
  return Parse::kOk;
}

Parse compact_skip(Reader& r, uint8_t type, int depth, Ctx& c, bool in_collection);

Parse compact_skip_n(Reader& r, uint8_t type, uint64_t n, int depth, Ctx& c) {
  if (n > c.max_bytes) return c.bad("collection too large" + at(r.pos()));
  if (type == C_DOUBLE || type == C_UUID) {
    uint64_t bytes = n * (type == C_DOUBLE ? 8 : 16);
    if (bytes > c.max_bytes) return c.bad("collection too large" + at(r.pos()));
    return r.skip(size_t(bytes)) ? Parse::kOk : Parse::kNeedMore;
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (r.remaining() == 0) return Parse::kNeedMore;
    if (Parse p = compact_skip(r, type, depth, c, true); p != Parse::kOk) return p;
  }
  return Parse::kOk;
}

Parse compact_skip(Reader& r, uint8_t type, int depth, Ctx& c, bool in_collection) {
  if (depth > kMaxDepth) return c.bad("nesting deeper than " + std::to_string(kMaxDepth));
  size_t start = r.pos();
  uint64_t v;
  switch (type) {
    case C_TRUE:
    case C_FALSE:
      // A bool field carries its value in the field header; a bool inside a
      // collection is one byte.
      return !in_collection || r.skip(1) ? Parse::kOk : Parse::kNeedMore;
    case C_BYTE:
      return r.skip(1) ? Parse::kOk : Parse::kNeedMore;
    case C_I16:
      return compact_varint(r, v, 3, c);
    case C_I32:
      return compact_varint(r, v, 5, c);
    case C_I64:
      return compact_varint(r, v, 10, c);
    case C_DOUBLE:
      return r.skip(8) ? Parse::kOk : Parse::kNeedMore;
    case C_UUID:
      return r.skip(16) ? Parse::kOk : Parse::kNeedMore;
    case C_BINARY:
      if (Parse p = compact_varint(r, v, 5, c); p != Parse::kOk) return p;
      if (v > c.max_bytes) return c.bad("binary length" + at(start));
      return r.skip(size_t(v)) ? Parse::kOk : Parse::kNeedMore;
    case C_STRUCT:
      for (;;) {
        uint8_t fh;
        if (!r.u8(fh)) return Parse::kNeedMore;
        if (fh == C_STOP) return Parse::kOk;
        if ((fh >> 4) == 0) {  // long form: zigzag i16 field id follows
          if (Parse p = compact_varint(r, v, 3, c); p != Parse::kOk) return p;
        }
        if (Parse p = compact_skip(r, fh & 0x0f, depth + 1, c, false); p != Parse::kOk) return p;
      }
    case C_LIST:
    case C_SET: {
      uint8_t h;
      if (!r.u8(h)) return Parse::kNeedMore;
      uint64_t n = h >> 4;
      if (n == 15) {
        if (Parse p = compact_varint(r, n, 5, c); p != Parse::kOk) return p;
      }
      return compact_skip_n(r, h & 0x0f, n, depth + 1, c);
    }
    case C_MAP: {
      uint64_t n;
      if (Parse p = compact_varint(r, n, 5, c); p != Parse::kOk) return p;
      if (n == 0) return Parse::kOk;
      if (n > c.max_bytes) return c.bad("map size" + at(start));
      uint8_t kv;
      if (!r.u8(kv)) return Parse::kNeedMore;
      for (uint64_t i = 0; i < n; ++i) {
        if (r.remaining() == 0) return Parse::kNeedMore;
        if (Parse p = compact_skip(r, kv >> 4, depth + 1, c, true); p != Parse::kOk) return p;
        if (Parse p = compact_skip(r, kv & 0x0f, depth + 1, c, true); p != Parse::kOk) return p;
      }
      return Parse::kOk;
    }
    default:
      return c.bad("unknown compact type " + std::to_string(type) + at(start));
  }
}

Parse skip_struct(Reader& r, Protocol p, Ctx& c) {
  if (p == Protocol::kCompact) return compact_skip(r, C_STRUCT, 0, c, false);
  return binary_skip(r, T_STRUCT, 0, c);
}

// ---- detection --------------------------------------------------------------

bool looks_binary_strict(const uint8_t* b) { return b[0] == 0x80 && b[1] == 0x01; }
bool looks_compact(const uint8_t* b) {
  return b[0] == kCompactProtocolId && (b[1] & 0x1f) == kCompactVersion;
}

// The first bytes of a connection decide its wire form. Framed and THeader
// both start with a length; THeader then has its magic, framed a protocol
// header. An unframed stream starts with the protocol header itself.
Parse detect(std::span<const uint8_t> in, Transport& t, Protocol& p, Ctx& c) {
  if (in.size() < 2) return Parse::kNeedMore;
  if (looks_binary_strict(in.data())) {
    t = Transport::kUnframed;
    p = Protocol::kBinary;
    return Parse::kOk;
  }
  if (looks_compact(in.data())) {
    t = Transport::kUnframed;
    p = Protocol::kCompact;
    return Parse::kOk;
  }
  if (in.size() < 6) return Parse::kNeedMore;
  uint32_t len = uint32_t(in[0]) << 24 | uint32_t(in[1]) << 16 | uint32_t(in[2]) << 8 | in[3];
  if (in[4] == 0x0f && in[5] == 0xff) {
    t = Transport::kHeader;
    p = Protocol::kUnknown;  // per message, from the THeader protocol id
    return Parse::kOk;
  }
  if (looks_binary_strict(in.data() + 4)) {
    t = Transport::kFramed;
    p = Protocol::kBinary;
    return Parse::kOk;
  }
  if (looks_compact(in.data() + 4)) {
    t = Transport::kFramed;
    p = Protocol::kCompact;
    return Parse::kOk;
  }
  // Old non-strict binary: i32 name length, name, i8 type. Framed if the
  // first word is a plausible frame length and the second a plausible name
  // length; unframed if the first word is itself a plausible name length.
  if (in.size() < 8) return Parse::kNeedMore;
  uint32_t second = uint32_t(in[4]) << 24 | uint32_t(in[5]) << 16 | uint32_t(in[6]) << 8 | in[7];
  if (len > 0 && len <= c.max_bytes && second > 0 && second < len) {
    t = Transport::kFramed;
    p = Protocol::kBinaryNonStrict;
    return Parse::kOk;
  }
  if (len > 0 && len < 4096) {
    t = Transport::kUnframed;
    p = Protocol::kBinaryNonStrict;
    return Parse::kOk;
  }
  return c.bad("not a Thrift stream (no framed, THeader, binary or compact signature)");
}

Protocol header_protocol(uint64_t id) {
  switch (id) {
    case 0:
      return Protocol::kBinary;
    case 2:
      return Protocol::kCompact;
    default:
      return Protocol::kUnknown;
  }
}

// THeader envelope (after the 4-byte length):
//   u16 magic 0x0fff | u16 flags | u32 seqid | u16 header words |
//   header: varint protocol, varint n transforms, transforms, info blocks,
//           zero padding | payload message
Parse header_envelope(Reader& r, uint32_t frame_end, Protocol& payload_proto, size_t& payload_at,
                      Metadata& md, Ctx& c) {
  uint16_t magic, flags, words;
  uint32_t seq;
  if (!r.be16(magic) || !r.be16(flags) || !r.be32(seq) || !r.be16(words)) return c.bad("short THeader");
  (void)flags;
  (void)seq;
  if (magic != kHeaderMagic) return c.bad("bad THeader magic" + at(4));
  size_t hdr_end = r.pos() + size_t(words) * 4;
  if (hdr_end > frame_end) return c.bad("THeader header size exceeds frame" + at(12));
  Reader h(r.all().subspan(0, hdr_end), r.pos());
  uint64_t proto, ntrans;
  if (compact_varint(h, proto, 5, c) != Parse::kOk) return c.bad("bad THeader protocol id");
  payload_proto = header_protocol(proto);
  if (payload_proto == Protocol::kUnknown)
    return c.bad("unsupported THeader protocol id " + std::to_string(proto));
  if (compact_varint(h, ntrans, 5, c) != Parse::kOk) return c.bad("bad THeader transform count");
  if (ntrans != 0)
    return c.bad("THeader transforms (compression) are not supported: " + std::to_string(ntrans));
  while (h.remaining() > 0) {
    uint64_t info;
    if (compact_varint(h, info, 5, c) != Parse::kOk) return c.bad("bad THeader info id");
    if (info == 0) break;  // padding
    if (info != 1) return c.bad("unknown THeader info id " + std::to_string(info));
    uint64_t n;
    if (compact_varint(h, n, 5, c) != Parse::kOk || n > h.remaining())
      return c.bad("bad THeader header count");
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t kl, vl;
      std::string_view k, v;
      if (compact_varint(h, kl, 5, c) != Parse::kOk || !h.str(size_t(kl), k) ||
          compact_varint(h, vl, 5, c) != Parse::kOk || !h.str(size_t(vl), v))
        return c.bad("truncated THeader key/value");
      md.set(std::string(k), std::string(v));
    }
  }
  payload_at = hdr_end;
  r = Reader(r.all(), hdr_end);
  return Parse::kOk;
}

MessageKind kind_of(uint8_t type) {
  switch (type) {
    case kCall:
      return MessageKind::kRequest;
    case kOneway:
      return MessageKind::kOneway;
    case kReply:
      return MessageKind::kResponse;
    default:
      return MessageKind::kException;
  }
}

DecodeResult to_result(Parse p, std::string& err) {
  if (p == Parse::kNeedMore) return DecodeResult::need_more();
  return DecodeResult::fail(std::move(err));
}

}  // namespace

const char* transport_name(Transport t) {
  switch (t) {
    case Transport::kFramed:
      return "framed";
    case Transport::kUnframed:
      return "unframed";
    case Transport::kHeader:
      return "header";
    default:
      return "unknown";
  }
}

const char* protocol_name(Protocol p) {
  switch (p) {
    case Protocol::kBinary:
      return "binary";
    case Protocol::kBinaryNonStrict:
      return "binary-nonstrict";
    case Protocol::kCompact:
      return "compact";
    default:
      return "unknown";
  }
}

DecodeResult ThriftCodec::decode(std::span<const uint8_t> in, Message& out) {
  std::string err;
  Ctx c{&err, limits_.max_message_bytes};
  if (transport_ == Transport::kUnknown) {
    Transport t;
    Protocol p;
    if (Parse d = detect(in, t, p, c); d != Parse::kOk) return to_result(d, err);
    transport_ = t;
    protocol_ = p;
  }

  out.metadata.clear();
  Reader r(in);
  MsgHeader h;
  Protocol proto = protocol_;
  size_t end = 0;

  if (transport_ == Transport::kFramed || transport_ == Transport::kHeader) {
    uint32_t len;
    if (!r.be32(len)) return DecodeResult::need_more();
    if (len == 0 || int32_t(len) < 0 || len > limits_.max_message_bytes)
      return DecodeResult::fail("frame length " + std::to_string(int32_t(len)) + " out of range" + at(0));
    end = size_t(len) + 4;
    if (in.size() < end) return DecodeResult::need_more();  // consume nothing on a partial frame
    Reader fr(in.subspan(0, end), 4);
    if (transport_ == Transport::kHeader) {
      size_t payload_at;
      if (Parse p = header_envelope(fr, uint32_t(end), proto, payload_at, out.metadata, c);
          p != Parse::kOk)
        return DecodeResult::fail(err);
    }
    if (Parse p = message_header(fr, proto, h, c); p != Parse::kOk) {
      // The frame is complete, so a short header is a lie about its length.
      if (p == Parse::kNeedMore) return DecodeResult::fail("message header runs past frame end");
      return DecodeResult::fail(err);
    }
  } else {
    if (Parse p = message_header(r, proto, h, c); p != Parse::kOk) return to_result(p, err);
    if (Parse p = skip_struct(r, proto, c); p != Parse::kOk) {
      if (p == Parse::kNeedMore && r.pos() > limits_.max_message_bytes)
        return DecodeResult::fail("unframed message exceeds " +
                                  std::to_string(limits_.max_message_bytes) + " bytes");
      return to_result(p, err);
    }
    end = r.pos();
    if (end > limits_.max_message_bytes)
      return DecodeResult::fail("unframed message exceeds limit");
  }

  if (h.type < kCall || h.type > kOneway)
    return DecodeResult::fail("bad message type " + std::to_string(h.type));
  out.kind = kind_of(h.type);
  out.request_id = uint32_t(h.seqid);
  out.size = end;
  out.id_offset = uint32_t(h.seqid_offset);
  out.wire = pack_wire(transport_, proto);
  // Multiplexed calls name "Service:method"; replies carry the bare method.
  std::string_view name = h.name;
  if (auto colon = name.find(':'); colon != std::string_view::npos) {
    out.metadata.set("service", std::string(name.substr(0, colon)));
    name.remove_prefix(colon + 1);
  }
  out.metadata.set("method", std::string(name));
  return DecodeResult::done();
}

bool ThriftCodec::set_request_id(Bytes& frame, Message& msg, uint64_t id) {
  if (id > 0xffffffffu || msg.id_offset >= frame.size()) return false;
  Transport t = wire_transport(msg.wire);
  Protocol p = wire_protocol(msg.wire);
  if (p != Protocol::kCompact && msg.id_offset + 4 > frame.size()) return false;
  if (t == Transport::kHeader && frame.size() >= 12) wire::set_be32(frame.data() + 8, uint32_t(id));
  if (p != Protocol::kCompact) {
    wire::set_be32(frame.data() + msg.id_offset, uint32_t(id));
    msg.request_id = id;
    return true;
  }
  // Compact seqids are varints: the new id may be longer or shorter.
  Reader r(frame, msg.id_offset);
  uint64_t old;
  bool overlong;
  if (!r.varint(old, overlong, 5) || overlong) return false;
  size_t old_len = r.pos() - msg.id_offset;
  Bytes enc;
  wire::put_varint(enc, id);
  if (enc.size() != old_len) {
    auto pos = frame.begin() + msg.id_offset;
    frame.erase(pos, pos + ptrdiff_t(old_len));
    frame.insert(frame.begin() + msg.id_offset, enc.begin(), enc.end());
    if (t != Transport::kUnframed) wire::set_be32(frame.data(), uint32_t(frame.size() - 4));
    msg.size = frame.size();
  } else {
    std::memcpy(frame.data() + msg.id_offset, enc.data(), enc.size());
  }
  msg.request_id = id;
  return true;
}

bool ThriftCodec::encode_decode_error(std::span<const uint8_t> in, std::string_view why, Bytes& out) {
  if (transport_ == Transport::kUnknown || transport_ == Transport::kHeader) return false;
  std::string err;
  Ctx c{&err, limits_.max_message_bytes};
  Reader r(in, transport_ == Transport::kFramed ? 4 : 0);
  MsgHeader h;
  if (message_header(r, protocol_, h, c) != Parse::kOk || h.type != kCall) return false;
  std::string_view name = h.name;
  if (auto colon = name.find(':'); colon != std::string_view::npos) name.remove_prefix(colon + 1);
  encode_app_exception(pack_wire(transport_, protocol_), name, h.seqid, kAppProtocolError,
                       "metanode: malformed request: " + std::string(why), out);
  return true;
}

bool ThriftCodec::mutate(Bytes& frame, Message& msg, const std::vector<KeyValue>& set) {
  if (set.empty()) return true;
  if (wire_transport(msg.wire) != Transport::kHeader || frame.size() < 14) return false;
  Reader r(frame, 12);
  uint16_t words;
  r.be16(words);
  size_t hdr_end = 14 + size_t(words) * 4;
  if (hdr_end > frame.size()) return false;
  Reader h(std::span<const uint8_t>(frame).subspan(0, hdr_end), 14);
  uint64_t proto, ntrans;
  bool overlong;
  if (!h.varint(proto, overlong, 5) || overlong || !h.varint(ntrans, overlong, 5) || overlong ||
      ntrans != 0)
    return false;
  std::vector<KeyValue> kv;
  while (h.remaining() > 0) {
    uint64_t info, n;
    if (!h.varint(info, overlong, 5) || overlong) return false;
    if (info == 0) break;
    if (info != 1 || !h.varint(n, overlong, 5) || overlong || n > h.remaining()) return false;
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t kl, vl;
      std::string_view k, v;
      if (!h.varint(kl, overlong, 5) || !h.str(size_t(kl), k) || !h.varint(vl, overlong, 5) ||
          !h.str(size_t(vl), v))
        return false;
      kv.emplace_back(std::string(k), std::string(v));
    }
  }
  for (const KeyValue& s : set) {
    auto it = std::find_if(kv.begin(), kv.end(), [&](const KeyValue& e) { return e.first == s.first; });
    if (it != kv.end())
      it->second = s.second;
    else
      kv.push_back(s);
  }
  Bytes hdr;
  wire::put_varint(hdr, proto);
  wire::put_varint(hdr, 0);
  wire::put_varint(hdr, 1);  // one KEYVALUE info block
  wire::put_varint(hdr, kv.size());
  for (const auto& [k, v] : kv) {
    wire::put_varint(hdr, k.size());
    wire::put_bytes(hdr, k);
    wire::put_varint(hdr, v.size());
    wire::put_bytes(hdr, v);
  }
  while (hdr.size() % 4) hdr.push_back(0);
  if (hdr.size() / 4 > 0xffff) return false;
  Bytes out(frame.begin(), frame.begin() + 12);
  wire::put_be16(out, uint16_t(hdr.size() / 4));
  out.insert(out.end(), hdr.begin(), hdr.end());
  out.insert(out.end(), frame.begin() + ptrdiff_t(hdr_end), frame.end());
  wire::set_be32(out.data(), uint32_t(out.size() - 4));
  Limits l = limits_;
  l.max_message_bytes = std::max<uint32_t>(l.max_message_bytes, uint32_t(out.size()));
  ThriftCodec again(l);
  Message m;
  if (again.decode(out, m).status != DecodeStatus::kDone) return false;
  frame.swap(out);
  msg = std::move(m);
  return true;
}

void ThriftCodec::encode_app_exception(uint32_t wire_form, std::string_view method, int32_t seqid,
                                       int32_t type, std::string_view text, Bytes& out) {
  Transport t = wire_transport(wire_form);
  Protocol p = wire_protocol(wire_form);
  Bytes msg;
  if (p == Protocol::kCompact) {
    msg.push_back(kCompactProtocolId);
    msg.push_back(uint8_t(kException << 5 | kCompactVersion));
    wire::put_varint(msg, uint32_t(seqid));
    wire::put_varint(msg, method.size());
    wire::put_bytes(msg, method);
    msg.push_back(uint8_t(1 << 4 | C_BINARY));  // field 1: message
    wire::put_varint(msg, text.size());
    wire::put_bytes(msg, text);
    msg.push_back(uint8_t(1 << 4 | C_I32));  // field 2: type (zigzag)
    wire::put_varint(msg, uint32_t((type << 1) ^ (type >> 31)));
    msg.push_back(C_STOP);
  } else {
    if (p == Protocol::kBinaryNonStrict) {
      wire::put_be32(msg, uint32_t(method.size()));
      wire::put_bytes(msg, method);
      msg.push_back(kException);
    } else {
      wire::put_be32(msg, kBinaryVersion1 | kException);
      wire::put_be32(msg, uint32_t(method.size()));
      wire::put_bytes(msg, method);
    }
    wire::put_be32(msg, uint32_t(seqid));
    msg.push_back(T_STRING);
    wire::put_be16(msg, 1);
    wire::put_be32(msg, uint32_t(text.size()));
    wire::put_bytes(msg, text);
    msg.push_back(T_I32);
    wire::put_be16(msg, 2);
    wire::put_be32(msg, uint32_t(type));
    msg.push_back(T_STOP);
  }

  switch (t) {
    case Transport::kUnframed:
      out.insert(out.end(), msg.begin(), msg.end());
      break;
    case Transport::kHeader: {
      Bytes hdr;
      wire::put_varint(hdr, p == Protocol::kCompact ? 2 : 0);  // protocol id
      wire::put_varint(hdr, 0);                                // no transforms
      while (hdr.size() % 4) hdr.push_back(0);
      wire::put_be32(out, uint32_t(10 + hdr.size() + msg.size()));
      wire::put_be16(out, kHeaderMagic);
      wire::put_be16(out, 0);
      wire::put_be32(out, uint32_t(seqid));
      wire::put_be16(out, uint16_t(hdr.size() / 4));
      out.insert(out.end(), hdr.begin(), hdr.end());
      out.insert(out.end(), msg.begin(), msg.end());
      break;
    }
    default:
      wire::put_be32(out, uint32_t(msg.size()));
      out.insert(out.end(), msg.begin(), msg.end());
  }
}

void ThriftCodec::encode_error(const Message& req, ErrorKind kind, std::string_view text,
                               Bytes& out) {
  const std::string* m = req.metadata.get("method");
  int32_t type = kind == ErrorKind::kRouteNotFound ? kAppUnknownMethod : kAppInternalError;
  uint32_t w = req.wire;
  if (wire_transport(w) == Transport::kUnknown) w = pack_wire(Transport::kFramed, Protocol::kBinary);
  encode_app_exception(w, m ? *m : std::string_view(), int32_t(req.request_id), type, text, out);
}

std::string ThriftCodec::wire_form(const Message& m) const {
  return std::string(transport_name(wire_transport(m.wire))) + "/" + protocol_name(wire_protocol(m.wire));
}

}  // namespace metanode::codecs::thrift
