#include "upstream_conn.h"

#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cstring>

#include "active_request.h"
#include "metanode_abi.h"
#include "worker.h"

namespace metanode::core {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using codecs::Bytes;
using codecs::ErrorKind;
using codecs::Message;
using codecs::MessageKind;

UpstreamConn::UpstreamConn(Worker& w, std::shared_ptr<HostState> host, Protocol protocol,
                           const xds::ConnectionPool& pool)
    : w_(w),
      host_(std::move(host)),
      sock_(w.io()),
      connect_timer_(w.io()),
      codec_(codecs::make_codec(protocol, w.opts().limits)),
      pool_(pool),
      stream_(w.opts().limits.max_message_bytes) {
  // Counted from creation: the limit is on connections opened or opening.
  if (host_->shared) host_->shared->connections.fetch_add(1, std::memory_order_relaxed);
}

UpstreamConn::~UpstreamConn() {
  if (host_->shared) host_->shared->connections.fetch_sub(1, std::memory_order_relaxed);
}

namespace {
// How long a host that said it is shutting down gets nothing new: longer
// than Dubbo's default graceful wait (10 s), short enough that a provider
// restarted on the same address is used again.
constexpr auto kGoingAwayHold = std::chrono::seconds(30);

void set_keepalive(int fd, const xds::ConnectionPool& p) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  int v;
  if (p.keepalive_probes && (v = int(p.keepalive_probes)))
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof v);
  if (p.keepalive_time_s && (v = int(p.keepalive_time_s)))
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v);
  if (p.keepalive_interval_s && (v = int(p.keepalive_interval_s)))
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof v);
}
}  // namespace

void UpstreamConn::connect(std::chrono::milliseconds timeout) {
  w_.stats().inc(Counter::upstream_cx);
  w_.stats().gauge_add(Gauge::upstream_cx_active, 1);
  boost::system::error_code ec;
  sock_.open(tcp::v4(), ec);
  if (!ec) {
    // Marked so the connect hook never sends the daemon's own connects back
    // to itself. Needs CAP_NET_ADMIN; without it (--no-bpf as a user) there
    // is no hook to loop through anyway.
    uint32_t mark = MN_DAEMON_MARK;
    if (setsockopt(sock_.native_handle(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0 &&
        w_.opts().intercept)
      spdlog::warn("SO_MARK on upstream socket failed: {}", std::strerror(errno));
    if (pool_.keepalive) set_keepalive(sock_.native_handle(), pool_);
  }
  connect_timer_.expires_after(timeout);
  connect_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
    if (!e && self->state_ == State::kConnecting) {
      boost::system::error_code ig;
      self->sock_.cancel(ig);  // completes async_connect with operation_aborted
    }
  });
  sock_.async_connect(to_asio(host_->address), [self = shared_from_this()](
                                                   const boost::system::error_code& e) {
    self->connect_timer_.cancel();
    if (self->state_ == State::kClosed) return;
    if (e) {
      self->w_.stats().inc(Counter::upstream_cx_connect_fail);
      self->w_.clusters().connect_failed(*self->host_, Clock::now());
      spdlog::warn("upstream {} connect failed: {}", self->host_->address.str(),
                   e == asio::error::operation_aborted ? "timeout" : e.message());
      self->close("connect failed");
      return;
    }
    self->w_.clusters().connect_succeeded(*self->host_);
    self->connected_pending();
    boost::system::error_code ig;
    self->sock_.set_option(tcp::no_delay(true), ig);
    self->state_ = State::kReady;
    self->do_write();
    self->do_read();
  });
}

void UpstreamConn::send(const std::shared_ptr<ActiveRequest>& r) {
  if (state_ == State::kClosed) {
    r->on_failure(ErrorKind::kUpstreamFailure, "metanode: upstream closed");
    return;
  }
  // Ids unique on this connection; 31 bits so a Thrift i32 stays positive.
  uint32_t id = next_id_;
  next_id_ = next_id_ >= 0x7ffffffe ? 1 : next_id_ + 1;
  if (r->writes_out > 0) {
    // A write of an earlier attempt (timed out on another connection, its
    // bytes still going out there) reads this frame: that write keeps the
    // bytes it had, this attempt gets its own copy to give a new id.
    codecs::Bytes copy(r->frame);
    r->retired_frames.push_back(std::move(r->frame));
    r->frame = std::move(copy);
  }
  if (!codec_->set_request_id(r->frame, r->msg, id)) {
    r->on_failure(ErrorKind::kUpstreamFailure, "metanode: cannot rewrite request id");
    return;
  }
  if (!r->oneway) {
    w_.stats().gauge_add(Gauge::upstream_rq_active, 1);
    pending_[id] = r;
  }
  stream_.push(r, r->attempts);
  last_used_ = Clock::now();
  // maxRequestsPerConnection: this one is the last; the pool opens another.
  if (pool_.max_requests_per_connection && ++sent_ >= pool_.max_requests_per_connection) {
    draining_ = true;
    w_.stats().inc(Counter::upstream_cx_max_requests);
  }
  do_write();
}

bool UpstreamConn::current(const ActiveRequest& r, uint32_t attempt) const {
  return r.conn == this && r.attempts == attempt;
}

void UpstreamConn::connected_pending() {
  for (auto& [id, r] : pending_)
    if (r->conn == this) r->stop_waiting_for_connection();
}

void UpstreamConn::do_write() {
  if (state_ != State::kReady) return;
  auto bufs = stream_.take([this](ActiveRequest& r, uint32_t attempt) -> const Bytes* {
    // Its attempt here ended while it waited (a per-try timeout, maybe a
    // retry elsewhere): sent now it would run twice, or after its caller
    // was told it timed out.
    if (!current(r, attempt)) return nullptr;
    ++r.writes_out;
    return &r.frame;
  });
  if (bufs.empty()) return;
  asio::async_write(sock_, bufs,
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      auto batch = self->stream_.written();
                      for (auto& o : batch) {
                        if (!o.req) continue;
                        if (--o.req->writes_out == 0) o.req->retired_frames.clear();
                        if (!ec && self->current(*o.req, o.attempt)) o.req->on_written();
                      }
                      if (ec) {
                        self->close("write failed: " + ec.message());
                        return;
                      }
                      self->do_write();
                    });
}

void UpstreamConn::do_read() {
  if (state_ != State::kReady) return;
  auto space = stream_.read_space();
  if (space.size() == 0) {
    w_.stats().inc(Counter::upstream_decode_error);
    close("reply larger than the limit");
    return;
  }
  sock_.async_read_some(space,
                        [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                          if (ec) {
                            self->close(ec == asio::error::eof ? "closed by upstream"
                                                               : "read failed: " + ec.message());
                            return;
                          }
                          self->on_read(n);
                        });
}

void UpstreamConn::on_read(size_t n) {
  auto err = stream_.decode(
      n, *codec_, [this](Message& msg, Bytes frame) {
        on_reply(msg, std::move(frame));
        return true;
      },
      [this] { return state_ == State::kReady; });
  if (err) {
    w_.stats().inc(Counter::upstream_decode_error);
    close("malformed reply " + *err);
    return;
  }
  if (draining_ && pending_.empty()) {
    close("drained");
    return;
  }
  if (state_ != State::kReady) return;
  if (stream_.yielded()) {
    // The rest of the replies after what other connections have ready;
    // no read meanwhile (it would land in the buffer being decoded).
    asio::post(w_.io(), [self = shared_from_this()] {
      if (self->state_ == State::kReady) self->on_read(0);
    });
    return;
  }
  do_read();
}

void UpstreamConn::on_reply(Message& msg, Bytes frame) {
  if (msg.kind == MessageKind::kHeartbeatResponse) return;
  if (msg.kind == MessageKind::kGoingAway) {
    // A provider shutting down gracefully: it answers what it has, then
    // closes. Nothing new goes to it from any worker; this connection
    // closes once its calls are answered (which also lets the provider
    // stop waiting for its consumers to leave).
    w_.stats().inc(Counter::upstream_cx_going_away);
    if (host_->shared)
      host_->shared->going_away_until_ns.store((Clock::now() + kGoingAwayHold).time_since_epoch().count(),
                                               std::memory_order_relaxed);
    spdlog::info("upstream {} is going away (read-only): draining {} calls in flight", host_->address.str(),
                 pending_.size());
    drain();
    return;
  }
  if (msg.kind == MessageKind::kHeartbeatRequest) {
    // Providers probe idle consumers (Dubbo); answer as the consumer would.
    Bytes out;
    if (codec_->encode_heartbeat_reply(msg, out)) {
      stream_.push(std::move(out));
      do_write();
    }
    return;
  }
  auto it = pending_.find(msg.request_id);
  if (it == pending_.end()) {
    w_.stats().inc(Counter::responses_orphaned);
    return;
  }
  auto r = std::move(it->second);
  pending_.erase(it);
  last_used_ = Clock::now();
  w_.stats().gauge_add(Gauge::upstream_rq_active, -1);
  r->on_reply(msg, std::move(frame), *codec_);
}

void UpstreamConn::sweep(Clock::time_point now) {
  if (state_ == State::kClosed) return;
  if (pending_.empty() && pool_.idle_timeout.count() > 0 && now - last_used_ >= pool_.idle_timeout) {
    w_.stats().inc(Counter::upstream_cx_idle_timeout);
    close("idle");
    return;
  }
  if (pool_.max_connection_duration.count() > 0 && !draining_ &&
      now - created_ >= pool_.max_connection_duration) {
    w_.stats().inc(Counter::upstream_cx_max_duration);
    drain();
    if (state_ == State::kClosed) return;
  }
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second->try_deadline > now) {
      ++it;
      continue;
    }
    auto r = std::move(it->second);
    it = pending_.erase(it);
    w_.stats().gauge_add(Gauge::upstream_rq_active, -1);
    r->on_failure(ErrorKind::kTimeout, "metanode: upstream timed out");
  }
  if (draining_ && pending_.empty() && state_ != State::kClosed) close("drained");
}

void UpstreamConn::fail_all(ErrorKind kind, const std::string& why) {
  if (!pending_.empty()) w_.stats().inc(Counter::upstream_cx_closed_with_pending);
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, r] : pending) {
    w_.stats().gauge_add(Gauge::upstream_rq_active, -1);
    r->on_failure(kind, why);
  }
}

void UpstreamConn::drain() {
  draining_ = true;
  if (pending_.empty()) close("drained");
}

void UpstreamConn::close(const std::string& why) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (!why.empty()) spdlog::debug("upstream {} closed: {}", host_->address.str(), why);
  boost::system::error_code ec;
  connect_timer_.cancel();
  sock_.close(ec);
  w_.stats().gauge_add(Gauge::upstream_cx_active, -1);
  // After the socket is closed, so a retry never picks this connection.
  fail_all(ErrorKind::kUpstreamFailure, "metanode: upstream " + (why.empty() ? "closed" : why));
}

}  // namespace metanode::core
