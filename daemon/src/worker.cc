#include "worker.h"

#include "fd_reserve.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include "downstream_conn.h"
#include "upstream_conn.h"

namespace metanode::core {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

net::Endpoint to_endpoint(const tcp::endpoint& e) {
  return {e.address().is_v4() ? e.address().to_v4().to_uint()
                              : (e.address().to_v6().is_v4_mapped()
                                     ? asio::ip::make_address_v4(asio::ip::v4_mapped,
                                                                 e.address().to_v6())
                                           .to_uint()
                                     : 0),
          e.port()};
}

tcp::endpoint to_asio(const net::Endpoint& e) { return {asio::ip::address_v4(e.addr), e.port}; }

Worker::Worker(Server::Impl& srv, size_t index)
    : srv_(srv),
      index_(index),
      cm_(stats_, srv.limits),
      rng_(uint64_t(Clock::now().time_since_epoch().count()) ^ (index * 0x9e37)),
      sweep_timer_(io_),
      rate_timer_(io_),
      reserve_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

Worker::~Worker() {
  // The loop has stopped with handlers still queued (closed sockets'
  // aborted reads and writes, posted answers). Run them now, while the
  // state their connections give back to (stats, buffer pool, lists) is
  // still alive: destroying them with the io_context, after the other
  // members, would touch freed memory.
  shutdown();
  io_.restart();
  io_.poll();
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

const ServerOptions& Worker::opts() const { return srv_.opts; }
RateLimitClient& Worker::rate_limit_service() { return srv_.rate_limits; }
bpf::Maps* Worker::maps() const { return srv_.maps; }

const xds::Snapshot* Worker::snapshot() {
  uint64_t g = srv_.gen.load(std::memory_order_acquire);
  if (g != snap_gen_) {
    {
      std::lock_guard<std::mutex> l(srv_.snap_mu);
      snap_ = srv_.snap;
      snap_gen_ = srv_.gen.load(std::memory_order_relaxed);
    }
    if (snap_) cm_.apply(*snap_);
  }
  return snap_.get();
}

void Worker::start_timers() { sweep(); }

// Timeouts, un-ejection and drained pools, every 100 ms: timeouts are as
// precise as that, and the sweep costs nothing when nothing is pending.
void Worker::sweep() {
  sweep_timer_.expires_after(std::chrono::milliseconds(100));
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    auto now = Clock::now();
    snapshot();  // apply a new configuration even when no traffic comes
    std::vector<std::shared_ptr<UpstreamConn>> conns;
    cm_.for_each_connection([&](const std::shared_ptr<UpstreamConn>& c) { conns.push_back(c); });
    for (auto& c : conns) c->sweep(now);
    cm_.sweep(now);
    std::vector<std::weak_ptr<DownstreamConn>> resume;
    resume.swap(to_resume_);
    for (auto& w : resume)
      if (auto d = w.lock()) d->resume();
    // Client connections every 500 ms: their timeouts are seconds long.
    if (++sweeps_ % 5 == 0) {
      for_each_downstream([now](DownstreamConn& d) { d.sweep(now); });
    }
    sweep();
  });
}

void Worker::resume_at(std::weak_ptr<DownstreamConn> c, Clock::time_point when) {
  rate_waiters_.emplace_back(when, std::move(c));
  if (rate_timer_at_ == Clock::time_point{} || when < rate_timer_at_) arm_rate_timer(when);
}

void Worker::arm_rate_timer(Clock::time_point when) {
  rate_timer_at_ = when;
  rate_timer_.expires_at(when);  // a wait armed for later ends aborted
  rate_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) on_rate_timer();
  });
}

void Worker::on_rate_timer() {
  rate_timer_at_ = {};
  auto now = Clock::now();
  std::vector<std::weak_ptr<DownstreamConn>> due;
  Clock::time_point next{};
  auto keep = rate_waiters_.begin();
  for (auto& [when, c] : rate_waiters_) {
    if (when <= now) {
      due.push_back(std::move(c));
    } else {
      if (next == Clock::time_point{} || when < next) next = when;
      *keep++ = {when, std::move(c)};
    }
  }
  rate_waiters_.erase(keep, rate_waiters_.end());
  if (next != Clock::time_point{}) arm_rate_timer(next);
  for (auto& w : due)
    if (auto d = w.lock()) d->resume();
}

Result<void> Worker::reconcile_listeners() {
  Result<void> result = Ok();
  std::vector<net::Endpoint> want;
  if (opts().intercept) {
    want.push_back(opts().redirect);
  } else if (const auto* s = snapshot()) {
    for (const auto& l : s->listeners) want.push_back(l.address);
  }
  for (auto it = acceptors_.begin(); it != acceptors_.end();) {
    if (std::find(want.begin(), want.end(), it->first) == want.end()) {
      it->second->close();
      it = acceptors_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& ep : want) {
    if (acceptors_.count(ep) || draining_) continue;
    // A predecessor's sockets first: the same socket, the same accept queue.
    bool adopted = false;
    for (int fd : srv_.take_inherited(ep, index_)) {
      auto acc = std::make_shared<Acceptor>(io_);
      boost::system::error_code ec;
      acc->sock.assign(tcp::v4(), fd, ec);
      if (ec) {
        ::close(fd);
        continue;
      }
      accept_on(*acc);
      acceptors_.emplace(ep, std::move(acc));
      adopted = true;
    }
    if (adopted) continue;
    auto acc = std::make_shared<Acceptor>(io_);
    tcp::acceptor* a = &acc->sock;
    boost::system::error_code ec;
    a->open(tcp::v4(), ec);
    if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      int one = 1;
      // Every worker binds the same address; the kernel spreads connections.
      if (setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        ec = boost::system::error_code(errno, boost::system::system_category());
    }
    if (!ec) a->bind(to_asio(ep), ec);
    if (!ec) a->listen(4096, ec);
    if (ec) {
      spdlog::error("worker {}: cannot listen on {}: {}", index_, ep.str(), ec.message());
      if (result)
        result = Error{std::error_code(ec.value(), std::system_category()), "listen on " + ep.str()};
      continue;
    }
    accept_on(*acc);
    acceptors_.emplace(ep, std::move(acc));
  }
  return result;
}

void Worker::accept_on(Acceptor& a) {
  a.sock.async_accept([this, keep = a.shared_from_this()](const boost::system::error_code& ec,
                                                          tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;  // closed
    if (ec) return on_accept_error(*keep, ec);
    keep->backoff = std::chrono::milliseconds(0);
    // Accepted before a close that ran first: still a client to serve.
    on_accept(std::move(s));
    if (keep->sock.is_open()) accept_on(*keep);
  });
}

// At the fd limit accept fails at once with the connection still queued:
// re-arming would spin. Shed the oldest queued connection with the reserve
// fd (its client sees a close, not a timeout), then pause accepting,
// 10 ms doubling to 1 s, while connections close and free fds.
void Worker::on_accept_error(Acceptor& a, const boost::system::error_code& ec) {
  int e = ec.value();
  bool resources = e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
  if (!resources) {
    if (a.sock.is_open()) accept_on(a);  // the peer's trouble (ECONNABORTED, ...)
    return;
  }
  stats_.inc(Counter::downstream_cx_accept_fd_limit);
  std::unique_lock<std::mutex> slots(fd_reserve_mutex());
  if (reserve_fd_ < 0) reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // lost to a race before
  if (reserve_fd_ >= 0) {
    // The shed connection's fd, shut down (its client sees the close),
    // becomes the next reserve: the slot is free only between these two calls.
    ::close(reserve_fd_);
    reserve_fd_ = ::accept4(a.sock.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (reserve_fd_ >= 0) ::shutdown(reserve_fd_, SHUT_RDWR);
    else reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  slots.unlock();
  a.backoff = std::min(std::chrono::milliseconds(1000),
                       std::max(std::chrono::milliseconds(10), a.backoff * 2));
  spdlog::warn("worker {}: accept: {}; pausing accepts for {} ms", index_, ec.message(),
               a.backoff.count());
  a.retry.expires_after(a.backoff);
  a.retry.async_wait([this, keep = a.shared_from_this()](const boost::system::error_code& tec) {
    if (tec) return;  // cancelled with its acceptor
    // asio tries the accept as it starts: at the limit, not inside another
    // thread's reserve swap.
    std::lock_guard<std::mutex> l(fd_reserve_mutex());
    if (keep->sock.is_open()) accept_on(*keep);
  });
}

void Worker::on_accept(tcp::socket s) {
  stats_.inc(Counter::downstream_cx);
  boost::system::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  net::Endpoint source = to_endpoint(s.remote_endpoint(ec));
  net::Endpoint orig;
  uint64_t netns = 0;  // the client pod's namespace, as the kernel saw its connect
  if (opts().intercept) {
    auto od = maps() ? maps()->original_dst(s.native_handle())
                     : Result<bpf::OrigDst>(Error::invalid("no BPF maps"));
    if (!od) {
      stats_.inc(Counter::downstream_cx_no_orig_dst);
      spdlog::warn("closing connection from {}: {}", source.str(), od.error().message());
      return;
    }
    orig = od->dst;
    netns = od->pod_netns;
  } else {
    orig = to_endpoint(s.local_endpoint(ec));
  }
  serve(std::move(s), orig, netns);
}

void Worker::adopt(int fd, const net::Endpoint& orig, uint64_t netns) {
  tcp::socket s(io_);
  boost::system::error_code ec;
  s.assign(tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  stats_.inc(Counter::downstream_cx_adopted);
  serve(std::move(s), orig, netns);
}

bool Worker::hand_off(int fd, const net::Endpoint& orig, uint64_t netns) {
  if (!srv_.handoff) {
    ::close(fd);
    return false;
  }
  bool ok = srv_.handoff(fd, orig, netns);
  if (ok) stats_.inc(Counter::downstream_cx_handed_off);
  return ok;
}

void Worker::serve(tcp::socket s, const net::Endpoint& orig, uint64_t netns) {
  boost::system::error_code ec;
  net::Endpoint source = to_endpoint(s.remote_endpoint(ec));
  if (ec) return;  // already reset by the client
  const xds::Snapshot* snap = snapshot();
  const xds::Listener* l = snap ? snap->find_listener(orig) : nullptr;
  if (!l) {
    stats_.inc(Counter::downstream_cx_no_listener);
    spdlog::warn("closing connection to {}: no listener for that address", orig.str());
    return;
  }
  const auto& dl = opts().downstream;
  auto share = srv_.limits.source(netns, source.addr, [&dl] {
    auto sh = std::make_shared<SourceShare>();
    // A second's worth of burst, one token every 1/rate s.
    if (dl.max_rps_per_source)
      sh->rate = std::make_unique<xds::TokenBucket>(
          dl.max_rps_per_source, 1, std::chrono::nanoseconds(1000000000 / dl.max_rps_per_source));
    return sh;
  });
  // Counted here, before the check, so workers accepting at once cannot
  // pass the limit together; the connection gives it back when it closes.
  uint32_t had = share->connections.fetch_add(1, std::memory_order_relaxed);
  if (dl.max_connections_per_source && had >= dl.max_connections_per_source) {
    share->connections.fetch_sub(1, std::memory_order_relaxed);
    stats_.inc(Counter::downstream_cx_source_limit);
    auto now = Clock::now();
    if (now - last_source_refusal_log_ > std::chrono::seconds(1)) {  // one line a second at most
      last_source_refusal_log_ = now;
      spdlog::warn("closing connection from {}: it already has {} (the per-source limit)", source.str(),
                   dl.max_connections_per_source);
    }
    return;
  }
  std::shared_ptr<const PeerIdentity> peer;
  if (auto peers = srv_.peers()) peer = peers->find(netns, source.addr);
  auto conn = std::make_shared<DownstreamConn>(*this, std::move(s), orig, source, netns, std::move(share),
                                               l->protocol, std::move(peer));
  conn->start();
  // Accepted after the drain went over this worker's connections (the
  // acceptor's queued completion): answered, then closed like them.
  if (draining_) conn->drain(bool(srv_.handoff));
}

std::vector<std::pair<net::Endpoint, int>> Worker::listening_sockets() {
  std::vector<std::pair<net::Endpoint, int>> out;
  for (auto& [ep, a] : acceptors_) {
    int fd = ::fcntl(a->sock.native_handle(), F_DUPFD_CLOEXEC, 0);
    if (fd >= 0) out.emplace_back(ep, fd);
  }
  return out;
}

void Worker::drain(bool handed_over) {
  draining_ = true;
  boost::system::error_code ec;
  for (auto& [ep, a] : acceptors_) {
    if (handed_over) {
      a->close();  // our copy only: the successor accepts from this queue
      continue;
    }
    // Connections the kernel completed are clients like any other: closing
    // the listener would reset them with their requests unread.
    a->sock.non_blocking(true, ec);
    for (int i = 0; i < 4096 && !ec; ++i) {
      tcp::socket s(io_);
      a->sock.accept(s, ec);
      if (!ec) on_accept(std::move(s));
    }
    a->close();
  }
  acceptors_.clear();
  bool handoff = handed_over && srv_.handoff;
  for_each_downstream([handoff](DownstreamConn& d) { d.drain(handoff); });
}

void Worker::shutdown() {
  sweep_timer_.cancel();
  rate_timer_.cancel();
  for (auto& [ep, a] : acceptors_) a->close();
  acceptors_.clear();
  for_each_downstream([](DownstreamConn& d) { d.abort(); });
  cm_.clear();
}

}  // namespace metanode::core
