// The Server facade: owns the workers, publishes snapshots to them and sums
// their state for the admin endpoints. The life of one request is in
// downstream_conn.cc (decode, route) -> active_request.cc (cluster, host,
// attempts, retries, mirror) -> upstream_conn.cc (pooled connection, id
// rewriting, reply mapping); see docs/ARCHITECTURE.md.
#include "metanode/core/server.h"

#include <spdlog/spdlog.h>

#include <future>
#include <map>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "worker.h"

namespace metanode::core {
namespace asio = boost::asio;

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

void Server::set_peers(std::shared_ptr<const PeerTable> peers) {
  std::lock_guard<std::mutex> l(impl_->peers_mu);
  impl_->peer_table = std::move(peers);
}

std::shared_ptr<const PeerTable> Server::peers() const { return impl_->peers(); }

void Server::inherit(std::vector<std::pair<net::Endpoint, int>> sockets) {
  std::lock_guard<std::mutex> l(impl_->inherited_mu);
  for (auto& [ep, fd] : sockets) impl_->inherited.emplace(ep, fd);
}

std::vector<int> Server::Impl::take_inherited(const net::Endpoint& ep, size_t index) {
  std::lock_guard<std::mutex> l(inherited_mu);
  std::vector<int> out;
  auto [b, e] = inherited.equal_range(ep);
  for (auto it = b; it != e && (out.empty() || index + 1 == workers.size());) {
    out.push_back(it->second);
    it = inherited.erase(it);
  }
  return out;
}

std::vector<std::pair<net::Endpoint, int>> Server::listening_sockets() {
  std::vector<std::future<std::vector<std::pair<net::Endpoint, int>>>> parts;
  for (auto& w : impl_->workers) {
    auto p = std::make_shared<std::promise<std::vector<std::pair<net::Endpoint, int>>>>();
    parts.push_back(p->get_future());
    asio::post(w->io(), [wp = w.get(), p] { p->set_value(wp->listening_sockets()); });
  }
  std::vector<std::pair<net::Endpoint, int>> out;
  for (auto& f : parts)
    for (auto& x : f.get()) out.push_back(x);
  return out;
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
  {
    // Inherited sockets of addresses we no longer listen on: what a
    // configuration change would have closed in the predecessor.
    std::lock_guard<std::mutex> l(impl_->inherited_mu);
    for (auto& [ep, fd] : impl_->inherited) ::close(fd);
    impl_->inherited.clear();
  }
  for (auto& w : impl_->workers) {
    w->start_timers();
    impl_->threads.emplace_back([wp = w.get()] { wp->run(); });
  }
  return Ok();
}

bool Server::ready() const { return impl_->started.load() && !impl_->draining.load(); }

bool Server::drain(Clock::time_point deadline, bool handed_over, ConnectionHandoff handoff) {
  if (!impl_->started.load()) return true;
  impl_->draining = true;
  impl_->handoff = std::move(handoff);  // read by the workers after the posts below
  for (auto& w : impl_->workers) asio::post(w->io(), [wp = w.get(), handed_over] { wp->drain(handed_over); });
  auto open = [&] {
    int64_t n = 0;
    for (const auto& w : impl_->workers) n += w->stats().get(Gauge::downstream_cx_active);
    return n;
  };
  while (open() > 0) {
    if (Clock::now() >= deadline) {
      spdlog::warn("drain: {} client connections still open at the deadline", open());
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

void Server::adopt(int fd, const net::Endpoint& orig, uint64_t netns) {
  if (!impl_->started.load() || impl_->workers.empty()) {
    ::close(fd);
    return;
  }
  // Spread like SO_REUSEPORT spreads accepts.
  size_t i = impl_->next_adopt.fetch_add(1, std::memory_order_relaxed) % impl_->workers.size();
  Worker* w = impl_->workers[i].get();
  asio::post(w->io(), [w, fd, orig, netns] { w->adopt(fd, orig, netns); });
}

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
  struct Sum {
    uint64_t rq = 0;
    uint32_t backoff = 0;
  };
  std::map<net::Endpoint, Sum> sum;
  for (const auto& w : impl_->workers)
    for (const auto& [ep, s] : w->clusters().slots()) {
      auto& x = sum[ep];
      x.rq += s->requests.load(std::memory_order_relaxed);
      x.backoff += s->backoff.load(std::memory_order_relaxed);
    }
  std::ostringstream o;
  if (!snap) return "";
  for (const auto& [name, c] : snap->clusters) {
    o << name << "::lb_policy::" << lb::policy_name(c->lb) << "\n";
    for (const auto& e : c->endpoints) {
      const Sum& x = sum[e.address];
      auto shared = impl_->limits.find_host(e.address);
      bool ejected = shared && shared->ejected(Clock::now());
      o << name << "::" << e.address.str() << "::rq_total::" << x.rq << "\n";
      // Envoy's health_flags words; reconnect backoff is per worker, so
      // the number of workers waiting follows.
      std::string flags = ejected ? "/failed_outlier_check" : "";
      if (x.backoff) flags += "/reconnect_backoff(" + std::to_string(x.backoff) + " workers)";
      if (flags.empty()) flags = "healthy";
      o << name << "::" << e.address.str() << "::health_flags::" << flags << "\n";
      for (const auto& [k, v] : e.labels)
        o << name << "::" << e.address.str() << "::label::" << k << "=" << v << "\n";
    }
  }
  return o.str();
}

}  // namespace metanode::core
