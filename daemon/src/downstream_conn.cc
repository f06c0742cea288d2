#include "downstream_conn.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "active_request.h"
#include "metanode/core/router.h"
#include "worker.h"

namespace metanode::core {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using codecs::Bytes;
using codecs::ErrorKind;
using codecs::Message;
using codecs::MessageKind;

DownstreamConn::DownstreamConn(Worker& w, tcp::socket s, net::Endpoint orig, net::Endpoint source,
                               const std::string& protocol)
    : w_(w),
      sock_(std::move(s)),
      orig_(orig),
      source_(source),
      codec_(codecs::make_codec(protocol, w.opts().limits)),
      stream_(w.opts().limits.max_message_bytes) {
  w_.stats().gauge_add(Gauge::downstream_cx_active, 1);
}

void DownstreamConn::do_read() {
  if (closed_ || closing_ || reading_) return;
  if (inflight_ >= w_.opts().max_inflight_per_conn) return;  // resumed by request_done()
  auto space = stream_.read_space();
  if (space.size() == 0) {
    w_.stats().inc(Counter::downstream_decode_error);
    close("message larger than the limit");
    return;
  }
  reading_ = true;
  sock_.async_read_some(space,
                        [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                          self->reading_ = false;
                          if (ec) {
                            self->close(nullptr);
                            return;
                          }
                          self->on_read(n);
                        });
}

void DownstreamConn::on_read(size_t n) {
  auto err = stream_.decode(
      n, *codec_, [this](Message& msg, Bytes frame) { handle(msg, std::move(frame)); },
      [this] { return !closed_; });
  if (err) {
    w_.stats().inc(Counter::downstream_decode_error);
    spdlog::warn("closing downstream {} -> {}: malformed {} {}", source_.str(), orig_.str(),
                 codec_->protocol(), *err);
    // Say why in the protocol's own terms when the request id is readable,
    // then close: after garbage the stream cannot be trusted to resync.
    Bytes reply;
    if (codec_->encode_decode_error(stream_.pending_bytes(), *err, reply)) {
      w_.stats().inc(Counter::downstream_error_reply);
      closing_ = true;
      queue(std::move(reply));
      return;
    }
    close(nullptr);
    return;
  }
  if (!closed_) do_read();
}

void DownstreamConn::handle(Message& msg, Bytes frame) {
  StatsShard& st = w_.stats();
  if (msg.kind == MessageKind::kHeartbeatRequest) {
    Bytes out;
    if (codec_->encode_heartbeat_reply(msg, out)) queue(std::move(out));
    st.inc(Counter::heartbeats_answered);
    return;
  }
  if (!codecs::is_request(msg.kind)) {
    st.inc(Counter::downstream_unexpected_message);
    return;
  }
  st.inc(Counter::requests);
  bool oneway = msg.kind == MessageKind::kOneway;
  if (!oneway) ++inflight_;
  else st.inc(Counter::requests_oneway);

  const xds::Snapshot* snap = w_.snapshot();
  const xds::Listener* l = snap ? snap->find_listener(orig_) : nullptr;
  if (l && l->local_rate_limit && !admit(*l->local_rate_limit, msg.metadata)) {
    st.inc(Counter::rate_limited);
    if (!oneway)
      reply_error(msg, ErrorKind::kOverLimit, "metanode: rate limited (" + l->service_host + ")", nullptr);
    return;
  }
  if (l && l->global_rate_limit && check_global_rate_limit(*snap, *l->global_rate_limit, msg, frame))
    return;  // continued by the service's answer
  forward(msg, std::move(frame), l);
}

bool DownstreamConn::check_global_rate_limit(const xds::Snapshot& snap, const xds::GlobalRateLimit& rl,
                                             Message& msg, Bytes& frame) {
  StatsShard& st = w_.stats();
  if (!matches_all(rl.match, msg.metadata)) return false;
  // Envoy sends a descriptor only when every entry has a value.
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [attr, key] : rl.descriptors) {
    const std::string* v = msg.metadata.get(attr);
    if (!v) return false;
    entries.emplace_back(key, *v);
  }
  bool oneway = msg.kind == MessageKind::kOneway;
  auto decide = [this, oneway, deny = rl.deny_on_fail](RateLimitClient::Decision d,
                                                       Message& m, Bytes f) {
    StatsShard& s = w_.stats();
    if (d == RateLimitClient::Decision::kError) {
      s.inc(Counter::global_rate_limit_error);
      if (!deny) return forward(m, std::move(f), current_listener());
    }
    if (d == RateLimitClient::Decision::kOk) return forward(m, std::move(f), current_listener());
    s.inc(Counter::rate_limited);
    if (!oneway)
      reply_error(m, ErrorKind::kOverLimit,
                  d == RateLimitClient::Decision::kOverLimit
                      ? "metanode: rate limited (rate limit service)"
                      : "metanode: rate limit service unavailable",
                  nullptr);
  };
  const xds::Cluster* svc = snap.find_cluster(rl.service_cluster);
  if (!svc || svc->endpoints.empty()) {
    decide(RateLimitClient::Decision::kError, msg, std::move(frame));
    return true;
  }
  net::Endpoint ep = svc->endpoints[w_.rng().below(svc->endpoints.size())].address;
  st.inc(Counter::global_rate_limit_calls);
  // The request waits in the callback; the answer comes back on a gRPC
  // thread and is posted to this connection's loop.
  struct Held {
    Message msg;
    Bytes frame;
  };
  auto held = std::make_shared<Held>(Held{std::move(msg), std::move(frame)});
  auto self = shared_from_this();
  w_.rate_limit_service().check(
      ep, rl.domain, entries, rl.timeout,
      [self, held, decide](RateLimitClient::Decision d) {
        asio::post(self->w_.io(), [self, held, decide, d]() mutable {
          if (self->closed_) return;
          decide(d, held->msg, std::move(held->frame));
        });
      });
  return true;
}

const xds::Listener* DownstreamConn::current_listener() {
  const xds::Snapshot* snap = w_.snapshot();
  return snap ? snap->find_listener(orig_) : nullptr;
}

void DownstreamConn::forward(Message& msg, Bytes frame, const xds::Listener* l) {
  StatsShard& st = w_.stats();
  bool oneway = msg.kind == MessageKind::kOneway;
  const xds::Route* route = l && l->routes ? match_route(*l->routes, msg.metadata) : nullptr;
  if (!route) {
    st.inc(Counter::no_route);
    const std::string* m = msg.metadata.get("method");
    if (!oneway)
      reply_error(msg, ErrorKind::kRouteNotFound,
                  "metanode: no route for method '" + (m ? *m : std::string()) + "' to " +
                      orig_.str(),
                  nullptr);
    return;
  }
  const xds::ClusterRef* cref = pick_cluster(*route, w_.rng().next());
  if (!cref || !cref->cluster) {
    st.inc(Counter::no_healthy_upstream);
    if (!oneway)
      reply_error(msg, ErrorKind::kNoUpstream,
                  "metanode: no healthy upstream in cluster " + (cref ? cref->name : std::string()),
                  nullptr);
    return;
  }
  if (!route->request_mutation.empty() && !codec_->mutate(frame, msg, route->request_mutation))
    st.inc(Counter::mutation_unsupported);

  auto r = std::make_shared<ActiveRequest>(w_);
  r->down = weak_from_this();
  r->protocol = codec_->protocol();
  r->orig_id = msg.request_id;
  r->oneway = oneway;
  r->snap = w_.snapshot_ref();
  r->route = route;
  r->cluster = cref->cluster;
  r->stats = w_.clusters().stats_for(*cref->cluster, codec_->protocol());
  r->hash = request_hash(*route, msg.metadata, source_);
  r->keep_frame = route->retry.on_reset || route->retry.on_timeout || route->retry.on_error_reply;
  auto timeout = route->timeout.count() > 0 ? route->timeout : w_.opts().request_timeout;
  r->deadline = Clock::now() + timeout;
  r->msg = std::move(msg);
  r->frame = std::move(frame);
  // Copies first: the real attempt rewrites the frame's id in place.
  if (!route->mirrors.empty()) r->start_mirrors(w_.rng());
  r->start();
}

// Aeraki's order: the first condition that matches decides; a request that
// matches none draws from the listener-wide bucket, if any.
bool DownstreamConn::admit(const xds::LocalRateLimit& rl, const codecs::Metadata& md) {
  auto now = Clock::now();
  for (const auto& c : rl.conditions)
    if (matches_all(c.match, md)) return c.bucket->take(now);
  return !rl.bucket || rl.bucket->take(now);
}

void DownstreamConn::request_done() {
  if (inflight_ > 0) --inflight_;
  if (!reading_ && inflight_ + 1 == w_.opts().max_inflight_per_conn) do_read();
}

void DownstreamConn::deliver(Bytes frame, Outcome outcome, ClusterStats* stats) {
  if (stats) stats->by_outcome[outcome]->fetch_add(1, std::memory_order_relaxed);
  w_.stats().inc(Counter::responses);
  queue(std::move(frame));
  request_done();
}

void DownstreamConn::reply_error(const Message& req, ErrorKind kind, const std::string& text,
                                 ClusterStats* stats) {
  if (stats) stats->by_outcome[kLocalError]->fetch_add(1, std::memory_order_relaxed);
  w_.stats().inc(Counter::upstream_rq_error_reply);
  spdlog::debug("local reply to {} -> {}: {}", source_.str(), orig_.str(), text);
  Bytes out;
  codec_->encode_error(req, kind, text, out);
  queue(std::move(out));
  request_done();
}

void DownstreamConn::queue(Bytes b) {
  if (closed_) return;
  stream_.push(std::move(b));
  do_write();
}

void DownstreamConn::do_write() {
  if (closed_) return;
  auto bufs = stream_.take();
  if (bufs.empty()) {
    if (closing_ && !stream_.in_flight()) close(nullptr);
    return;
  }
  asio::async_write(sock_, bufs,
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      self->stream_.written();
                      if (ec) {
                        self->close(nullptr);
                        return;
                      }
                      self->do_write();
                    });
}

void DownstreamConn::close(const char* why) {
  if (closed_) return;
  closed_ = true;
  if (why) spdlog::debug("closing downstream {} -> {}: {}", source_.str(), orig_.str(), why);
  boost::system::error_code ec;
  sock_.shutdown(tcp::socket::shutdown_both, ec);
  sock_.close(ec);
  w_.stats().gauge_add(Gauge::downstream_cx_active, -1);
}

}  // namespace metanode::core
