// Hessian 2.0 serialization: a structural reader that can skip any value
// (Dubbo puts attachments after the arguments, so routing needs every
// argument skipped without knowing its Java type), read the scalars routing
// cares about, and a small writer for what the proxy itself encodes.
//
// Grammar: http://hessian.caucho.com/doc/hessian-serialization.html. The
// reader never allocates from a declared length and bounds nesting, class
// definitions and references, so a hostile body costs at most its own size.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace metanode::codecs::hessian2 {

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> body) : b_(body) {}

  size_t pos() const { return pos_; }
  bool at_end() const { return pos_ >= b_.size(); }
  const std::string& error() const { return err_; }
  std::optional<uint8_t> peek() const {
    return pos_ < b_.size() ? std::optional<uint8_t>(b_[pos_]) : std::nullopt;
  }

  // Skips one complete value (class definitions before it included).
  bool skip();
  // Reads a string value (any chunked form) as UTF-8; null reads as "" with
  // *was_null set.
  bool read_string(std::string& out, bool* was_null = nullptr);
  // Reads an int or long value.
  bool read_int(int64_t& out);
  // Reads any scalar (string, int, long, double, boolean, null) as text for
  // metadata; `out` is nullopt for composite values, which are skipped.
  bool read_scalar_text(std::optional<std::string>& out);

  // One key/value entry of a map, with the raw byte range it occupies, so a
  // rewriter can copy entries it does not change.
  struct Entry {
    std::optional<std::string> key, value;  // nullopt: not a scalar
    size_t begin = 0, end = 0;
    bool value_is_composite = false;
  };
  // Reads a map value ('H' or 'M'); null reads as an empty map.
  bool read_map(std::vector<Entry>& out, size_t* map_begin = nullptr);

 private:
  bool fail(std::string why);
  bool need(size_t n);
  bool u8(uint8_t& v);
  bool be(size_t n, uint64_t& v);
  bool skip_value(int depth);
  bool skip_until_end(int depth, int values, const char* what);
  bool skip_utf8_chars(uint64_t chars, std::string* out);
  bool string_body(uint8_t tag, std::string* out);
  bool binary_body(uint8_t tag);
  bool int_value(uint8_t tag, int64_t& v);
  bool long_value(uint8_t tag, int64_t& v);
  bool type_ref();
  bool class_def();
  bool object_body(uint64_t def, int depth);
  void count_ref();

  std::span<const uint8_t> b_;
  size_t pos_ = 0;
  std::string err_;
  std::vector<uint32_t> class_fields_;  // field count per class definition
  uint64_t refs_ = 0;                   // maps, lists and objects seen (Q targets)
};

// Writers (append to `out`).
void write_string(std::vector<uint8_t>& out, std::string_view utf8);
void write_int(std::vector<uint8_t>& out, int32_t v);
void write_null(std::vector<uint8_t>& out);
// UTF-16 code units in a UTF-8 string (Hessian string lengths count them).
size_t utf16_length(std::string_view utf8);

}  // namespace metanode::codecs::hessian2
