// The few JSON helpers the admin bodies need (they are built as text).
#pragma once

#include <cstdio>
#include <string>

namespace metanode {

// `s` as a JSON string literal; control characters escaped.
inline std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", u);
      o += buf;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

}  // namespace metanode
