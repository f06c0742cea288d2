// One client connection (a pod's, redirected, or any client's in --no-bpf
// mode): decodes requests, routes each into an ActiveRequest, and writes
// replies back in the order they complete.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <string>

#include "cluster_manager.h"
#include "message_stream.h"
#include "metanode/codecs/codec.h"
#include "metanode/net.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

class Worker;

class DownstreamConn : public std::enable_shared_from_this<DownstreamConn> {
 public:
  DownstreamConn(Worker& w, boost::asio::ip::tcp::socket s, net::Endpoint orig,
                 net::Endpoint source, const std::string& protocol);
  void start() { do_read(); }
  void deliver(codecs::Bytes frame, Outcome outcome, ClusterStats* stats);
  void reply_error(const codecs::Message& req, codecs::ErrorKind kind, const std::string& text,
                   ClusterStats* stats);
  bool open() const { return !closed_; }

 private:
  void do_read();
  void on_read(size_t n);
  void handle(codecs::Message& msg, codecs::Bytes frame);
  // Past the rate limits: route, cluster, ActiveRequest. `l`: the
  // listener of the connection's address in the current snapshot.
  void forward(codecs::Message& msg, codecs::Bytes frame, const xds::Listener* l);
  const xds::Listener* current_listener();
  // Asks the rate limit service; false when the request is not subject to it.
  bool check_global_rate_limit(const xds::Snapshot& snap, const xds::GlobalRateLimit& rl,
                               codecs::Message& msg, codecs::Bytes& frame);
  void queue(codecs::Bytes b);
  void do_write();
  void close(const char* why);
  void request_done();
  bool admit(const xds::LocalRateLimit& rl, const codecs::Metadata& md);

  Worker& w_;
  boost::asio::ip::tcp::socket sock_;
  net::Endpoint orig_;
  net::Endpoint source_;
  std::unique_ptr<codecs::Codec> codec_;
  MessageStream stream_;
  size_t inflight_ = 0;
  bool reading_ = false;
  bool closed_ = false;
  bool closing_ = false;  // close once the queued writes are out
};

}  // namespace metanode::core
