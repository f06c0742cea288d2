// The daemon's configuration: an immutable snapshot compiled from xDS
// resources (whether they came over gRPC or from the embedded control
// plane). Workers hold a shared_ptr to one snapshot for as long as they use
// it; a new snapshot is swapped in atomically and never mutated, so the
// request path takes no lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "metanode/lb/load_balancer.h"
#include "metanode/net.h"
#include "metanode/protocol.h"
#include "metanode/protocol.h"
#include "metanode/result.h"
#include "metanode/xds/resources.h"
#include "metanode/xds/token_bucket.h"

namespace re2 {
class RE2;
}

namespace metanode::xds {

// The compiled policy is the balancer library's own enum: one list of
// policies and names for the configuration and the data plane.
using LbPolicy = lb::Policy;

struct Endpoint {
  net::Endpoint address;
  std::map<std::string, std::string> labels;
  uint32_t weight = 1;
  // The workload behind it, as istiod tells its proxies (filter metadata
  // "istio", field "workload": "NAME;NAMESPACE;CANONICAL;REVISION;CLUSTER"),
  // for the destination_* labels; empty when not told.
  std::string workload, workload_namespace, canonical_service, canonical_revision, cluster_id;
};

// Passive health checking (Envoy's OutlierDetection, Istio's DestinationRule
// outlierDetection) in RPC terms, see docs/ARCHITECTURE.md: a gateway error
// is a failure the proxy saw itself (connect failure, connection lost with
// the request in flight, timeout); an error is a gateway error or an error
// reply (Dubbo status other than OK or an exception result, a Thrift
// TApplicationException). A threshold of 0 is off.
struct OutlierDetection {
  uint32_t consecutive_gateway_errors = 0;
  uint32_t consecutive_errors = 0;
  std::chrono::milliseconds interval{10000};
  std::chrono::milliseconds base_ejection_time{30000};
  std::chrono::milliseconds max_ejection_time{300000};
  uint32_t max_ejection_percent = 10;
  bool enabled() const { return consecutive_gateway_errors || consecutive_errors; }
};

// Istio's connectionPool as Envoy receives it (circuit breakers, protocol
// options, keepalive). Limits are node-wide (all workers together); 0 is
// unlimited. Requests over a limit get a protocol-level error at once.
struct ConnectionPool {
  uint32_t max_connections = 0;       // per host (Istio's meaning)
  uint32_t max_pending_requests = 0;  // per cluster: waiting for a connection
  uint32_t max_requests = 0;          // per cluster: in flight
  uint32_t max_retries = 0;           // per cluster: concurrent retries; 0: the retry budget
  uint32_t max_requests_per_connection = 0;
  std::chrono::milliseconds idle_timeout{0};  // close an upstream connection idle this long
  std::chrono::milliseconds max_connection_duration{0};
  bool keepalive = false;
  uint32_t keepalive_probes = 0, keepalive_time_s = 0, keepalive_interval_s = 0;  // 0: kernel default
};

struct Cluster {
  std::string name;  // Istio form: outbound|<port>|<subset>|<host>
  LbPolicy lb = LbPolicy::kRoundRobin;
  uint64_t ring_size = 1024;          // ring hash: minimum_ring_size
  uint64_t maglev_table_size = 65537;  // Maglev: table_size
  OutlierDetection outlier;
  ConnectionPool pool;
  std::chrono::milliseconds connect_timeout{1000};
  std::string eds_service;  // EDS: the ClusterLoadAssignment to subscribe to; else empty
  std::vector<Endpoint> endpoints;
  // Parsed from the name, for metrics labels.
  std::string service_host;
  std::string subset;
};

// One attribute test, Envoy HeaderMatcher semantics over codec metadata.
struct AttributeMatcher {
  enum class Kind : uint8_t { kExact, kPrefix, kSuffix, kContains, kRegex, kPresent };
  std::string name;
  Kind kind = Kind::kExact;
  std::string value;
  std::shared_ptr<const re2::RE2> regex;  // set for kRegex
  bool invert = false;
  bool ignore_case = false;

  // `v` is the attribute's value or nullptr when the message lacks it.
  bool matches(const std::string* v) const;
};

struct ClusterRef {
  std::string name;
  uint32_t weight = 1;
  std::shared_ptr<const Cluster> cluster;  // null if no such cluster (yet)
};

// Same shape as codecs::KeyValue, so routes hand their mutations to a codec
// without copying.
using KeyValue = std::pair<std::string, std::string>;

struct Mirror {
  ClusterRef target;
  uint32_t per_million = 1000000;  // share of requests mirrored
};

// Envoy's RetryPolicy in RPC terms. A request that never reached the
// upstream (connect failed, connection lost before it was written) is always
// safe to send elsewhere; one that may have been executed is retried only
// when the policy names the failure (`on_*`) and, if `retriable` is set,
// one of its matchers holds (Envoy's retriable_request_headers; the
// manifest form fills it with the methods the user marks idempotent).
struct RetryPolicy {
  uint32_t num_retries = 1;  // the default: one retry of unwritten requests
  bool on_reset = false;     // connection lost after the request was written
  bool on_timeout = false;   // per-try timeout expired
  bool on_error_reply = false;  // upstream answered with an error reply
  std::chrono::milliseconds per_try_timeout{0};  // 0: none (the route's timeout)
  std::vector<AttributeMatcher> retriable;       // any of them; empty: every request
};

struct Route {
  std::string name;
  std::vector<AttributeMatcher> match;  // AND; empty matches everything
  std::vector<ClusterRef> clusters;     // one entry, or weighted
  uint32_t total_weight = 0;
  std::vector<std::string> hash_keys;  // consistent hash on these attributes
  bool hash_source_ip = false;         // ... and/or on the client's address
  std::vector<Mirror> mirrors;
  std::vector<KeyValue> request_mutation;
  std::vector<KeyValue> response_mutation;
  std::chrono::milliseconds timeout{0};  // 0: the daemon default
  RetryPolicy retry;
};

struct RouteTable {
  std::string name;
  std::vector<Route> routes;  // first match wins
};

// Aeraki's local rate limit filter on a listener: the first condition a
// request matches takes a token from its bucket; a request matching none
// takes one from the listener-wide bucket, if there is one. Buckets are
// node-wide (see token_bucket.h).
struct LocalRateLimit {
  struct Condition {
    std::vector<AttributeMatcher> match;  // AND
    std::shared_ptr<TokenBucket> bucket;
  };
  std::vector<Condition> conditions;
  std::shared_ptr<TokenBucket> bucket;  // may be null
};

// Aeraki's global rate limit filter: requests that match ask Envoy's rate
// limit service (ShouldRateLimit) with one descriptor built from their
// attributes; over limit is answered like a local limit. When the service
// cannot answer in time, deny_on_fail decides.
struct GlobalRateLimit {
  std::vector<AttributeMatcher> match;  // AND; empty matches everything
  std::string domain;
  std::chrono::milliseconds timeout{20};  // Aeraki's default
  bool deny_on_fail = false;
  std::string service_cluster;  // the rate limit service's cluster, resolved per request
  std::vector<std::pair<std::string, std::string>> descriptors;  // attribute -> descriptor key
};

struct Listener {
  std::string name;
  net::Endpoint address;
  Protocol protocol = Protocol::kThrift;  // its codec
  std::string route_name;
  // Where the route configuration comes from: empty for ADS, else the gRPC
  // cluster named by the filter's RDS config source (Aeraki: "aeraki-xds").
  std::string rds_cluster;
  std::string stat_prefix;
  std::string service_host;  // from stat_prefix outbound|port||host, for metrics
  std::shared_ptr<const RouteTable> routes;  // null until RDS delivers it
  std::shared_ptr<const LocalRateLimit> local_rate_limit;    // null: none
  std::shared_ptr<const GlobalRateLimit> global_rate_limit;  // null: none
};

struct Snapshot {
  std::string version;
  std::chrono::system_clock::time_point compiled_at;  // /config_dump's last_updated
  std::vector<Listener> listeners;
  std::map<net::Endpoint, size_t> listener_index;
  std::map<std::string, std::shared_ptr<const Cluster>, std::less<>> clusters;
  std::map<std::string, std::shared_ptr<const RouteTable>, std::less<>> routes;
  Resources resources;  // what it was compiled from, for /config_dump
  // What the source sent that did not compile (/config_dump's error_state;
  // each keeps its last good version in `resources`, if it had one).
  std::vector<Reject> refused;

  // The very resources each compiled object was made from. The next compile
  // reuses an object whose inputs are the same objects (resources are
  // immutable and shared, see resources.h): one edited route compiles one
  // route table, and the workers keep the balancers and connection pools of
  // every cluster that did not change, since they know clusters by address.
  struct Origins {
    struct ClusterFrom {
      Shared<envoy::config::cluster::v3::Cluster> cluster;
      Shared<envoy::config::endpoint::v3::ClusterLoadAssignment> endpoints;  // null: none
      // Set if `endpoints` was refused for this reason and the cluster kept
      // without endpoints: reusing it names the assignment again.
      std::string endpoints_rejected;
    };
    static constexpr size_t kNotOurs = ~size_t(0);  // a listener without a MetaProtocolProxy
    std::unordered_map<std::string, ClusterFrom> clusters;
    std::unordered_map<std::string, Shared<envoy::config::route::v3::RouteConfiguration>> routes;
    // name -> (resource, index in `listeners` or kNotOurs)
    std::unordered_map<std::string, std::pair<Shared<envoy::config::listener::v3::Listener>, size_t>> listeners;
  } origins;

  const Listener* find_listener(net::Endpoint addr) const {
    auto it = listener_index.find(addr);
    return it == listener_index.end() ? nullptr : &listeners[it->second];
  }
  const Cluster* find_cluster(std::string_view name) const {
    auto it = clusters.find(name);
    return it == clusters.end() ? nullptr : it->second.get();
  }
};

// Compiles resources one by one: a resource that does not validate is left
// out and named in `rejects` (type, name, reason), the rest still compile.
// `snapshot->resources` holds only what was accepted. With `previous` (the
// snapshot compiled before), what comes from the same resources as there is
// taken from it instead of compiled again (Snapshot::Origins).
struct Compiled {
  std::shared_ptr<Snapshot> snapshot;  // the caller's until published
  std::vector<Reject> rejects;
  size_t compiled = 0, reused = 0;  // clusters, route tables and listeners
};
Compiled compile_snapshot(Resources resources, const Snapshot* previous = nullptr);

// All or nothing: the first reject is the error. For manifests, which are
// validated as a whole before they become resources.
Result<std::shared_ptr<const Snapshot>> build_snapshot(Resources resources);

// "outbound|9090|v1|host" -> {host, subset}; false if not in that form.
bool parse_cluster_name(std::string_view name, std::string& host, std::string& subset,
                        uint32_t& port);

}  // namespace metanode::xds
