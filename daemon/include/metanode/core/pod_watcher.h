// Learning the node's pods without a cluster API: the container runtime
// keeps one network namespace file per pod sandbox (containerd and CRI-O:
// /var/run/netns/cni-*). Each one found is a managed pod in mn_pods; one
// that disappears is forgotten. Entries someone opted out (metanodectl pod
// add --opt-out) are never touched.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "metanode/bpf/maps.h"
#include "metanode/result.h"

namespace metanode::core {

class PodWatcher {
 public:
  using CookieFn = std::function<Result<uint64_t>(const std::string& netns_path)>;

  PodWatcher(bpf::Maps& maps, std::string dir, std::string prefix,
             CookieFn cookie = bpf::netns_cookie);

  // One pass: returns how many pods were added and removed.
  struct Change {
    int added = 0, removed = 0, failed = 0;
  };
  Change sync();

 private:
  bpf::Maps& maps_;
  std::string dir_, prefix_;
  CookieFn cookie_;
  std::map<std::string, uint64_t> by_file_;  // file identity (name:inode) -> cookie we registered
};

}  // namespace metanode::core
