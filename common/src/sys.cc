#include "metanode/sys.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

namespace metanode::sys {

std::string mount_point(const std::string& fstype) {
  std::ifstream m("/proc/mounts");
  std::string dev, path, type, rest;
  while (m >> dev >> path >> type && std::getline(m, rest))
    if (type == fstype) return path;
  return {};
}

bool capabilities(Capabilities& out) {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (syscall(SYS_capget, &h, d) != 0) return false;
  out.effective = uint64_t(d[1].effective) << 32 | d[0].effective;
  out.permitted = uint64_t(d[1].permitted) << 32 | d[0].permitted;
  return true;
}

}  // namespace metanode::sys
