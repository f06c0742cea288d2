// Bounds-checked readers and writers for big-endian and varint wire data.
// Every read reports failure instead of reading past the end: the decoders
// turn that into kNeedMoreData or kError, never into undefined behaviour.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace metanode::codecs::wire {

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b, size_t pos = 0) : b_(b), pos_(pos) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return pos_ <= b_.size() ? b_.size() - pos_ : 0; }
  bool has(size_t n) const { return remaining() >= n; }
  const uint8_t* here() const { return b_.data() + pos_; }
  std::span<const uint8_t> all() const { return b_; }

  bool skip(size_t n) {
    if (!has(n)) return false;
    pos_ += n;
    return true;
  }
  bool u8(uint8_t& v) {
    if (!has(1)) return false;
    v = b_[pos_++];
    return true;
  }
  bool be16(uint16_t& v) {
    if (!has(2)) return false;
    v = uint16_t(b_[pos_] << 8 | b_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool be32(uint32_t& v) {
    if (!has(4)) return false;
    v = uint32_t(b_[pos_]) << 24 | uint32_t(b_[pos_ + 1]) << 16 | uint32_t(b_[pos_ + 2]) << 8 |
        b_[pos_ + 3];
    pos_ += 4;
    return true;
  }
  bool be64(uint64_t& v) {
    uint32_t hi, lo;
    if (!has(8)) return false;
    be32(hi);
    be32(lo);
    v = uint64_t(hi) << 32 | lo;
    return true;
  }
  // Unsigned LEB128 as used by Thrift compact and THeader; at most `max_bytes`.
  // Returns false on truncation; sets `bad` when the encoding is too long.
  bool varint(uint64_t& v, bool& bad, int max_bytes = 10) {
    v = 0;
    bad = false;
    for (int i = 0, shift = 0; i < max_bytes; ++i, shift += 7) {
      if (!has(1)) return false;
      uint8_t c = b_[pos_++];
      v |= uint64_t(c & 0x7f) << shift;
      if (!(c & 0x80)) return true;
    }
    bad = true;
    return true;
  }
  bool str(size_t n, std::string_view& s) {
    if (!has(n)) return false;
    s = std::string_view(reinterpret_cast<const char*>(here()), n);
    pos_ += n;
    return true;
  }

 private:
  std::span<const uint8_t> b_;
  size_t pos_;
};

inline void put_be16(std::vector<uint8_t>& o, uint16_t v) {
  o.push_back(uint8_t(v >> 8));
  o.push_back(uint8_t(v));
}
inline void put_be32(std::vector<uint8_t>& o, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) o.push_back(uint8_t(v >> s));
}
inline void put_be64(std::vector<uint8_t>& o, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) o.push_back(uint8_t(v >> s));
}
inline void set_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}
inline void set_be64(uint8_t* p, uint64_t v) {
  set_be32(p, uint32_t(v >> 32));
  set_be32(p + 4, uint32_t(v));
}
inline void put_varint(std::vector<uint8_t>& o, uint64_t v) {
  while (v >= 0x80) {
    o.push_back(uint8_t(v) | 0x80);
    v >>= 7;
  }
  o.push_back(uint8_t(v));
}
inline size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
inline void put_bytes(std::vector<uint8_t>& o, std::string_view s) {
  o.insert(o.end(), s.begin(), s.end());
}

}  // namespace metanode::codecs::wire
