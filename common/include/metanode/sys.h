// Small facts about the running system.
#pragma once

#include <cstdint>
#include <string>

namespace metanode::sys {

// First mount point of a filesystem type in /proc/mounts ("cgroup2", "bpf"),
// or "" when there is none. Never assume a path: hosts differ.
std::string mount_point(const std::string& fstype);

// This thread's capability sets, as capget(2) reports them (bit N is
// capability N, e.g. CAP_NET_ADMIN). False when capget fails.
struct Capabilities {
  uint64_t effective = 0, permitted = 0;
  bool has(int cap) const { return (effective >> cap) & 1; }
};
bool capabilities(Capabilities& out);

}  // namespace metanode::sys
