#include "cluster_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "upstream_conn.h"

namespace metanode::core {
namespace {

uint64_t key_of(net::Endpoint e) { return uint64_t(e.addr) << 16 | e.port; }

// Connect backoff: 50 ms doubling to 2 s. Short enough that a restarted
// upstream is used again within seconds, long enough that a dead one costs
// one connect attempt per period instead of one per request.
std::chrono::milliseconds backoff_for(uint32_t failures) {
  uint32_t shift = std::min<uint32_t>(failures > 0 ? failures - 1 : 0, 6);
  return std::min(std::chrono::milliseconds(50u << shift), std::chrono::milliseconds(2000));
}

}  // namespace

std::shared_ptr<HostState> ClusterManager::host(net::Endpoint addr) {
  auto& h = hosts_[key_of(addr)];
  if (!h) {
    h = std::make_shared<HostState>(addr);
    h->shared = limits_.host(addr);
    std::lock_guard<std::mutex> l(slot_mu_);
    auto& s = slots_[addr];
    if (!s) s = std::make_unique<HostSlot>();
    h->slot = s.get();
  }
  return h;
}

void ClusterManager::set_workload(HostState& h, const xds::Endpoint& e) {
  if (e.workload.empty()) {
    h.workload.reset();
  } else if (!h.workload || h.workload->workload != e.workload || h.workload->namespace_ != e.workload_namespace ||
             h.workload->canonical_service != e.canonical_service ||
             h.workload->canonical_revision != e.canonical_revision || h.workload->cluster != e.cluster_id) {
    auto w = std::make_shared<PeerIdentity>();
    w->workload = e.workload;
    w->namespace_ = e.workload_namespace;
    w->canonical_service = e.canonical_service;
    w->canonical_revision = e.canonical_revision;
    w->cluster = e.cluster_id;
    h.workload = std::move(w);
  }
}

void ClusterManager::apply(const xds::Snapshot& snap) {
  std::unordered_map<const xds::Cluster*, ClusterState> next;
  std::unordered_map<uint64_t, std::shared_ptr<HostState>> keep;
  for (const auto& [name, c] : snap.clusters) {
    auto old = clusters_.find(c.get());
    if (old != clusters_.end()) {
      for (const auto& h : old->second.hosts) keep[key_of(h->address)] = h;
      next.emplace(c.get(), std::move(old->second));
      continue;
    }
    ClusterState cs;
    cs.cluster = c;
    std::vector<lb::Host> lb_hosts;
    for (const auto& e : c->endpoints) {
      auto h = host(e.address);
      keep[key_of(e.address)] = h;
      set_workload(*h, e);
      cs.hosts.push_back(h);
      lb_hosts.push_back({e.weight, lb::mix64(key_of(e.address))});
    }
    cs.lb = lb::make_load_balancer(c->lb, lb_hosts,
                                   {.ring_size = c->ring_size,
                                    .maglev_table_size = c->maglev_table_size});
    next.emplace(c.get(), std::move(cs));
  }
  for (auto& [k, h] : hosts_) {
    if (keep.count(k)) continue;
    h->removed = true;
    mark_backoff(*h, false);
    for (auto& p : h->pools)
      for (auto& c : p.conns) c->drain();
    draining_.push_back(h);
  }
  hosts_ = std::move(keep);
  clusters_ = std::move(next);
}

ClusterStats* ClusterManager::stats_for(const xds::Cluster& c, Protocol protocol) {
  auto it = cluster_stats_.find(c.name);
  if (it != cluster_stats_.end()) return &it->second;
  ClusterStats cs;
  cs.destination.destination_service = c.service_host;
  cs.destination.destination_version = c.subset.empty() ? "unknown" : c.subset;
  cs.destination.protocol = std::string(protocol_name(protocol));
  cs.shared = limits_.cluster(c.name);
  return &cluster_stats_.emplace(c.name, cs).first->second;
}

RequestSeries* ClusterStats::series_for(StatsShard& shard, const std::shared_ptr<const PeerIdentity>& source,
                                        const std::shared_ptr<const PeerIdentity>& dest, const std::string& code,
                                        const char* flags) {
  for (const auto& e : series)
    if (e.source == source && e.destination == dest && e.flags == flags && e.code == code) return e.series;
  RequestLabels l = destination;
  l.response_code = code;
  l.response_flags = flags;
  l.set_source(source.get());
  if (dest) {
    l.destination_workload = dest->workload;
    l.destination_workload_namespace = dest->namespace_;
    l.destination_canonical_service = dest->canonical_service;
    l.destination_canonical_revision = dest->canonical_revision;
    l.destination_cluster = dest->cluster;
  }
  series.push_back({source, dest, code, flags, shard.request_series(l)});
  return series.back().series;
}

ClusterState* ClusterManager::find(const xds::Cluster* c) {
  auto it = clusters_.find(c);
  return it == clusters_.end() ? nullptr : &it->second;
}

std::shared_ptr<HostState> ClusterManager::pick(ClusterState& cs, std::optional<uint64_t> hash,
                                                const HostState* avoid, lb::Rng& rng,
                                                Clock::time_point now) {
  if (cs.hosts.empty()) return nullptr;
  // The callbacks capture one pointer each, so std::function keeps them
  // inline: no allocation per pick.
  struct View {
    const ClusterState* cs;
    Clock::time_point now;
    const HostState* avoid;
  } view{&cs, now, avoid};
  const View* v = &view;
  lb::PickContext ctx(&rng);
  ctx.hash = hash;
  ctx.active = [v](size_t i) { return v->cs->hosts[i]->active; };
  ctx.usable = [v](size_t i) {
    const auto& h = *v->cs->hosts[i];
    return h.usable(v->now) && &h != v->avoid;
  };
  auto i = cs.lb->pick(ctx);
  if (!i && avoid) {
    view.avoid = nullptr;  // only the previous attempt's host is usable: take it
    i = cs.lb->pick(ctx);
  }
  if (!i) {
    stats_.inc(Counter::upstream_lb_panic);
    ctx.usable = nullptr;
    i = cs.lb->pick(ctx);
  }
  return i ? cs.hosts[*i] : nullptr;
}

ClusterManager::PoolPick ClusterManager::pooled(HostState& h, Protocol protocol,
                                                size_t max_conns) {
  if (shutting_down_) return {};
  HostState::Pool* pool = nullptr;
  for (auto& p : h.pools)
    if (p.protocol == protocol) pool = &p;
  if (!pool) pool = &h.pools.emplace_back(HostState::Pool{protocol, {}});
  auto& conns = pool->conns;
  conns.erase(std::remove_if(conns.begin(), conns.end(), [](const auto& c) { return c->closed(); }),
              conns.end());
  PoolPick pick;
  size_t usable = 0;
  for (const auto& c : conns) {
    if (c->draining()) continue;
    ++usable;
    if (!pick.conn || c->pending() < pick.conn->pending()) pick.conn = c;
  }
  // Reuse an idle connection; open another (up to the cap) when all are
  // busy, so one slow request does not queue everything behind it.
  pick.open_new = !(pick.conn && (pick.conn->pending() == 0 || usable >= max_conns));
  return pick;
}

void ClusterManager::add_connection(HostState& h, Protocol protocol,
                                    std::shared_ptr<UpstreamConn> c) {
  for (auto& p : h.pools)
    if (p.protocol == protocol) p.conns.push_back(std::move(c));
}

void ClusterManager::mark_backoff(HostState& h, bool on) {
  if (h.backoff_marked == on || !h.slot) return;
  h.backoff_marked = on;
  if (on) h.slot->backoff.fetch_add(1, std::memory_order_relaxed);
  else h.slot->backoff.fetch_sub(1, std::memory_order_relaxed);
}

void ClusterManager::connect_failed(HostState& h, Clock::time_point now) {
  ++h.connect_failures;
  mark_backoff(h, true);
  h.connect_retry_at = now + backoff_for(h.connect_failures);
  stats_.inc(Counter::upstream_cx_backoff);
}

void ClusterManager::connect_succeeded(HostState& h) {
  mark_backoff(h, false);
  h.connect_failures = 0;
  h.connect_retry_at = {};
}

void ClusterManager::record(const xds::Cluster& c, HostState& h, AttemptResult r,
                            Clock::time_point now) {
  HostShared* s = h.shared.get();
  if (!s) return;
  if (r == AttemptResult::kOk) {
    s->consecutive_gateway.store(0, std::memory_order_relaxed);
    s->consecutive_errors.store(0, std::memory_order_relaxed);
    return;
  }
  uint32_t errors = s->consecutive_errors.fetch_add(1, std::memory_order_relaxed) + 1;
  uint32_t gateway = 0;
  if (r == AttemptResult::kGatewayError)
    gateway = s->consecutive_gateway.fetch_add(1, std::memory_order_relaxed) + 1;
  else
    s->consecutive_gateway.store(0, std::memory_order_relaxed);
  const auto& od = c.outlier;
  if (!od.enabled() || h.removed || s->ejected(now)) return;
  bool trip = (od.consecutive_gateway_errors && gateway >= od.consecutive_gateway_errors) ||
              (od.consecutive_errors && errors >= od.consecutive_errors);
  if (!trip) return;
  // Envoy's cap: no ejection while the ejected share of this cluster is
  // already at max_ejection_percent.
  ClusterState* cs = find(&c);
  if (!cs) return;  // routed with a configuration that is gone: let the next one decide
  size_t ejected = size_t(std::count_if(cs->hosts.begin(), cs->hosts.end(),
                                        [&](const auto& x) { return x->ejected(now); }));
  if (double(ejected) * 100 >= double(od.max_ejection_percent) * double(cs->hosts.size())) {
    stats_.inc(Counter::outlier_ejection_overflow);
    return;
  }
  // Ejected for base × (times ejected), capped; the host returns at the
  // first detector interval after that, as Envoy's sweep brings it back.
  int64_t until = s->ejected_until_ns.load(std::memory_order_relaxed);
  if (until != 0 && until > now.time_since_epoch().count()) return;
  uint32_t n = s->ejections.load(std::memory_order_relaxed) + 1;
  auto t = std::min(od.base_ejection_time * n, std::max(od.base_ejection_time, od.max_ejection_time));
  auto iv = od.interval.count() > 0 ? od.interval : std::chrono::milliseconds(1);
  t = ((t + iv - std::chrono::milliseconds(1)) / iv) * iv;
  int64_t want = (now + t).time_since_epoch().count();
  // One worker wins; the others see the host ejected.
  if (!s->ejected_until_ns.compare_exchange_strong(until, want, std::memory_order_relaxed)) return;
  s->ejections.fetch_add(1, std::memory_order_relaxed);
  s->consecutive_gateway.store(0, std::memory_order_relaxed);
  s->consecutive_errors.store(0, std::memory_order_relaxed);
  stats_.inc(Counter::outlier_ejections);
  spdlog::warn("outlier detection: ejected {} from {} for {} ms ({} consecutive {})", h.address.str(),
               c.name, t.count(), r == AttemptResult::kGatewayError ? gateway : errors,
               r == AttemptResult::kGatewayError ? "gateway errors" : "errors");
}

void ClusterManager::sweep(Clock::time_point now) {
  for (auto& [k, h] : hosts_) {
    if (HostShared* s = h->shared.get()) {
      int64_t until = s->ejected_until_ns.load(std::memory_order_relaxed);
      // The worker that clears the ejection says so, once for the node.
      if (until != 0 && until <= now.time_since_epoch().count() &&
          s->ejected_until_ns.compare_exchange_strong(until, 0, std::memory_order_relaxed))
        spdlog::info("outlier detection: {} back in service", h->address.str());
    }
    if (!h->backing_off(now)) mark_backoff(*h, false);
    // Closed connections leave the pool (each holds its host: no cycles
    // kept alive by a host that is not asked for a while).
    for (auto& p : h->pools)
      p.conns.erase(std::remove_if(p.conns.begin(), p.conns.end(),
                                   [](const auto& c) { return c->closed(); }),
                    p.conns.end());
  }
  // Drained hosts go once their last connection has closed.
  draining_.erase(std::remove_if(draining_.begin(), draining_.end(),
                                 [](const std::shared_ptr<HostState>& h) {
                                   for (auto& p : h->pools) {
                                     auto& cs = p.conns;
                                     cs.erase(std::remove_if(cs.begin(), cs.end(),
                                                             [](const auto& c) { return c->closed(); }),
                                              cs.end());
                                     if (!cs.empty()) return false;
                                   }
                                   h->pools.clear();
                                   return true;
                                 }),
                  draining_.end());
}

void ClusterManager::clear() {
  // No new connections from here on: a request failed by a closing
  // connection may try another host, and must be answered instead.
  shutting_down_ = true;
  std::vector<std::shared_ptr<UpstreamConn>> conns;
  for_each_connection([&](const std::shared_ptr<UpstreamConn>& c) { conns.push_back(c); });
  for (auto& c : conns) c->close("shutdown");
  // Hosts own their pools and connections own their host: break the cycle.
  for (auto& [k, h] : hosts_) h->pools.clear();
  for (auto& h : draining_) h->pools.clear();
  hosts_.clear();
  draining_.clear();
  clusters_.clear();
}

std::map<net::Endpoint, const HostSlot*> ClusterManager::slots() const {
  std::lock_guard<std::mutex> l(slot_mu_);
  std::map<net::Endpoint, const HostSlot*> out;
  for (const auto& [ep, s] : slots_) out[ep] = s.get();
  return out;
}

}  // namespace metanode::core
