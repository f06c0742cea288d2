// Calls Envoy's rate limit service (envoy.service.ratelimit.v3.
// RateLimitService/ShouldRateLimit) for MetaRouter globalRateLimit: one
// channel per service endpoint, shared by every worker, asynchronous (the
// answer is handed back to the caller's event loop), with a bound on calls
// in flight so a slow service cannot pile up requests without limit.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "metanode/net.h"

namespace metanode::core {

class RateLimitClient {
 public:
  enum class Decision { kOk, kOverLimit, kError };
  static constexpr uint32_t kMaxInFlight = 4096;

  RateLimitClient();
  ~RateLimitClient();

  // Asks `service` whether one hit of `entries` in `domain` is allowed.
  // `done` runs once, on a gRPC thread; kError when the service did not
  // answer within `timeout`, failed, or too many calls are in flight.
  void check(net::Endpoint service, const std::string& domain,
             const std::vector<std::pair<std::string, std::string>>& entries,
             std::chrono::milliseconds timeout, std::function<void(Decision)> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace metanode::core
