// libFuzzer target: manifest YAML -> xDS -> snapshot. Any input must end in
// a snapshot or an error message, never a crash or a hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // yaml-cpp recursion on huge nesting is not our contract
  std::string text(reinterpret_cast<const char*>(data), size);
  auto res = metanode::xds::translate_manifests({{"fuzz.yaml", text}});
  if (res) (void)metanode::xds::build_snapshot(std::move(res.value()));
  return 0;
}
