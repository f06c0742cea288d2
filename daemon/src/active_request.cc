#include "active_request.h"

#include <spdlog/spdlog.h>

#include "downstream_conn.h"
#include "metanode/core/router.h"
#include "upstream_conn.h"
#include "worker.h"

namespace metanode::core {

using codecs::ErrorKind;

namespace {

// A mirror copy is dropped when its host already has this many requests
// in flight from this worker: a slow mirror target sheds copies instead of
// growing queues (and never slows the real call).
constexpr uint32_t kMaxMirrorActivePerHost = 1024;

}  // namespace

void ActiveRequest::start() {
  if (stats && stats->shared) {
    // connectionPool http2MaxRequests: requests in flight to the cluster.
    uint32_t max = cluster->pool.max_requests;
    uint32_t now_active = stats->shared->active.fetch_add(1, std::memory_order_relaxed);
    active_ = true;
    if (max && now_active >= max && !mirror) {
      w.stats().inc(Counter::upstream_rq_overflow);
      fail(ErrorKind::kNoUpstream, "metanode: too many requests to cluster " + cluster->name +
                                       " (connectionPool limit)",
           flags::kUpstreamOverflow);
      return;
    }
  }
  attempt();
}

void ActiveRequest::attempt() {
  auto now = Clock::now();
  ClusterManager& cm = w.clusters();
  ClusterState* cs = cm.find(cluster.get());
  if (!cs) {
    // The configuration changed since this request was routed: use the
    // cluster of the same name in the current one, if it is still there.
    if (const xds::Snapshot* cur = w.snapshot()) {
      auto it = cur->clusters.find(cluster->name);
      if (it != cur->clusters.end()) {
        cluster = it->second;
        cs = cm.find(cluster.get());
      }
    }
  }
  std::shared_ptr<HostState> h =
      cs ? cm.pick(*cs, hash, attempts > 0 ? host.get() : nullptr, w.rng(), now) : nullptr;
  if (!h) {
    w.stats().inc(Counter::no_healthy_upstream);
    fail(ErrorKind::kNoUpstream, "metanode: no healthy upstream in cluster " + cluster->name);
    return;
  }
  if (mirror && h->active >= kMaxMirrorActivePerHost) {
    w.stats().inc(Counter::mirror_dropped);
    finish();
    return;
  }
  const auto& pool = cluster->pool;
  auto [conn, open_new] = cm.pooled(*h, protocol, w.opts().max_upstream_conns);
  bool at_max_connections = false;
  // A new connection unless the host is backing off (no connect until the
  // backoff is over) or tcp.maxConnections is reached node-wide.
  if (open_new && !h->backing_off(now)) {
    if (pool.max_connections && h->shared &&
        h->shared->connections.load(std::memory_order_relaxed) >= pool.max_connections) {
      at_max_connections = !conn;
    } else {
      conn = std::make_shared<UpstreamConn>(w, h, protocol, pool);
      cm.add_connection(*h, protocol, conn);
      conn->connect(cluster->connect_timeout);
    }
  }
  if (!conn) {
    host = h;
    if (at_max_connections) {
      // connectionPool tcp.maxConnections reached by other workers, and
      // this one has no connection of its own to the host to share.
      w.stats().inc(Counter::upstream_cx_overflow);
      fail(ErrorKind::kUpstreamFailure, "metanode: too many connections to an upstream of " +
                                            cluster->name + " (connectionPool limit)",
           flags::kUpstreamOverflow);
      return;
    }
    // Every host is down and this one failed its last connect moments ago:
    // answer now rather than stall the request or hammer the host.
    w.stats().inc(Counter::upstream_rq_backoff_fail_fast);
    fail(ErrorKind::kUpstreamFailure, "metanode: upstream unavailable (reconnecting)");
    return;
  }
  if (conn->connecting() && !oneway && stats && stats->shared) {
    // connectionPool http1MaxPendingRequests: requests waiting for a connection.
    uint32_t waiting = stats->shared->pending.fetch_add(1, std::memory_order_relaxed);
    waiting_ = true;
    if (pool.max_pending_requests && waiting >= pool.max_pending_requests && !mirror) {
      stop_waiting_for_connection();
      w.stats().inc(Counter::upstream_rq_pending_overflow);
      fail(ErrorKind::kUpstreamFailure, "metanode: too many requests waiting for a connection to " +
                                            cluster->name + " (connectionPool limit)",
           flags::kUpstreamOverflow);
      return;
    }
  }
  host = h;
  this->conn = conn.get();
  ++h->active;
  if (h->slot) h->slot->requests.fetch_add(1, std::memory_order_relaxed);
  ++attempts;
  written = false;
  try_deadline = deadline;
  if (route && route->retry.per_try_timeout.count() > 0)
    try_deadline = std::min(deadline, now + route->retry.per_try_timeout);
  conn->send(shared_from_this());
  if (oneway) {
    // No reply will come: the attempt ends when it is handed over.
    --h->active;
    // Counted as handed over: no reply will say more.
    if (stats) {
      auto d = down.lock();
      stats->series_for(w.stats(), d ? d->peer() : nullptr, h->workload, "-", flags::kNone)
          ->record(Clock::now() - started, request_bytes, 0);
    }
    finish();
  }
}

void ActiveRequest::on_written() {
  written = true;
  if (!keep_frame) codecs::Bytes().swap(frame);
}

void ActiveRequest::stop_waiting_for_connection() {
  if (!waiting_) return;
  waiting_ = false;
  stats->shared->pending.fetch_sub(1, std::memory_order_relaxed);
}

void ActiveRequest::end_attempt(AttemptResult r) {
  stop_waiting_for_connection();
  conn = nullptr;
  if (!host) return;
  if (host->active > 0) --host->active;
  w.clusters().record(*cluster, *host, r, Clock::now());
}

bool ActiveRequest::may_retry(ErrorKind kind, Clock::time_point now) const {
  if (mirror || oneway || !route || finished_) return false;
  const auto& rp = route->retry;
  if (attempts > rp.num_retries || now >= deadline) return false;
  if (written) {
    bool named = (kind == ErrorKind::kUpstreamFailure && rp.on_reset) ||
                 (kind == ErrorKind::kTimeout && rp.on_timeout);
    if (!named) return false;
    if (!rp.retriable.empty() &&
        std::none_of(rp.retriable.begin(), rp.retriable.end(), [&](const xds::AttributeMatcher& m) {
          return m.matches(msg.metadata.get(m.name));
        }))
      return false;
  }
  if (frame.empty()) return false;
  // connectionPool http.maxRetries caps concurrent retries to the cluster;
  // without it, Envoy's retry budget: at most 20% of its active requests,
  // and always at least 3.
  if (stats && stats->shared && !retrying_) {
    uint32_t retries = stats->shared->retries.load(std::memory_order_relaxed);
    uint32_t cap = cluster->pool.max_retries
                       ? cluster->pool.max_retries
                       : std::max<uint32_t>(3, stats->shared->active.load(std::memory_order_relaxed) / 5);
    if (retries >= cap) {
      w.stats().inc(Counter::upstream_rq_retry_overflow);
      return false;
    }
  }
  return true;
}

void ActiveRequest::retry() {
  w.stats().inc(Counter::upstream_rq_retry);
  if (!retrying_ && stats && stats->shared) stats->shared->retries.fetch_add(1, std::memory_order_relaxed);
  retrying_ = true;
  attempt();
}

void ActiveRequest::on_reply(codecs::Message& reply, codecs::Bytes bytes, codecs::Codec& codec) {
  bool error_reply = reply.kind == codecs::MessageKind::kException;
  end_attempt(error_reply ? AttemptResult::kErrorReply : AttemptResult::kOk);
  if (error_reply && route && route->retry.on_error_reply && may_retry(ErrorKind::kUpstreamFailure, Clock::now())) {
    retry();  // eligible like a reset: the request did run
    return;
  }
  if (mirror) {
    finish();
    return;
  }
  auto d = down.lock();
  if (d && d->open()) {
    if (route && !route->response_mutation.empty() &&
        !codec.mutate(bytes, reply, route->response_mutation))
      w.stats().inc(Counter::mutation_unsupported);
    msg.request_id = orig_id;  // what an error in its place would answer
    if (!codec.set_request_id(bytes, reply, orig_id))
      d->reply_error(msg, ErrorKind::kUpstreamFailure, "metanode: cannot rewrite reply id", start_info());
    else
      d->deliver(msg, std::move(bytes), codec.response_code(reply), start_info());
  }
  finish();
}

void ActiveRequest::on_failure(ErrorKind kind, const std::string& why) {
  end_attempt(AttemptResult::kGatewayError);
  auto now = Clock::now();
  if (may_retry(kind, now)) {
    spdlog::debug("retrying request {} after: {}", orig_id, why);
    retry();
    return;
  }
  if (kind == ErrorKind::kTimeout) w.stats().inc(Counter::upstream_rq_timeout);
  fail(kind, why);
}

void ActiveRequest::fail(ErrorKind kind, const std::string& text, const char* flag) {
  if (!mirror && !oneway) {
    if (auto d = down.lock(); d && d->open()) {
      msg.request_id = orig_id;  // the error answers the client's own id
      d->reply_error(msg, kind, text, start_info(), flag);
    }
  } else if (mirror) {
    w.stats().inc(Counter::mirror_dropped);
  }
  finish();
}

void ActiveRequest::finish() {
  if (finished_) return;
  finished_ = true;
  stop_waiting_for_connection();
  if (stats && stats->shared) {
    if (active_) stats->shared->active.fetch_sub(1, std::memory_order_relaxed);
    if (retrying_) stats->shared->retries.fetch_sub(1, std::memory_order_relaxed);
  }
  // The frame goes with the last owner: a one-way request's may still be
  // queued for writing.
}

void ActiveRequest::start_mirrors(lb::Rng& rng) {
  if (!route || oneway) return;
  for (const auto& m : route->mirrors) {
    if (m.per_million < 1000000 && rng.below(1000000) >= m.per_million) continue;
    if (!m.target.cluster) {
      w.stats().inc(Counter::mirror_dropped);
      continue;
    }
    auto copy = std::make_shared<ActiveRequest>(w);
    copy->protocol = protocol;
    copy->msg = msg;
    copy->frame = frame;
    copy->orig_id = orig_id;
    copy->mirror = true;
    copy->snap = snap;
    copy->route = nullptr;  // no retries, no response mutation
    copy->cluster = m.target.cluster;
    copy->hash = hash;
    copy->deadline = deadline;
    w.stats().inc(Counter::mirror_requests);
    copy->start();
  }
}

}  // namespace metanode::core
