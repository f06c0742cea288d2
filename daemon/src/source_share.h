// One client source across the node (a pod, known by its address: the
// kernel's peer address of the redirected connection, never the payload).
// What all its connections hold on every worker, so that one pod's flood
// pauses that pod, not the daemon: its connections (refused beyond the
// limit), its requests awaiting replies (its reads pause beyond the limit),
// and optionally its request rate (its reads wait for it beyond it).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "metanode/xds/token_bucket.h"

namespace metanode::core {

struct SourceShare {
  std::atomic<uint32_t> connections{0};
  std::atomic<uint32_t> pending{0};
  std::atomic<uint32_t> rate_waiters{0};  // its connections waiting for its rate
  std::unique_ptr<xds::TokenBucket> rate;  // set once, at creation
};

}  // namespace metanode::core
