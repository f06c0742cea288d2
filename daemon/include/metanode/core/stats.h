// Statistics, declared once. Each worker owns a shard and increments it with
// relaxed atomics (no contention: one writer per shard); the admin thread
// sums shards when scraped.
#pragma once

#include <atomic>
#include <chrono>
#include <type_traits>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "metanode/core/peers.h"

namespace metanode::core {

using Clock = std::chrono::steady_clock;
static_assert(std::is_same_v<Clock::duration, std::chrono::nanoseconds>);

// X(name, help). Exposed as metanode_<name>_total.
#define METANODE_COUNTERS(X)                                                               \
  X(downstream_cx, "Downstream connections accepted")                                      \
  X(downstream_cx_no_orig_dst, "Accepted connections whose original destination is unknown") \
  X(downstream_cx_no_listener, "Connections to an address no listener serves")            \
  X(downstream_decode_error, "Downstream connections closed for malformed input")          \
  X(downstream_error_reply, "Malformed requests answered with a protocol error before closing") \
  X(downstream_cx_read_timeout, "Downstream connections closed: a message not complete within the read timeout") \
  X(downstream_cx_idle_timeout, "Downstream connections closed after the idle timeout")     \
  X(downstream_cx_write_timeout, "Downstream connections closed: replies not taken within the write timeout") \
  X(downstream_cx_drained, "Downstream connections closed by a drain")                     \
  X(downstream_cx_handed_off, "Downstream connections passed to a successor daemon at a message boundary") \
  X(downstream_cx_adopted, "Downstream connections taken over from a predecessor daemon") \
  X(downstream_cx_accept_fd_limit, "Accepts that hit the fd limit (accepting paused, one connection shed)") \
  X(downstream_rq_reply_overflow, "Replies replaced by an error: the client's queued replies were over the limit") \
  X(downstream_cx_source_limit, "Connections closed at accept: their source had the most it may have") \
  X(downstream_rd_source_rate_paused, "Client reads paused for their source's request rate limit") \
  X(downstream_rd_paused, "Times a client's reads were paused (requests in flight or queued replies at the limit)") \
  X(downstream_unexpected_message, "Downstream messages that are not requests")            \
  X(requests, "Requests decoded from downstream")                                          \
  X(requests_oneway, "One-way requests forwarded")                                         \
  X(heartbeats_answered, "Heartbeats answered locally")                                    \
  X(no_route, "Requests that matched no route")                                            \
  X(rate_limited, "Requests answered over-limit by a MetaRouter local or global rate limit") \
  X(global_rate_limit_calls, "Calls to the rate limit service (globalRateLimit)")          \
  X(global_rate_limit_error, "Rate limit service calls that failed or timed out")          \
  X(no_healthy_upstream, "Requests whose cluster had no endpoint")                         \
  X(upstream_cx, "Upstream connections opened")                                            \
  X(upstream_cx_connect_fail, "Upstream connection attempts that failed")                  \
  X(upstream_cx_backoff, "Failed connects that put their host into reconnect backoff")     \
  X(upstream_rq_backoff_fail_fast, "Requests failed at once: their only host was backing off") \
  X(upstream_lb_panic, "Picks made among unusable hosts because no host was usable")       \
  X(upstream_rq_overflow, "Requests refused: the cluster's connectionPool request limit")  \
  X(upstream_rq_pending_overflow, "Requests refused: too many waiting for a connection")   \
  X(upstream_cx_overflow, "Requests refused: the host's connectionPool connection limit")  \
  X(upstream_cx_idle_timeout, "Pooled upstream connections closed after idleTimeout")      \
  X(upstream_cx_going_away, "Upstream connections whose host said it is shutting down (Dubbo READONLY), drained") \
  X(upstream_cx_max_requests, "Upstream connections retired at maxRequestsPerConnection")  \
  X(upstream_cx_max_duration, "Upstream connections retired at maxConnectionDuration")     \
  X(upstream_rq_retry, "Retried request attempts")                                         \
  X(upstream_rq_retry_overflow, "Retries not made because the retry budget was spent")     \
  X(outlier_ejections, "Hosts ejected by outlier detection")                               \
  X(outlier_ejection_overflow, "Ejections skipped: max_ejection_percent reached")          \
  X(mirror_requests, "Requests mirrored (copies sent, replies dropped)")                   \
  X(mirror_dropped, "Mirror copies not sent: no host, or the mirror host is saturated")    \
  X(upstream_cx_closed_with_pending, "Upstream connections lost with requests in flight")  \
  X(upstream_decode_error, "Upstream connections closed for malformed replies")            \
  X(upstream_rq_timeout, "Requests that got no reply in time")                             \
  X(upstream_rq_error_reply, "Requests answered with a locally generated error")           \
  X(responses, "Replies relayed to downstream")                                            \
  X(responses_orphaned, "Replies whose id matched no pending request")                     \
  X(mutation_unsupported, "Metadata mutations the wire form could not carry")              \
  X(config_reload_ok, "Configuration snapshots applied")                                   \
  X(config_reload_rejected, "Configuration changes rejected (last good kept)")

// X(name, help). Exposed as metanode_<name>.
#define METANODE_GAUGES(X)                                    \
  X(downstream_cx_active, "Open downstream connections")      \
  X(downstream_queued_bytes, "Reply bytes queued for clients, not yet written") \
  X(upstream_cx_active, "Open upstream connections")          \
  X(upstream_rq_active, "Requests waiting for an upstream reply")

enum class Counter : int {
#define METANODE_ENUM(n, h) n,
  METANODE_COUNTERS(METANODE_ENUM)
#undef METANODE_ENUM
      kCount
};
enum class Gauge : int {
#define METANODE_ENUM(n, h) n,
  METANODE_GAUGES(METANODE_ENUM)
#undef METANODE_ENUM
      kCount
};

// The label set of Istio's standard request metrics (istio_requests_total,
// istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes) that varies per request; the source_* labels are
// "unknown" until pods are known by identity (docs/XDS.md).
struct RequestLabels {
  std::string destination_service;  // the service host; the dialled address without a listener
  std::string destination_version;  // the subset, or "unknown"
  std::string protocol;             // request_protocol: thrift, dubbo
  std::string response_code;        // Codec::response_code / error_code
  std::string response_flags;       // Envoy's: "-", NR, UH, UF, UO, UT, RL, OM
  // The client pod (PeerIdentity); "" is written "unknown".
  std::string source_workload, source_namespace, source_principal, source_app, source_version;
  std::string source_canonical_service, source_canonical_revision, source_cluster;
  // The endpoint's workload (istiod's endpoint metadata); "": unknown, and
  // the namespace is then the service's.
  std::string destination_workload, destination_workload_namespace;
  std::string destination_canonical_service, destination_canonical_revision, destination_cluster;
  auto key() const {
    return std::tie(destination_service, destination_version, protocol, response_code, response_flags,
                    source_workload, source_namespace, source_principal, source_app, source_version,
                    source_canonical_service, source_canonical_revision, source_cluster, destination_workload,
                    destination_workload_namespace, destination_canonical_service, destination_canonical_revision,
                    destination_cluster);
  }
  bool operator<(const RequestLabels& o) const { return key() < o.key(); }
  void set_source(const PeerIdentity* p) {
    if (!p) return;
    source_workload = p->workload;
    source_namespace = p->namespace_;
    source_principal = p->principal;
    source_app = p->app;
    source_version = p->version;
    source_canonical_service = p->canonical_service;
    source_canonical_revision = p->canonical_revision;
    source_cluster = p->cluster;
  }
};

// Envoy's default histogram bounds, which Istio's metrics use.
inline constexpr double kHistogramBounds[] = {0.5,  1,     5,     10,     25,     50,     100,
                                              250,  500,   1000,  2500,   5000,   10000,  30000,
                                              60000, 300000, 600000, 1800000, 3600000};
inline constexpr size_t kHistogramBuckets = std::size(kHistogramBounds) + 1;  // and +Inf

struct Histogram {
  std::atomic<uint64_t> bucket[kHistogramBuckets] = {};  // per bucket, not cumulative
  std::atomic<uint64_t> sum_milli{0};                    // thousandths of the unit
  void observe_milli(uint64_t v);
};

// One label set's series; stable in memory once created.
struct RequestSeries {
  std::atomic<uint64_t> requests{0};
  Histogram duration_ms, request_bytes, response_bytes;
  void record(Clock::duration took, size_t request_bytes, size_t response_bytes);
};

class StatsShard {
 public:
  void inc(Counter c, uint64_t n = 1) { counters_[int(c)].fetch_add(n, std::memory_order_relaxed); }
  void gauge_add(Gauge g, int64_t d) { gauges_[int(g)].fetch_add(d, std::memory_order_relaxed); }
  uint64_t get(Counter c) const { return counters_[int(c)].load(std::memory_order_relaxed); }
  int64_t get(Gauge g) const { return gauges_[int(g)].load(std::memory_order_relaxed); }

  // Returns the stable series of a label set; callers cache the pointer.
  RequestSeries* request_series(const RequestLabels& l);
  // For the scrape: every series (read with relaxed loads).
  std::vector<std::pair<RequestLabels, const RequestSeries*>> all_request_series() const;

 private:
  std::atomic<uint64_t> counters_[int(Counter::kCount)] = {};
  std::atomic<int64_t> gauges_[int(Gauge::kCount)] = {};
  mutable std::mutex mu_;  // guards the map's structure only
  std::map<RequestLabels, std::unique_ptr<RequestSeries>> requests_;
};

const char* counter_name(Counter c);
const char* gauge_name(Gauge g);

// Prometheus text exposition of the sum of `shards`, plus `extra` lines.
std::string render_prometheus(const std::vector<const StatsShard*>& shards,
                              const std::string& extra);

}  // namespace metanode::core
