// libFuzzer target: the Thrift codec on arbitrary bytes. Decodes a whole
// stream like the daemon does, then exercises id rewriting and error replies
// on every message it accepted.
#include <cstddef>
#include <cstdint>

#include "metanode/codecs/thrift.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metanode::codecs;
  Limits limits;
  limits.max_message_bytes = 1 << 20;
  thrift::ThriftCodec codec(limits);
  size_t off = 0;
  while (off < size) {
    Message m;
    auto r = codec.decode(std::span<const uint8_t>(data + off, size - off), m);
    if (r.status != DecodeStatus::kDone) break;
    if (m.size == 0 || m.size > size - off) __builtin_trap();  // decoder contract
    Bytes frame(data + off, data + off + m.size);
    Bytes reply;
    codec.encode_error(m, ErrorKind::kNoUpstream, "fuzz", reply);
    // A fresh codec re-detects the wire form from this frame alone, which for
    // later messages may legitimately differ from the stream's (detection is
    // per connection): check the round trip on the first message only.
    if (codec.set_request_id(frame, m, 0x12345) && off == 0) {
      thrift::ThriftCodec again(limits);
      Message m2;
      auto r2 = again.decode(frame, m2);
      if (r2.status == DecodeStatus::kDone && m2.request_id != 0x12345) __builtin_trap();
    }
    off += m.size;
  }
  return 0;
}
