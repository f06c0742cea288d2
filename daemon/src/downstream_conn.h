// One client connection (a pod's, redirected, or any client's in --no-bpf
// mode): decodes requests, routes each into an ActiveRequest, and writes
// replies back in the order they complete. It enforces the client's share
// of the daemon (ServerOptions::downstream): requests in flight and queued
// reply bytes pause its reads, a reply beyond the queue limit becomes an
// error, and the worker's sweep closes it when a message stalls, its
// replies are not taken, or it sits idle.
#pragma once

#include <boost/asio.hpp>
#include <boost/intrusive/list.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster_manager.h"
#include "message_stream.h"
#include "metanode/codecs/codec.h"
#include "metanode/net.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

class Worker;

// The worker's list of its client connections (for the sweep and drains);
// a connection leaves it when destroyed.
using DownstreamHook =
    boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class DownstreamConn : public std::enable_shared_from_this<DownstreamConn>, public DownstreamHook {
 public:
  // `share` already counts this connection (the acceptor's check);
  // the connection gives the count back when it closes.
  DownstreamConn(Worker& w, boost::asio::ip::tcp::socket s, net::Endpoint orig,
                 net::Endpoint source, uint64_t netns, std::shared_ptr<SourceShare> share,
                 Protocol protocol, std::shared_ptr<const PeerIdentity> peer);
  ~DownstreamConn();
  void start() { do_read(); }
  const std::shared_ptr<const PeerIdentity>& peer() const { return peer_; }
  // Reads again if the limits that paused them allow it now.
  void resume() {
    if (paused_) do_read();
  }
  // A reply for `req` (its id the client's): queued, or replaced by an
  // error when the client's queued replies are over the limit.
  // `code`: the reply's response_code (Codec::response_code).
  void deliver(const codecs::Message& req, codecs::Bytes frame, const std::string& code,
               const RequestStart& start);
  // `flag`: the response flag, when not the one of `kind` (flags::of).
  void reply_error(const codecs::Message& req, codecs::ErrorKind kind, const std::string& text,
                   const RequestStart& start, const char* flag = nullptr);
  bool open() const { return !closed_; }

  // From the worker's sweep: closes the connection when one of its
  // timeouts has passed, parks an idle reader without a buffer.
  void sweep(Clock::time_point now);
  // Stop reading; close once the calls in flight are answered (now, when
  // idle). With `hand_off` the socket goes to the successor instead
  // (Worker::hand_off) when it reaches a clean message boundary.
  void drain(bool hand_off = false);
  // Close now (the worker is stopping).
  void abort() { close("worker stopping"); }

 private:
  void do_read();
  void on_read(size_t n);
  void park();
  bool over_limits() const;
  bool source_over_limit() const;
  // The source's request rate: false (and a resume scheduled for when its
  // bucket refills) when this request must wait.
  bool take_rate_token(Clock::time_point now);
  void end_rate_wait();
  void account_closed();
  void handle(codecs::Message& msg, codecs::Bytes frame);
  // Past the rate limits: route, cluster, ActiveRequest. `l`: the
  // listener of the connection's address in the current snapshot.
  void forward(codecs::Message& msg, codecs::Bytes frame, const xds::Listener* l);
  const xds::Listener* current_listener();
  // Asks the rate limit service; false when the request is not subject to it.
  bool check_global_rate_limit(const xds::Snapshot& snap, const xds::GlobalRateLimit& rl,
                               codecs::Message& msg, codecs::Bytes& frame);
  void queue(codecs::Bytes b);
  // Thrift clients may need replies in request order: Thrift has no
  // multiplexing by id, and Apache Thrift's clients check each reply's
  // seqid against the call they expect ("out of order sequence
  // response"), so a client that pipelines on one connection fails when
  // replies pass each other. There each two-way request takes a place
  // (Message::order) and its reply waits in reorder_ until the replies
  // before it are out. Dubbo matches by id: its replies leave as they
  // complete.
  bool ordered() const { return codec_->protocol() == Protocol::kThrift; }
  void take_place(codecs::Message& req);
  void queue_reply(const codecs::Message& req, codecs::Bytes b);
  void do_write();
  void write_some();
  bool unread_bytes();
  // Istio's request metrics for one answered request.
  // Metrics and access log of one answered request.
  void record(const codecs::Message& req, const RequestStart& start, const std::string& code, const char* flag,
              size_t reply_bytes);
  void access_log(const codecs::Message& req, const RequestStart& start, const std::string& code,
                  const char* flag, size_t reply_bytes, Clock::time_point now);
  void close(const char* why);
  // Drained to a boundary: the socket, open, to the successor.
  void hand_off();
  void request_done();
  // Closes once nothing is in flight and every queued byte is written.
  void close_when_done();
  bool admit(const xds::LocalRateLimit& rl, const codecs::Metadata& md);

  Worker& w_;
  boost::asio::ip::tcp::socket sock_;
  net::Endpoint orig_;
  net::Endpoint source_;
  uint64_t netns_;  // the client pod's network namespace cookie (0: not known)
  std::shared_ptr<const PeerIdentity> peer_;  // the client pod, when known
  std::shared_ptr<SourceShare> share_;  // the client source's node-wide counts
  std::unique_ptr<codecs::Codec> codec_;
  MessageStream stream_;
  // While reads are paused nothing else may own the connection (no read
  // or write pending, requests hold it weakly): it holds itself.
  std::shared_ptr<DownstreamConn> hold_;
  Clock::time_point last_activity_;  // a byte read or written
  Clock::time_point partial_since_{};  // the first byte of an incomplete message
  Clock::time_point write_stalled_since_{};  // replies queued and no progress
  Clock::time_point rate_resume_at_{};  // reads wait for the source's rate until then
  size_t inflight_ = 0;
  bool reading_ = false;  // a read or a readiness wait is pending
  bool parked_ = false;   // waiting for readiness without a buffer
  bool parking_ = false;  // the pending read is being cancelled to park
  bool paused_ = false;
  bool decode_pending_ = false;  // whole requests buffered, held by the limits
  bool resume_posted_ = false;
  std::vector<boost::asio::const_buffer> wbufs_;  // the batch being written, what is left of it
  bool writing_ = false;
  bool closed_ = false;
  bool closing_ = false;  // no more reads; close when done
  bool drain_after_read_ = false;  // draining: one last read, then closing
  bool spoke_ = false;
  bool hand_off_ = false;  // drained for a successor, and the stream is clean
  uint64_t next_place_ = 1;  // the next two-way request's place
  uint64_t next_out_ = 1;    // the place whose reply leaves next
  // Places next_out_... from reorder_head_: empty while awaited, the reply
  // once it came. Bounded by the requests in flight; no allocation while
  // replies come in order.
  std::vector<std::optional<codecs::Bytes>> reorder_;
  size_t reorder_head_ = 0;
  size_t held_bytes_ = 0;  // replies waiting in reorder_, counted with the queued ones  // a byte was read: a connection, not a connect still sending its first request
};

}  // namespace metanode::core
