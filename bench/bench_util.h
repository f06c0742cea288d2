// Small helpers shared by the benchmarks.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace metanode::bench {

inline sockaddr_in addr(const std::string& hp) {
  auto c = hp.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(std::stoi(hp.substr(c + 1))));
  inet_pton(AF_INET, hp.substr(0, c).c_str(), &sa.sin_addr);
  return sa;
}

// Reads or writes exactly n bytes; false on EOF or error.
inline bool full_io(int fd, void* buf, size_t n, bool reading) {
  auto* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = reading ? read(fd, p + done, n - done) : write(fd, p + done, n - done);
    if (r <= 0) return false;
    done += size_t(r);
  }
  return true;
}

// This program's own path, to run itself in another namespace.
inline std::string self_exe() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  return std::string(exe, n > 0 ? size_t(n) : 0);
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace metanode::bench
