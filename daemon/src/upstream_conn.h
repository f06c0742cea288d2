// One pooled connection to an upstream host. Requests from any downstream
// connection of this worker share it: each gets an id unique on this
// connection, and the reply's id finds the request again.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <unordered_map>

#include "cluster_manager.h"
#include "message_stream.h"
#include "metanode/codecs/codec.h"

namespace metanode::core {

class Worker;
struct ActiveRequest;

class UpstreamConn : public std::enable_shared_from_this<UpstreamConn> {
 public:
  UpstreamConn(Worker& w, std::shared_ptr<HostState> host, Protocol protocol,
               const xds::ConnectionPool& pool);
  ~UpstreamConn();
  void connect(std::chrono::milliseconds timeout);
  // Sends the request's current attempt; the reply, failure or timeout is
  // reported to the request.
  void send(const std::shared_ptr<ActiveRequest>& r);
  size_t pending() const { return pending_.size(); }
  bool closed() const { return state_ == State::kClosed; }
  bool connecting() const { return state_ == State::kConnecting; }
  bool draining() const { return draining_; }
  // Timeouts of pending requests; idle timeout and maximum age.
  void sweep(Clock::time_point now);
  void close(const std::string& why);
  // The host left the configuration: close once the last reply is in.
  void drain();

 private:
  enum class State { kConnecting, kReady, kClosed };
  void do_read();
  void on_read(size_t n);
  void on_reply(codecs::Message& msg, codecs::Bytes frame);
  void do_write();
  void fail_all(codecs::ErrorKind kind, const std::string& why);
  void connected_pending();  // requests that waited for the connection stop waiting
  // The request's attempt `attempt` is the current one and runs here.
  bool current(const ActiveRequest& r, uint32_t attempt) const;

  Worker& w_;
  std::shared_ptr<HostState> host_;
  boost::asio::ip::tcp::socket sock_;
  boost::asio::steady_timer connect_timer_;
  std::unique_ptr<codecs::Codec> codec_;
  State state_ = State::kConnecting;
  bool draining_ = false;
  xds::ConnectionPool pool_;
  uint32_t sent_ = 0;
  Clock::time_point created_ = Clock::now();
  Clock::time_point last_used_ = created_;
  MessageStream stream_;
  std::unordered_map<uint64_t, std::shared_ptr<ActiveRequest>> pending_;
  uint32_t next_id_ = 1;
};

}  // namespace metanode::core
