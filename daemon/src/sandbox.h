// What the daemon may still do once it has loaded its BPF programs: every
// capability it does not need dropped (bounding set included), no new
// privileges, and a seccomp allow-list of system calls. Applied on the main
// thread before any other thread exists, so every thread inherits it
// (capabilities are per thread). docs/SECURITY.md says why each one stays.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "metanode/result.h"

namespace metanode::core {

struct SandboxOptions {
  bool intercept = false;        // SO_MARK on upstream sockets: CAP_NET_ADMIN
  bool enter_netns = false;      // setns() into pods' netns (--pods netns-dir): CAP_SYS_ADMIN
  // Called with CAP_BPF dropped from the effective set: false when BPF map
  // operations on open fds then fail (kernels before 6.5 with
  // unprivileged BPF disabled check CAP_BPF on every bpf() call), in
  // which case CAP_BPF stays.
  std::function<bool()> bpf_works_without_cap;
  bool seccomp = true;
};

// Returns a one-line account ("capabilities kept: ..., seccomp: on").
Result<std::string> enter_sandbox(const SandboxOptions& o);

}  // namespace metanode::core
