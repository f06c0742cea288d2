// One streamed HTTP GET against the Kubernetes API server. A watch's body
// never ends by itself, so the body is handed over as it arrives.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "metanode/result.h"

namespace metanode::kube {

struct ResponseHandler {
  std::function<void(int status)> on_status;       // once, when the headers are in
  std::function<bool(std::string_view)> on_data;   // body bytes; false stops the request
  std::function<void(Result<void>)> on_done;       // once: body ended, or why the request failed
};

class Transport {
 public:
  virtual ~Transport() = default;
  // One request at a time. `target` is the path and query, e.g.
  // "/api/v1/pods?watch=true&resourceVersion=12".
  virtual void get(const std::string& target, ResponseHandler h) = 0;
  // Ends the request in progress; none of its callbacks runs afterwards.
  virtual void cancel() = 0;
};

}  // namespace metanode::kube
