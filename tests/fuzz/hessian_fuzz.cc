// libFuzzer target: the Hessian 2 reader alone (the Dubbo target reaches
// it only behind a valid Dubbo header and argument order). Any bytes must
// end in values skipped or an error, never a crash, a hang, an allocation
// sized from a declared length, or a position past the input.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dubbo/hessian2.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using metanode::codecs::hessian2::Reader;
  std::span<const uint8_t> in(data, size);
  {
    // A stream of values, as Dubbo's arguments are read.
    Reader r(in);
    while (!r.at_end()) {
      size_t before = r.pos();
      if (!r.skip()) break;
      if (r.pos() <= before || r.pos() > size) __builtin_trap();  // progress, in bounds
    }
  }
  {
    Reader r(in);
    std::optional<std::string> text;
    if (r.read_scalar_text(text) && r.pos() > size) __builtin_trap();
  }
  {
    // Attachments: a map, every entry's range inside the input.
    Reader r(in);
    std::vector<Reader::Entry> entries;
    size_t begin = 0;
    if (r.read_map(entries, &begin))
      for (const auto& e : entries)
        if (e.begin > e.end || e.end > size) __builtin_trap();
  }
  return 0;
}
