#include "metanode/core/access_log.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <sstream>

#include "metanode/json.h"
#include "metanode/utc_time.h"

namespace metanode::core {
namespace {

std::string or_dash(std::string_view s) { return s.empty() ? "-" : std::string(s); }

std::string duration(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", ms);
  return buf;
}

}  // namespace

// [START] "PROTOCOL INTERFACE/METHOD" CODE FLAGS RECEIVED SENT DURATION_MS
// "CLUSTER" UPSTREAM_HOST DOWNSTREAM_REMOTE DOWNSTREAM_LOCAL route=R
// source=NS/WORKLOAD attempts=N -- Envoy's default order, in RPC terms.
std::string format_text(const AccessLogEntry& e) {
  std::string call = e.interface.empty() ? or_dash(e.method) : std::string(e.interface) + "/" + or_dash(e.method);
  std::string src = e.source_workload.empty() ? "-" : or_dash(e.source_namespace) + "/" + std::string(e.source_workload);
  return "[" + utc_timestamp(e.start) + "] \"" + std::string(e.protocol) + " " + call + "\" " + or_dash(e.response_code) +
         " " + or_dash(e.response_flags) + " " + std::to_string(e.bytes_received) + " " +
         std::to_string(e.bytes_sent) + " " + duration(e.duration_ms) + " \"" + or_dash(e.upstream_cluster) +
         "\" " + or_dash(e.upstream_host) + " " + or_dash(e.downstream_remote) + " " +
         or_dash(e.downstream_local) + " route=" + or_dash(e.route_name) + " source=" + src +
         " attempts=" + std::to_string(e.attempts) + "\n";
}

std::string format_json(const AccessLogEntry& e) {
  auto s = [](std::string_view v) { return json_string(std::string(v)); };
  return "{\"start_time\":\"" + utc_timestamp(e.start) + "\",\"protocol\":" + s(e.protocol) + ",\"method\":" +
         s(e.method) + ",\"interface\":" + s(e.interface) + ",\"response_code\":" + s(e.response_code) +
         ",\"response_flags\":" + s(e.response_flags) + ",\"bytes_received\":" + std::to_string(e.bytes_received) +
         ",\"bytes_sent\":" + std::to_string(e.bytes_sent) + ",\"duration\":" + duration(e.duration_ms) +
         ",\"upstream_cluster\":" + s(e.upstream_cluster) + ",\"upstream_host\":" + s(e.upstream_host) +
         ",\"downstream_remote_address\":" + s(e.downstream_remote) + ",\"downstream_local_address\":" +
         s(e.downstream_local) + ",\"route_name\":" + s(e.route_name) + ",\"source_workload\":" +
         s(e.source_workload) + ",\"source_namespace\":" + s(e.source_namespace) +
         ",\"upstream_request_attempt_count\":" + std::to_string(e.attempts) + "}\n";
}

Result<std::unique_ptr<AccessLog>> AccessLog::open(const AccessLogOptions& o) {
  if (!(o.sample > 0 && o.sample <= 1)) return Error::invalid("--access-log-sample: not in (0, 1]");
  int fd = 1;
  if (o.path != "-") {
    fd = ::open(o.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return Error::errno_error("--access-log " + o.path);
  }
  return std::unique_ptr<AccessLog>(new AccessLog(o, fd));
}

AccessLog::AccessLog(AccessLogOptions o, int fd) : o_(std::move(o)), fd_(fd), own_fd_(o_.path != "-") {
  writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  writer_.join();
  if (own_fd_) ::close(fd_);
}

bool AccessLog::admit(double draw) {
  if (draw >= o_.sample) return false;
  if (!o_.max_lines_per_second) return true;
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::steady_clock::now().time_since_epoch()).count();
  // The first to see a new second resets the count. A line admitted by
  // another worker between the two steps is not counted: the cap may be
  // passed by a few at a second's turn, never more.
  int64_t w = window_.load(std::memory_order_relaxed);
  if (w != now && window_.compare_exchange_strong(w, now, std::memory_order_relaxed))
    in_window_.store(0, std::memory_order_relaxed);
  if (in_window_.fetch_add(1, std::memory_order_relaxed) < o_.max_lines_per_second) return true;
  dropped_rate_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void AccessLog::write(const AccessLogEntry& e) {
  std::string line = o_.json ? format_json(e) : format_text(e);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (queued_bytes_ + line.size() > o_.max_queued_bytes) {
      ++dropped_full_;
      return;
    }
    queued_bytes_ += line.size();
    queue_.push_back(std::move(line));
  }
  cv_.notify_one();
}

void AccessLog::run() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    // Everything queued in one write, outside the lock.
    std::string batch;
    for (auto& s : queue_) batch += s;
    queue_.clear();
    queued_bytes_ = 0;
    l.unlock();
    size_t off = 0;
    bool failed = false;
    while (off < batch.size()) {
      ssize_t n = ::write(fd_, batch.data() + off, batch.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        failed = true;
        break;
      }
      off += size_t(n);
    }
    size_t lines = 0;
    for (char c : std::string_view(batch).substr(0, off)) lines += c == '\n';
    l.lock();
    written_ += lines;
    if (failed) ++write_errors_;
  }
}

std::string AccessLog::metrics_text() const {
  std::lock_guard<std::mutex> l(mu_);
  std::ostringstream o;
  o << "# HELP metanode_access_log_lines_total Access log lines written\n"
       "# TYPE metanode_access_log_lines_total counter\nmetanode_access_log_lines_total "
    << written_ << "\n# HELP metanode_access_log_dropped_total Access log lines not written: over the rate cap, "
       "or the writer behind by more than its queue\n# TYPE metanode_access_log_dropped_total counter\n"
       "metanode_access_log_dropped_total{reason=\"rate\"} " << dropped_rate_.load(std::memory_order_relaxed)
    << "\nmetanode_access_log_dropped_total{reason=\"queue_full\"} " << dropped_full_
    << "\n# HELP metanode_access_log_write_errors_total Failed writes of the access log\n"
       "# TYPE metanode_access_log_write_errors_total counter\nmetanode_access_log_write_errors_total "
    << write_errors_ << "\n";
  return o.str();
}

}  // namespace metanode::core
