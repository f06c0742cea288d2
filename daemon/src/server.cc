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

#include "metanode/json.h"
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

void Server::begin_drain(bool handed_over, ConnectionHandoff handoff) {
  if (!impl_->started.load()) return;
  impl_->draining = true;
  impl_->handoff = std::move(handoff);  // read by the workers after the posts below
  for (auto& w : impl_->workers) asio::post(w->io(), [wp = w.get(), handed_over] { wp->drain(handed_over); });
}

int64_t Server::client_connections() const {
  int64_t n = 0;
  for (const auto& w : impl_->workers) n += w->stats().get(Gauge::downstream_cx_active);
  return n;
}

bool Server::drain(Clock::time_point deadline, bool handed_over, ConnectionHandoff handoff) {
  if (!impl_->started.load()) return true;
  begin_drain(handed_over, std::move(handoff));
  while (client_connections() > 0) {
    if (Clock::now() >= deadline) {
      spdlog::warn("drain: {} client connections still open at the deadline", client_connections());
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

// What /clusters shows, summed over the workers; rendered as Envoy-like
// text or as JSON.
struct EndpointView {
  std::string address;
  uint32_t weight;
  uint64_t rq_total;
  bool ejected;
  uint32_t backoff_workers;  // reconnect backoff is per worker
  const std::map<std::string, std::string>* labels;
};
struct ClusterView {
  std::string name, lb_policy;
  std::vector<EndpointView> endpoints;
};

static std::vector<ClusterView> collect_clusters(Server::Impl& impl, const xds::Snapshot* snap) {
  struct Sum {
    uint64_t rq = 0;
    uint32_t backoff = 0;
  };
  std::map<net::Endpoint, Sum> sum;
  for (const auto& w : impl.workers)
    for (const auto& [ep, s] : w->clusters().slots()) {
      auto& x = sum[ep];
      x.rq += s->requests.load(std::memory_order_relaxed);
      x.backoff += s->backoff.load(std::memory_order_relaxed);
    }
  std::vector<ClusterView> out;
  if (!snap) return out;
  auto now = Clock::now();
  for (const auto& [name, c] : snap->clusters) {
    ClusterView v{name, lb::policy_name(c->lb), {}};
    for (const auto& e : c->endpoints) {
      const Sum& x = sum[e.address];
      auto shared = impl.limits.find_host(e.address);
      v.endpoints.push_back({e.address.str(), e.weight, x.rq, shared && shared->ejected(now), x.backoff, &e.labels});
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::string Server::clusters_text() const {
  auto snap = snapshot();
  std::ostringstream o;
  for (const auto& c : collect_clusters(*impl_, snap.get())) {
    o << c.name << "::lb_policy::" << c.lb_policy << "\n";
    for (const auto& e : c.endpoints) {
      std::string at = c.name + "::" + e.address + "::";
      o << at << "rq_total::" << e.rq_total << "\n";
      // Envoy's health_flags words, and how many workers wait to reconnect.
      std::string flags = e.ejected ? "/failed_outlier_check" : "";
      if (e.backoff_workers) flags += "/reconnect_backoff(" + std::to_string(e.backoff_workers) + " workers)";
      if (flags.empty()) flags = "healthy";
      o << at << "health_flags::" << flags << "\n";
      for (const auto& [k, v] : *e.labels) o << at << "label::" << k << "=" << v << "\n";
    }
  }
  return o.str();
}

std::string Server::clusters_json() const {
  auto snap = snapshot();
  std::string o = "{\"clusters\":[";
  bool first_c = true;
  for (const auto& c : collect_clusters(*impl_, snap.get())) {
    o += first_c ? "" : ",";
    first_c = false;
    o += "{\"name\":" + json_string(c.name) + ",\"lb_policy\":" + json_string(c.lb_policy) + ",\"endpoints\":[";
    bool first_e = true;
    for (const auto& e : c.endpoints) {
      o += first_e ? "" : ",";
      first_e = false;
      o += "{\"address\":" + json_string(e.address) + ",\"weight\":" + std::to_string(e.weight) +
           ",\"rq_total\":" + std::to_string(e.rq_total) + ",\"healthy\":" +
           (e.ejected || e.backoff_workers ? "false" : "true") + ",\"failed_outlier_check\":" +
           (e.ejected ? "true" : "false") + ",\"reconnect_backoff_workers\":" + std::to_string(e.backoff_workers) +
           ",\"labels\":{";
      bool first_l = true;
      for (const auto& [k, v] : *e.labels) {
        o += (first_l ? "" : ",") + json_string(k) + ":" + json_string(v);
        first_l = false;
      }
      o += "}}";
    }
    o += "]}";
  }
  return o + "]}\n";
}

}  // namespace metanode::core
