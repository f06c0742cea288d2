// One request from decode to reply (Envoy's ActiveRpc and router in one):
// the route it matched, the cluster and host of each attempt, its deadlines,
// the retry decision and how it ended. The downstream connection creates it
// and learns the result through deliver()/reply_error(); the upstream
// connection carrying the current attempt holds it until the reply, the
// failure or the timeout. A mirror copy is an ActiveRequest without a
// downstream: its reply is dropped.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster_manager.h"
#include "metanode/codecs/codec.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

class Worker;
class DownstreamConn;
class UpstreamConn;

struct ActiveRequest : std::enable_shared_from_this<ActiveRequest> {
  explicit ActiveRequest(Worker& worker) : w(worker) {}

  Worker& w;
  std::weak_ptr<DownstreamConn> down;  // empty for a mirror copy
  Protocol protocol = Protocol::kThrift;  // the client connection's codec
  codecs::Message msg;   // the request; msg.request_id is the id on the wire now
  codecs::Bytes frame;   // as forwarded; released once written unless a retry may resend it
  uint64_t orig_id = 0;  // the client's id
  bool oneway = false;
  bool mirror = false;
  bool keep_frame = false;  // the route may retry after the request was written
  std::shared_ptr<const xds::Snapshot> snap;  // keeps route and cluster alive
  const xds::Route* route = nullptr;
  std::shared_ptr<const xds::Cluster> cluster;
  ClusterStats* stats = nullptr;
  std::optional<uint64_t> hash;
  Clock::time_point deadline;  // of the whole request
  Clock::time_point started;   // decoded (the metrics' duration runs from here)
  size_t request_bytes = 0;    // as the client sent it

  // The current attempt.
  std::shared_ptr<HostState> host;
  const UpstreamConn* conn = nullptr;
  uint32_t attempts = 0;
  bool written = false;  // its bytes are out on the upstream socket
  Clock::time_point try_deadline;
  // Writes in flight that read `frame`, on this attempt's connection or an
  // earlier one's; while any is, a new attempt rewrites a copy, and the
  // frames those writes read stay here until the last completes.
  uint32_t writes_out = 0;
  std::vector<codecs::Bytes> retired_frames;

  // First attempt; the caller has set route, cluster and the fields above.
  void start();
  // From the upstream connection carrying the attempt (already unlinked).
  void on_reply(codecs::Message& reply, codecs::Bytes frame, codecs::Codec& codec);
  void on_failure(codecs::ErrorKind kind, const std::string& why);
  // A two-way attempt's bytes left the socket.
  void on_written();
  // The connection it was queued on is up (connectionPool pending limit).
  void stop_waiting_for_connection();

  // Mirror copies of this request for the route's mirror policies.
  void start_mirrors(lb::Rng& rng);

 private:
  void attempt();
  void end_attempt(AttemptResult r);
  bool may_retry(codecs::ErrorKind kind, Clock::time_point now) const;
  void retry();
  void fail(codecs::ErrorKind kind, const std::string& text, const char* flag = nullptr);
  RequestStart start_info() { return {started, request_bytes, stats, this}; }
  void finish();

  bool retrying_ = false;  // counted in the cluster's retries
  bool active_ = false;    // counted in the cluster's active requests
  bool waiting_ = false;   // counted in the cluster's pending requests
  bool finished_ = false;
};

}  // namespace metanode::core
