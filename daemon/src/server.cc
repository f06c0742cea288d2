// Data plane. The life of one request (see docs/ARCHITECTURE.md):
//   DownstreamConn reads bytes -> codec decodes one message -> route ->
//   weighted cluster -> load balancer -> UpstreamConn (pooled, per worker)
//   rewrites the request id to one unique on that connection -> the reply's
//   id is mapped back and the reply is queued on the DownstreamConn.
// Everything for a connection happens on its worker's thread: no locks.
#include "metanode/core/server.h"

#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <deque>
#include <future>
#include <map>
#include <optional>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "metanode/core/router.h"
#include "metanode_abi.h"

namespace metanode::core {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using codecs::Bytes;
using codecs::ErrorKind;
using codecs::Message;
using codecs::MessageKind;
using Clock = std::chrono::steady_clock;

namespace {

net::Endpoint to_endpoint(const tcp::endpoint& e) {
  return {e.address().is_v4() ? e.address().to_v4().to_uint()
                              : (e.address().to_v6().is_v4_mapped()
                                     ? asio::ip::make_address_v4(asio::ip::v4_mapped,
                                                                 e.address().to_v6())
                                           .to_uint()
                                     : 0),
          e.port()};
}

tcp::endpoint to_asio(const net::Endpoint& e) {
  return {asio::ip::address_v4(e.addr), e.port};
}

const char* error_kind_label(ErrorKind k) {
  switch (k) {
    case ErrorKind::kRouteNotFound:
      return "no_route";
    case ErrorKind::kNoUpstream:
      return "no_upstream";
    case ErrorKind::kUpstreamFailure:
      return "upstream_failure";
    case ErrorKind::kTimeout:
      return "timeout";
  }
  return "error";
}

// Outcome slots of istio_requests_total for one cluster.
enum Outcome { kOk = 0, kException, kLocalError, kOutcomeCount };

struct ClusterCounters {
  std::atomic<uint64_t>* by_outcome[kOutcomeCount] = {};
};

// The byte-level half both connection kinds share: a growable read buffer
// that yields whole decoded messages, and a write queue flushed with one
// gathered write. Driven from the owning worker's thread only.
class MessageStream {
 public:
  explicit MessageStream(uint32_t max_message) : cap_(size_t(max_message) + 64), rbuf_(16384) {}

  // Where the next read goes; an empty buffer means a single message
  // outgrew the limit (the caller closes the connection).
  asio::mutable_buffer read_space() {
    if (rlen_ == rbuf_.size()) {
      if (rbuf_.size() >= cap_) return {};
      rbuf_.resize(std::min(cap_, rbuf_.size() * 2));
    }
    return asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_);
  }

  // Accounts `n` new bytes, then hands every complete message to
  // on_msg(Message&, Bytes frame) while keep_going() holds. Returns the
  // decode error, if the stream stopped making sense.
  // What is buffered but not yet decoded (for error replies).
  std::span<const uint8_t> pending_bytes() const { return {rbuf_.data(), rlen_}; }

  template <class OnMsg, class KeepGoing>
  std::optional<std::string> decode(size_t n, codecs::Codec& codec, OnMsg&& on_msg,
                                    KeepGoing&& keep_going) {
    rlen_ += n;
    size_t off = 0;
    std::optional<std::string> err;
    while (keep_going() && off < rlen_) {
      Message msg;
      auto r = codec.decode(std::span<const uint8_t>(rbuf_.data() + off, rlen_ - off), msg);
      if (r.status == codecs::DecodeStatus::kNeedMoreData) break;
      if (r.status == codecs::DecodeStatus::kError) {
        err = "at stream offset " + std::to_string(consumed_ + off) + ": " + r.error;
        break;
      }
      Bytes frame(rbuf_.begin() + ptrdiff_t(off), rbuf_.begin() + ptrdiff_t(off + msg.size));
      off += msg.size;
      on_msg(msg, std::move(frame));
    }
    if (off > 0) {
      std::memmove(rbuf_.data(), rbuf_.data() + off, rlen_ - off);
      rlen_ -= off;
      consumed_ += off;
    }
    return err;
  }

  void push(Bytes b) { wq_.push_back(std::move(b)); }
  bool in_flight() const { return !writing_.empty(); }
  // Moves everything queued into flight; empty when there is nothing to write.
  std::vector<asio::const_buffer> take() {
    std::vector<asio::const_buffer> bufs;
    if (!writing_.empty() || wq_.empty()) return bufs;
    writing_.swap(wq_);
    bufs.reserve(writing_.size());
    for (const auto& b : writing_) bufs.emplace_back(asio::buffer(b));
    return bufs;
  }
  void written() { writing_.clear(); }

 private:
  size_t cap_;
  std::vector<uint8_t> rbuf_;
  size_t rlen_ = 0;
  uint64_t consumed_ = 0;
  std::vector<Bytes> wq_, writing_;
};

}  // namespace

class Worker;
class DownstreamConn;

// A request waiting for its reply on an upstream connection.
struct Pending {
  std::weak_ptr<DownstreamConn> down;
  uint64_t orig_id = 0;
  Message req;  // for a protocol-native error reply if the reply never comes
  Clock::time_point deadline;
  ClusterCounters* counters = nullptr;
  // Set only when the route mutates replies; keeps the route alive.
  std::shared_ptr<const std::vector<xds::KeyValue>> response_mutation;
};

// ---------------------------------------------------------------------------
class UpstreamConn : public std::enable_shared_from_this<UpstreamConn> {
 public:
  UpstreamConn(Worker& w, net::Endpoint ep, std::string protocol);
  void connect(std::chrono::milliseconds timeout);
  // Forwards one request; for two-way requests `p` becomes the pending entry
  // (and takes the request message, kept for an error reply).
  void send(Bytes frame, Message msg, Pending p);
  size_t pending() const { return pending_.size(); }
  bool closed() const { return state_ == State::kClosed; }
  void sweep_timeouts(Clock::time_point now);
  void close(const std::string& why);

 private:
  enum class State { kConnecting, kReady, kClosed };
  void do_read();
  void on_read(size_t n);
  void on_reply(Message& msg, Bytes frame);
  void do_write();
  void fail_all(ErrorKind kind, const std::string& why);

  Worker& w_;
  net::Endpoint ep_;
  std::string protocol_;
  tcp::socket sock_;
  asio::steady_timer connect_timer_;
  std::unique_ptr<codecs::Codec> codec_;
  State state_ = State::kConnecting;
  MessageStream stream_;
  std::unordered_map<uint64_t, Pending> pending_;
  uint32_t next_id_ = 1;
};

// ---------------------------------------------------------------------------
class DownstreamConn : public std::enable_shared_from_this<DownstreamConn> {
 public:
  DownstreamConn(Worker& w, tcp::socket s, net::Endpoint orig, std::string protocol);
  void start() { do_read(); }
  void deliver(Bytes frame, Outcome outcome, ClusterCounters* counters);
  void reply_error(const Message& req, ErrorKind kind, const std::string& text,
                   ClusterCounters* counters);
  bool open() const { return !closed_; }

 private:
  void do_read();
  void on_read(size_t n);
  void handle(Message& msg, Bytes frame);
  void queue(Bytes b);
  void do_write();
  void close(const char* why);
  void request_done();

  Worker& w_;
  tcp::socket sock_;
  net::Endpoint orig_;
  std::unique_ptr<codecs::Codec> codec_;
  MessageStream stream_;
  size_t inflight_ = 0;
  bool reading_ = false;
  bool closed_ = false;
  bool closing_ = false;  // close once the queued writes are out
};

// ---------------------------------------------------------------------------
class Worker {
 public:
  Worker(Server::Impl& srv, size_t index);
  ~Worker();
  void run() {
    auto guard = asio::make_work_guard(io_);
    io_.run();
  }
  asio::io_context& io() { return io_; }
  StatsShard& stats() { return stats_; }
  const ServerOptions& opts() const;
  bpf::Maps* maps() const;

  // Current snapshot; refreshed only when the generation moved (no lock on
  // the request path otherwise).
  const xds::Snapshot* snapshot();
  // The current snapshot as an owning pointer (for state that outlives a request).
  const std::shared_ptr<const xds::Snapshot>& snapshot_ref() { return snap_; }
  LoadBalancer& lb() { return lb_; }
  Rng& rng() { return rng_; }
  ClusterCounters* counters_for(const xds::Cluster& c, const std::string& protocol);
  std::shared_ptr<UpstreamConn> upstream(const net::Endpoint& ep, const std::string& protocol,
                                         std::chrono::milliseconds connect_timeout);
  uint32_t active_requests(const net::Endpoint& ep);
  // Binds what the configuration wants and closes what it no longer does;
  // returns the first bind failure (the others are still attempted).
  Result<void> reconcile_listeners();
  void start_timers();
  void shutdown();
  std::map<net::Endpoint, uint64_t> endpoint_requests();

 private:
  void accept_on(tcp::acceptor& a);
  void on_accept(tcp::socket s);
  void sweep();

  Server::Impl& srv_;
  size_t index_;
  asio::io_context io_{1};
  StatsShard stats_;
  std::shared_ptr<const xds::Snapshot> snap_;
  uint64_t snap_gen_ = 0;
  LoadBalancer lb_;
  Rng rng_;
  std::map<net::Endpoint, std::unique_ptr<tcp::acceptor>> acceptors_;
  struct Pool {
    std::vector<std::shared_ptr<UpstreamConn>> conns;
    std::atomic<uint64_t>* requests = nullptr;  // owned by ep_requests_
  };
  // Keyed by endpoint and protocol: a port with protocol "auto" may reach
  // one backend with both Dubbo and Thrift clients.
  std::map<std::pair<net::Endpoint, std::string>, Pool> pools_;
  std::unordered_map<std::string, ClusterCounters> cluster_counters_;
  asio::steady_timer sweep_timer_;
  mutable std::mutex ep_mu_;  // guards ep_requests_'s structure for the admin thread
  std::map<net::Endpoint, std::unique_ptr<std::atomic<uint64_t>>> ep_requests_;
};

struct Server::Impl {
  ServerOptions opts;
  bpf::Maps* maps;
  mutable std::mutex snap_mu;
  std::shared_ptr<const xds::Snapshot> snap;
  std::atomic<uint64_t> gen{0};
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> threads;
  StatsShard control;
  std::atomic<bool> started{false};
};

// ---- Worker -----------------------------------------------------------------

Worker::Worker(Server::Impl& srv, size_t index)
    : srv_(srv), index_(index), rng_(uint64_t(Clock::now().time_since_epoch().count()) ^ (index * 0x9e37)),
      sweep_timer_(io_) {}

Worker::~Worker() = default;

const ServerOptions& Worker::opts() const { return srv_.opts; }
bpf::Maps* Worker::maps() const { return srv_.maps; }

const xds::Snapshot* Worker::snapshot() {
  uint64_t g = srv_.gen.load(std::memory_order_acquire);
  if (g != snap_gen_) {
    std::lock_guard<std::mutex> l(srv_.snap_mu);
    snap_ = srv_.snap;
    snap_gen_ = srv_.gen.load(std::memory_order_relaxed);
    lb_.reset();  // cursors and rings refer to the old snapshot's clusters
  }
  return snap_.get();
}

ClusterCounters* Worker::counters_for(const xds::Cluster& c, const std::string& protocol) {
  auto it = cluster_counters_.find(c.name);
  if (it != cluster_counters_.end()) return &it->second;
  ClusterCounters cc;
  static const char* const kOutcome[] = {"ok", "exception", "error"};
  for (int i = 0; i < kOutcomeCount; ++i) {
    RequestLabels l{c.service_host, c.subset.empty() ? "unknown" : c.subset, c.name, protocol,
                    kOutcome[i]};
    cc.by_outcome[i] = stats_.request_counter(l);
  }
  return &cluster_counters_.emplace(c.name, cc).first->second;
}

std::shared_ptr<UpstreamConn> Worker::upstream(const net::Endpoint& ep, const std::string& protocol,
                                               std::chrono::milliseconds connect_timeout) {
  auto& pool = pools_[{ep, protocol}];
  if (!pool.requests) {
    std::lock_guard<std::mutex> l(ep_mu_);
    auto& slot = ep_requests_[ep];
    if (!slot) slot = std::make_unique<std::atomic<uint64_t>>(0);
    pool.requests = slot.get();
  }
  pool.requests->fetch_add(1, std::memory_order_relaxed);
  auto& conns = pool.conns;
  conns.erase(std::remove_if(conns.begin(), conns.end(), [](const auto& c) { return c->closed(); }),
              conns.end());
  std::shared_ptr<UpstreamConn> best;
  for (const auto& c : conns)
    if (!best || c->pending() < best->pending()) best = c;
  // Reuse an idle connection; open another (up to the cap) when all are busy,
  // so one slow request does not queue everything behind it on the server.
  if (best && (best->pending() == 0 || conns.size() >= opts().max_upstream_conns)) return best;
  auto c = std::make_shared<UpstreamConn>(*this, ep, protocol);
  conns.push_back(c);
  c->connect(connect_timeout);
  return c;
}

uint32_t Worker::active_requests(const net::Endpoint& ep) {
  uint32_t n = 0;
  for (auto it = pools_.lower_bound({ep, std::string()}); it != pools_.end() && it->first.first == ep; ++it)
    for (const auto& c : it->second.conns) n += uint32_t(c->pending());
  return n;
}

std::map<net::Endpoint, uint64_t> Worker::endpoint_requests() {
  std::lock_guard<std::mutex> l(ep_mu_);
  std::map<net::Endpoint, uint64_t> out;
  for (const auto& [ep, n] : ep_requests_) out[ep] = n->load(std::memory_order_relaxed);
  return out;
}

void Worker::start_timers() { sweep(); }

void Worker::sweep() {
  sweep_timer_.expires_after(std::chrono::milliseconds(250));
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    auto now = Clock::now();
    for (auto& [ep, pool] : pools_)
      for (auto& c : pool.conns) c->sweep_timeouts(now);
    sweep();
  });
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
      boost::system::error_code ec;
      it->second->close(ec);
      it = acceptors_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& ep : want) {
    if (acceptors_.count(ep)) continue;
    auto a = std::make_unique<tcp::acceptor>(io_);
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
      if (result) result = Error{std::error_code(ec.value(), std::system_category()), "listen on " + ep.str()};
      continue;
    }
    accept_on(*a);
    acceptors_.emplace(ep, std::move(a));
  }
  return result;
}

void Worker::accept_on(tcp::acceptor& a) {
  a.async_accept([this, &a](const boost::system::error_code& ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) on_accept(std::move(s));
    if (a.is_open()) accept_on(a);
  });
}

void Worker::on_accept(tcp::socket s) {
  stats_.inc(Counter::downstream_cx);
  boost::system::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  net::Endpoint orig;
  if (opts().intercept) {
    auto od = maps() ? maps()->original_dst(s.native_handle())
                     : Result<bpf::OrigDst>(Error::invalid("no BPF maps"));
    if (!od) {
      stats_.inc(Counter::downstream_cx_no_orig_dst);
      spdlog::warn("closing connection from {}: {}", to_endpoint(s.remote_endpoint(ec)).str(),
                   od.error().message());
      return;
    }
    orig = od->dst;
  } else {
    orig = to_endpoint(s.local_endpoint(ec));
  }
  const xds::Snapshot* snap = snapshot();
  const xds::Listener* l = snap ? snap->find_listener(orig) : nullptr;
  if (!l) {
    stats_.inc(Counter::downstream_cx_no_listener);
    spdlog::warn("closing connection to {}: no listener for that address", orig.str());
    return;
  }
  auto conn = std::make_shared<DownstreamConn>(*this, std::move(s), orig, l->protocol);
  conn->start();
}

void Worker::shutdown() {
  boost::system::error_code ec;
  sweep_timer_.cancel();
  for (auto& [ep, a] : acceptors_) a->close(ec);
  acceptors_.clear();
  for (auto& [ep, pool] : pools_)
    for (auto& c : pool.conns) c->close("shutdown");
  pools_.clear();
}

// ---- DownstreamConn ----------------------------------------------------------

DownstreamConn::DownstreamConn(Worker& w, tcp::socket s, net::Endpoint orig, std::string protocol)
    : w_(w),
      sock_(std::move(s)),
      orig_(orig),
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
    boost::system::error_code ec;
    spdlog::warn("closing downstream {} -> {}: malformed {} {}",
                 to_endpoint(sock_.remote_endpoint(ec)).str(), orig_.str(), codec_->protocol(), *err);
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

  const xds::Snapshot* snap = w_.snapshot();
  const xds::Listener* l = snap ? snap->find_listener(orig_) : nullptr;
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
  const xds::Cluster* cluster = cref ? cref->cluster.get() : nullptr;
  ClusterCounters* counters = cluster ? w_.counters_for(*cluster, std::string(codec_->protocol())) : nullptr;
  const xds::Endpoint* ep =
      cluster ? w_.lb().pick(*cluster, *route, msg.metadata, w_.rng(),
                             [this](const net::Endpoint& e) { return w_.active_requests(e); })
              : nullptr;
  if (!ep) {
    st.inc(Counter::no_healthy_upstream);
    if (!oneway)
      reply_error(msg, ErrorKind::kNoUpstream,
                  "metanode: no healthy upstream in cluster " + (cref ? cref->name : std::string()),
                  counters);
    return;
  }
  if (!route->request_mutation.empty() && !codec_->mutate(frame, msg, route->request_mutation))
    st.inc(Counter::mutation_unsupported);
  auto up = w_.upstream(ep->address, std::string(codec_->protocol()), cluster->connect_timeout);
  Pending p;
  if (!oneway) {
    p.down = weak_from_this();
    p.orig_id = msg.request_id;
    auto timeout = route->timeout.count() > 0 ? route->timeout : w_.opts().request_timeout;
    p.deadline = Clock::now() + timeout;
    p.counters = counters;
    if (!route->response_mutation.empty())
      p.response_mutation = std::shared_ptr<const std::vector<xds::KeyValue>>(
          w_.snapshot_ref(), &route->response_mutation);
  } else {
    st.inc(Counter::requests_oneway);
    if (counters) counters->by_outcome[kOk]->fetch_add(1, std::memory_order_relaxed);
  }
  up->send(std::move(frame), std::move(msg), std::move(p));
}

void DownstreamConn::request_done() {
  if (inflight_ > 0) --inflight_;
  if (!reading_ && inflight_ + 1 == w_.opts().max_inflight_per_conn) do_read();
}

void DownstreamConn::deliver(Bytes frame, Outcome outcome, ClusterCounters* counters) {
  if (counters) counters->by_outcome[outcome]->fetch_add(1, std::memory_order_relaxed);
  w_.stats().inc(Counter::responses);
  queue(std::move(frame));
  request_done();
}

void DownstreamConn::reply_error(const Message& req, ErrorKind kind, const std::string& text,
                                 ClusterCounters* counters) {
  if (counters) counters->by_outcome[kLocalError]->fetch_add(1, std::memory_order_relaxed);
  w_.stats().inc(Counter::upstream_rq_error_reply);
  spdlog::debug("local reply to {} ({}): {}", orig_.str(), error_kind_label(kind), text);
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
  if (why) spdlog::debug("closing downstream to {}: {}", orig_.str(), why);
  boost::system::error_code ec;
  sock_.shutdown(tcp::socket::shutdown_both, ec);
  sock_.close(ec);
  w_.stats().gauge_add(Gauge::downstream_cx_active, -1);
}

// ---- UpstreamConn ----------------------------------------------------------------

UpstreamConn::UpstreamConn(Worker& w, net::Endpoint ep, std::string protocol)
    : w_(w),
      ep_(ep),
      protocol_(std::move(protocol)),
      sock_(w.io()),
      connect_timer_(w.io()),
      codec_(codecs::make_codec(protocol_, w.opts().limits)),
      stream_(w.opts().limits.max_message_bytes) {}

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
  }
  connect_timer_.expires_after(timeout);
  connect_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
    if (!e && self->state_ == State::kConnecting) {
      boost::system::error_code ig;
      self->sock_.cancel(ig);  // completes async_connect with operation_aborted
    }
  });
  sock_.async_connect(to_asio(ep_), [self = shared_from_this()](const boost::system::error_code& e) {
    self->connect_timer_.cancel();
    if (self->state_ == State::kClosed) return;
    if (e) {
      self->w_.stats().inc(Counter::upstream_cx_connect_fail);
      spdlog::warn("upstream {} connect failed: {}", self->ep_.str(),
                   e == asio::error::operation_aborted ? "timeout" : e.message());
      self->fail_all(ErrorKind::kUpstreamFailure, "metanode: upstream " + self->ep_.str() +
                                                      " connect failed");
      self->close({});  // pending requests were answered above
      return;
    }
    boost::system::error_code ig;
    self->sock_.set_option(tcp::no_delay(true), ig);
    self->state_ = State::kReady;
    self->do_write();
    self->do_read();
  });
}

void UpstreamConn::send(Bytes frame, Message msg, Pending p) {
  auto fail = [&](const char* why) {
    msg.request_id = p.orig_id;
    if (auto d = p.down.lock()) d->reply_error(msg, ErrorKind::kUpstreamFailure, why, p.counters);
  };
  if (state_ == State::kClosed) return fail("metanode: upstream closed");
  bool oneway = msg.kind == MessageKind::kOneway;
  // Ids unique on this connection; 31 bits so a Thrift i32 stays positive.
  uint32_t id = next_id_;
  next_id_ = next_id_ >= 0x7ffffffe ? 1 : next_id_ + 1;
  if (!codec_->set_request_id(frame, msg, id)) return fail("metanode: cannot rewrite request id");
  if (!oneway) {
    w_.stats().gauge_add(Gauge::upstream_rq_active, 1);
    p.req = std::move(msg);
    p.req.request_id = p.orig_id;  // an error reply answers the client's own id
    pending_[id] = std::move(p);
  }
  stream_.push(std::move(frame));
  do_write();
}

void UpstreamConn::do_write() {
  if (state_ != State::kReady) return;
  auto bufs = stream_.take();
  if (bufs.empty()) return;
  asio::async_write(sock_, bufs,
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      self->stream_.written();
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
      n, *codec_, [this](Message& msg, Bytes frame) { on_reply(msg, std::move(frame)); },
      [this] { return state_ == State::kReady; });
  if (err) {
    w_.stats().inc(Counter::upstream_decode_error);
    close("malformed reply " + *err);
    return;
  }
  if (state_ == State::kReady) do_read();
}

void UpstreamConn::on_reply(Message& msg, Bytes frame) {
  if (msg.kind == MessageKind::kHeartbeatResponse) return;
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
  Pending p = std::move(it->second);
  pending_.erase(it);
  w_.stats().gauge_add(Gauge::upstream_rq_active, -1);
  auto down = p.down.lock();
  if (!down || !down->open()) return;
  if (p.response_mutation && !codec_->mutate(frame, msg, *p.response_mutation))
    w_.stats().inc(Counter::mutation_unsupported);
  if (!codec_->set_request_id(frame, msg, p.orig_id)) {
    down->reply_error(p.req, ErrorKind::kUpstreamFailure, "metanode: cannot rewrite reply id",
                      p.counters);
    return;
  }
  down->deliver(std::move(frame), msg.kind == MessageKind::kException ? kException : kOk,
                p.counters);
}

void UpstreamConn::sweep_timeouts(Clock::time_point now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    Pending p = std::move(it->second);
    it = pending_.erase(it);
    w_.stats().inc(Counter::upstream_rq_timeout);
    w_.stats().gauge_add(Gauge::upstream_rq_active, -1);
    if (auto d = p.down.lock())
      d->reply_error(p.req, ErrorKind::kTimeout, "metanode: upstream " + ep_.str() + " timed out",
                     p.counters);
  }
}

void UpstreamConn::fail_all(ErrorKind kind, const std::string& why) {
  if (!pending_.empty()) w_.stats().inc(Counter::upstream_cx_closed_with_pending);
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, p] : pending) {
    w_.stats().gauge_add(Gauge::upstream_rq_active, -1);
    if (auto d = p.down.lock()) d->reply_error(p.req, kind, why, p.counters);
  }
}

void UpstreamConn::close(const std::string& why) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (!why.empty()) spdlog::debug("upstream {} closed: {}", ep_.str(), why);
  fail_all(ErrorKind::kUpstreamFailure, "metanode: upstream " + ep_.str() + " " +
                                            (why.empty() ? "closed" : why));
  boost::system::error_code ec;
  connect_timer_.cancel();
  sock_.close(ec);
  w_.stats().gauge_add(Gauge::upstream_cx_active, -1);
}

// ---- Server -------------------------------------------------------------------

Server::Server(ServerOptions opts, bpf::Maps* maps) : impl_(std::make_unique<Impl>()) {
  if (opts.workers == 0) opts.workers = std::max(1u, std::thread::hardware_concurrency());
  impl_->opts = opts;
  impl_->maps = maps;
  for (size_t i = 0; i < opts.workers; ++i)
    impl_->workers.push_back(std::make_unique<Worker>(*impl_, i));
}

Server::~Server() { stop(); }

Result<void> Server::publish(std::shared_ptr<const xds::Snapshot> snap) {
  {
    std::lock_guard<std::mutex> l(impl_->snap_mu);
    impl_->snap = std::move(snap);
    impl_->gen.fetch_add(1, std::memory_order_release);
  }
  if (!impl_->started.load() || impl_->opts.intercept) return Ok();
  // --no-bpf: every worker binds the new listener set on its own loop; wait
  // for them so the caller learns which address could not be bound.
  std::vector<std::future<Result<void>>> done;
  for (auto& w : impl_->workers) {
    auto p = std::make_shared<std::promise<Result<void>>>();
    done.push_back(p->get_future());
    asio::post(w->io(), [wp = w.get(), p] { p->set_value(wp->reconcile_listeners()); });
  }
  Result<void> first = Ok();
  for (auto& f : done) {
    auto r = f.get();
    if (!r && first) first = r;
  }
  return first;
}

std::shared_ptr<const xds::Snapshot> Server::snapshot() const {
  std::lock_guard<std::mutex> l(impl_->snap_mu);
  return impl_->snap;
}

Result<void> Server::start() {
  if (impl_->started.exchange(true)) return Ok();
  // Bind synchronously so start() can report a port that is taken: with
  // interception, redirecting pods to an address nobody listens on would
  // strand them until the liveness window closes.
  for (auto& w : impl_->workers) {
    if (auto r = w->reconcile_listeners(); !r) {
      for (auto& other : impl_->workers) other->shutdown();
      impl_->started = false;
      return r;
    }
  }
  for (auto& w : impl_->workers) {
    w->start_timers();
    impl_->threads.emplace_back([wp = w.get()] { wp->run(); });
  }
  return Ok();
}

bool Server::ready() const { return impl_->started.load(); }

void Server::stop() {
  if (!impl_ || !impl_->started.exchange(false)) return;
  for (auto& w : impl_->workers) {
    asio::post(w->io(), [wp = w.get()] {
      wp->shutdown();
      wp->io().stop();
    });
  }
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

std::vector<const StatsShard*> Server::shards() const {
  std::vector<const StatsShard*> out;
  for (const auto& w : impl_->workers) out.push_back(&w->stats());
  out.push_back(&impl_->control);
  return out;
}

StatsShard& Server::control_stats() { return impl_->control; }

std::string Server::clusters_text() const {
  auto snap = snapshot();
  std::map<net::Endpoint, uint64_t> rq;
  for (const auto& w : impl_->workers)
    for (const auto& [ep, n] : w->endpoint_requests()) rq[ep] += n;
  std::ostringstream o;
  if (!snap) return "";
  for (const auto& [name, c] : snap->clusters) {
    o << name << "::lb_policy::" << xds::lb_policy_name(c->lb) << "\n";
    for (const auto& e : c->endpoints) {
      o << name << "::" << e.address.str() << "::rq_total::" << rq[e.address] << "\n";
      for (const auto& [k, v] : e.labels)
        o << name << "::" << e.address.str() << "::label::" << k << "=" << v << "\n";
    }
  }
  return o.str();
}

}  // namespace metanode::core
