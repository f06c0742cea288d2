// Human- and machine-readable views of decoded messages: what
// `metanodectl decode` prints, one JSON object per line.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "metanode/codecs/codec.h"

namespace metanode::codecs {

std::string json_escape(std::string_view s);
// "framed/binary", "header/compact", "hessian2 twoway", ...
// `protocol` and `wire`: the codec's protocol_name() and wire_form().
std::string message_json(std::string_view protocol, std::string_view wire, const Message& m, size_t offset);

struct StreamReport {
  std::string lines;  // one JSON object per message, then one per error
  size_t messages = 0;
  size_t consumed = 0;
  bool ok = false;  // decoded to exactly the end
};

// Decodes a whole captured byte stream. `protocol` is "auto", "thrift" or "dubbo".
StreamReport decode_stream(std::span<const uint8_t> bytes, std::string_view protocol,
                           const Limits& limits = {});

}  // namespace metanode::codecs
