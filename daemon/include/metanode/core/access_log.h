// The access log: one line per answered request, as text or JSON, with the
// fields Envoy's access-log users look for. Workers format a line only when
// sampling and the rate cap let it through, and hand it to one writer
// thread through a bounded queue: a slow disk or a full pipe drops lines
// (counted), it never stalls a worker or grows the daemon.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "metanode/result.h"

namespace metanode::core {

struct AccessLogOptions {
  std::string path;     // "-": standard output
  bool json = false;
  double sample = 1.0;  // the share of requests logged, (0, 1]
  uint32_t max_lines_per_second = 0;  // 0: no cap
  size_t max_queued_bytes = size_t(4) << 20;
};

// What one line says; the strings are views valid for the call.
struct AccessLogEntry {
  std::chrono::system_clock::time_point start;
  std::string_view protocol, method, interface, response_code, response_flags;
  double duration_ms = 0;
  size_t bytes_received = 0, bytes_sent = 0;
  std::string_view upstream_cluster, upstream_host, route_name;
  std::string_view downstream_remote, downstream_local;  // the client; the address it dialled
  std::string_view source_workload, source_namespace;
  uint32_t attempts = 0;
};

std::string format_text(const AccessLogEntry& e);
std::string format_json(const AccessLogEntry& e);

class AccessLog {
 public:
  static Result<std::unique_ptr<AccessLog>> open(const AccessLogOptions& o);
  ~AccessLog();  // writes what is queued, then stops

  // Whether to log this request (sampling with the caller's random draw in
  // [0, 1), then the rate cap). Any thread.
  bool admit(double draw);
  void write(const AccessLogEntry& e);  // any thread
  const AccessLogOptions& options() const { return o_; }
  std::string metrics_text() const;

 private:
  AccessLog(AccessLogOptions o, int fd);
  void run();

  AccessLogOptions o_;
  int fd_;
  bool own_fd_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  bool stopping_ = false;
  // The rate cap, without a lock: every worker asks per request.
  std::atomic<int64_t> window_{0};  // the second being counted
  std::atomic<uint32_t> in_window_{0};
  std::atomic<uint64_t> dropped_rate_{0};
  uint64_t written_ = 0, dropped_full_ = 0, write_errors_ = 0;  // guarded by mu_
  std::thread writer_;
};

}  // namespace metanode::core
