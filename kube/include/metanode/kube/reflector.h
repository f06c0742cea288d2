// Keeps a local copy of one kind of Kubernetes object current, the way
// client-go's reflector does: list (the whole set and its resourceVersion,
// in pages of `page_size` that follow the server's continue tokens, as
// client-go's pager does), then watch from that version. Bookmarks move the version on without
// objects; a watch the server ends is resumed from the last version; a
// version the server no longer has (410 Gone, as an ERROR event or a
// status) starts over with a list. Failures back off exponentially with
// jitter. Everything runs on one io_context; nothing blocks.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "metanode/kube/transport.h"

namespace metanode::kube {

enum class EventType { kAdded, kModified, kDeleted };

struct ReflectorHandler {
  // A list: `items` is now the whole set (objects not in it are gone).
  std::function<void(const std::vector<boost::json::value>& items)> replace;
  std::function<void(EventType, const boost::json::value& object)> event;
};

struct ReflectorOptions {
  std::string path;      // e.g. "/api/v1/pods"
  std::string selector;  // query parameters of both list and watch, URL-encoded, e.g.
                         // "fieldSelector=spec.nodeName%3Dnode-1"; may be empty
  std::chrono::seconds watch_timeout{300};  // timeoutSeconds asked of the server
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{30000};
  size_t page_size = 500;              // limit= of each list request (client-go's default); 0: no paging
  size_t max_list_bytes = 64u << 20;   // a list (all its pages) above this is refused, not buffered
  size_t max_event_bytes = 4u << 20;   // one watch event (one line)
};

class Reflector {
 public:
  Reflector(boost::asio::io_context& io, std::unique_ptr<Transport> t, ReflectorOptions o,
            ReflectorHandler h);
  ~Reflector();
  void start();
  void stop();

  bool synced() const { return synced_; }  // a list has been applied
  const std::string& resource_version() const { return rv_; }
  struct Stats {
    uint64_t lists = 0, pages = 0, watches = 0, events = 0, bookmarks = 0, expired = 0, errors = 0;
  };
  const Stats& stats() const { return stats_; }
  const std::string& last_error() const { return last_error_; }
  const std::string& path() const { return o_.path; }

 private:
  void list();
  void list_page(const std::string& continue_token);
  void watch();
  void on_list_body(int status, Result<void> done);
  bool on_watch_data(std::string_view data);
  bool on_watch_line(std::string_view line);
  void on_watch_done(Result<void> done);
  // Log, count (unless !error), retry after the backoff.
  void fail(const std::string& why, bool error = true);
  void relist_now(const std::string& why);
  std::string target(bool watching, const std::string& continue_token) const;

  boost::asio::io_context& io_;
  std::unique_ptr<Transport> t_;
  ReflectorOptions o_;
  ReflectorHandler h_;
  boost::asio::steady_timer retry_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::chrono::milliseconds backoff_{0};
  bool running_ = false, synced_ = false, overflow_ = false;
  std::string rv_;
  int status_ = 0;
  std::string body_;  // a list's body, a watch's partial line, or an error status's body
  // The pages of the list in progress: their objects and bytes so far, and
  // the resourceVersion the first page gave (every page is of that version).
  std::vector<boost::json::value> pages_;
  size_t pages_bytes_ = 0;
  std::string pages_rv_;
  std::chrono::steady_clock::time_point watch_started_;
  uint64_t watch_events_ = 0;
  bool watch_ended_by_us_ = false;
  Stats stats_;
  std::string last_error_;
};

}  // namespace metanode::kube
