// Per-worker upstream state, diffed against each new snapshot: a load
// balancer per cluster, built when the snapshot is applied; per-host state
// (requests in flight, connection pools, connect backoff, outlier ejection)
// keyed by address, so it survives configuration updates that keep the
// host. Hosts no configuration lists any more are drained: idle pooled
// connections close at once, busy ones after their last reply.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <type_traits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "metanode/codecs/codec.h"
#include "metanode/core/stats.h"
#include "metanode/lb/load_balancer.h"
#include "metanode/net.h"
#include "metanode/weak_registry.h"
#include "metanode/xds/snapshot.h"
#include "source_share.h"

namespace metanode::core {

class UpstreamConn;

// Node-wide state behind connectionPool limits, shared by every worker.
struct ClusterShared {
  std::atomic<uint32_t> active{0};   // requests in flight
  std::atomic<uint32_t> pending{0};  // of which waiting for a connection
  std::atomic<uint32_t> retries{0};  // of which retries
};
// Node-wide per host: connections for tcp.maxConnections, and outlier
// detection, so a failing host is ejected for every worker at once.
struct HostShared {
  std::atomic<uint32_t> connections{0};
  std::atomic<uint32_t> consecutive_gateway{0};
  std::atomic<uint32_t> consecutive_errors{0};
  std::atomic<uint32_t> ejections{0};
  std::atomic<int64_t> ejected_until_ns{0};  // 0: in service
  // The host said it is shutting down (Dubbo's READONLY event) on some
  // worker's connection: no worker sends it anything new until then. Its
  // endpoint normally leaves the configuration well before.
  std::atomic<int64_t> going_away_until_ns{0};
  bool ejected(Clock::time_point now) const {
    int64_t u = ejected_until_ns.load(std::memory_order_relaxed);
    return u != 0 && u > now.time_since_epoch().count();
  }
  bool going_away(Clock::time_point now) const {
    return going_away_until_ns.load(std::memory_order_relaxed) > now.time_since_epoch().count();
  }
};

// The registry of that state: entries live while a worker refers to them.
class SharedLimits {
 public:
  std::shared_ptr<ClusterShared> cluster(const std::string& name) { return clusters_.get_or_make(name); }
  std::shared_ptr<HostShared> host(net::Endpoint addr) { return hosts_.get_or_make(addr); }
  // For the admin thread; null if no worker knows the host.
  std::shared_ptr<HostShared> find_host(net::Endpoint addr) { return hosts_.find(addr); }
  // At accept: the client source's share, made with `make` the first time.
  // A source is a pod: by the kernel's identity of it, its network
  // namespace cookie, when interception knows it (whatever addresses the
  // pod connects from), else by its address.
  std::shared_ptr<SourceShare> source(uint64_t netns, uint32_t addr,
                                      const std::function<std::shared_ptr<SourceShare>()>& make) {
    return sources_.get_or_make(netns ? (netns | kNetnsKey) : uint64_t(addr), make);
  }

 private:
  static constexpr uint64_t kNetnsKey = 1ull << 63;  // cookies count up from 1: never this high
  WeakRegistry<uint64_t, SourceShare> sources_;
  WeakRegistry<std::string, ClusterShared> clusters_;
  WeakRegistry<net::Endpoint, HostShared> hosts_;  // hosts come and go with pods
};

// Per cluster name, stable across snapshots (requests keep a pointer).
struct ClusterStats {
  RequestLabels destination;  // service, version, protocol; code and flags vary
  // This worker's series of the cluster by (client, endpoint workload,
  // response code, flags):
  // created once through the shard's lock, then found without one. The
  // entry holds the identity, so its address is never reused for another.
  struct Entry {
    std::shared_ptr<const PeerIdentity> source, destination;
    std::string code;
    const char* flags;
    RequestSeries* series;
  };
  std::vector<Entry> series;
  std::shared_ptr<ClusterShared> shared;
  RequestSeries* series_for(StatsShard& shard, const std::shared_ptr<const PeerIdentity>& source,
                            const std::shared_ptr<const PeerIdentity>& destination, const std::string& code,
                            const char* flags);
};

// Envoy's response flags, as Istio's response_flags label carries them;
// one address each, so ClusterStats compares pointers.
namespace flags {
inline constexpr char kNone[] = "-";
inline constexpr char kNoRoute[] = "NR";
inline constexpr char kNoHealthyUpstream[] = "UH";
inline constexpr char kUpstreamFailure[] = "UF";
inline constexpr char kUpstreamOverflow[] = "UO";  // connectionPool limits
inline constexpr char kTimeout[] = "UT";
inline constexpr char kRateLimited[] = "RL";
inline constexpr char kOverload[] = "OM";  // the daemon shed it (a client not reading)
// The flag of a local reply of this kind.
constexpr const char* of(codecs::ErrorKind k) {
  switch (k) {
    case codecs::ErrorKind::kRouteNotFound: return kNoRoute;
    case codecs::ErrorKind::kNoUpstream: return kNoHealthyUpstream;
    case codecs::ErrorKind::kTimeout: return kTimeout;
    case codecs::ErrorKind::kOverLimit: return kRateLimited;
    case codecs::ErrorKind::kUpstreamFailure: break;
  }
  return kUpstreamFailure;
}
}  // namespace flags

struct ActiveRequest;

// What a reply's metrics and access log need of its request.
struct RequestStart {
  Clock::time_point at;
  size_t bytes = 0;               // the request on the wire
  ClusterStats* stats = nullptr;  // null: answered before a cluster was chosen
  const ActiveRequest* request = nullptr;  // route, cluster, host, attempts; null as stats
};

// Per endpoint address, shared with the admin thread (summed over workers).
struct HostSlot {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint32_t> backoff{0};  // workers waiting to reconnect to it
};

// What one attempt came to, as outlier detection counts it.
enum class AttemptResult { kOk, kErrorReply, kGatewayError };

struct HostState {
  explicit HostState(net::Endpoint a) : address(a) {}
  net::Endpoint address;
  HostSlot* slot = nullptr;
  std::shared_ptr<HostShared> shared;
  uint32_t active = 0;  // requests in flight from this worker
  struct Pool {
    Protocol protocol;
    std::vector<std::shared_ptr<UpstreamConn>> conns;
  };
  std::vector<Pool> pools;  // one per protocol ("auto" ports may carry two)
  bool removed = false;     // no longer in any cluster: drain
  // The workload behind this address (istiod's endpoint metadata), for the
  // destination_workload labels; null when not told. Replaced, not edited,
  // when a snapshot says otherwise: metric caches hold the old one.
  std::shared_ptr<const PeerIdentity> workload;
  // Connect backoff: after a failed connect, no new connection to this host
  // before connect_retry_at (doubling per failure, reset by a success).
  uint32_t connect_failures = 0;
  Clock::time_point connect_retry_at{};
  bool backoff_marked = false;  // counted in slot->backoff
  bool backing_off(Clock::time_point now) const { return connect_retry_at > now; }
  bool ejected(Clock::time_point now) const { return shared && shared->ejected(now); }
  bool going_away(Clock::time_point now) const { return shared && shared->going_away(now); }
  bool usable(Clock::time_point now) const { return !ejected(now) && !backing_off(now) && !going_away(now); }
};

struct ClusterState {
  std::shared_ptr<const xds::Cluster> cluster;
  std::unique_ptr<lb::LoadBalancer> lb;
  std::vector<std::shared_ptr<HostState>> hosts;  // parallel to cluster->endpoints
};

class ClusterManager {
 public:
  ClusterManager(StatsShard& stats, SharedLimits& limits) : stats_(stats), limits_(limits) {}

  // Builds state for the snapshot's clusters (reusing a cluster's state if
  // the snapshot kept the same object) and drains hosts that left.
  void apply(const xds::Snapshot& snap);

  ClusterStats* stats_for(const xds::Cluster& c, Protocol protocol);
  ClusterState* find(const xds::Cluster* c);

  // The host for one attempt, or nullptr when the cluster has none. Hosts
  // that are ejected or backing off are skipped while others can serve;
  // when none can, all are candidates again (Envoy's panic mode), so a
  // cluster never goes dark on a detector's word alone. `avoid`: the
  // previous attempt's host, skipped when another one is usable.
  std::shared_ptr<HostState> pick(ClusterState& cs, std::optional<uint64_t> hash,
                                  const HostState* avoid, lb::Rng& rng, Clock::time_point now);

  // The pooled connection to `h` for `protocol`: an idle one; when all
  // are busy and fewer than `max_conns` exist, `open_new` says to open
  // another (then `conn`, the least loaded busy one or null, is the
  // fallback if opening is not allowed). Draining connections take no new
  // requests; nothing is offered once shutting down.
  struct PoolPick {
    std::shared_ptr<UpstreamConn> conn;
    bool open_new = false;
  };
  PoolPick pooled(HostState& h, Protocol protocol, size_t max_conns);
  void add_connection(HostState& h, Protocol protocol, std::shared_ptr<UpstreamConn> c);

  void connect_failed(HostState& h, Clock::time_point now);
  void connect_succeeded(HostState& h);
  // Outlier detection for the attempt's cluster (by the configuration the
  // request was routed with).
  void record(const xds::Cluster& c, HostState& h, AttemptResult r, Clock::time_point now);

  // Returns ejected hosts whose time is up; forgets drained hosts.
  void sweep(Clock::time_point now);
  // Every pooled connection, for shutdown and timeout sweeps.
  template <class Fn>
  void for_each_connection(Fn&& fn) {
    for (auto& [addr, h] : hosts_)
      for (auto& p : h->pools)
        for (auto& c : p.conns) fn(c);
    for (auto& h : draining_)
      for (auto& p : h->pools)
        for (auto& c : p.conns) fn(c);
  }
  void clear();

  // Admin thread: per address, summed over workers by the caller.
  std::map<net::Endpoint, const HostSlot*> slots() const;

 private:
  std::shared_ptr<HostState> host(net::Endpoint addr);
  static void set_workload(HostState& h, const xds::Endpoint& e);
  void mark_backoff(HostState& h, bool on);

  StatsShard& stats_;
  SharedLimits& limits_;
  bool shutting_down_ = false;
  std::unordered_map<const xds::Cluster*, ClusterState> clusters_;
  std::unordered_map<uint64_t, std::shared_ptr<HostState>> hosts_;  // by address key
  std::vector<std::shared_ptr<HostState>> draining_;
  std::unordered_map<std::string, ClusterStats> cluster_stats_;
  mutable std::mutex slot_mu_;  // guards slots_'s structure for the admin thread
  std::map<net::Endpoint, std::unique_ptr<HostSlot>> slots_;
};

}  // namespace metanode::core
