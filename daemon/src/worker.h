// One event loop thread: its acceptors (SO_REUSEPORT), downstream
// connections, cluster manager (pools, balancers, host health) and stats
// shard. Workers share nothing but the configuration snapshot, which they
// pick up without a lock.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cluster_manager.h"
#include "downstream_conn.h"
#include "message_stream.h"
#include "metanode/core/server.h"
#include "rate_limit_client.h"

namespace metanode::core {

class Worker {
 public:
  Worker(Server::Impl& srv, size_t index);
  ~Worker();
  void run() {
    auto guard = boost::asio::make_work_guard(io_);
    io_.run();
  }
  boost::asio::io_context& io() { return io_; }
  StatsShard& stats() { return stats_; }
  const ServerOptions& opts() const;
  bpf::Maps* maps() const;

  // Current snapshot; refreshed only when the generation moved (no lock on
  // the request path otherwise). A new one is applied to the cluster manager.
  const xds::Snapshot* snapshot();
  const std::shared_ptr<const xds::Snapshot>& snapshot_ref() { return snap_; }
  ClusterManager& clusters() { return cm_; }
  RateLimitClient& rate_limit_service();
  lb::Rng& rng() { return rng_; }
  BufferPool& buffers() { return buffers_; }
  void add_downstream(DownstreamConn& c) { downstreams_.push_back(c); }
  // A connection paused for its source's limit, to be retried next tick.
  void resume_later(std::weak_ptr<DownstreamConn> c) { to_resume_.push_back(std::move(c)); }
  // A connection waiting for its source's request rate, resumed at `when`.
  void resume_at(std::weak_ptr<DownstreamConn> c, Clock::time_point when);

  // Binds what the configuration wants and closes what it no longer does;
  // returns the first bind failure (the others are still attempted).
  Result<void> reconcile_listeners();
  void start_timers();
  // Drain: no more accepts; every client connection closes once its calls
  // in flight are answered.
  void drain(bool handed_over = false);
  // A predecessor's client connection (Server::adopt).
  void adopt(int fd, const net::Endpoint& orig, uint64_t netns);
  // Passes a drained connection's socket to the successor; owns `fd`.
  bool hand_off(int fd, const net::Endpoint& orig, uint64_t netns);
  void shutdown();
  // Copies (dup) of this worker's listening sockets.
  std::vector<std::pair<net::Endpoint, int>> listening_sockets();

 private:
  // Shared with its pending accept and retry handlers: a completion the
  // reactor already queued still runs after a drain or a config change
  // closed and dropped the acceptor, and must find it alive.
  struct Acceptor : std::enable_shared_from_this<Acceptor> {
    explicit Acceptor(boost::asio::io_context& io) : sock(io), retry(io) {}
    boost::asio::ip::tcp::acceptor sock;
    boost::asio::steady_timer retry;  // accepting paused at the fd limit
    std::chrono::milliseconds backoff{0};
    void close() {
      boost::system::error_code ec;
      sock.close(ec);
      retry.cancel();
    }
  };
  // Calls f(DownstreamConn&) on every live client connection; safe when f
  // closes them (each is held for the call).
  template <class F>
  void for_each_downstream(F&& f) {
    std::vector<std::shared_ptr<DownstreamConn>> live;
    for (auto& d : downstreams_)
      if (auto sp = d.weak_from_this().lock()) live.push_back(std::move(sp));
    for (auto& d : live) f(*d);
  }
  void accept_on(Acceptor& a);
  void on_accept_error(Acceptor& a, const boost::system::error_code& ec);
  void on_accept(boost::asio::ip::tcp::socket s);
  // Past accept (or adoption): the listener, the source's limits, the connection.
  void serve(boost::asio::ip::tcp::socket s, const net::Endpoint& orig, uint64_t netns);
  void sweep();

  Server::Impl& srv_;
  size_t index_;
  boost::asio::io_context io_{1};
  StatsShard stats_;
  std::shared_ptr<const xds::Snapshot> snap_;
  uint64_t snap_gen_ = 0;
  ClusterManager cm_;
  lb::Rng rng_;
  // Several per address when a predecessor had more workers than we do.
  std::multimap<net::Endpoint, std::shared_ptr<Acceptor>> acceptors_;
  boost::asio::steady_timer sweep_timer_;
  uint32_t sweeps_ = 0;
  BufferPool buffers_;
  std::vector<std::weak_ptr<DownstreamConn>> to_resume_;
  // One timer for every rate wait, armed for the earliest.
  boost::asio::steady_timer rate_timer_;
  Clock::time_point rate_timer_at_{};  // {}: not armed
  std::vector<std::pair<Clock::time_point, std::weak_ptr<DownstreamConn>>> rate_waiters_;
  void arm_rate_timer(Clock::time_point when);
  void on_rate_timer();
  Clock::time_point last_source_refusal_log_{};
  boost::intrusive::list<DownstreamConn, boost::intrusive::constant_time_size<false>> downstreams_;
  // Closed to accept (and shed) one connection at the fd limit, so a
  // client there learns at once instead of waiting in the backlog.
  int reserve_fd_ = -1;
  bool draining_ = false;
};

struct Server::Impl {
  ServerOptions opts;
  bpf::Maps* maps;
  mutable std::mutex snap_mu;
  std::shared_ptr<const xds::Snapshot> snap;
  std::atomic<uint64_t> gen{0};
  // Who the clients are (--pods kubernetes): read once per accepted connection.
  mutable std::mutex peers_mu;
  std::shared_ptr<const PeerTable> peer_table;
  std::shared_ptr<const PeerTable> peers() const {
    std::lock_guard<std::mutex> l(peers_mu);
    return peer_table;
  }
  SharedLimits limits;  // before the workers, which refer to it
  std::vector<std::unique_ptr<Worker>> workers;
  // After the workers: destroyed first, waiting for calls in flight, whose
  // answers are posted to the workers' loops.
  RateLimitClient rate_limits;
  std::vector<std::thread> threads;
  StatsShard control;
  std::atomic<bool> started{false};
  std::atomic<bool> draining{false};
  // A predecessor's listening sockets, until start() gives them to workers.
  std::mutex inherited_mu;
  std::multimap<net::Endpoint, int> inherited;
  // Set by a drain after a handover (Server::drain).
  Server::ConnectionHandoff handoff;
  std::atomic<size_t> next_adopt{0};
  // Removes the inherited sockets of `ep` that worker `index` takes: one
  // each, and the last worker whatever is left.
  std::vector<int> take_inherited(const net::Endpoint& ep, size_t index);
};

// Conversions between asio and our endpoint type (IPv4).
net::Endpoint to_endpoint(const boost::asio::ip::tcp::endpoint& e);
boost::asio::ip::tcp::endpoint to_asio(const net::Endpoint& e);

}  // namespace metanode::core
