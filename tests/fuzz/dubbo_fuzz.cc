// libFuzzer target: the Dubbo codec (and its Hessian 2 reader) on arbitrary
// bytes, decoding a stream as the daemon does and exercising every encoder
// on what it accepted. Mutated frames must decode again.
#include <cstddef>
#include <cstdint>

#include "metanode/codecs/dubbo.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metanode::codecs;
  Limits limits;
  limits.max_dubbo_body_bytes = 1 << 20;
  dubbo::DubboCodec codec(limits);
  size_t off = 0;
  while (off < size) {
    Message m;
    auto r = codec.decode(std::span<const uint8_t>(data + off, size - off), m);
    if (r.status != DecodeStatus::kDone) break;
    if (m.size < dubbo::kHeaderSize || m.size > size - off) __builtin_trap();
    Bytes frame(data + off, data + off + m.size);
    Bytes out;
    codec.encode_error(m, ErrorKind::kRouteNotFound, "fuzz", out);
    codec.encode_heartbeat_reply(m, out);
    if (!codec.set_request_id(frame, m, 99)) __builtin_trap();
    Message mm = m;
    if (codec.mutate(frame, mm, {{"k", "v"}, {"group", "fuzz"}})) {
      Message again;
      if (dubbo::DubboCodec().decode(frame, again).status != DecodeStatus::kDone) __builtin_trap();
      if (again.request_id != 99) __builtin_trap();
    }
    off += m.size;
  }
  return 0;
}
