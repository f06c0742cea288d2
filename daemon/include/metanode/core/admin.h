// The admin HTTP endpoint (default 127.0.0.1:15000): a deliberately tiny
// HTTP/1.1 server on its own thread, one request per connection. It only
// reads the data plane's state; it never blocks a worker.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "metanode/net.h"
#include "metanode/result.h"

namespace metanode::core {

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class AdminServer {
 public:
  using Handler = std::function<AdminResponse(const std::string& method, const std::string& path)>;
  AdminServer(net::Endpoint addr, Handler handler);
  ~AdminServer();
  // Binds its address, or accepts on `adopted_fd`: the same address's
  // listening socket handed over by the daemon this one replaces.
  Result<void> start(int adopted_fd = -1);
  void stop();
  int native_handle() const;  // the listening socket, for a successor
  net::Endpoint bound() const;  // the real port when started with port 0

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace metanode::core
