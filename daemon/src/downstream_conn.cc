#include "downstream_conn.h"

#include "metanode/core/access_log.h"

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

namespace {
// An idle reader gives its buffer back after this long without a byte.
constexpr auto kParkAfter = std::chrono::seconds(1);
// A connection a drain finds silent since its accept gets this long to send its first request.
constexpr auto kFirstRequestGrace = std::chrono::seconds(1);
}  // namespace

DownstreamConn::DownstreamConn(Worker& w, tcp::socket s, net::Endpoint orig, net::Endpoint source,
                               uint64_t netns, std::shared_ptr<SourceShare> share, Protocol protocol,
                               std::shared_ptr<const PeerIdentity> peer)
    : w_(w),
      sock_(std::move(s)),
      orig_(orig),
      source_(source),
      netns_(netns),
      peer_(std::move(peer)),
      share_(std::move(share)),
      codec_(codecs::make_codec(protocol, w.opts().limits)),
      stream_(w.opts().limits.max_message_bytes, &w.buffers()),
      last_activity_(Clock::now()) {
  w_.stats().gauge_add(Gauge::downstream_cx_active, 1);  // share_->connections: counted at accept
  w_.add_downstream(*this);
}

DownstreamConn::~DownstreamConn() {
  if (!closed_) account_closed();
}

// What this connection stops holding, once.
void DownstreamConn::account_closed() {
  w_.stats().gauge_add(Gauge::downstream_cx_active, -1);
  w_.stats().gauge_add(Gauge::downstream_queued_bytes, -int64_t(stream_.queued_bytes()));
  share_->connections.fetch_sub(1, std::memory_order_relaxed);
  // Replies still to come for it are dropped (deliver() on a closed
  // connection), so its requests stop counting for the source now.
  share_->pending.fetch_sub(uint32_t(inflight_), std::memory_order_relaxed);
  inflight_ = 0;
  end_rate_wait();
}

void DownstreamConn::end_rate_wait() {
  if (rate_resume_at_ == Clock::time_point{}) return;
  rate_resume_at_ = {};
  share_->rate_waiters.fetch_sub(1, std::memory_order_relaxed);
}

bool DownstreamConn::source_over_limit() const {
  uint32_t cap = w_.opts().downstream.max_pending_per_source;
  return cap && share_->pending.load(std::memory_order_relaxed) >= cap;
}

bool DownstreamConn::over_limits() const {
  const auto& l = w_.opts().downstream;
  return inflight_ >= l.max_inflight || stream_.queued_bytes() >= l.pause_queued_bytes ||
         source_over_limit();
}

bool DownstreamConn::take_rate_token(Clock::time_point now) {
  if (!share_->rate || share_->rate->take(now)) return true;
  w_.stats().inc(Counter::downstream_rd_source_rate_paused);
  // The source's waiting connections take turns, one fill interval apart,
  // so a refill wakes one of them rather than all to race for one token.
  // And each wake waits for a pass's worth of tokens (1-10 ms): requests
  // released one or two at a time cost a write, a wake-up and a read each,
  // and a held flood would cost the daemon more than a free one (at
  // 20k/s: 47% of a core with 1 ms, 9% with 5 ms; bench/RESULTS.md).
  auto interval = share_->rate->fill_interval();
  auto batch = std::clamp<Clock::duration>(MessageStream::kMessagesPerPass * interval,
                                           std::chrono::milliseconds(1), std::chrono::milliseconds(10));
  uint32_t ahead = share_->rate_waiters.fetch_add(1, std::memory_order_relaxed);
  rate_resume_at_ = std::max(share_->rate->next_fill() + ahead * interval, now + batch);
  w_.resume_at(weak_from_this(), rate_resume_at_);
  return false;
}

void DownstreamConn::do_read() {
  if (closed_ || closing_ || reading_) return;
  if (rate_resume_at_ != Clock::time_point{}) {
    // Waiting for the source's rate: the worker's timer resumes it.
    if (Clock::now() < rate_resume_at_) {
      paused_ = true;
      hold_ = shared_from_this();
      return;
    }
    end_rate_wait();
  }
  if (over_limits()) {
    // Resumed by request_done() or a finished write.
    if (!paused_) w_.stats().inc(Counter::downstream_rd_paused);
    paused_ = true;
    hold_ = shared_from_this();
    // Paused for its source's other connections: none of its own replies
    // will wake it, the worker's next sweep tick will.
    if (inflight_ == 0 && source_over_limit()) w_.resume_later(weak_from_this());
    return;
  }
  paused_ = false;
  auto keep = std::move(hold_);
  if (decode_pending_) {
    // Requests already buffered first; on_read() reads again after them.
    decode_pending_ = false;
    on_read(0);
    return;
  }
  reading_ = true;
  if (parked_) {
    // Idle: wait for readiness without holding a buffer.
    sock_.async_wait(tcp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->reading_ = false;
                       if (self->closed_) return;
                       if (ec) return self->close(nullptr);
                       self->parked_ = false;
                       self->do_read();
                     });
    return;
  }
  auto space = stream_.read_space();
  if (space.size() == 0) {
    reading_ = false;
    w_.stats().inc(Counter::downstream_decode_error);
    close("message larger than the limit");
    return;
  }
  sock_.async_read_some(space,
                        [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                          self->reading_ = false;
                          if (self->closed_) return;
                          if (ec == asio::error::operation_aborted && self->parking_) {
                            self->parking_ = false;
                            if (self->drain_after_read_ && !self->unread_bytes()) {
                              self->closing_ = true;  // draining, and nothing more was sent
                              return self->close_when_done();
                            }
                            self->parked_ = true;
                            self->stream_.release_buffer();
                            self->do_read();
                            return;
                          }
                          self->parking_ = false;
                          if (ec == asio::error::operation_aborted && self->drain_after_read_) {
                            self->closing_ = true;  // cancelled by drain(): its calls in flight finish
                            return self->close_when_done();
                          }
                          if (ec) return self->close(nullptr);
                          self->on_read(n);
                        });
}

void DownstreamConn::park() {
  parking_ = true;
  boost::system::error_code ec;
  sock_.cancel(ec);  // idle: no write is pending, only the read
}

void DownstreamConn::on_read(size_t n) {
  auto now = Clock::now();
  last_activity_ = now;
  spoke_ = true;
  size_t decoded = 0;
  bool held = false;
  // One read may bring hundreds of pipelined requests: the limits are
  // checked before each one, and what is over them waits in the buffer.
  auto err = stream_.decode(
      n, *codec_,
      [this, &decoded, &held, now](Message& msg, Bytes frame) {
        // A request over its source's rate waits in the buffer: the
        // flood is slowed where it costs nothing, at its own socket.
        if (msg.kind != MessageKind::kHeartbeatRequest && codecs::is_request(msg.kind) &&
            !take_rate_token(now)) {
          held = true;
          return false;
        }
        ++decoded;
        handle(msg, std::move(frame));
        return true;
      },
      [this, &held] {
        if (closed_) return false;
        if (over_limits()) held = true;
        return !held;
      });
  if (closed_) return;
  decode_pending_ = (held || stream_.yielded()) && stream_.buffered() > 0;
  // The read timeout runs from the first byte of a message still incomplete.
  if (stream_.buffered() == 0 || decode_pending_) partial_since_ = {};
  else if (decoded > 0 || partial_since_ == Clock::time_point{}) partial_since_ = now;
  if (err) {
    w_.stats().inc(Counter::downstream_decode_error);
    spdlog::warn("closing downstream {} -> {}: malformed {} {}", source_.str(), orig_.str(),
                 protocol_name(codec_->protocol()), *err);
    // Say why in the protocol's own terms when the request id is readable,
    // then close once the calls before the garbage are answered: after
    // garbage the stream cannot be trusted to resync.
    Bytes reply;
    if (codec_->encode_decode_error(stream_.pending_bytes(), *err, reply)) {
      w_.stats().inc(Counter::downstream_error_reply);
      Message bad;
      take_place(bad);  // after the replies to the calls before it
      queue_reply(bad, std::move(reply));
    }
    partial_since_ = {};
    closing_ = true;
    hand_off_ = false;  // a stream that cannot be trusted is not passed on
    close_when_done();
    return;
  }
  if (drain_after_read_ && !decode_pending_ && !unread_bytes()) {
    closing_ = true;
    close_when_done();
    return;
  }
  if (stream_.yielded()) {
    // The rest of the burst after what other connections have ready.
    asio::post(w_.io(), [self = shared_from_this()] { self->do_read(); });
    return;
  }
  do_read();
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
  if (!oneway) {
    take_place(msg);
    ++inflight_;
    share_->pending.fetch_add(1, std::memory_order_relaxed);
  } else {
    st.inc(Counter::requests_oneway);
  }
  const xds::Snapshot* snap = w_.snapshot();
  const xds::Listener* l = snap ? snap->find_listener(orig_) : nullptr;
  if (l && l->local_rate_limit && !admit(*l->local_rate_limit, msg.metadata)) {
    st.inc(Counter::rate_limited);
    if (!oneway)
      reply_error(msg, ErrorKind::kOverLimit, "metanode: rate limited (" + l->service_host + ")",
                  {Clock::now(), msg.size});
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
  auto decide = [this, oneway, deny = rl.deny_on_fail, start = Clock::now()](RateLimitClient::Decision d,
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
                  {start, m.size});
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
  // The callback runs on a gRPC thread: it moves its references into the
  // posted handler, so the connection (and the request) are only ever
  // released on this worker's thread, never when gRPC frees the call.
  auto self = shared_from_this();
  auto& io = w_.io();
  w_.rate_limit_service().check(
      ep, rl.domain, entries, rl.timeout,
      [self = std::move(self), held = std::move(held), decide, &io](RateLimitClient::Decision d) mutable {
        asio::post(io, [self = std::move(self), held = std::move(held), decide, d]() mutable {
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
                  {Clock::now(), msg.size});
    return;
  }
  const xds::ClusterRef* cref = pick_cluster(*route, w_.rng().next());
  if (!cref || !cref->cluster) {
    st.inc(Counter::no_healthy_upstream);
    if (!oneway)
      reply_error(msg, ErrorKind::kNoUpstream,
                  "metanode: no healthy upstream in cluster " + (cref ? cref->name : std::string()),
                  {Clock::now(), msg.size});
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
  r->started = Clock::now();
  r->request_bytes = msg.size;
  r->deadline = r->started + timeout;
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
  if (inflight_ > 0) {
    --inflight_;
    share_->pending.fetch_sub(1, std::memory_order_relaxed);
  }
  if (closing_) {
    close_when_done();
  } else if (paused_ && !resume_posted_) {
    // Not from here: the caller (a reply, an error) is not done with the
    // request yet (its cluster still counts it), and a resumed read would
    // route the next ones inside the upstream connection's loop.
    resume_posted_ = true;
    asio::post(w_.io(), [self = shared_from_this()] {
      self->resume_posted_ = false;
      self->resume();
    });
  }
}

void DownstreamConn::deliver(const Message& req, Bytes frame, const std::string& code,
                             const RequestStart& start) {
  if (closed_) return;
  const auto& l = w_.opts().downstream;
  size_t queued = stream_.queued_bytes() + held_bytes_;
  // A client that does not take its replies: the reply becomes a short
  // error rather than growing the daemon (one reply always fits).
  if (queued > 0 &&
      (queued + frame.size() > l.max_queued_bytes ||
       size_t(w_.stats().get(Gauge::downstream_queued_bytes)) + frame.size() > l.max_queued_bytes_per_worker)) {
    w_.stats().inc(Counter::downstream_rq_reply_overflow);
    spdlog::debug("reply to {} -> {} dropped: {} bytes queued", source_.str(), orig_.str(), queued);
    reply_error(req, ErrorKind::kOverLimit,
                "metanode: reply dropped: the client is not reading its replies", start, flags::kOverload);
    return;
  }
  record(req, start, code, flags::kNone, frame.size());
  w_.stats().inc(Counter::responses);
  queue_reply(req, std::move(frame));
  request_done();
}

void DownstreamConn::reply_error(const Message& req, ErrorKind kind, const std::string& text,
                                 const RequestStart& start, const char* flag) {
  w_.stats().inc(Counter::upstream_rq_error_reply);
  spdlog::debug("local reply to {} -> {}: {}", source_.str(), orig_.str(), text);
  Bytes out;
  codec_->encode_error(req, kind, text, out);
  record(req, start, codec_->error_code(kind), flag ? flag : flags::of(kind), out.size());
  queue_reply(req, std::move(out));
  request_done();
}

void DownstreamConn::take_place(Message& req) {
  if (!ordered()) return;
  req.order = next_place_++;
  reorder_.emplace_back();
}

void DownstreamConn::queue_reply(const Message& req, Bytes b) {
  if (closed_) return;
  if (req.order == 0 || req.order < next_out_) return queue(std::move(b));
  size_t at = reorder_head_ + size_t(req.order - next_out_);
  if (at >= reorder_.size() || reorder_[at]) return queue(std::move(b));  // not a place we gave
  held_bytes_ += b.size();
  reorder_[at] = std::move(b);
  while (reorder_head_ < reorder_.size() && reorder_[reorder_head_]) {
    Bytes out = std::move(*reorder_[reorder_head_]);
    reorder_[reorder_head_++].reset();
    ++next_out_;
    held_bytes_ -= out.size();
    queue(std::move(out));
  }
  if (reorder_head_ == reorder_.size()) {
    // All out. A small array is kept for the next calls; what a burst of
    // pipelined calls grew is given back (idle connections stay small).
    if (reorder_.capacity() > 16) reorder_ = {};
    else reorder_.clear();
    reorder_head_ = 0;
  }
}

void DownstreamConn::record(const Message& req, const RequestStart& start, const std::string& code,
                            const char* flag, size_t reply_bytes) {
  auto now = Clock::now();
  if (AccessLog* log = w_.opts().access_log)
    if (log->admit(double(w_.rng().next() >> 11) * 0x1p-53)) access_log(req, start, code, flag, reply_bytes, now);
  StatsShard& shard = w_.stats();
  RequestSeries* s = nullptr;
  if (start.stats) {
    static const std::shared_ptr<const PeerIdentity> kUnknown;
    const auto& dest = start.request && start.request->host ? start.request->host->workload : kUnknown;
    s = start.stats->series_for(shard, peer_, dest, code, flag);
  } else {
    // No cluster chosen (no route, rate limited): the service the client
    // dialled, by its listener when there is one.
    const xds::Listener* l = current_listener();
    RequestLabels labels;
    labels.destination_service = l ? l->service_host : orig_.str();
    labels.destination_version = "unknown";
    labels.protocol = std::string(protocol_name(codec_->protocol()));
    labels.response_code = code;
    labels.response_flags = flag;
    labels.set_source(peer_.get());
    s = shard.request_series(labels);
  }
  s->record(now - start.at, start.bytes, reply_bytes);
}

void DownstreamConn::access_log(const Message& req, const RequestStart& start, const std::string& code,
                                const char* flag, size_t reply_bytes, Clock::time_point now) {
  AccessLogEntry e;
  e.start = std::chrono::system_clock::now() -
            std::chrono::duration_cast<std::chrono::system_clock::duration>(now - start.at);
  e.protocol = protocol_name(codec_->protocol());
  auto attr = [&req](const char* k) {
    const std::string* v = req.metadata.get(k);
    return v ? std::string_view(*v) : std::string_view();
  };
  e.method = attr("method");
  e.interface = attr("interface");
  if (e.interface.empty()) e.interface = attr("service");  // a multiplexed Thrift service
  e.response_code = code;
  e.response_flags = flag;
  e.duration_ms = std::chrono::duration<double, std::milli>(now - start.at).count();
  e.bytes_received = start.bytes;
  e.bytes_sent = reply_bytes;
  std::string host, remote = source_.str(), local = orig_.str();
  if (const ActiveRequest* r = start.request) {
    if (r->cluster) e.upstream_cluster = r->cluster->name;
    if (r->host) host = r->host->address.str();
    if (r->route) e.route_name = r->route->name;
    e.attempts = r->attempts;
  }
  e.upstream_host = host;
  e.downstream_remote = remote;
  e.downstream_local = local;
  if (peer_) {
    e.source_workload = peer_->workload;
    e.source_namespace = peer_->namespace_;
  }
  w_.opts().access_log->write(e);
}

void DownstreamConn::queue(Bytes b) {
  if (closed_) return;
  w_.stats().gauge_add(Gauge::downstream_queued_bytes, int64_t(b.size()));
  stream_.push(std::move(b));
  do_write();
}

void DownstreamConn::do_write() {
  if (closed_ || writing_) return;
  auto bufs = stream_.take();
  if (bufs.empty()) {
    if (closing_) close_when_done();
    return;
  }
  writing_ = true;
  wbufs_ = std::move(bufs);
  write_some();
}

// The batch in pieces, so the write timeout measures progress: a client
// taking its replies slowly is not one that takes none.
void DownstreamConn::write_some() {
  write_stalled_since_ = Clock::now();
  sock_.async_write_some(wbufs_, [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
    if (self->closed_) return;
    if (ec) return self->close(nullptr);
    self->last_activity_ = Clock::now();
    auto& b = self->wbufs_;
    size_t done = 0;
    while (done < b.size() && n >= b[done].size()) n -= b[done++].size();
    b.erase(b.begin(), b.begin() + ptrdiff_t(done));
    if (!b.empty()) {
      b.front() += n;
      return self->write_some();
    }
    self->writing_ = false;
    self->write_stalled_since_ = {};
    size_t before = self->stream_.queued_bytes();
    self->stream_.written();
    self->w_.stats().gauge_add(Gauge::downstream_queued_bytes, -int64_t(before - self->stream_.queued_bytes()));
    self->do_write();
    if (self->paused_) self->do_read();
  });
}

void DownstreamConn::close_when_done() {
  if (closed_) return;
  if (inflight_ == 0 && stream_.empty()) {
    // A boundary: every reply written, no request half read.
    if (hand_off_ && stream_.buffered() == 0) return hand_off();
    return close(nullptr);
  }
  // Nothing else may keep the connection alive until then.
  hold_ = shared_from_this();
}

bool DownstreamConn::unread_bytes() {
  boost::system::error_code ec;
  size_t n = sock_.available(ec);
  return !ec && n > 0;
}

void DownstreamConn::drain(bool hand_off) {
  if (closed_ || closing_ || drain_after_read_) return;
  hand_off_ = hand_off;
  if (!hand_off) w_.stats().inc(Counter::downstream_cx_drained);
  // Requests the client sent before the drain are answered: those held in
  // the buffer by the limits and those still in the socket are read first
  // (a paused connection when its replies resume it), then no more.
  if (decode_pending_ || unread_bytes()) {
    drain_after_read_ = true;
    if (!paused_) do_read();
    return;
  }
  if (!spoke_ && !closed_ && !hand_off) {
    // Accepted a moment ago, its first request still on the way: closing
    // now would fail that call. It is answered, then closed (or closed
    // by the sweep if nothing comes within kFirstRequestGrace). Handed
    // off, the request waits in the socket for the successor instead.
    drain_after_read_ = true;
    return;
  }
  if (reading_ && !parked_) {
    // asio reads as the read starts: a read in flight may already hold
    // requests that are no longer in the socket. It completes with them
    // (answered, then closed by on_read) or, cancelled, with nothing.
    drain_after_read_ = true;
    boost::system::error_code ec;
    if (!writing_ && !parking_) sock_.cancel(ec);  // a cancel would abort the write too
    return;
  }
  closing_ = true;
  close_when_done();
}

void DownstreamConn::sweep(Clock::time_point now) {
  if (closed_) return;
  const auto& l = w_.opts().downstream;
  if (partial_since_ != Clock::time_point{} && now - partial_since_ > l.read_timeout) {
    w_.stats().inc(Counter::downstream_cx_read_timeout);
    spdlog::warn("closing downstream {} -> {}: a message not complete within {} ms", source_.str(),
                 orig_.str(), l.read_timeout.count());
    return close(nullptr);
  }
  if (writing_ && now - write_stalled_since_ > l.write_timeout) {
    w_.stats().inc(Counter::downstream_cx_write_timeout);
    spdlog::warn("closing downstream {} -> {}: {} reply bytes not taken within {} ms", source_.str(),
                 orig_.str(), stream_.queued_bytes(), l.write_timeout.count());
    // Reset, not FIN: what the kernel holds for the client goes too.
    boost::system::error_code ec;
    sock_.set_option(asio::socket_base::linger(true, 0), ec);
    return close(nullptr);
  }
  bool idle = inflight_ == 0 && stream_.empty() && stream_.buffered() == 0;
  if (!idle) return;
  if (drain_after_read_ && !spoke_ && now - last_activity_ > kFirstRequestGrace) {
    closing_ = true;  // draining, and it never sent a request
    return close_when_done();
  }
  if (now - last_activity_ > l.idle_timeout) {
    w_.stats().inc(Counter::downstream_cx_idle_timeout);
    return close("idle timeout");
  }
  if (reading_ && !parked_ && !parking_ && now - last_activity_ > kParkAfter) park();
}

void DownstreamConn::hand_off() {
  closed_ = true;
  account_closed();
  // Released, not shut down: the socket stays open for the successor.
  // What the client sends from now waits in it. A pending readiness wait
  // (parked) completes aborted and finds the connection closed.
  boost::system::error_code ec;
  int fd = sock_.release(ec);
  if (ec || fd < 0) {
    sock_.close(ec);
  } else if (!w_.hand_off(fd, orig_, netns_)) {
    w_.stats().inc(Counter::downstream_cx_drained);  // closed, as a drain without a successor would
  }
  if (hold_) asio::post(w_.io(), [keep = std::move(hold_)] {});
}

void DownstreamConn::close(const char* why) {
  if (closed_) return;
  closed_ = true;
  if (why) spdlog::debug("closing downstream {} -> {}: {}", source_.str(), orig_.str(), why);
  // Accounted before the socket goes: a client that sees the close and
  // comes straight back is not counted twice (per-source connection limit,
  // gauges).
  account_closed();
  boost::system::error_code ec;
  sock_.shutdown(tcp::socket::shutdown_both, ec);
  sock_.close(ec);
  // Released from the loop, not here: the caller may still be inside us.
  if (hold_) asio::post(w_.io(), [keep = std::move(hold_)] {});
}

}  // namespace metanode::core
