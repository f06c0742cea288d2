#include "metanode/sys.h"

#include <fstream>

namespace metanode::sys {

std::string mount_point(const std::string& fstype) {
  std::ifstream m("/proc/mounts");
  std::string dev, path, type, rest;
  while (m >> dev >> path >> type && std::getline(m, rest))
    if (type == fstype) return path;
  return {};
}

}  // namespace metanode::sys
