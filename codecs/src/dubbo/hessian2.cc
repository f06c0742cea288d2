#include "hessian2.h"

#include <algorithm>
#include <cstring>

namespace metanode::codecs::hessian2 {
namespace {

constexpr int kMaxDepth = 64;
constexpr size_t kMaxClassDefs = 4096;
constexpr uint64_t kMaxFields = 4096;

std::string at(size_t p) { return " at body offset " + std::to_string(p); }

}  // namespace

bool Reader::fail(std::string why) {
  if (err_.empty()) err_ = std::move(why);
  return false;
}

bool Reader::need(size_t n) {
  if (b_.size() - pos_ >= n) return true;
  return fail("value runs past the end of the body" + at(pos_));
}

bool Reader::u8(uint8_t& v) {
  if (!need(1)) return false;
  v = b_[pos_++];
  return true;
}

bool Reader::be(size_t n, uint64_t& v) {
  if (!need(n)) return false;
  v = 0;
  for (size_t i = 0; i < n; ++i) v = v << 8 | b_[pos_++];
  return true;
}

// Hessian string lengths count UTF-16 code units; the bytes are UTF-8 (a
// supplementary character is either two 3-byte surrogates, as Java writes,
// or one 4-byte sequence counting as two units).
bool Reader::skip_utf8_chars(uint64_t chars, std::string* out) {
  if (chars > b_.size() - pos_) return fail("string longer than the body" + at(pos_));
  size_t start = pos_;
  while (chars > 0) {
    if (pos_ >= b_.size()) return fail("string runs past the end of the body" + at(start));
    uint8_t c = b_[pos_];
    size_t n;
    uint64_t units = 1;
    if (c < 0x80) {
      // Fast path: a run of ASCII, eight bytes at a time.
      size_t limit = std::min<uint64_t>(chars, b_.size() - pos_), run = 0;
      const uint8_t* p = b_.data() + pos_;
      for (uint64_t w; run + 8 <= limit; run += 8) {
        std::memcpy(&w, p + run, 8);
        if (w & 0x8080808080808080ull) break;
      }
      while (run < limit && p[run] < 0x80) ++run;
      pos_ += run;
      chars -= run;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 2;
    } else if ((c & 0xf0) == 0xe0) {
      n = 3;
    } else if ((c & 0xf8) == 0xf0) {
      n = 4;
      units = 2;
    } else {
      return fail("bad UTF-8 lead byte in string" + at(pos_));
    }
    if (b_.size() - pos_ < n) return fail("truncated UTF-8 sequence" + at(pos_));
    for (size_t k = 1; k < n; ++k)
      if ((b_[pos_ + k] & 0xc0) != 0x80) return fail("bad UTF-8 continuation byte" + at(pos_ + k));
    pos_ += n;
    chars = chars >= units ? chars - units : 0;
  }
  if (out) out->append(reinterpret_cast<const char*>(b_.data() + start), pos_ - start);
  return true;
}

bool Reader::string_body(uint8_t tag, std::string* out) {
  for (;;) {
    uint64_t len;
    bool final = true;
    if (tag <= 0x1f) {
      len = tag;
    } else if (tag >= 0x30 && tag <= 0x33) {
      uint8_t b0;
      if (!u8(b0)) return false;
      len = uint64_t(tag - 0x30) << 8 | b0;
    } else if (tag == 'S' || tag == 'R') {
      if (!be(2, len)) return false;
      final = tag == 'S';
    } else {
      return fail("expected a string chunk, got tag " + std::to_string(tag) + at(pos_ - 1));
    }
    if (!skip_utf8_chars(len, out)) return false;
    if (final) return true;
    if (!u8(tag)) return false;
  }
}

bool Reader::binary_body(uint8_t tag) {
  for (;;) {
    uint64_t len;
    bool final = true;
    if (tag >= 0x20 && tag <= 0x2f) {
      len = tag - 0x20;
    } else if (tag >= 0x34 && tag <= 0x37) {
      uint8_t b0;
      if (!u8(b0)) return false;
      len = uint64_t(tag - 0x34) << 8 | b0;
    } else if (tag == 'B' || tag == 'A') {
      if (!be(2, len)) return false;
      final = tag == 'B';
    } else {
      return fail("expected a binary chunk" + at(pos_ - 1));
    }
    if (!need(len)) return false;
    pos_ += len;
    if (final) return true;
    if (!u8(tag)) return false;
  }
}

bool Reader::int_value(uint8_t tag, int64_t& v) {
  uint64_t x;
  if (tag == 'I') {
    if (!be(4, x)) return false;
    v = int32_t(uint32_t(x));
  } else if (tag >= 0x80 && tag <= 0xbf) {
    v = int64_t(tag) - 0x90;
  } else if (tag >= 0xc0 && tag <= 0xcf) {
    if (!be(1, x)) return false;
    v = (int64_t(tag) - 0xc8) * 256 + int64_t(x);
  } else if (tag >= 0xd0 && tag <= 0xd7) {
    if (!be(2, x)) return false;
    v = (int64_t(tag) - 0xd4) * 65536 + int64_t(x);
  } else {
    return fail("expected an int" + at(pos_ - 1));
  }
  return true;
}

bool Reader::long_value(uint8_t tag, int64_t& v) {
  uint64_t x;
  if (tag == 'L') {
    if (!be(8, x)) return false;
    v = int64_t(x);
  } else if (tag >= 0xd8 && tag <= 0xef) {
    v = int64_t(tag) - 0xe0;
  } else if (tag >= 0xf0) {
    if (!be(1, x)) return false;
    v = (int64_t(tag) - 0xf8) * 256 + int64_t(x);
  } else if (tag >= 0x38 && tag <= 0x3f) {
    if (!be(2, x)) return false;
    v = (int64_t(tag) - 0x3c) * 65536 + int64_t(x);
  } else if (tag == 'Y') {
    if (!be(4, x)) return false;
    v = int32_t(uint32_t(x));
  } else {
    return fail("expected a long" + at(pos_ - 1));
  }
  return true;
}

void Reader::count_ref() { ++refs_; }

// type ::= string | int (a reference to an earlier type string)
bool Reader::type_ref() {
  uint8_t t;
  if (!u8(t)) return false;
  if (t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'S' || t == 'R') return string_body(t, nullptr);
  int64_t v;
  return int_value(t, v);
}

// 'C' string int string*: a class name and its field names.
bool Reader::class_def() {
  uint8_t t;
  if (!u8(t) || !string_body(t, nullptr)) return false;
  int64_t fields;
  if (!u8(t) || !int_value(t, fields)) return false;
  if (fields < 0 || uint64_t(fields) > kMaxFields)
    return fail("class definition with " + std::to_string(fields) + " fields" + at(pos_));
  if (uint64_t(fields) > b_.size() - pos_) return fail("class definition longer than the body");
  for (int64_t i = 0; i < fields; ++i)
    if (!u8(t) || !string_body(t, nullptr)) return false;
  if (class_fields_.size() >= kMaxClassDefs) return fail("too many class definitions");
  class_fields_.push_back(uint32_t(fields));
  return true;
}

bool Reader::object_body(uint64_t def, int depth) {
  if (def >= class_fields_.size())
    return fail("object refers to undefined class #" + std::to_string(def) + at(pos_));
  count_ref();
  for (uint32_t i = 0, n = class_fields_[def]; i < n; ++i)
    if (!skip_value(depth + 1)) return false;
  return true;
}

// Variable-length maps and lists: entries of `values` values until 'Z'.
bool Reader::skip_until_end(int depth, int values, const char* what) {
  for (;;) {
    auto p = peek();
    if (!p) return fail(std::string(what) + " without end" + at(pos_));
    if (*p == 'Z') {
      ++pos_;
      return true;
    }
    for (int i = 0; i < values; ++i)
      if (!skip_value(depth + 1)) return false;
  }
}

bool Reader::skip_value(int depth) {
  if (depth > kMaxDepth) return fail("nesting deeper than " + std::to_string(kMaxDepth) + at(pos_));
  uint8_t t;
  if (!u8(t)) return false;
  int64_t v;
  uint64_t x;
  switch (t) {
    case 'N':
    case 'T':
    case 'F':
    case 0x5b:
    case 0x5c:
      return true;
    case 'D':
    case 'J':
      return be(8, x);
    case 'K':
    case 0x5f:
      return be(4, x);
    case 0x5d:
      return be(1, x);
    case 0x5e:
      return be(2, x);
    case 'C':
      // A definition is not a value: the value that uses it follows.
      return class_def() && skip_value(depth);
    case 'O': {
      uint8_t d;
      if (!u8(d) || !int_value(d, v)) return false;
      if (v < 0) return fail("negative class reference" + at(pos_));
      return object_body(uint64_t(v), depth);
    }
    case 'Q': {
      uint8_t d;
      if (!u8(d) || !int_value(d, v)) return false;
      if (v < 0 || uint64_t(v) >= refs_)
        return fail("reference to undefined value #" + std::to_string(v) + at(pos_));
      return true;
    }
    case 'H':
    case 'M':
      if (t == 'M' && !type_ref()) return false;
      count_ref();
      return skip_until_end(depth, 2, "map");
    case 'U':
    case 'W':
      if (t == 'U' && !type_ref()) return false;
      count_ref();
      return skip_until_end(depth, 1, "list");
    case 'V':
    case 'X': {
      if (t == 'V' && !type_ref()) return false;
      uint8_t d;
      if (!u8(d) || !int_value(d, v)) return false;
      if (v < 0 || uint64_t(v) > b_.size() - pos_)
        return fail("list length " + std::to_string(v) + " exceeds the body" + at(pos_));
      count_ref();
      for (int64_t i = 0; i < v; ++i)
        if (!skip_value(depth + 1)) return false;
      return true;
    }
    default:
      break;
  }
  if (t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'S' || t == 'R') return string_body(t, nullptr);
  if ((t >= 0x20 && t <= 0x2f) || (t >= 0x34 && t <= 0x37) || t == 'A' || t == 'B')
    return binary_body(t);
  if (t == 'I' || (t >= 0x80 && t <= 0xd7)) return int_value(t, v);
  if (t == 'L' || t >= 0xd8 || (t >= 0x38 && t <= 0x3f) || t == 'Y') return long_value(t, v);
  if (t >= 0x60 && t <= 0x6f) return object_body(uint64_t(t - 0x60), depth);
  if (t >= 0x70 && t <= 0x7f) {
    if (t <= 0x77 && !type_ref()) return false;
    count_ref();
    for (int i = 0, n = t <= 0x77 ? t - 0x70 : t - 0x78; i < n; ++i)
      if (!skip_value(depth + 1)) return false;
    return true;
  }
  return fail("unknown Hessian tag 0x" + [&] {
    char buf[3];
    std::snprintf(buf, sizeof(buf), "%02x", t);
    return std::string(buf);
  }() + at(pos_ - 1));
}

bool Reader::skip() { return skip_value(0); }

bool Reader::read_string(std::string& out, bool* was_null) {
  out.clear();
  uint8_t t;
  if (!u8(t)) return false;
  if (was_null) *was_null = t == 'N';
  if (t == 'N') return true;
  if (t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'S' || t == 'R') return string_body(t, &out);
  return fail("expected a string" + at(pos_ - 1));
}

bool Reader::read_int(int64_t& out) {
  uint8_t t;
  if (!u8(t)) return false;
  if (t == 'I' || (t >= 0x80 && t <= 0xd7)) return int_value(t, out);
  return long_value(t, out);
}

bool Reader::read_scalar_text(std::optional<std::string>& out) {
  out.reset();
  auto p = peek();
  if (!p) return fail("missing value" + at(pos_));
  uint8_t t = *p;
  if (t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'S' || t == 'R' || t == 'N') {
    std::string s;
    if (!read_string(s)) return false;
    out = std::move(s);
    return true;
  }
  if (t == 'T' || t == 'F') {
    ++pos_;
    out = t == 'T' ? "true" : "false";
    return true;
  }
  if (t == 'I' || (t >= 0x80 && t <= 0xd7) || t == 'L' || t >= 0xd8 || (t >= 0x38 && t <= 0x3f) ||
      t == 'Y') {
    int64_t v;
    if (!read_int(v)) return false;
    out = std::to_string(v);
    return true;
  }
  return skip();
}

bool Reader::read_map(std::vector<Entry>& out, size_t* map_begin) {
  out.clear();
  if (map_begin) *map_begin = pos_;
  uint8_t t;
  if (!u8(t)) return false;
  if (t == 'N') return true;
  if (t == 'M') {
    if (!type_ref()) return false;
  } else if (t != 'H') {
    return fail("expected a map" + at(pos_ - 1));
  }
  count_ref();
  for (;;) {
    auto p = peek();
    if (!p) return fail("map without end" + at(pos_));
    if (*p == 'Z') {
      ++pos_;
      return true;
    }
    Entry e;
    e.begin = pos_;
    if (!read_scalar_text(e.key)) return false;
    auto v = peek();
    e.value_is_composite = v && (*v == 'H' || *v == 'M' || *v == 'O' || *v == 'C' ||
                                 (*v >= 0x55 && *v <= 0x58) || (*v >= 0x60 && *v <= 0x7f));
    if (!read_scalar_text(e.value)) return false;
    e.end = pos_;
    out.push_back(std::move(e));
  }
}

size_t utf16_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if ((c & 0xc0) == 0x80) continue;   // continuation
    n += (c & 0xf8) == 0xf0 ? 2 : 1;    // 4-byte sequences are surrogate pairs
  }
  return n;
}

void write_string(std::vector<uint8_t>& out, std::string_view s) {
  // Chunks of at most 0x8000 UTF-16 units, never splitting a UTF-8 sequence.
  size_t i = 0;
  do {
    size_t units = 0, j = i;
    while (j < s.size() && units < 0x8000) {
      auto c = static_cast<unsigned char>(s[j]);
      size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;
      size_t u = n == 4 ? 2 : 1;
      if (units + u > 0x8000) break;
      units += u;
      j += n;
    }
    bool final = j >= s.size();
    if (final && units <= 0x1f) {
      out.push_back(uint8_t(units));
    } else if (final && units <= 0x3ff) {
      out.push_back(uint8_t(0x30 + (units >> 8)));
      out.push_back(uint8_t(units));
    } else {
      out.push_back(final ? 'S' : 'R');
      out.push_back(uint8_t(units >> 8));
      out.push_back(uint8_t(units));
    }
    out.insert(out.end(), s.begin() + ptrdiff_t(i), s.begin() + ptrdiff_t(std::min(j, s.size())));
    i = j;
  } while (i < s.size());
}

void write_int(std::vector<uint8_t>& out, int32_t v) {
  if (v >= -0x10 && v <= 0x2f) {
    out.push_back(uint8_t(v + 0x90));
  } else if (v >= -0x800 && v <= 0x7ff) {
    out.push_back(uint8_t(0xc8 + (v >> 8)));
    out.push_back(uint8_t(v));
  } else if (v >= -0x40000 && v <= 0x3ffff) {
    out.push_back(uint8_t(0xd4 + (v >> 16)));
    out.push_back(uint8_t(v >> 8));
    out.push_back(uint8_t(v));
  } else {
    out.push_back('I');
    for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(uint32_t(v) >> s));
  }
}

void write_null(std::vector<uint8_t>& out) { out.push_back('N'); }

}  // namespace metanode::codecs::hessian2
