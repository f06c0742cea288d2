// Istio/Aeraki manifests -> xDS, following what Aeraki generates (see
// docs/XDS.md for the naming and the sources it was checked against):
//   listener  "<vip>_<port>" with a MetaProtocolProxy filter (RDS name
//             "<host>_<port>", codec aeraki.meta_protocol.codec.<proto>)
//   clusters  "outbound|<port>||<host>" and one per DestinationRule subset
//             "outbound|<port>|<subset>|<host>", endpoints through EDS
//   routes    MetaRouter routes as an Envoy RouteConfiguration with one
//             virtual host, or a single default route to the whole service.
#include "metanode/xds/k8s_config.h"

#include <dirent.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <algorithm>
#include <fstream>
#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "aeraki/meta_protocol_proxy/filters/global_ratelimit/v1alpha/global_ratelimit.pb.h"
#include "aeraki/meta_protocol_proxy/filters/local_ratelimit/v1alpha/local_ratelimit.pb.h"
#include "aeraki/meta_protocol_proxy/v1alpha/meta_protocol_proxy.pb.h"
#include "udpa/type/v1/typed_struct.pb.h"
#include "metanode/net.h"
#include "metanode/protocol.h"
#include "metanode/xds/manifest_source.h"

namespace metanode::xds {
namespace {

// Where an object came from, for error messages.
struct Origin {
  std::string file;
  std::string kind;
  std::string ns;
  std::string name;
  // A number no other parse of any object has: an object kept from an
  // unchanged file keeps it, a file parsed again gets new ones. What a host
  // generates is reused while its objects' serials are the same.
  uint64_t serial = 0;
  std::string str() const { return file + ": " + kind + " " + ns + "/" + name; }
};

uint64_t next_serial() {
  static std::atomic<uint64_t> n{0};
  return ++n;
}

// Config parsing may throw (yaml-cpp does); the translator catches at its
// boundary and turns this into an Error that names file, object and field.
struct ConfigError {
  std::string message;
};

[[noreturn]] void fail(const Origin& o, const std::string& field, const std::string& what) {
  throw ConfigError{o.str() + ": " + field + ": " + what};
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += n;
  }
  return true;
}

// Every string that reaches a resource must be UTF-8: protobuf strings are,
// and so are metric labels.
std::string scalar(const YAML::Node& n, const Origin& o, const std::string& field) {
  if (!n || n.IsNull()) return {};
  if (!n.IsScalar()) fail(o, field, "expected a string");
  std::string v = n.as<std::string>();
  if (!valid_utf8(v)) fail(o, field, "not valid UTF-8");
  return v;
}

uint32_t number(const YAML::Node& n, const Origin& o, const std::string& field, uint32_t max) {
  if (!n || n.IsNull()) return 0;
  if (!n.IsScalar()) fail(o, field, "expected a number");
  long long v;
  try {
    v = n.as<long long>();
  } catch (const YAML::Exception&) {
    fail(o, field, "'" + n.as<std::string>() + "' is not a number");
  }
  if (v < 0 || uint64_t(v) > max) fail(o, field, std::to_string(v) + " out of range");
  return uint32_t(v);
}

std::map<std::string, std::string> labels(const YAML::Node& n, const Origin& o,
                                          const std::string& field) {
  std::map<std::string, std::string> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsMap()) fail(o, field, "expected a map of labels");
  for (const auto& kv : n) out[scalar(kv.first, o, field + " key")] = scalar(kv.second, o, field);
  return out;
}

std::vector<std::string> strings(const YAML::Node& n, const Origin& o, const std::string& field) {
  std::vector<std::string> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) fail(o, field, "expected a list");
  for (size_t i = 0; i < n.size(); ++i)
    out.push_back(scalar(n[i], o, field + "[" + std::to_string(i) + "]"));
  return out;
}

void expect_map(const YAML::Node& n, const Origin& o, const std::string& field) {
  if (n && !n.IsNull() && !n.IsMap()) fail(o, field, "expected a map");
}

// A field we accept is a field we execute: anything else in a map is
// rejected by name, so a setting never silently does nothing.
void allow_only(const YAML::Node& n, const Origin& o, const std::string& field,
                std::initializer_list<const char*> known) {
  if (!n || !n.IsMap()) return;
  for (const auto& kv : n) {
    std::string key = kv.first.IsScalar() ? kv.first.as<std::string>() : "?";
    bool ok = std::any_of(known.begin(), known.end(), [&](const char* k) { return key == k; });
    if (ok) continue;
    std::string list;
    for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    fail(o, (field.empty() ? "" : field + ".") + key,
         "not supported by metanode (supported here: " + list + ")");
  }
}

bool boolean(const YAML::Node& n, const Origin& o, const std::string& field) {
  if (!n || n.IsNull()) return false;
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    fail(o, field, "expected true or false");
  }
}

// Istio durations: "10s", "0.5s", "500ms", "1m", "1h".
uint32_t duration_ms(const YAML::Node& n, const Origin& o, const std::string& field) {
  std::string v = scalar(n, o, field);
  if (v.empty()) return 0;
  size_t i = 0;
  while (i < v.size() && (std::isdigit(static_cast<unsigned char>(v[i])) || v[i] == '.')) ++i;
  std::string num = v.substr(0, i), unit = v.substr(i);
  double x = 0;
  try {
    size_t used = 0;
    x = std::stod(num, &used);
    if (used != num.size()) throw std::invalid_argument(num);
  } catch (const std::exception&) {
    fail(o, field, "'" + v + "' is not a duration (e.g. 10s, 500ms)");
  }
  double scale = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : unit == "h" ? 3600000 : -1;
  if (scale < 0) fail(o, field, "'" + v + "' is not a duration (units: ms, s, m, h)");
  double ms = x * scale;
  if (ms < 1 || ms > 86400000.0 * 30) fail(o, field, "'" + v + "' out of range (1ms to 30 days)");
  return uint32_t(ms);
}

// Kubernetes names and hosts are DNS-1123 (Istio also allows a leading "*."
// wildcard). Checking here keeps arbitrary bytes out of resource names, which
// are protobuf strings (UTF-8) and metric labels.
bool dns_name(const std::string& s, bool allow_wildcard) {
  if (s.empty() || s.size() > 253) return false;
  size_t i = 0;
  if (allow_wildcard && s.rfind("*.", 0) == 0) i = 2;
  if (allow_wildcard && s == "*") return true;
  for (; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
              (c >= 'A' && c <= 'Z');
    if (!ok) return false;
  }
  return s.front() != '.' && s.front() != '-' && s.back() != '.' && s.back() != '-';
}

std::string checked_name(const YAML::Node& n, const Origin& o, const std::string& field,
                         bool allow_wildcard = false) {
  std::string v = scalar(n, o, field);
  if (!v.empty() && !dns_name(v, allow_wildcard))
    fail(o, field, "'" + v + "' is not a valid DNS-1123 name");
  return v;
}

// Istio resolves short host names in the object's namespace.
std::string fqdn(const std::string& host, const std::string& ns) {
  if (host.find('.') != std::string::npos || ns.empty()) return host;
  return host + "." + ns + ".svc.cluster.local";
}

// ---- parsed objects --------------------------------------------------------

struct SePort {
  uint32_t number = 0;
  uint32_t target_port = 0;
  std::string name;
  std::string protocol;  // "thrift" / "dubbo" for MetaProtocol ports, else empty
};

struct SeEndpoint {
  std::string address;
  std::map<std::string, std::string> labels;
  std::map<std::string, uint32_t> ports;
  uint32_t weight = 0;
};

struct ServiceEntry {
  Origin origin;
  std::vector<std::string> hosts;
  std::vector<std::string> addresses;
  std::vector<SePort> ports;
  std::vector<SeEndpoint> endpoints;
};

// DestinationRule trafficPolicy, each part optional so that a subset's or a
// port's setting replaces the part it sets and inherits the rest (Istio).
struct LoadBalancerSpec {
  std::string simple;     // ROUND_ROBIN, LEAST_REQUEST, RANDOM (empty: default)
  std::string hash_attr;  // consistentHash.httpHeaderName
  bool hash_source_ip = false;
  bool maglev = false;
  uint64_t ring_size = 0;    // 0: Envoy's default
  uint64_t table_size = 0;   // 0: Envoy's default
  bool hashes() const { return !hash_attr.empty() || hash_source_ip; }
};

struct OutlierSpec {
  uint32_t gateway = 0, errors = 0;  // consecutive thresholds, 0 off
  uint32_t interval_ms = 0, base_ejection_ms = 0, max_ejection_percent = 0;
  bool has_max_ejection_percent = false;
};

struct PoolSpec {
  uint32_t max_connections = 0, connect_timeout_ms = 0, max_connection_duration_ms = 0;
  bool keepalive = false;
  uint32_t keepalive_probes = 0, keepalive_time_ms = 0, keepalive_interval_ms = 0;
  uint32_t max_pending = 0, max_requests = 0, max_requests_per_connection = 0, max_retries = 0;
  uint32_t idle_timeout_ms = 0;
};

struct TrafficPolicy {
  std::optional<LoadBalancerSpec> lb;
  std::optional<OutlierSpec> outlier;
  std::optional<PoolSpec> pool;
  std::map<uint32_t, TrafficPolicy> ports;  // portLevelSettings (not nested)
  // Applies `over` on top of this: what it sets wins.
  TrafficPolicy merged(const TrafficPolicy& over) const {
    TrafficPolicy t = *this;
    if (over.lb) t.lb = over.lb;
    if (over.outlier) t.outlier = over.outlier;
    if (over.pool) t.pool = over.pool;
    return t;
  }
  TrafficPolicy for_port(uint32_t port) const {
    auto it = ports.find(port);
    return it == ports.end() ? *this : merged(it->second);
  }
};

struct Subset {
  std::string name;
  std::map<std::string, std::string> labels;
  TrafficPolicy policy;
};

struct DestinationRule {
  Origin origin;
  std::string host;
  TrafficPolicy policy;
  std::vector<Subset> subsets;
};

struct StringMatch {
  enum Kind { kExact, kPrefix, kRegex, kPresent } kind = kPresent;
  std::string value;
};

struct Destination {
  std::string host;
  std::string subset;
  uint32_t port = 0;
  uint32_t weight = 0;
};

struct MetaRoute {
  std::string name;
  std::vector<std::pair<std::string, StringMatch>> match;
  std::vector<Destination> route;
  bool has_mirror = false;
  Destination mirror;
  double mirror_percent = 100;
  std::vector<std::pair<std::string, std::string>> request_mutation, response_mutation;
};

// metanode's additions to a MetaRouter, as annotations (Aeraki's CRD
// schema would prune unknown spec fields): see docs/XDS.md.
struct RouteResilience {
  uint32_t timeout_ms = 0;
  bool has_retries = false;
  uint32_t attempts = 1;
  uint32_t per_try_timeout_ms = 0;
  std::string retry_on;
  std::vector<std::string> idempotent_methods;
};

struct Bucket {
  uint32_t max_tokens = 0, tokens_per_fill = 0, fill_interval_ms = 0;
};

struct RateLimitSpec {
  std::optional<Bucket> bucket;
  std::vector<std::pair<std::vector<std::pair<std::string, StringMatch>>, Bucket>> conditions;
};

struct GlobalRateLimitSpec {
  std::vector<std::pair<std::string, StringMatch>> match;
  std::string domain;
  uint32_t timeout_ms = 0;
  bool deny_on_fail = false;
  std::string service;  // outbound|port||host
  std::vector<std::pair<std::string, std::string>> descriptors;
};

struct MetaRouter {
  Origin origin;
  std::string host;
  std::vector<MetaRoute> routes;
  RouteResilience resilience;
  std::optional<RateLimitSpec> local_rate_limit;
  std::optional<GlobalRateLimitSpec> global_rate_limit;
};

struct Objects {
  std::vector<ServiceEntry> service_entries;
  std::vector<DestinationRule> destination_rules;
  std::vector<MetaRouter> meta_routers;
};

// Every file's objects, by reference (the translator keeps the objects).
struct ObjectRefs {
  std::vector<const ServiceEntry*> service_entries;
  std::vector<const DestinationRule*> destination_rules;
  std::vector<const MetaRouter*> meta_routers;
};

// "tcp-metaprotocol-thrift-hello" -> "thrift"; Aeraki splits on '-'.
std::string metaprotocol_of(const std::string& port_name) {
  std::vector<std::string> parts;
  std::stringstream ss(port_name);
  std::string p;
  while (std::getline(ss, p, '-')) parts.push_back(p);
  if (parts.size() < 3 || parts[1] != "metaprotocol") return {};
  return parts[2];
}

// One daemon serves every pod of the node, so visibility narrower than the
// whole mesh cannot be honoured.
void check_export_to(const YAML::Node& spec, const Origin& o) {
  for (const auto& e : strings(spec["exportTo"], o, "spec.exportTo"))
    if (e != "*")
      fail(o, "spec.exportTo", "'" + e + "': only \"*\" (visible to the whole mesh) is supported");
}

ServiceEntry parse_service_entry(const YAML::Node& spec, const Origin& o) {
  ServiceEntry se;
  se.origin = o;
  if (spec["workloadSelector"])
    fail(o, "spec.workloadSelector", "not supported by the embedded control plane; list endpoints");
  allow_only(spec, o, "spec", {"hosts", "addresses", "ports", "endpoints", "location", "resolution",
                               "exportTo"});
  check_export_to(spec, o);
  std::string res = scalar(spec["resolution"], o, "spec.resolution");
  if (!res.empty() && res != "STATIC" && res != "NONE")
    fail(o, "spec.resolution", "'" + res + "' is not supported: endpoints are IP addresses (STATIC)");
  se.hosts = strings(spec["hosts"], o, "spec.hosts");
  if (se.hosts.empty()) fail(o, "spec.hosts", "at least one host is required");
  for (size_t i = 0; i < se.hosts.size(); ++i)
    if (!dns_name(se.hosts[i], true))
      fail(o, "spec.hosts[" + std::to_string(i) + "]", "'" + se.hosts[i] + "' is not a valid host name");
  for (auto& h : se.hosts) h = fqdn(h, o.ns);
  se.addresses = strings(spec["addresses"], o, "spec.addresses");
  for (size_t i = 0; i < se.addresses.size(); ++i)
    if (!net::parse_ipv4(se.addresses[i]))
      fail(o, "spec.addresses[" + std::to_string(i) + "]",
           "'" + se.addresses[i] + "' is not an IPv4 address (CIDR ranges are not supported)");
  const YAML::Node ports = spec["ports"];
  if (ports && !ports.IsSequence()) fail(o, "spec.ports", "expected a list");
  for (size_t i = 0; ports && i < ports.size(); ++i) {
    std::string f = "spec.ports[" + std::to_string(i) + "]";
    allow_only(ports[i], o, f, {"number", "targetPort", "name", "protocol"});
    SePort p;
    p.number = number(ports[i]["number"], o, f + ".number", 65535);
    if (p.number == 0) fail(o, f + ".number", "a port number is required");
    p.target_port = number(ports[i]["targetPort"], o, f + ".targetPort", 65535);
    p.name = checked_name(ports[i]["name"], o, f + ".name");
    p.protocol = metaprotocol_of(p.name);
    // "auto" (a metanode extension): the protocol is recognised from the
    // first bytes of each connection, for services that speak both.
    if (!p.protocol.empty() && !parse_protocol(p.protocol))
      fail(o, f + ".name", "unsupported metaprotocol '" + p.protocol + "' (" + std::string(kProtocolNames) + ")");
    se.ports.push_back(p);
  }
  const YAML::Node eps = spec["endpoints"];
  if (eps && !eps.IsSequence()) fail(o, "spec.endpoints", "expected a list");
  for (size_t i = 0; eps && i < eps.size(); ++i) {
    std::string f = "spec.endpoints[" + std::to_string(i) + "]";
    allow_only(eps[i], o, f, {"address", "labels", "ports", "weight"});
    SeEndpoint e;
    e.address = scalar(eps[i]["address"], o, f + ".address");
    if (!net::parse_ipv4(e.address))
      fail(o, f + ".address", "'" + e.address + "' is not an IPv4 address");
    e.labels = labels(eps[i]["labels"], o, f + ".labels");
    expect_map(eps[i]["ports"], o, f + ".ports");
    if (eps[i]["ports"])
      for (const auto& kv : eps[i]["ports"])
        e.ports[scalar(kv.first, o, f + ".ports key")] = number(kv.second, o, f + ".ports", 65535);
    e.weight = number(eps[i]["weight"], o, f + ".weight", 1u << 31);
    se.endpoints.push_back(std::move(e));
  }
  return se;
}

LoadBalancerSpec parse_load_balancer(const YAML::Node& l, const Origin& o, const std::string& f) {
  LoadBalancerSpec lb;
  expect_map(l, o, f);
  allow_only(l, o, f, {"simple", "consistentHash"});
  lb.simple = scalar(l["simple"], o, f + ".simple");
  if (lb.simple == "LEAST_CONN") lb.simple = "LEAST_REQUEST";  // Istio's deprecated name
  if (lb.simple == "UNSPECIFIED") lb.simple.clear();
  if (lb.simple == "PASSTHROUGH")
    fail(o, f + ".simple", "PASSTHROUGH (connect to the original destination) is not supported: "
                           "metanode balances over the service's endpoints");
  if (!lb.simple.empty() && lb.simple != "ROUND_ROBIN" && lb.simple != "LEAST_REQUEST" &&
      lb.simple != "RANDOM")
    fail(o, f + ".simple", "unknown policy '" + lb.simple + "'");
  if (const YAML::Node ch = l["consistentHash"]) {
    std::string cf = f + ".consistentHash";
    expect_map(ch, o, cf);
    allow_only(ch, o, cf, {"httpHeaderName", "useSourceIp", "ringHash", "maglev", "minimumRingSize"});
    if (!lb.simple.empty()) fail(o, cf, "set either simple or consistentHash, not both");
    // Aeraki maps httpHeaderName to a request attribute (metadata key).
    lb.hash_attr = scalar(ch["httpHeaderName"], o, cf + ".httpHeaderName");
    lb.hash_source_ip = boolean(ch["useSourceIp"], o, cf + ".useSourceIp");
    if (!lb.hashes())
      fail(o, cf, "needs httpHeaderName (a request attribute) or useSourceIp: true");
    if (!lb.hash_attr.empty() && lb.hash_source_ip)
      fail(o, cf, "set one of httpHeaderName and useSourceIp");
    lb.ring_size = number(ch["minimumRingSize"], o, cf + ".minimumRingSize", 8u << 20);
    if (const YAML::Node r = ch["ringHash"]) {
      allow_only(r, o, cf + ".ringHash", {"minimumRingSize"});
      lb.ring_size = number(r["minimumRingSize"], o, cf + ".ringHash.minimumRingSize", 8u << 20);
    }
    if (const YAML::Node m = ch["maglev"]) {
      allow_only(m, o, cf + ".maglev", {"tableSize"});
      if (ch["ringHash"]) fail(o, cf, "set one of ringHash and maglev");
      lb.maglev = true;
      lb.table_size = number(m["tableSize"], o, cf + ".maglev.tableSize", 5000011);
    }
  }
  return lb;
}

OutlierSpec parse_outlier(const YAML::Node& n, const Origin& o, const std::string& f) {
  OutlierSpec od;
  expect_map(n, o, f);
  allow_only(n, o, f, {"consecutiveGatewayErrors", "consecutive5xxErrors", "consecutiveErrors",
                       "interval", "baseEjectionTime", "maxEjectionPercent", "minHealthPercent"});
  od.gateway = number(n["consecutiveGatewayErrors"], o, f + ".consecutiveGatewayErrors", 1u << 20);
  // Istio's deprecated consecutiveErrors counted gateway errors.
  if (n["consecutiveErrors"] && !n["consecutiveGatewayErrors"])
    od.gateway = number(n["consecutiveErrors"], o, f + ".consecutiveErrors", 1u << 20);
  // Istio defaults consecutive5xxErrors to 5 when the block is present.
  od.errors = n["consecutive5xxErrors"]
                  ? number(n["consecutive5xxErrors"], o, f + ".consecutive5xxErrors", 1u << 20)
                  : 5;
  od.interval_ms = duration_ms(n["interval"], o, f + ".interval");
  od.base_ejection_ms = duration_ms(n["baseEjectionTime"], o, f + ".baseEjectionTime");
  od.has_max_ejection_percent = bool(n["maxEjectionPercent"]);
  od.max_ejection_percent = number(n["maxEjectionPercent"], o, f + ".maxEjectionPercent", 100);
  if (number(n["minHealthPercent"], o, f + ".minHealthPercent", 100) != 0)
    fail(o, f + ".minHealthPercent",
         "not supported: metanode always balances over all hosts when none is usable");
  return od;
}

PoolSpec parse_pool(const YAML::Node& n, const Origin& o, const std::string& f) {
  PoolSpec p;
  expect_map(n, o, f);
  allow_only(n, o, f, {"tcp", "http"});
  if (const YAML::Node t = n["tcp"]) {
    std::string tf = f + ".tcp";
    expect_map(t, o, tf);
    if (t["idleTimeout"])
      fail(o, tf + ".idleTimeout", "not supported for RPC connections: use http.idleTimeout, which "
                                   "metanode applies to pooled upstream connections");
    allow_only(t, o, tf, {"maxConnections", "connectTimeout", "tcpKeepalive", "maxConnectionDuration"});
    p.max_connections = number(t["maxConnections"], o, tf + ".maxConnections", 1u << 30);
    p.connect_timeout_ms = duration_ms(t["connectTimeout"], o, tf + ".connectTimeout");
    p.max_connection_duration_ms = duration_ms(t["maxConnectionDuration"], o, tf + ".maxConnectionDuration");
    if (const YAML::Node k = t["tcpKeepalive"]) {
      allow_only(k, o, tf + ".tcpKeepalive", {"probes", "time", "interval"});
      p.keepalive = true;
      p.keepalive_probes = number(k["probes"], o, tf + ".tcpKeepalive.probes", 127);
      p.keepalive_time_ms = duration_ms(k["time"], o, tf + ".tcpKeepalive.time");
      p.keepalive_interval_ms = duration_ms(k["interval"], o, tf + ".tcpKeepalive.interval");
    }
  }
  if (const YAML::Node h = n["http"]) {
    // Istio's HTTP settings in RPC terms: a request is an RPC, a pending
    // request one waiting for an upstream connection.
    std::string hf = f + ".http";
    expect_map(h, o, hf);
    for (const char* k : {"h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"})
      if (h[k]) fail(o, hf + "." + k, "an HTTP-only setting; it has no meaning for Dubbo or Thrift");
    allow_only(h, o, hf, {"http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection",
                          "maxRetries", "idleTimeout"});
    p.max_pending = number(h["http1MaxPendingRequests"], o, hf + ".http1MaxPendingRequests", 1u << 30);
    p.max_requests = number(h["http2MaxRequests"], o, hf + ".http2MaxRequests", 1u << 30);
    p.max_requests_per_connection =
        number(h["maxRequestsPerConnection"], o, hf + ".maxRequestsPerConnection", 1u << 30);
    p.max_retries = number(h["maxRetries"], o, hf + ".maxRetries", 1u << 30);
    p.idle_timeout_ms = duration_ms(h["idleTimeout"], o, hf + ".idleTimeout");
  }
  return p;
}

TrafficPolicy parse_traffic_policy(const YAML::Node& tp, const Origin& o, const std::string& f,
                                   bool allow_ports) {
  TrafficPolicy t;
  if (!tp || tp.IsNull()) return t;
  expect_map(tp, o, f);
  if (tp["tls"]) {
    std::string mode = scalar(tp["tls"]["mode"], o, f + ".tls.mode");
    if (mode != "DISABLE")
      fail(o, f + ".tls", "TLS to upstreams is not supported yet (only mode: DISABLE)");
  }
  if (allow_ports)
    allow_only(tp, o, f, {"loadBalancer", "outlierDetection", "connectionPool", "tls", "portLevelSettings"});
  else
    allow_only(tp, o, f, {"loadBalancer", "outlierDetection", "connectionPool", "tls", "port"});
  if (tp["connectionPool"]) t.pool = parse_pool(tp["connectionPool"], o, f + ".connectionPool");
  if (tp["loadBalancer"]) t.lb = parse_load_balancer(tp["loadBalancer"], o, f + ".loadBalancer");
  if (tp["outlierDetection"])
    t.outlier = parse_outlier(tp["outlierDetection"], o, f + ".outlierDetection");
  if (const YAML::Node pls = tp["portLevelSettings"]) {
    if (!pls.IsSequence()) fail(o, f + ".portLevelSettings", "expected a list");
    for (size_t i = 0; i < pls.size(); ++i) {
      std::string pf = f + ".portLevelSettings[" + std::to_string(i) + "]";
      uint32_t port = number(pls[i]["port"]["number"], o, pf + ".port.number", 65535);
      if (port == 0) fail(o, pf + ".port.number", "required");
      allow_only(pls[i]["port"], o, pf + ".port", {"number"});
      if (!t.ports.emplace(port, parse_traffic_policy(pls[i], o, pf, false)).second)
        fail(o, pf + ".port.number", "port " + std::to_string(port) + " listed twice");
    }
  }
  return t;
}

DestinationRule parse_destination_rule(const YAML::Node& spec, const Origin& o) {
  DestinationRule dr;
  dr.origin = o;
  allow_only(spec, o, "spec", {"host", "trafficPolicy", "subsets", "exportTo"});
  dr.host = fqdn(checked_name(spec["host"], o, "spec.host", true), o.ns);
  if (dr.host.empty()) fail(o, "spec.host", "required");
  check_export_to(spec, o);
  dr.policy = parse_traffic_policy(spec["trafficPolicy"], o, "spec.trafficPolicy", true);
  const YAML::Node subsets = spec["subsets"];
  if (subsets && !subsets.IsSequence()) fail(o, "spec.subsets", "expected a list");
  std::set<std::string> seen;
  for (size_t i = 0; subsets && i < subsets.size(); ++i) {
    std::string f = "spec.subsets[" + std::to_string(i) + "]";
    Subset s;
    s.name = checked_name(subsets[i]["name"], o, f + ".name");
    if (s.name.empty()) fail(o, f + ".name", "required");
    if (!seen.insert(s.name).second) fail(o, f + ".name", "duplicate subset '" + s.name + "'");
    allow_only(subsets[i], o, f, {"name", "labels", "trafficPolicy"});
    s.labels = labels(subsets[i]["labels"], o, f + ".labels");
    s.policy = parse_traffic_policy(subsets[i]["trafficPolicy"], o, f + ".trafficPolicy", true);
    dr.subsets.push_back(std::move(s));
  }
  return dr;
}

Destination parse_destination(const YAML::Node& d, const Origin& o, const std::string& f,
                              const std::string& ns) {
  Destination out;
  if (!d || !d.IsMap()) fail(o, f, "a destination (host, subset) is required");
  allow_only(d, o, f, {"host", "subset", "port"});
  allow_only(d["port"], o, f + ".port", {"number"});
  out.host = fqdn(checked_name(d["host"], o, f + ".host", true), ns);
  if (out.host.empty()) fail(o, f + ".host", "required");
  out.subset = checked_name(d["subset"], o, f + ".subset");
  if (d["port"]) out.port = number(d["port"]["number"], o, f + ".port.number", 65535);
  return out;
}

// A MetaRouter match: {attributes: {key: {exact|prefix|regex: v}}}.
std::vector<std::pair<std::string, StringMatch>> parse_match(const YAML::Node& match, const Origin& o,
                                                             const std::string& mf) {
  std::vector<std::pair<std::string, StringMatch>> out;
  expect_map(match, o, mf);
  allow_only(match, o, mf, {"attributes"});
  if (const YAML::Node attrs = match ? match["attributes"] : YAML::Node(); attrs && !attrs.IsNull()) {
    if (!attrs.IsMap()) fail(o, mf + ".attributes", "expected a map");
    for (const auto& kv : attrs) {
      std::string key = scalar(kv.first, o, mf + ".attributes key");
      std::string af = mf + ".attributes." + key;
      StringMatch m;
      const YAML::Node v = kv.second;
      if (v && !v.IsNull() && !v.IsMap()) fail(o, af, "expected exact, prefix or regex");
      allow_only(v, o, af, {"exact", "prefix", "regex"});
      int set = 0;
      if (v && v["exact"]) m = {StringMatch::kExact, scalar(v["exact"], o, af + ".exact")}, ++set;
      if (v && v["prefix"]) m = {StringMatch::kPrefix, scalar(v["prefix"], o, af + ".prefix")}, ++set;
      if (v && v["regex"]) {
        m = {StringMatch::kRegex, scalar(v["regex"], o, af + ".regex")};
        ++set;
        // Aeraki: an empty or "*" regex means "the attribute is present".
        if (m.value.empty() || m.value == "*") m.kind = StringMatch::kPresent;
      }
      if (set > 1) fail(o, af, "only one of exact, prefix, regex");
      out.emplace_back(key, m);
    }
  }
  return out;
}

Bucket parse_bucket(const YAML::Node& n, const Origin& o, const std::string& f) {
  if (!n || !n.IsMap()) fail(o, f, "a tokenBucket {maxTokens, tokensPerFill, fillInterval} is required");
  allow_only(n, o, f, {"maxTokens", "tokensPerFill", "fillInterval"});
  Bucket b;
  b.max_tokens = number(n["maxTokens"], o, f + ".maxTokens", 1u << 30);
  if (b.max_tokens == 0) fail(o, f + ".maxTokens", "must be positive");
  b.tokens_per_fill = n["tokensPerFill"] ? number(n["tokensPerFill"], o, f + ".tokensPerFill", 1u << 30) : 1;
  if (b.tokens_per_fill == 0) fail(o, f + ".tokensPerFill", "must be positive");
  b.fill_interval_ms = duration_ms(n["fillInterval"], o, f + ".fillInterval");
  if (b.fill_interval_ms == 0) fail(o, f + ".fillInterval", "required");
  return b;
}

RateLimitSpec parse_local_rate_limit(const YAML::Node& n, const Origin& o, const std::string& f) {
  RateLimitSpec rl;
  expect_map(n, o, f);
  allow_only(n, o, f, {"tokenBucket", "conditions"});
  if (n["tokenBucket"]) rl.bucket = parse_bucket(n["tokenBucket"], o, f + ".tokenBucket");
  if (const YAML::Node cs = n["conditions"]) {
    if (!cs.IsSequence()) fail(o, f + ".conditions", "expected a list");
    for (size_t i = 0; i < cs.size(); ++i) {
      std::string cf = f + ".conditions[" + std::to_string(i) + "]";
      allow_only(cs[i], o, cf, {"match", "tokenBucket"});
      rl.conditions.emplace_back(parse_match(cs[i]["match"], o, cf + ".match"),
                                 parse_bucket(cs[i]["tokenBucket"], o, cf + ".tokenBucket"));
    }
  }
  if (!rl.bucket && rl.conditions.empty()) fail(o, f, "needs a tokenBucket or conditions");
  return rl;
}

GlobalRateLimitSpec parse_global_rate_limit(const YAML::Node& n, const Origin& o, const std::string& f) {
  GlobalRateLimitSpec g;
  expect_map(n, o, f);
  allow_only(n, o, f, {"match", "domain", "requestTimeout", "denyOnFail", "rateLimitService", "descriptors"});
  g.match = parse_match(n["match"], o, f + ".match");
  g.domain = scalar(n["domain"], o, f + ".domain");
  if (g.domain.empty()) fail(o, f + ".domain", "required");
  g.timeout_ms = duration_ms(n["requestTimeout"], o, f + ".requestTimeout");
  g.deny_on_fail = boolean(n["denyOnFail"], o, f + ".denyOnFail");
  g.service = scalar(n["rateLimitService"], o, f + ".rateLimitService");
  if (g.service.empty())
    fail(o, f + ".rateLimitService", "required: the service's cluster, outbound|<port>||<host>");
  const YAML::Node ds = n["descriptors"];
  if (!ds || !ds.IsSequence() || ds.size() == 0)
    fail(o, f + ".descriptors", "at least one {property, descriptorKey} is required");
  for (size_t i = 0; i < ds.size(); ++i) {
    std::string df = f + ".descriptors[" + std::to_string(i) + "]";
    allow_only(ds[i], o, df, {"property", "descriptorKey"});
    std::string prop = scalar(ds[i]["property"], o, df + ".property");
    std::string key = scalar(ds[i]["descriptorKey"], o, df + ".descriptorKey");
    if (prop.empty()) fail(o, df + ".property", "required");
    if (key.empty()) fail(o, df + ".descriptorKey", "required");
    g.descriptors.emplace_back(prop, key);
  }
  return g;
}

constexpr const char* kTimeoutAnnotation = "metanode.io/timeout";
constexpr const char* kRetriesAnnotation = "metanode.io/retries";

RouteResilience parse_resilience(const std::map<std::string, std::string>& annotations,
                                 const Origin& o) {
  RouteResilience r;
  for (const auto& [k, v] : annotations) {
    if (k.rfind("metanode.io/", 0) != 0) continue;
    std::string f = "metadata.annotations." + k;
    if (k == kTimeoutAnnotation) {
      r.timeout_ms = duration_ms(YAML::Node(v), o, f);
    } else if (k == kRetriesAnnotation) {
      YAML::Node n;
      try {
        n = YAML::Load(v);
      } catch (const YAML::Exception& e) {
        fail(o, f, "expected a map such as {attempts: 2, retryOn: connect-failure}: " + e.msg);
      }
      if (!n.IsMap()) fail(o, f, "expected a map such as {attempts: 2, retryOn: connect-failure}");
      allow_only(n, o, f, {"attempts", "perTryTimeout", "retryOn", "idempotentMethods"});
      r.has_retries = true;
      r.attempts = number(n["attempts"], o, f + ".attempts", 10);
      r.per_try_timeout_ms = duration_ms(n["perTryTimeout"], o, f + ".perTryTimeout");
      r.retry_on = scalar(n["retryOn"], o, f + ".retryOn");
      r.idempotent_methods = strings(n["idempotentMethods"], o, f + ".idempotentMethods");
      bool after_write = false;
      std::stringstream ss(r.retry_on);
      std::string tok;
      while (std::getline(ss, tok, ',')) {
        while (!tok.empty() && tok.front() == ' ') tok.erase(tok.begin());
        while (!tok.empty() && tok.back() == ' ') tok.pop_back();
        if (tok == "reset" || tok == "gateway-error" || tok == "5xx") after_write = true;
        else if (tok != "connect-failure" && !tok.empty())
          fail(o, f + ".retryOn", "'" + tok + "' (supported: connect-failure, reset, gateway-error, 5xx)");
      }
      // A request that may have run is sent again only if the user says
      // doing so is harmless.
      if (after_write && r.idempotent_methods.empty())
        fail(o, f + ".idempotentMethods",
             "retryOn '" + r.retry_on + "' retries requests that may have run: list the "
             "idempotent methods it may repeat");
      if (!after_write && !r.idempotent_methods.empty())
        fail(o, f + ".idempotentMethods", "only meaningful with retryOn reset, gateway-error or 5xx");
      if (r.per_try_timeout_ms && !after_write)
        fail(o, f + ".perTryTimeout", "a per-try timeout retries requests that may have run: "
                                      "needs retryOn gateway-error or 5xx");
    } else {
      fail(o, f, "unknown metanode annotation (known: " + std::string(kTimeoutAnnotation) + ", " +
                     kRetriesAnnotation + ")");
    }
  }
  return r;
}

MetaRouter parse_meta_router(const YAML::Node& spec, const Origin& o,
                             const std::map<std::string, std::string>& annotations) {
  MetaRouter mr;
  mr.origin = o;
  if (spec["gateways"])
    fail(o, "spec.gateways", "gateways are not served by metanode (it proxies pods' own calls)");
  allow_only(spec, o, "spec", {"hosts", "routes", "localRateLimit", "globalRateLimit", "exportTo"});
  check_export_to(spec, o);
  if (spec["localRateLimit"])
    mr.local_rate_limit = parse_local_rate_limit(spec["localRateLimit"], o, "spec.localRateLimit");
  if (spec["globalRateLimit"])
    mr.global_rate_limit = parse_global_rate_limit(spec["globalRateLimit"], o, "spec.globalRateLimit");
  mr.resilience = parse_resilience(annotations, o);
  auto hosts = strings(spec["hosts"], o, "spec.hosts");
  if (hosts.empty()) fail(o, "spec.hosts", "one host is required");
  if (!dns_name(hosts[0], true)) fail(o, "spec.hosts[0]", "'" + hosts[0] + "' is not a valid host name");
  mr.host = fqdn(hosts[0], o.ns);
  const YAML::Node routes = spec["routes"];
  if (routes && !routes.IsSequence()) fail(o, "spec.routes", "expected a list");
  for (size_t i = 0; routes && i < routes.size(); ++i) {
    std::string f = "spec.routes[" + std::to_string(i) + "]";
    const YAML::Node r = routes[i];
    allow_only(r, o, f, {"name", "match", "route", "mirror", "mirrorPercentage", "requestMutation",
                         "responseMutation"});
    MetaRoute mrt;
    mrt.name = scalar(r["name"], o, f + ".name");
    mrt.match = parse_match(r["match"], o, f + ".match");
    const YAML::Node dests = r["route"];
    if (!dests || !dests.IsSequence() || dests.size() == 0)
      fail(o, f + ".route", "at least one destination is required");
    for (size_t j = 0; j < dests.size(); ++j) {
      std::string df = f + ".route[" + std::to_string(j) + "]";
      allow_only(dests[j], o, df, {"destination", "weight"});
      Destination d = parse_destination(dests[j]["destination"], o, df + ".destination", o.ns);
      d.weight = number(dests[j]["weight"], o, df + ".weight", 1000000);
      mrt.route.push_back(d);
    }
    if (mrt.route.size() > 1) {
      uint64_t total = 0;
      for (const auto& d : mrt.route) total += d.weight;
      if (total == 0) fail(o, f + ".route", "weights of a split must not all be zero");
    }
    if (r["mirror"]) {
      mrt.has_mirror = true;
      mrt.mirror = parse_destination(r["mirror"], o, f + ".mirror", o.ns);
      if (r["mirrorPercentage"]) {
        allow_only(r["mirrorPercentage"], o, f + ".mirrorPercentage", {"value"});
        try {
          mrt.mirror_percent = r["mirrorPercentage"]["value"].as<double>();
        } catch (const YAML::Exception&) {
          fail(o, f + ".mirrorPercentage.value", "expected a number");
        }
        if (mrt.mirror_percent <= 0) mrt.mirror_percent = 100;
        if (mrt.mirror_percent > 100) fail(o, f + ".mirrorPercentage.value", "more than 100");
      }
    }
    auto kvs = [&](const char* key, std::vector<std::pair<std::string, std::string>>& out) {
      const YAML::Node n = r[key];
      if (!n) return;
      if (!n.IsSequence()) fail(o, f + "." + key, "expected a list of {key, value}");
      for (size_t j = 0; j < n.size(); ++j) {
        std::string kf = f + "." + key + "[" + std::to_string(j) + "]";
        allow_only(n[j], o, kf, {"key", "value"});
        std::string k = scalar(n[j]["key"], o, kf + ".key");
        if (k.empty()) fail(o, kf + ".key", "required");
        out.emplace_back(k, scalar(n[j]["value"], o, kf + ".value"));
      }
    };
    kvs("requestMutation", mrt.request_mutation);
    kvs("responseMutation", mrt.response_mutation);
    mr.routes.push_back(std::move(mrt));
  }
  return mr;
}

void collect(const YAML::Node& doc, const std::string& file, Objects& objs) {
  if (!doc || doc.IsNull()) return;
  if (!doc.IsMap()) throw ConfigError{file + ": a manifest document must be a map"};
  std::string kind = doc["kind"] ? doc["kind"].as<std::string>() : "";
  if (kind == "List") {
    for (const auto& item : doc["items"]) collect(item, file, objs);
    return;
  }
  std::string api = doc["apiVersion"] ? doc["apiVersion"].as<std::string>() : "";
  Origin o;
  o.file = file;
  o.kind = kind;
  o.ns = "default";
  o.serial = next_serial();
  std::map<std::string, std::string> annotations;
  if (const YAML::Node md = doc["metadata"]; md && md.IsMap()) {
    if (md["namespace"]) o.ns = md["namespace"].as<std::string>();
    if (md["name"]) o.name = md["name"].as<std::string>();
    annotations = labels(md["annotations"], o, "metadata.annotations");
  }
  bool istio = api.rfind("networking.istio.io/", 0) == 0;
  bool aeraki = api == "metaprotocol.aeraki.io/v1alpha1";
  bool ours = (istio && (kind == "ServiceEntry" || kind == "DestinationRule")) ||
              (aeraki && kind == "MetaRouter");
  if (!ours) return;  // other kinds are not ours to interpret
  if (o.name.empty()) fail(o, "metadata.name", "required");
  if (!dns_name(o.name, false)) fail(o, "metadata.name", "not a valid DNS-1123 name");
  if (!dns_name(o.ns, false)) fail(o, "metadata.namespace", "not a valid DNS-1123 name");
  const YAML::Node spec = doc["spec"];
  if (!spec || !spec.IsMap()) fail(o, "spec", "required");
  if (kind == "ServiceEntry") objs.service_entries.push_back(parse_service_entry(spec, o));
  if (kind == "DestinationRule") objs.destination_rules.push_back(parse_destination_rule(spec, o));
  if (kind == "MetaRouter") objs.meta_routers.push_back(parse_meta_router(spec, o, annotations));
  if (kind != "MetaRouter")
    for (const auto& [k, v] : annotations)
      if (k.rfind("metanode.io/", 0) == 0)
        fail(o, "metadata.annotations." + k, "metanode annotations belong on a MetaRouter");
}

// ---- xDS generation ----------------------------------------------------------

using envoy::config::cluster::v3::Cluster;

std::string cluster_name(uint32_t port, const std::string& subset, const std::string& host) {
  return "outbound|" + std::to_string(port) + "|" + subset + "|" + host;
}

// The policy a cluster gets: the DestinationRule's, then its port-level
// settings, then the subset's and the subset's port-level settings.
TrafficPolicy effective_policy(const DestinationRule* dr, const std::string& subset, uint32_t port) {
  if (!dr) return {};
  TrafficPolicy t = dr->policy.for_port(port);
  for (const auto& s : dr->subsets)
    if (s.name == subset) t = t.merged(s.policy.for_port(port));
  return t;
}

google::protobuf::Duration pb_duration(uint32_t ms) {
  google::protobuf::Duration d;
  d.set_seconds(ms / 1000);
  d.set_nanos(int32_t(ms % 1000) * 1000000);
  return d;
}

void apply_policy(Cluster& c, const TrafficPolicy& t) {
  if (t.lb) {
    const auto& lb = *t.lb;
    if (lb.hashes()) {
      c.set_lb_policy(lb.maglev ? Cluster::MAGLEV : Cluster::RING_HASH);
      if (lb.maglev && lb.table_size)
        c.mutable_maglev_lb_config()->mutable_table_size()->set_value(lb.table_size);
      if (!lb.maglev && lb.ring_size)
        c.mutable_ring_hash_lb_config()->mutable_minimum_ring_size()->set_value(lb.ring_size);
    } else if (lb.simple == "LEAST_REQUEST") {
      c.set_lb_policy(Cluster::LEAST_REQUEST);
    } else if (lb.simple == "RANDOM") {
      c.set_lb_policy(Cluster::RANDOM);
    } else {
      c.set_lb_policy(Cluster::ROUND_ROBIN);
    }
  }
  if (t.pool) {
    const auto& p = *t.pool;
    if (p.connect_timeout_ms) *c.mutable_connect_timeout() = pb_duration(p.connect_timeout_ms);
    // As istiod writes circuit breakers: one DEFAULT-priority threshold,
    // unset limits at 2^32-1.
    auto* th = c.mutable_circuit_breakers()->add_thresholds();
    auto lim = [](uint32_t v) { return v ? v : 0xffffffffu; };
    th->mutable_max_connections()->set_value(lim(p.max_connections));
    th->mutable_max_pending_requests()->set_value(lim(p.max_pending));
    th->mutable_max_requests()->set_value(lim(p.max_requests));
    th->mutable_max_retries()->set_value(lim(p.max_retries));
    auto* hpo = c.mutable_common_http_protocol_options();
    if (p.idle_timeout_ms) *hpo->mutable_idle_timeout() = pb_duration(p.idle_timeout_ms);
    if (p.max_connection_duration_ms)
      *hpo->mutable_max_connection_duration() = pb_duration(p.max_connection_duration_ms);
    if (p.max_requests_per_connection)
      hpo->mutable_max_requests_per_connection()->set_value(p.max_requests_per_connection);
    if (p.keepalive) {
      auto* k = c.mutable_upstream_connection_options()->mutable_tcp_keepalive();
      if (p.keepalive_probes) k->mutable_keepalive_probes()->set_value(p.keepalive_probes);
      if (p.keepalive_time_ms) k->mutable_keepalive_time()->set_value(std::max(1u, p.keepalive_time_ms / 1000));
      if (p.keepalive_interval_ms)
        k->mutable_keepalive_interval()->set_value(std::max(1u, p.keepalive_interval_ms / 1000));
    }
  }
  if (t.outlier) {
    // As istiod writes it: each threshold with its enforcement at 100%.
    const auto& od = *t.outlier;
    auto* o = c.mutable_outlier_detection();
    o->mutable_consecutive_5xx()->set_value(od.errors);
    o->mutable_enforcing_consecutive_5xx()->set_value(od.errors ? 100 : 0);
    if (od.gateway) {
      o->mutable_consecutive_gateway_failure()->set_value(od.gateway);
      o->mutable_enforcing_consecutive_gateway_failure()->set_value(100);
    }
    if (od.interval_ms) *o->mutable_interval() = pb_duration(od.interval_ms);
    if (od.base_ejection_ms) *o->mutable_base_ejection_time() = pb_duration(od.base_ejection_ms);
    if (od.has_max_ejection_percent)
      o->mutable_max_ejection_percent()->set_value(od.max_ejection_percent);
  }
}

void set_ads(envoy::config::core::v3::ConfigSource* cs) {
  cs->mutable_ads();
  cs->set_resource_api_version(envoy::config::core::v3::V3);
}

// Aeraki's listeners fetch their routes from its own RDS server, the gRPC
// cluster "aeraki-xds" (a static cluster in Aeraki's bootstrap override).
void set_aeraki_rds(envoy::config::core::v3::ConfigSource* cs) {
  cs->set_resource_api_version(envoy::config::core::v3::V3);
  auto* api = cs->mutable_api_config_source();
  api->set_api_type(envoy::config::core::v3::ApiConfigSource::GRPC);
  api->set_transport_api_version(envoy::config::core::v3::V3);
  api->add_grpc_services()->mutable_envoy_grpc()->set_cluster_name(kAerakiXdsCluster);
}

// What istiod sends for Aeraki's EnvoyFilter patch: a udpa TypedStruct whose
// value is the MetaProtocolProxy as protojson (camelCase keys).
void pack_as_typed_struct(const google::protobuf::Message& m, google::protobuf::Any* out) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opt;
  (void)google::protobuf::util::MessageToJsonString(m, &json, opt);
  udpa::type::v1::TypedStruct ts;
  ts.set_type_url(std::string("type.googleapis.com/") + m.GetDescriptor()->full_name());
  (void)google::protobuf::util::JsonStringToMessage(json, ts.mutable_value());
  // Deterministic bytes (Struct is a map): the same manifests must give the
  // same content version, or every node would be pushed an unchanged listener.
  out->set_type_url(kUdpaTypedStructType);
  out->set_value(deterministic_bytes(ts));
}

void set_address(envoy::config::core::v3::Address* a, const std::string& ip, uint32_t port) {
  auto* s = a->mutable_socket_address();
  s->set_address(ip);
  s->set_port_value(port);
}

struct Service {
  const ServiceEntry* se;
  const SePort* port;
  std::string host;
};

// What one host generated, and the serials of the objects it came from.
struct HostOutput {
  std::vector<uint64_t> from;
  Resources resources;
};
using HostCache = std::map<std::string, HostOutput>;  // by host

template <class T>
void append(std::vector<T>& into, const std::vector<T>& from) {
  into.insert(into.end(), from.begin(), from.end());
}

template <class T>
void append_refs(std::vector<const T*>& into, const std::vector<T>& from) {
  for (const auto& o : from) into.push_back(&o);
}

void add_cluster(Resources& out, const Service& svc, const std::string& subset,
                 const std::map<std::string, std::string>& want_labels, const TrafficPolicy& policy) {
  std::string name = cluster_name(svc.port->number, subset, svc.host);
  Cluster c;
  c.set_name(name);
  c.set_type(Cluster::EDS);
  set_ads(c.mutable_eds_cluster_config()->mutable_eds_config());
  c.mutable_eds_cluster_config()->set_service_name(name);
  c.mutable_connect_timeout()->set_seconds(1);
  apply_policy(c, policy);
  envoy::config::endpoint::v3::ClusterLoadAssignment cla;
  cla.set_cluster_name(name);
  auto* loc = cla.add_endpoints();
  for (const auto& e : svc.se->endpoints) {
    bool match = std::all_of(want_labels.begin(), want_labels.end(), [&](const auto& kv) {
      auto it = e.labels.find(kv.first);
      return it != e.labels.end() && it->second == kv.second;
    });
    if (!match) continue;
    uint32_t port = svc.port->target_port ? svc.port->target_port : svc.port->number;
    if (auto it = e.ports.find(svc.port->name); it != e.ports.end()) port = it->second;
    auto* lbe = loc->add_lb_endpoints();
    set_address(lbe->mutable_endpoint()->mutable_address(), e.address, port);
    if (e.weight) lbe->mutable_load_balancing_weight()->set_value(e.weight);
    auto& fm = (*lbe->mutable_metadata()->mutable_filter_metadata())["envoy.lb"];
    for (const auto& [k, v] : e.labels) (*fm.mutable_fields())[k].set_string_value(v);
  }
  out.clusters.push_back(share(std::move(c)));
  out.endpoints.push_back(share(std::move(cla)));
}

envoy::config::route::v3::HeaderMatcher header_matcher(const std::string& key, const StringMatch& m) {
  envoy::config::route::v3::HeaderMatcher h;
  h.set_name(key);
  switch (m.kind) {
    case StringMatch::kExact:
      h.set_exact_match(m.value);
      break;
    case StringMatch::kPrefix:
      h.set_prefix_match(m.value);
      break;
    case StringMatch::kRegex:
      h.mutable_safe_regex_match()->mutable_google_re2();
      h.mutable_safe_regex_match()->set_regex(m.value);
      break;
    case StringMatch::kPresent:
      h.set_present_match(true);
      break;
  }
  return h;
}

envoy::type::v3::TokenBucket token_bucket(const Bucket& b) {
  envoy::type::v3::TokenBucket tb;
  tb.set_max_tokens(b.max_tokens);
  tb.mutable_tokens_per_fill()->set_value(b.tokens_per_fill);
  *tb.mutable_fill_interval() = pb_duration(b.fill_interval_ms);
  return tb;
}

// Aeraki puts a MetaRouter's localRateLimit in the MetaProtocolProxy's
// filter chain, before the router.
void add_local_rate_limit(aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy& mpp,
                          const RateLimitSpec& rl, const std::string& stat_prefix) {
  aeraki::meta_protocol_proxy::filters::local_ratelimit::v1alpha::LocalRateLimit cfg;
  cfg.set_stat_prefix(stat_prefix);
  if (rl.bucket) *cfg.mutable_token_bucket() = token_bucket(*rl.bucket);
  for (const auto& [match, bucket] : rl.conditions) {
    auto* c = cfg.add_conditions();
    for (const auto& [k, sm] : match) *c->mutable_match()->add_metadata() = header_matcher(k, sm);
    *c->mutable_token_bucket() = token_bucket(bucket);
  }
  auto* f = mpp.add_meta_protocol_filters();
  f->set_name("aeraki.meta_protocol.filters.local_ratelimit");
  f->mutable_config()->PackFrom(cfg);
}

// Aeraki's globalRateLimit: a aeraki.meta_protocol.filters.ratelimit filter
// calling the rate limit service's cluster over gRPC.
void add_global_rate_limit(aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy& mpp,
                           const GlobalRateLimitSpec& g) {
  aeraki::meta_protocol_proxy::filters::ratelimit::v1alpha::RateLimit cfg;
  for (const auto& [k, sm] : g.match) *cfg.mutable_match()->add_metadata() = header_matcher(k, sm);
  cfg.set_domain(g.domain);
  if (g.timeout_ms) *cfg.mutable_timeout() = pb_duration(g.timeout_ms);
  cfg.set_failure_mode_deny(g.deny_on_fail);
  auto* rls = cfg.mutable_rate_limit_service();
  rls->mutable_grpc_service()->mutable_envoy_grpc()->set_cluster_name(g.service);
  rls->set_transport_api_version(envoy::config::core::v3::V3);
  for (const auto& [prop, key] : g.descriptors) {
    auto* d = cfg.add_descriptors();
    d->set_property(prop);
    d->set_descriptor_key(key);
  }
  auto* f = mpp.add_meta_protocol_filters();
  f->set_name("aeraki.meta_protocol.filters.ratelimit");
  f->mutable_config()->PackFrom(cfg);
}

template <class T>
std::map<std::string, const T*> one_per_host(const std::vector<const T*>& objs, const char* field,
                                             const char* kind) {
  std::map<std::string, const T*> out;
  for (const auto* p : objs) {
    const T& o = *p;
    auto [it, fresh] = out.emplace(o.host, &o);
    if (!fresh)
      fail(o.origin, field,
           "host " + o.host + " already has " + kind + " " + it->second->origin.ns + "/" +
               it->second->origin.name);
  }
  return out;
}

// The resources of one host's MetaProtocol ports: the service's and each
// subset's cluster and assignment, a listener per VIP, the route table.
// They depend on the host's ServiceEntries, DestinationRule and MetaRouter
// only (other hosts are named, never read), which is what lets
// ManifestTranslator reuse them while those objects are unchanged.
void generate_host(Resources& out, const std::string& host, const std::vector<Service>& services,
                   const DestinationRule* dr, const MetaRouter* mr) {
  for (const auto& svc : services) {
    uint32_t port = svc.port->number;
    std::string route_name = host + "_" + std::to_string(port);

    // Clusters: the whole service and each subset.
    add_cluster(out, svc, "", {}, effective_policy(dr, "", port));
    if (dr)
      for (const auto& s : dr->subsets)
        add_cluster(out, svc, s.name, s.labels, effective_policy(dr, s.name, port));

    // Listener per VIP.
    if (svc.se->addresses.empty()) continue;  // nothing to intercept by address
    for (const auto& vip : svc.se->addresses) {
      envoy::config::listener::v3::Listener l;
      l.set_name(vip + "_" + std::to_string(port));
      set_address(l.mutable_address(), vip, port);
      l.set_traffic_direction(envoy::config::core::v3::OUTBOUND);
      auto* f = l.add_filter_chains()->add_filters();
      f->set_name(kMetaProtocolFilterName);
      aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy mpp;
      mpp.set_stat_prefix(cluster_name(port, "", host));
      mpp.set_application_protocol(svc.port->protocol);
      mpp.mutable_codec()->set_name("aeraki.meta_protocol.codec." + svc.port->protocol);
      set_aeraki_rds(mpp.mutable_rds()->mutable_config_source());
      mpp.mutable_rds()->set_route_config_name(route_name);
      if (mr && mr->local_rate_limit) add_local_rate_limit(mpp, *mr->local_rate_limit, route_name);
      if (mr && mr->global_rate_limit) add_global_rate_limit(mpp, *mr->global_rate_limit);
      mpp.add_meta_protocol_filters()->set_name("aeraki.meta_protocol.filters.router");
      pack_as_typed_struct(mpp, f->mutable_typed_config());
      out.listeners.push_back(share(std::move(l)));
    }

    // Routes.
    envoy::config::route::v3::RouteConfiguration rc;
    rc.set_name(route_name);
    auto* vh = rc.add_virtual_hosts();
    vh->set_name("dummy");
    vh->add_domains("*");
    // Envoy hashes in the route, not the cluster: the hash policy of the
    // (first) destination's cluster goes on the route.
    auto hash = [&](envoy::config::route::v3::RouteAction* a, const std::string& subset) {
      auto lb = effective_policy(dr, subset, port).lb;
      if (!lb) return;
      if (!lb->hash_attr.empty()) a->add_hash_policy()->mutable_header()->set_header_name(lb->hash_attr);
      if (lb->hash_source_ip)
        a->add_hash_policy()->mutable_connection_properties()->set_source_ip(true);
    };
    if (!mr) {
      auto* r = vh->add_routes();
      r->set_name("default");
      r->mutable_match()->set_prefix("/");
      r->mutable_route()->set_cluster(cluster_name(port, "", host));
      hash(r->mutable_route(), "");
    } else {
      for (const auto& m : mr->routes) {
        auto* r = vh->add_routes();
        r->set_name(m.name);
        r->mutable_match()->set_prefix("/");
        for (const auto& [k, sm] : m.match) *r->mutable_match()->add_headers() = header_matcher(k, sm);
        auto* a = r->mutable_route();
        auto dest_cluster = [&](const Destination& d) {
          return cluster_name(d.port ? d.port : port, d.subset, d.host);
        };
        if (m.route.size() == 1) {
          a->set_cluster(dest_cluster(m.route[0]));
        } else {
          uint32_t total = 0;
          for (const auto& d : m.route) {
            auto* cw = a->mutable_weighted_clusters()->add_clusters();
            cw->set_name(dest_cluster(d));
            cw->mutable_weight()->set_value(d.weight);
            total += d.weight;
          }
          a->mutable_weighted_clusters()->mutable_total_weight()->set_value(total);
        }
        hash(a, m.route[0].subset);
        const auto& res = mr->resilience;
        if (res.timeout_ms) *a->mutable_timeout() = pb_duration(res.timeout_ms);
        if (res.has_retries) {
          auto* rp = a->mutable_retry_policy();
          rp->mutable_num_retries()->set_value(res.attempts);
          rp->set_retry_on(res.retry_on.empty() ? "connect-failure" : res.retry_on);
          if (res.per_try_timeout_ms) *rp->mutable_per_try_timeout() = pb_duration(res.per_try_timeout_ms);
          for (const auto& method : res.idempotent_methods) {
            auto* h = rp->add_retriable_request_headers();
            h->set_name("method");
            h->set_exact_match(method);
          }
        }
        if (m.has_mirror) {
          auto* mp = a->add_request_mirror_policies();
          mp->set_cluster(dest_cluster(m.mirror));
          auto* fp = mp->mutable_runtime_fraction()->mutable_default_value();
          fp->set_numerator(uint32_t(m.mirror_percent * 10000));
          fp->set_denominator(envoy::type::v3::FractionalPercent::MILLION);
        }
        for (const auto& [k, v] : m.request_mutation) {
          auto* h = r->add_request_headers_to_add()->mutable_header();
          h->set_key(k);
          h->set_value(v);
        }
        for (const auto& [k, v] : m.response_mutation) {
          auto* h = r->add_response_headers_to_add()->mutable_header();
          h->set_key(k);
          h->set_value(v);
        }
      }
    }
    out.routes.push_back(share(std::move(rc)));
  }
}

// `cache`: what each host generated last time, replaced by this call's
// (only when it succeeds).
Result<Resources> generate(const ObjectRefs& objs, HostCache& cache) {
  Resources out;
  // Istio: one DestinationRule and one MetaRouter per host; a second one is
  // an error here rather than a silent merge.
  auto drs = one_per_host(objs.destination_rules, "spec.host", "DestinationRule");
  auto mrs = one_per_host(objs.meta_routers, "spec.hosts[0]", "MetaRouter");

  // Every MetaProtocol service port, by host.
  std::map<std::string, std::vector<Service>> by_host;
  // Other ports (a rate limit service's gRPC port): clusters only, as
  // istiod sends them, for filters that call out.
  std::vector<Service> plain;
  std::map<std::string, const ServiceEntry*> host_owner;
  for (const auto* sep : objs.service_entries) {
    const ServiceEntry& se = *sep;
    for (const auto& host : se.hosts) {
      auto [it, fresh] = host_owner.emplace(host, &se);
      if (!fresh)
        fail(se.origin, "spec.hosts",
             "host " + host + " is also declared by ServiceEntry " + it->second->origin.ns + "/" +
                 it->second->origin.name);
    }
    for (const auto& p : se.ports)
      if (!p.protocol.empty()) by_host[se.hosts[0]].push_back({&se, &p, se.hosts[0]});
      else plain.push_back({&se, &p, se.hosts[0]});
  }

  for (const auto* drp : objs.destination_rules) {
    const DestinationRule& dr = *drp;
    if (!host_owner.count(dr.host))
      fail(dr.origin, "spec.host", "no ServiceEntry declares host " + dr.host);
  }

  auto subset_exists = [&](const std::string& host, const std::string& subset) {
    auto it = drs.find(host);
    if (it == drs.end()) return false;
    for (const auto& s : it->second->subsets)
      if (s.name == subset) return true;
    return false;
  };
  auto check_dest = [&](const MetaRouter& mr, const Destination& d, const std::string& field) {
    auto it = by_host.find(d.host);
    if (it == by_host.end())
      fail(mr.origin, field + ".host", "no ServiceEntry has a metaprotocol port for host " + d.host);
    if (d.port) {
      bool ok = std::any_of(it->second.begin(), it->second.end(),
                            [&](const Service& s) { return s.port->number == d.port; });
      if (!ok) fail(mr.origin, field + ".port.number", "host " + d.host + " has no port " +
                                                           std::to_string(d.port));
    }
    if (!d.subset.empty() && !subset_exists(d.host, d.subset)) {
      std::string known;
      if (auto dr = drs.find(d.host); dr != drs.end())
        for (const auto& s : dr->second->subsets) known += (known.empty() ? "" : ", ") + s.name;
      fail(mr.origin, field + ".subset",
           "unknown subset '" + d.subset + "' of host " + d.host +
               (known.empty() ? " (no DestinationRule defines subsets for it)"
                              : " (DestinationRule defines: " + known + ")"));
    }
  };
  std::set<std::string> service_clusters;  // built when a MetaRouter needs it
  for (const auto* mrp : objs.meta_routers) {
    const MetaRouter& mr = *mrp;
    if (!by_host.count(mr.host))
      fail(mr.origin, "spec.hosts[0]", "no ServiceEntry has a metaprotocol port for host " + mr.host);
    for (size_t i = 0; i < mr.routes.size(); ++i) {
      std::string f = "spec.routes[" + std::to_string(i) + "]";
      for (size_t j = 0; j < mr.routes[i].route.size(); ++j)
        check_dest(mr, mr.routes[i].route[j], f + ".route[" + std::to_string(j) + "].destination");
      if (mr.routes[i].has_mirror) check_dest(mr, mr.routes[i].mirror, f + ".mirror");
    }
    if (mr.global_rate_limit) {
      // The rate limit service must be a cluster this configuration has.
      if (service_clusters.empty()) {
        for (const auto& p : plain) service_clusters.insert(cluster_name(p.port->number, "", p.host));
        for (const auto& [h, services] : by_host)
          for (const auto& p : services) service_clusters.insert(cluster_name(p.port->number, "", p.host));
      }
      const std::string& svc = mr.global_rate_limit->service;
      if (!service_clusters.count(svc))
        fail(mr.origin, "spec.globalRateLimit.rateLimitService",
             "'" + svc + "' is no service port's cluster (outbound|<port>||<host> of a ServiceEntry)");
    }
  }
  for (const auto& [host, dr] : drs) {
    for (size_t i = 0; i < dr->subsets.size(); ++i)
      if (dr->subsets[i].labels.empty())
        fail(dr->origin, "spec.subsets[" + std::to_string(i) + "].labels",
             "a subset needs labels to select endpoints");
  }

  for (const auto& svc : plain) {
    const DestinationRule* dr = drs.count(svc.host) ? drs[svc.host] : nullptr;
    add_cluster(out, svc, "", {}, effective_policy(dr, "", svc.port->number));
  }
  std::map<std::string, HostOutput> next_cache;
  for (const auto& [host, services] : by_host) {
    const DestinationRule* dr = drs.count(host) ? drs[host] : nullptr;
    const MetaRouter* mr = mrs.count(host) ? mrs[host] : nullptr;
    std::vector<uint64_t> from;
    for (const auto& svc : services) from.push_back(svc.se->origin.serial);
    from.push_back(dr ? dr->origin.serial : 0);
    from.push_back(mr ? mr->origin.serial : 0);
    HostOutput h;
    if (auto it = cache.find(host); it != cache.end() && it->second.from == from) {
      h = it->second;  // pointers; the cache stays whole if a later host fails
    } else {
      h.from = std::move(from);
      generate_host(h.resources, host, services, dr, mr);
    }
    append(out.listeners, h.resources.listeners);
    append(out.clusters, h.resources.clusters);
    append(out.endpoints, h.resources.endpoints);
    append(out.routes, h.resources.routes);
    next_cache.emplace(host, std::move(h));
  }
  cache = std::move(next_cache);
  return out;
}

// Splits a multi-document stream at "---" lines. yaml-cpp 0.7's LoadAll
// can loop forever on some malformed streams (found by tests/fuzz/xds_fuzz.cc,
// input kept in tests/fuzz/corpus/xds); loading one document at a time
// cannot. Returns {first line number, text} per document.
std::vector<std::pair<int, std::string>> split_documents(const std::string& text) {
  std::vector<std::pair<int, std::string>> docs(1, {0, ""});
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    bool start = line.rfind("---", 0) == 0 && (line.size() == 3 || line[3] == ' ' || line[3] == '\t' ||
                                               line[3] == '\r');
    bool end = line == "..." || line == "...\r";
    if (start || end) {
      docs.emplace_back(start ? n : n + 1, start ? line.substr(3) + "\n" : "");
    } else {
      docs.back().second += line + "\n";
    }
    ++n;
  }
  return docs;
}

}  // namespace

namespace {

// One file's objects; a ConfigError names the file, object and field.
Result<Objects> parse_file(const ManifestFile& f) {
  Objects objs;
  try {
    for (const auto& [first_line, text] : split_documents(f.content)) {
      YAML::Node doc;
      try {
        doc = YAML::Load(text);
      } catch (const YAML::Exception& e) {
        return Error::invalid(f.path + ": line " + std::to_string(first_line + e.mark.line + 1) +
                              ": YAML does not parse: " + e.msg);
      }
      try {
        collect(doc, f.path, objs);
      } catch (const YAML::Exception& e) {
        return Error::invalid(f.path + ": " + e.what());
      }
    }
  } catch (const ConfigError& e) {
    return Error::invalid(e.message);
  }
  return objs;
}

}  // namespace

struct ManifestTranslator::Impl {
  struct Parsed {
    std::string content;
    Objects objects;
  };
  std::map<std::string, Parsed> files;  // by path
  HostCache hosts;                       // what each host generated last
};

ManifestTranslator::ManifestTranslator() : impl_(std::make_unique<Impl>()) {}
ManifestTranslator::~ManifestTranslator() = default;

Result<Resources> ManifestTranslator::translate(const std::vector<ManifestFile>& files) {
  std::map<std::string, Impl::Parsed> next;
  for (const auto& f : files) {
    auto it = impl_->files.find(f.path);
    if (it != impl_->files.end() && it->second.content == f.content) {
      next.emplace(f.path, std::move(it->second));
      continue;
    }
    auto objs = parse_file(f);
    if (!objs) {
      // Keep what parsed: the next edit of the other files reuses it.
      for (auto& [path, parsed] : next) impl_->files[path] = std::move(parsed);
      return objs.error();
    }
    next.emplace(f.path, Impl::Parsed{f.content, std::move(objs.value())});
  }
  impl_->files = std::move(next);
  ObjectRefs all;
  for (const auto& f : files) {
    const auto& o = impl_->files.at(f.path).objects;
    append_refs(all.service_entries, o.service_entries);
    append_refs(all.destination_rules, o.destination_rules);
    append_refs(all.meta_routers, o.meta_routers);
  }
  try {
    return generate(all, impl_->hosts);
  } catch (const ConfigError& e) {
    return Error::invalid(e.message);
  }
}

Result<Resources> translate_manifests(const std::vector<ManifestFile>& files) {
  ManifestTranslator t;
  return t.translate(files);
}

Result<std::vector<ManifestFile>> read_manifest_dir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return Error::errno_error("open config dir " + dir);
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.empty() || n[0] == '.') continue;
    auto ends = [&](const char* s) {
      std::string_view sv(s);
      return n.size() > sv.size() && n.compare(n.size() - sv.size(), sv.size(), sv) == 0;
    };
    if (ends(".yaml") || ends(".yml")) names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  std::vector<ManifestFile> out;
  for (const auto& n : names) {
    std::string path = dir + "/" + n;
    std::ifstream in(path);
    if (!in) return Error::errno_error("read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    out.push_back({path, ss.str()});
  }
  return out;
}

}  // namespace metanode::xds
