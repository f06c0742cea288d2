// Pinned maps outlive the daemon that made them. Before a new skeleton is
// loaded, each pinned map is checked against it: reused when its layout
// version (mn_layout, metanode_abi.h) and geometry match, replaced by a
// fresh map otherwise, with its entries carried over after the load. So an
// upgrade that changes a map keeps the pods, exclusions, services and
// counters instead of wiping them, and a failed load leaves the old install
// exactly as it was.
#pragma once

#include <linux/bpf.h>

#include <string>
#include <vector>

#include "metanode/result.h"

struct bpf_object;

namespace metanode::bpf {

class LayoutMigration {
 public:
  LayoutMigration() = default;
  LayoutMigration(LayoutMigration&& o) noexcept;
  LayoutMigration& operator=(LayoutMigration&&) = delete;
  ~LayoutMigration();

  // Before load: every map of `obj` with a pin path whose pinned map
  // differs is unpinned (libbpf then creates it afresh) and held open here.
  static Result<LayoutMigration> prepare(bpf_object* obj, const std::string& pin_dir);
  // The load failed: the replaced maps go back to their pins.
  void restore();
  // The load succeeded: entries of the replaced maps are copied into the
  // new ones and mn_layout records this build's versions. Returns what was
  // done, for the log ("" when every map was reused or new).
  Result<std::string> finish(bpf_object* obj);

 private:
  struct Retired {
    std::string name, path;
    int fd = -1;
    bpf_map_info info{};
    uint32_t version = 0;  // its layout version as mn_layout recorded it
  };
  std::string pin_dir_;
  std::vector<Retired> retired_;
};

}  // namespace metanode::bpf
