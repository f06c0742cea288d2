// At the fd limit the daemon answers with reserve fds: the admin endpoint
// and each worker hold one and swap it for an accepted connection (close
// the reserve, accept into its slot). Another thread creating an fd between
// the two takes the slot and the reserve is lost for good (nothing frees
// fds at the limit). The swaps, and a worker's accept retried at the limit,
// hold this one lock, so the slot a swap frees goes to that swap.
#pragma once

#include <mutex>

namespace metanode::core {

inline std::mutex& fd_reserve_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace metanode::core
