// Small facts about the running system.
#pragma once

#include <string>

namespace metanode::sys {

// First mount point of a filesystem type in /proc/mounts ("cgroup2", "bpf"),
// or "" when there is none. Never assume a path: hosts differ.
std::string mount_point(const std::string& fstype);

}  // namespace metanode::sys
