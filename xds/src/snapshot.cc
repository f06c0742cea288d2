// xDS resources -> Snapshot. This is the single place that interprets
// Envoy/Aeraki protos, whichever control plane sent them; everything after
// it sees only the compiled model in snapshot.h.
#include "metanode/xds/snapshot.h"

#include "metanode/json.h"
#include "metanode/utc_time.h"

#include <google/protobuf/any.pb.h>
#include <google/protobuf/util/json_util.h>
#include <re2/re2.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <set>
#include <unordered_map>

#include "aeraki/meta_protocol_proxy/filters/global_ratelimit/v1alpha/global_ratelimit.pb.h"
#include "aeraki/meta_protocol_proxy/filters/local_ratelimit/v1alpha/local_ratelimit.pb.h"
#include "aeraki/meta_protocol_proxy/v1alpha/meta_protocol_proxy.pb.h"
#include "udpa/type/v1/typed_struct.pb.h"
#include "xds/type/v3/typed_struct.pb.h"

namespace metanode::xds {
namespace {

using XdsCluster = envoy::config::cluster::v3::Cluster;
using envoy::config::route::v3::HeaderMatcher;

Error bad(const std::string& where, const std::string& what) {
  return Error::invalid(where + ": " + what);
}

std::chrono::milliseconds ms(const google::protobuf::Duration& d) {
  return std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1000000);
}

bool ieq_prefix(std::string_view s, std::string_view p) {
  if (s.size() < p.size()) return false;
  for (size_t i = 0; i < p.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(p[i])))
      return false;
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Result<AttributeMatcher> compile_matcher(const HeaderMatcher& h, const std::string& where) {
  AttributeMatcher m;
  m.name = h.name();
  m.invert = h.invert_match();
  if (m.name.empty()) return bad(where, "matcher without a name");
  using K = AttributeMatcher::Kind;
  auto regex = [&](const std::string& pattern) -> Result<void> {
    auto re = std::make_shared<re2::RE2>(pattern, re2::RE2::Quiet);
    if (!re->ok()) return bad(where, "bad regex '" + pattern + "': " + re->error());
    m.kind = K::kRegex;
    m.regex = std::move(re);
    return Ok();
  };
  switch (h.header_match_specifier_case()) {
    case HeaderMatcher::kExactMatch:
      m.kind = K::kExact;
      m.value = h.exact_match();
      break;
    case HeaderMatcher::kPrefixMatch:
      m.kind = K::kPrefix;
      m.value = h.prefix_match();
      break;
    case HeaderMatcher::kSuffixMatch:
      m.kind = K::kSuffix;
      m.value = h.suffix_match();
      break;
    case HeaderMatcher::kContainsMatch:
      m.kind = K::kContains;
      m.value = h.contains_match();
      break;
    case HeaderMatcher::kPresentMatch:
      m.kind = K::kPresent;
      if (!h.present_match()) m.invert = !m.invert;
      break;
    case HeaderMatcher::kSafeRegexMatch:
      if (auto r = regex(h.safe_regex_match().regex()); !r) return r.error();
      break;
    case HeaderMatcher::kStringMatch: {
      const auto& s = h.string_match();
      m.ignore_case = s.ignore_case();
      switch (s.match_pattern_case()) {
        case envoy::type::matcher::v3::StringMatcher::kExact:
          m.kind = K::kExact;
          m.value = s.exact();
          break;
        case envoy::type::matcher::v3::StringMatcher::kPrefix:
          m.kind = K::kPrefix;
          m.value = s.prefix();
          break;
        case envoy::type::matcher::v3::StringMatcher::kSuffix:
          m.kind = K::kSuffix;
          m.value = s.suffix();
          break;
        case envoy::type::matcher::v3::StringMatcher::kContains:
          m.kind = K::kContains;
          m.value = s.contains();
          break;
        case envoy::type::matcher::v3::StringMatcher::kSafeRegex:
          if (auto r = regex(s.safe_regex().regex()); !r) return r.error();
          break;
        default:
          return bad(where, "string_match without a pattern");
      }
      if (m.ignore_case) m.value = lower(m.value);
      break;
    }
    case HeaderMatcher::kRangeMatch:
      return bad(where, "range_match is not supported for attributes");
    default:
      // Envoy: a matcher with no specifier tests presence.
      m.kind = K::kPresent;
  }
  return m;
}

LbPolicy lb_of(XdsCluster::LbPolicy p) {
  switch (p) {
    case XdsCluster::LEAST_REQUEST:
      return LbPolicy::kLeastRequest;
    case XdsCluster::RANDOM:
      return LbPolicy::kRandom;
    case XdsCluster::RING_HASH:
      return LbPolicy::kRingHash;
    case XdsCluster::MAGLEV:
      return LbPolicy::kMaglev;
    default:
      return LbPolicy::kRoundRobin;
  }
}

Result<net::Endpoint> socket_address(const envoy::config::core::v3::Address& a,
                                     const std::string& where) {
  if (!a.has_socket_address()) return bad(where, "address without socket_address");
  const auto& s = a.socket_address();
  auto ip = net::parse_ipv4(s.address());
  if (!ip) return bad(where, "address '" + s.address() + "' is not an IPv4 address");
  if (s.port_value() == 0 || s.port_value() > 65535)
    return bad(where, "port " + std::to_string(s.port_value()) + " out of range");
  return net::Endpoint{*ip, uint16_t(s.port_value())};
}

Result<std::vector<Endpoint>> endpoints_of(
    const envoy::config::endpoint::v3::ClusterLoadAssignment& cla, const std::string& where) {
  std::vector<Endpoint> out;
  for (const auto& loc : cla.endpoints()) {
    for (const auto& lbe : loc.lb_endpoints()) {
      if (lbe.health_status() == envoy::config::core::v3::UNHEALTHY ||
          lbe.health_status() == envoy::config::core::v3::DRAINING)
        continue;
      auto addr = socket_address(lbe.endpoint().address(), where + " endpoint");
      if (!addr) return addr.error();
      Endpoint e;
      e.address = *addr;
      if (lbe.has_load_balancing_weight()) e.weight = std::max(1u, lbe.load_balancing_weight().value());
      auto md = lbe.metadata().filter_metadata().find("envoy.lb");
      if (md != lbe.metadata().filter_metadata().end())
        for (const auto& [k, v] : md->second.fields())
          if (v.has_string_value()) e.labels[k] = v.string_value();
      auto istio = lbe.metadata().filter_metadata().find("istio");
      if (istio != lbe.metadata().filter_metadata().end()) {
        auto w = istio->second.fields().find("workload");
        if (w != istio->second.fields().end() && w->second.has_string_value()) {
          // NAME;NAMESPACE;CANONICAL_SERVICE;CANONICAL_REVISION;CLUSTER
          std::string* fields[] = {&e.workload, &e.workload_namespace, &e.canonical_service,
                                   &e.canonical_revision, &e.cluster_id};
          const std::string& s = w->second.string_value();
          size_t at = 0;
          for (std::string* f : fields) {
            size_t semi = s.find(';', at);
            *f = s.substr(at, semi == std::string::npos ? std::string::npos : semi - at);
            if (semi == std::string::npos) break;
            at = semi + 1;
          }
        }
      }
      out.push_back(std::move(e));
    }
  }
  return out;
}

}  // namespace

bool AttributeMatcher::matches(const std::string* v) const {
  bool r;
  if (kind == Kind::kPresent) {
    r = v != nullptr;
  } else if (!v) {
    r = false;
  } else {
    std::string folded;
    const std::string* s = v;
    if (ignore_case) {
      folded = lower(*v);
      s = &folded;
    }
    switch (kind) {
      case Kind::kExact:
        r = *s == value;
        break;
      case Kind::kPrefix:
        r = s->compare(0, value.size(), value) == 0;
        break;
      case Kind::kSuffix:
        r = s->size() >= value.size() && s->compare(s->size() - value.size(), value.size(), value) == 0;
        break;
      case Kind::kContains:
        r = s->find(value) != std::string::npos;
        break;
      case Kind::kRegex:
        r = re2::RE2::FullMatch(*s, *regex);
        break;
      default:
        r = false;
    }
  }
  return invert ? !r : r;
}

bool parse_cluster_name(std::string_view name, std::string& host, std::string& subset,
                        uint32_t& port) {
  // direction|port|subset|host
  size_t a = name.find('|');
  if (a == std::string_view::npos) return false;
  size_t b = name.find('|', a + 1);
  if (b == std::string_view::npos) return false;
  size_t c = name.find('|', b + 1);
  if (c == std::string_view::npos) return false;
  auto p = name.substr(a + 1, b - a - 1);
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || ptr != p.data() + p.size()) return false;
  subset = std::string(name.substr(b + 1, c - b - 1));
  host = std::string(name.substr(c + 1));
  return true;
}

std::string config_dump_json(const Resources& r, std::chrono::system_clock::time_point last_updated,
                             const std::vector<Reject>& refused,
                             std::chrono::system_clock::time_point refused_at) {
  google::protobuf::util::JsonPrintOptions opt;
  opt.add_whitespace = false;
  opt.preserve_proto_field_names = true;
  auto any_json = [&](const google::protobuf::Message& m) {
    google::protobuf::Any a;
    a.PackFrom(m);
    std::string j;
    if (!google::protobuf::util::MessageToJsonString(a, &j, opt).ok()) j = "null";
    return j;
  };
  std::string v = json_string(r.version), at = "\"" + utc_timestamp(last_updated) + "\"";
  // Envoy's UpdateFailureState, for the resources whose newest version was refused.
  std::map<std::pair<std::string, std::string>, std::string> errors;
  for (const auto& x : refused)
    errors[{x.type_url, x.name}] = ",\"error_state\":{\"details\":" + json_string(x.reason) +
                                   ",\"last_update_attempt\":\"" + utc_timestamp(refused_at) + "\"}";
  auto error_of = [&](const char* type, const std::string& name) {
    auto it = errors.find({type, name});
    if (it == errors.end()) return std::string();
    std::string e = std::move(it->second);
    errors.erase(it);
    return e;
  };
  // A refused resource with no live version: an entry with its error only.
  auto orphans = [&](const char* type, std::string& out, bool named) {
    for (auto it = errors.begin(); it != errors.end();) {
      if (it->first.first != type) {
        ++it;
        continue;
      }
      out += std::string(out.empty() ? "" : ",") + "{" + (named ? "\"name\":" + json_string(it->first.second) : "") +
             (named ? it->second : it->second.substr(1)) + "}";
      it = errors.erase(it);
    }
  };
  // One entry of a dynamic list: {"version_info", "<field>": Any, "last_updated"[, "error_state"]}.
  auto entries = [&](const char* type, const auto& items, const char* field) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i)
      out += std::string(i ? "," : "") + "{\"version_info\":" + v + ",\"" + field + "\":" + any_json(*items[i]) +
             ",\"last_updated\":" + at + error_of(type, resource_name(*items[i])) + "}";
    orphans(type, out, false);
    return out;
  };
  std::string listeners;
  for (size_t i = 0; i < r.listeners.size(); ++i)
    listeners += std::string(i ? "," : "") + "{\"name\":" + json_string(r.listeners[i]->name()) +
                 ",\"active_state\":{\"version_info\":" + v + ",\"listener\":" + any_json(*r.listeners[i]) +
                 ",\"last_updated\":" + at + "}" + error_of(kListenerType, r.listeners[i]->name()) + "}";
  orphans(kListenerType, listeners, true);
  const std::string t = "\"@type\":\"type.googleapis.com/envoy.admin.v3.";
  return "{\"configs\":[{" + t + "ClustersConfigDump\",\"version_info\":" + v +
         ",\"dynamic_active_clusters\":[" + entries(kClusterType, r.clusters, "cluster") + "]},{" + t +
         "EndpointsConfigDump\",\"dynamic_endpoint_configs\":[" +
         entries(kEndpointType, r.endpoints, "endpoint_config") + "]},{" + t +
         "ListenersConfigDump\",\"version_info\":" + v + ",\"dynamic_listeners\":[" + listeners + "]},{" + t +
         "RoutesConfigDump\",\"dynamic_route_configs\":[" + entries(kRouteType, r.routes, "route_config") +
         "]}]}\n";
}

namespace {

using Clusters = std::map<std::string, std::shared_ptr<const Cluster>, std::less<>>;
using Cla = envoy::config::endpoint::v3::ClusterLoadAssignment;

// The ClusterLoadAssignment an EDS cluster reads (its service name, else its own).
const std::string& eds_service_of(const XdsCluster& c) {
  return c.eds_cluster_config().service_name().empty() ? c.name() : c.eds_cluster_config().service_name();
}

// `eds`: the assignment named by eds_service_of(c), or null if none came.
Result<std::shared_ptr<Cluster>> compile_cluster(const XdsCluster& c, const Cla* eds) {
  std::string where = "cluster " + c.name();
  if (c.name().empty()) return bad("cluster", "empty name");
  auto cl = std::make_shared<Cluster>();
  cl->name = c.name();
  cl->lb = lb_of(c.lb_policy());
  if (c.has_connect_timeout())
    cl->connect_timeout = ms(c.connect_timeout());
  if (c.has_ring_hash_lb_config() && c.ring_hash_lb_config().has_minimum_ring_size())
    cl->ring_size = c.ring_hash_lb_config().minimum_ring_size().value();
  if (c.has_maglev_lb_config() && c.maglev_lb_config().has_table_size())
    cl->maglev_table_size = c.maglev_lb_config().table_size().value();
  if (cl->ring_size == 0 || cl->ring_size > (8u << 20))
    return bad(where, "minimum_ring_size " + std::to_string(cl->ring_size) + " out of range");
  if (cl->maglev_table_size == 0 || cl->maglev_table_size > 5000011)
    return bad(where, "maglev table_size " + std::to_string(cl->maglev_table_size) +
                          " out of range");
  {
    // istiod sends every threshold, at 2^32-1 when the user set none.
    auto limit = [](bool has, uint32_t v) { return has && v != 0xffffffffu ? v : 0u; };
    auto& p = cl->pool;
    for (const auto& t : c.circuit_breakers().thresholds()) {
      if (t.priority() != 0) continue;  // HIGH priority has no meaning for us
      p.max_connections = limit(t.has_max_connections(), t.max_connections().value());
      p.max_pending_requests = limit(t.has_max_pending_requests(), t.max_pending_requests().value());
      p.max_requests = limit(t.has_max_requests(), t.max_requests().value());
      p.max_retries = limit(t.has_max_retries(), t.max_retries().value());
    }
    const auto& hpo = c.common_http_protocol_options();
    p.max_requests_per_connection =
        hpo.has_max_requests_per_connection()
            ? hpo.max_requests_per_connection().value()
            : limit(c.has_max_requests_per_connection(), c.max_requests_per_connection().value());
    if (hpo.has_idle_timeout()) p.idle_timeout = ms(hpo.idle_timeout());
    if (hpo.has_max_connection_duration()) p.max_connection_duration = ms(hpo.max_connection_duration());
    if (c.upstream_connection_options().has_tcp_keepalive()) {
      const auto& k = c.upstream_connection_options().tcp_keepalive();
      p.keepalive = true;
      p.keepalive_probes = k.keepalive_probes().value();
      p.keepalive_time_s = k.keepalive_time().value();
      p.keepalive_interval_s = k.keepalive_interval().value();
    }
  }
  if (c.has_outlier_detection()) {
    // Envoy's defaults: 5 consecutive 5xx, enforced; 5 consecutive gateway
    // failures, not enforced unless enforcing_consecutive_gateway_failure.
    const auto& od = c.outlier_detection();
    auto val = [](bool has, uint32_t v, uint32_t dflt) { return has ? v : dflt; };
    auto& o = cl->outlier;
    uint32_t enforce_5xx = val(od.has_enforcing_consecutive_5xx(),
                               od.enforcing_consecutive_5xx().value(), 100);
    uint32_t enforce_gw = val(od.has_enforcing_consecutive_gateway_failure(),
                              od.enforcing_consecutive_gateway_failure().value(), 0);
    if ((enforce_5xx != 0 && enforce_5xx != 100) || (enforce_gw != 0 && enforce_gw != 100))
      return bad(where, "outlier_detection enforcing percentages other than 0 and 100 are not "
                        "supported");
    o.consecutive_errors =
        enforce_5xx ? val(od.has_consecutive_5xx(), od.consecutive_5xx().value(), 5) : 0;
    o.consecutive_gateway_errors =
        enforce_gw ? val(od.has_consecutive_gateway_failure(),
                         od.consecutive_gateway_failure().value(), 5)
                   : 0;
    if (od.has_interval()) o.interval = ms(od.interval());
    if (od.has_base_ejection_time()) o.base_ejection_time = ms(od.base_ejection_time());
    if (od.has_max_ejection_time()) o.max_ejection_time = ms(od.max_ejection_time());
    if (od.has_max_ejection_percent())
      o.max_ejection_percent = std::min(100u, od.max_ejection_percent().value());
    if (o.interval.count() <= 0) return bad(where, "outlier_detection interval must be positive");
  }
  uint32_t port;
  parse_cluster_name(c.name(), cl->service_host, cl->subset, port);
  const Cla* src = nullptr;
  if (c.type() == XdsCluster::EDS) {
    cl->eds_service = eds_service_of(c);
    src = eds;
  } else if (c.has_load_assignment()) {
    src = &c.load_assignment();
  } else if (c.type() != XdsCluster::STATIC) {
    // STRICT_DNS, ORIGINAL_DST...: Istio sends them for other traffic; we
    // keep the name (routes may point at it) with no endpoints.
  }
  if (src) {
    auto eps = endpoints_of(*src, where);
    if (!eps) return eps.error();
    cl->endpoints = std::move(eps.value());
  }
  return cl;
}

ClusterRef cluster_ref(const Clusters& clusters, const std::string& name, uint32_t weight) {
  ClusterRef ref;
  ref.name = name;
  ref.weight = weight;
  auto it = clusters.find(name);
  if (it != clusters.end()) ref.cluster = it->second;
  return ref;
}

// Route configurations in Aeraki's RDS form: one virtual host whose routes
// carry attribute matchers in match.headers.
Result<std::shared_ptr<RouteTable>> compile_routes(const envoy::config::route::v3::RouteConfiguration& rc,
                                                   const Clusters& clusters) {
  std::string where = "route_config " + rc.name();
  if (rc.name().empty()) return bad("route_config", "empty name");
  auto table = std::make_shared<RouteTable>();
  table->name = rc.name();
  if (rc.virtual_hosts_size() > 1) return bad(where, "more than one virtual_host");
  if (rc.virtual_hosts_size() == 0) return table;
  int idx = 0;
  for (const auto& r : rc.virtual_hosts(0).routes()) {
    std::string rw = where + " route[" + std::to_string(idx++) + "]" +
                     (r.name().empty() ? "" : " '" + r.name() + "'");
    Route out;
    out.name = r.name();
    for (const auto& h : r.match().headers()) {
      auto m = compile_matcher(h, rw + " match");
      if (!m) return m.error();
      out.match.push_back(std::move(m.value()));
    }
    if (!r.has_route()) return bad(rw, "no route action");
    const auto& a = r.route();
    if (a.has_weighted_clusters()) {
      for (const auto& w : a.weighted_clusters().clusters()) {
        uint32_t wt = w.has_weight() ? w.weight().value() : 0;
        if (wt == 0) continue;  // zero weight never selected
        out.clusters.push_back(cluster_ref(clusters, w.name(), wt));
        out.total_weight += wt;
      }
      if (out.clusters.empty()) return bad(rw, "weighted_clusters with no positive weight");
    } else if (!a.cluster().empty()) {
      out.clusters.push_back(cluster_ref(clusters, a.cluster(), 1));
      out.total_weight = 1;
    } else {
      return bad(rw, "route action names no cluster");
    }
    for (const auto& hp : a.hash_policy()) {
      if (hp.has_header()) out.hash_keys.push_back(hp.header().header_name());
      else if (hp.has_connection_properties() && hp.connection_properties().source_ip())
        out.hash_source_ip = true;
    }
    if (a.has_retry_policy()) {
      const auto& rp = a.retry_policy();
      auto& rt = out.retry;
      rt.num_retries = rp.has_num_retries() ? rp.num_retries().value() : 1;
      if (rt.num_retries > 10) return bad(rw, "retry_policy num_retries above 10");
      if (rp.has_per_try_timeout()) rt.per_try_timeout = ms(rp.per_try_timeout());
      std::string_view on = rp.retry_on();
      while (!on.empty()) {
        size_t comma = on.find(',');
        std::string_view c = on.substr(0, comma);
        while (!c.empty() && c.front() == ' ') c.remove_prefix(1);
        while (!c.empty() && c.back() == ' ') c.remove_suffix(1);
        if (c == "reset") {
          rt.on_reset = true;
        } else if (c == "gateway-error") {
          rt.on_reset = rt.on_timeout = true;
        } else if (c == "5xx") {
          rt.on_reset = rt.on_timeout = rt.on_error_reply = true;
        } else if (c == "connect-failure" || c == "refused-stream" || c.empty()) {
          // unwritten requests are always retried
        } else {
          return bad(rw, "retry_policy retry_on '" + std::string(c) +
                             "' is not supported (connect-failure, refused-stream, reset, "
                             "gateway-error, 5xx)");
        }
        on = comma == std::string_view::npos ? std::string_view() : on.substr(comma + 1);
      }
      for (const auto& h : rp.retriable_request_headers()) {
        auto m = compile_matcher(h, rw + " retriable_request_headers");
        if (!m) return m.error();
        rt.retriable.push_back(std::move(m.value()));
      }
    }
    for (const auto& mp : a.request_mirror_policies()) {
      Mirror m;
      m.target = cluster_ref(clusters, mp.cluster(), 1);
      if (mp.has_runtime_fraction()) {
        const auto& f = mp.runtime_fraction().default_value();
        uint64_t scale = f.denominator() == envoy::type::v3::FractionalPercent::HUNDRED ? 10000
                         : f.denominator() == envoy::type::v3::FractionalPercent::TEN_THOUSAND
                             ? 100
                             : 1;
        m.per_million = uint32_t(std::min<uint64_t>(1000000, uint64_t(f.numerator()) * scale));
      }
      out.mirrors.push_back(std::move(m));
    }
    if (a.has_timeout()) out.timeout = ms(a.timeout());
    for (const auto& hv : r.request_headers_to_add())
      out.request_mutation.push_back({hv.header().key(), hv.header().value()});
    for (const auto& hv : r.response_headers_to_add())
      out.response_mutation.push_back({hv.header().key(), hv.header().value()});
    table->routes.push_back(std::move(out));
  }
  return table;
}

// The MetaProtocolProxy config of a listener filter: typed, or as istiod
// passes an EnvoyFilter patch, a TypedStruct with protojson (camelCase) keys.
// nullopt: not a MetaProtocol filter, not ours to serve.
Result<std::optional<aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy>> meta_protocol_config(
    const envoy::config::listener::v3::Filter& f, const std::string& where) {
  aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy mpp;
  const auto& any = f.typed_config();
  if (any.type_url() == kMetaProtocolProxyType) {
    if (!any.UnpackTo(&mpp)) return bad(where, "cannot decode MetaProtocolProxy");
    return std::optional(std::move(mpp));
  }
  const google::protobuf::Struct* value = nullptr;
  std::string inner;
  udpa::type::v1::TypedStruct udpa_ts;
  ::xds::type::v3::TypedStruct xds_ts;
  if (any.type_url() == kUdpaTypedStructType) {
    if (!any.UnpackTo(&udpa_ts)) return bad(where, "cannot decode udpa.type.v1.TypedStruct");
    inner = udpa_ts.type_url();
    value = &udpa_ts.value();
  } else if (any.type_url() == kXdsTypedStructType) {
    if (!any.UnpackTo(&xds_ts)) return bad(where, "cannot decode xds.type.v3.TypedStruct");
    inner = xds_ts.type_url();
    value = &xds_ts.value();
  }
  if (!value || inner != kMetaProtocolProxyType) {
    if (f.name() == kMetaProtocolFilterName)
      return bad(where, "filter " + f.name() + " has config of type '" +
                            (inner.empty() ? any.type_url() : inner) + "'");
    return std::optional<aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy>();
  }
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(*value, &json).ok())
    return bad(where, "MetaProtocolProxy TypedStruct value is not JSON");
  google::protobuf::util::JsonParseOptions opt;
  // Aeraki's API has fields we do not model (tracing, access_log); the ones
  // that change routing are all in our proto and checked below.
  opt.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(json, &mpp, opt);
  if (!st.ok()) return bad(where, "MetaProtocolProxy: " + std::string(st.message()));
  return std::optional(std::move(mpp));
}

constexpr char kRouterFilter[] = "aeraki.meta_protocol.filters.router";
constexpr char kLocalRateLimitFilter[] = "aeraki.meta_protocol.filters.local_ratelimit";
// Aeraki adds it for Istio telemetry: sidecars swap peer metadata in band.
// A node proxy knows both peers without it (source from the connection,
// destination from the endpoint), so there is nothing to execute.
constexpr char kMetadataExchangeFilter[] = "aeraki.meta_protocol.filters.metadata_exchange";
constexpr char kGlobalRateLimitFilter[] = "aeraki.meta_protocol.filters.ratelimit";
constexpr char kGlobalRateLimitType[] =
    "type.googleapis.com/aeraki.meta_protocol_proxy.filters.ratelimit.v1alpha.RateLimit";
constexpr char kLocalRateLimitType[] =
    "type.googleapis.com/aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimit";

Result<std::shared_ptr<TokenBucket>> compile_bucket(const envoy::type::v3::TokenBucket& tb,
                                                    const std::string& key, const std::string& where) {
  if (tb.max_tokens() == 0) return bad(where, "token_bucket max_tokens must be positive");
  auto interval = std::chrono::nanoseconds(tb.fill_interval().seconds() * 1000000000ll +
                                           tb.fill_interval().nanos());
  if (interval.count() < 1000000) return bad(where, "token_bucket fill_interval below 1ms");
  uint32_t per_fill = tb.has_tokens_per_fill() ? tb.tokens_per_fill().value() : 1;
  if (per_fill == 0) return bad(where, "token_bucket tokens_per_fill must be positive");
  return shared_token_bucket(key, tb.max_tokens(), per_fill, interval);
}

// The filters of a MetaProtocolProxy: the router (required, last) and the
// local rate limit; any other filter is refused by name, since serving the
// listener without it would drop what it was meant to do.
Result<std::shared_ptr<const GlobalRateLimit>> compile_global_rate_limit(
    const google::protobuf::Any& config, const std::string& where) {
  aeraki::meta_protocol_proxy::filters::ratelimit::v1alpha::RateLimit cfg;
  if (config.type_url() != kGlobalRateLimitType || !config.UnpackTo(&cfg))
    return bad(where, std::string("filter ") + kGlobalRateLimitFilter + " config is not a " +
                          kGlobalRateLimitType);
  auto g = std::make_shared<GlobalRateLimit>();
  for (const auto& h : cfg.match().metadata()) {
    auto m = compile_matcher(h, where + " ratelimit match");
    if (!m) return m.error();
    g->match.push_back(std::move(m.value()));
  }
  g->domain = cfg.domain();
  if (g->domain.empty()) return bad(where, "ratelimit without a domain");
  if (cfg.has_timeout()) g->timeout = ms(cfg.timeout());
  if (g->timeout.count() <= 0) return bad(where, "ratelimit timeout must be positive");
  g->deny_on_fail = cfg.failure_mode_deny();
  const auto& gs = cfg.rate_limit_service().grpc_service();
  g->service_cluster = gs.envoy_grpc().cluster_name();
  if (g->service_cluster.empty()) return bad(where, "ratelimit names no rate_limit_service cluster");
  for (const auto& d : cfg.descriptors()) {
    if (d.property().empty() || d.descriptor_key().empty())
      return bad(where, "ratelimit descriptor needs a property and a descriptor_key");
    g->descriptors.emplace_back(d.property(), d.descriptor_key());
  }
  if (g->descriptors.empty()) return bad(where, "ratelimit without descriptors");
  return std::shared_ptr<const GlobalRateLimit>(std::move(g));
}

struct Filters {
  std::shared_ptr<const LocalRateLimit> local;
  std::shared_ptr<const GlobalRateLimit> global;
};

Result<Filters> compile_filters(const aeraki::meta_protocol_proxy::v1alpha::MetaProtocolProxy& mpp,
                                const std::string& listener, const std::string& where) {
  Filters out;
  std::shared_ptr<LocalRateLimit> rl;
  bool router = mpp.meta_protocol_filters_size() == 0;  // Aeraki's default chain is the router
  for (const auto& f : mpp.meta_protocol_filters()) {
    if (f.name() == kRouterFilter) {
      router = true;
      continue;
    }
    if (f.name() == kMetadataExchangeFilter) continue;
    if (f.name() == kGlobalRateLimitFilter) {
      if (out.global) return bad(where, "two global rate limit filters");
      auto g = compile_global_rate_limit(f.config(), where);
      if (!g) return g.error();
      out.global = *g;
      continue;
    }
    if (f.name() != kLocalRateLimitFilter)
      return bad(where, "meta_protocol filter '" + f.name() + "' is not supported (" +
                            kRouterFilter + ", " + kLocalRateLimitFilter + ", " +
                            kGlobalRateLimitFilter + ", " + kMetadataExchangeFilter + ")");
    aeraki::meta_protocol_proxy::filters::local_ratelimit::v1alpha::LocalRateLimit cfg;
    if (f.config().type_url() != kLocalRateLimitType || !f.config().UnpackTo(&cfg))
      return bad(where, "filter " + f.name() + " config is not a " + kLocalRateLimitType);
    if (rl) return bad(where, "two local rate limit filters");
    rl = std::make_shared<LocalRateLimit>();
    if (cfg.has_token_bucket()) {
      auto b = compile_bucket(cfg.token_bucket(), listener + "#all", where + " local_ratelimit");
      if (!b) return b.error();
      rl->bucket = *b;
    }
    for (int i = 0; i < cfg.conditions_size(); ++i) {
      const auto& c = cfg.conditions(i);
      std::string cw = where + " local_ratelimit condition[" + std::to_string(i) + "]";
      LocalRateLimit::Condition cond;
      for (const auto& h : c.match().metadata()) {
        auto m = compile_matcher(h, cw + " match");
        if (!m) return m.error();
        cond.match.push_back(std::move(m.value()));
      }
      if (!c.has_token_bucket()) return bad(cw, "no token_bucket");
      auto b = compile_bucket(c.token_bucket(), listener + "#" + std::to_string(i), cw);
      if (!b) return b.error();
      cond.bucket = *b;
      rl->conditions.push_back(std::move(cond));
    }
  }
  if (!router) return bad(where, std::string("no ") + kRouterFilter + " in meta_protocol_filters");
  out.local = std::move(rl);
  return out;
}

// The RDS config source's gRPC cluster, or "" for ADS.
Result<std::string> rds_cluster_of(const envoy::config::core::v3::ConfigSource& cs,
                                   const std::string& where) {
  if (cs.has_ads() || cs.config_source_specifier_case() ==
                          envoy::config::core::v3::ConfigSource::CONFIG_SOURCE_SPECIFIER_NOT_SET)
    return std::string();
  const auto& api = cs.api_config_source();
  using Api = envoy::config::core::v3::ApiConfigSource;
  if (api.api_type() != Api::GRPC && api.api_type() != Api::AGGREGATED_GRPC)
    return bad(where, "rds config_source api_type " + Api::ApiType_Name(api.api_type()) +
                          " is not supported (GRPC only)");
  for (const auto& g : api.grpc_services())
    if (g.has_envoy_grpc() && !g.envoy_grpc().cluster_name().empty())
      return g.envoy_grpc().cluster_name();
  if (api.cluster_names_size() > 0) return api.cluster_names(0);
  return bad(where, "rds config_source names no gRPC cluster");
}

// A listener we serve, or nullopt for one that carries no MetaProtocolProxy
// (istiod sends every listener of the mesh; those are not ours).
Result<std::optional<Listener>> compile_listener(const envoy::config::listener::v3::Listener& l) {
  std::string where = "listener " + l.name();
  for (const auto& fc : l.filter_chains()) {
    for (const auto& f : fc.filters()) {
      auto cfg = meta_protocol_config(f, where);
      if (!cfg) return cfg.error();
      if (!cfg->has_value()) continue;
      const auto& mpp = **cfg;
      auto addr = socket_address(l.address(), where);
      if (!addr) return addr.error();
      Listener out;
      out.name = l.name();
      out.address = *addr;
      std::string codec = mpp.has_protocol() ? mpp.protocol().codec().name() : mpp.codec().name();
      std::string proto = mpp.has_protocol() ? mpp.protocol().name() : mpp.application_protocol();
      constexpr std::string_view kPrefix = "aeraki.meta_protocol.codec.";
      if (ieq_prefix(codec, kPrefix)) proto = codec.substr(kPrefix.size());
      auto known = parse_protocol(proto);
      if (!known)
        return bad(where, "unsupported application protocol '" + proto + "' (" + std::string(kProtocolNames) + ")");
      out.protocol = *known;
      out.stat_prefix = mpp.stat_prefix();
      out.route_name = mpp.rds().route_config_name();
      if (out.route_name.empty()) return bad(where, "MetaProtocolProxy without rds.route_config_name");
      auto src = rds_cluster_of(mpp.rds().config_source(), where);
      if (!src) return src.error();
      out.rds_cluster = *src;
      if (mpp.has_idle_timeout())
        return bad(where, "MetaProtocolProxy idle_timeout (client connections) is not supported yet");
      auto filters = compile_filters(mpp, l.name(), where);
      if (!filters) return filters.error();
      out.local_rate_limit = filters->local;
      out.global_rate_limit = filters->global;
      std::string subset;
      uint32_t port;
      parse_cluster_name(out.stat_prefix, out.service_host, subset, port);
      return std::optional(std::move(out));
    }
  }
  return std::optional<Listener>();
}

}  // namespace

std::string resource_name(const envoy::config::listener::v3::Listener& m) { return m.name(); }
std::string resource_name(const envoy::config::cluster::v3::Cluster& m) { return m.name(); }
std::string resource_name(const envoy::config::endpoint::v3::ClusterLoadAssignment& m) {
  return m.cluster_name();
}
std::string resource_name(const envoy::config::route::v3::RouteConfiguration& m) { return m.name(); }

std::string Reject::str() const { return short_type(type_url) + " " + name + ": " + reason; }

std::string short_type(const std::string& type_url) {
  auto dot = type_url.rfind('.');
  return dot == std::string::npos ? type_url : type_url.substr(dot + 1);
}

namespace {

// True if every cluster `t` names is, in `now`, the very object it was
// compiled against: a table is reused only then (a cluster that changed, or
// came or went, must be seen by the routes that name it).
bool refs_unchanged(const RouteTable& t, const Clusters& now) {
  auto same = [&](const ClusterRef& ref) {
    auto it = now.find(ref.name);
    return (it == now.end() ? nullptr : it->second.get()) == ref.cluster.get();
  };
  for (const auto& r : t.routes) {
    for (const auto& c : r.clusters)
      if (!same(c)) return false;
    for (const auto& m : r.mirrors)
      if (!same(m.target)) return false;
  }
  return true;
}

}  // namespace

Compiled compile_snapshot(Resources res, const Snapshot* previous) {
  auto snap = std::make_shared<Snapshot>();
  snap->version = res.version;
  snap->compiled_at = std::chrono::system_clock::now();
  Compiled out;
  Resources& kept = snap->resources;
  kept.version = res.version;
  auto reject = [&](const char* type, const std::string& name, const Error& e) {
    out.rejects.push_back({type, name, e.message()});
  };
  const Snapshot::Origins* prev = previous ? &previous->origins : nullptr;
  Snapshot::Origins& origins = snap->origins;

  // Endpoints are checked where their cluster uses them; an assignment no
  // cluster names is kept for /config_dump and costs nothing.
  std::unordered_map<std::string_view, const Shared<Cla>*> by_cla;
  for (const auto& a : res.endpoints) by_cla[a->cluster_name()] = &a;
  std::set<std::string> bad_cla;
  for (auto& c : res.clusters) {
    // The assignment this cluster reads: the same cluster and the same
    // assignment objects compile to the same thing.
    Shared<Cla> its_cla;
    if (c->type() == XdsCluster::EDS)
      if (auto it = by_cla.find(eds_service_of(*c)); it != by_cla.end()) its_cla = *it->second;
    Result<std::shared_ptr<Cluster>> cl = Error::invalid("");
    std::string cla_rejected;  // the assignment refused, the cluster kept without it
    bool reused = false;
    if (prev) {
      auto it = prev->clusters.find(c->name());
      if (it != prev->clusters.end() && it->second.cluster == c && it->second.endpoints == its_cla) {
        auto live = previous->clusters.find(c->name());
        if (live != previous->clusters.end()) {
          cl = std::const_pointer_cast<Cluster>(live->second);
          cla_rejected = it->second.endpoints_rejected;
          reused = true;
          ++out.reused;
        }
      }
    }
    if (!reused) {
      ++out.compiled;
      cl = compile_cluster(*c, its_cla.get());
      if (!cl && its_cla) {
        // The cluster itself is fine if only its assignment is bad: name the
        // assignment, keep the cluster without endpoints.
        if (auto b = compile_cluster(*c, nullptr)) {
          cla_rejected = cl.error().message();
          cl = std::move(b);
        }
      }
    }
    if (cl && !cla_rejected.empty() && bad_cla.insert((*cl)->eds_service).second)
      out.rejects.push_back({kEndpointType, (*cl)->eds_service, cla_rejected});
    if (!cl) {
      reject(kClusterType, c->name(), cl.error());
      continue;
    }
    if (snap->clusters.count(c->name())) {
      reject(kClusterType, c->name(), Error::invalid("cluster " + c->name() + ": defined twice"));
      continue;
    }
    snap->clusters.emplace(c->name(), std::move(cl.value()));
    origins.clusters[c->name()] = {c, its_cla, cla_rejected};
    kept.clusters.push_back(c);
  }
  for (auto& a : res.endpoints)
    if (!bad_cla.count(a->cluster_name())) kept.endpoints.push_back(a);

  for (auto& rc : res.routes) {
    Result<std::shared_ptr<RouteTable>> t = Error::invalid("");
    bool reused = false;
    if (prev) {
      auto it = prev->routes.find(rc->name());
      auto live = previous->routes.find(rc->name());
      if (it != prev->routes.end() && it->second == rc && live != previous->routes.end() &&
          refs_unchanged(*live->second, snap->clusters)) {
        t = std::const_pointer_cast<RouteTable>(live->second);
        reused = true;
        ++out.reused;
      }
    }
    if (!reused) {
      ++out.compiled;
      t = compile_routes(*rc, snap->clusters);
    }
    if (t && snap->routes.count(rc->name()))
      t = bad("route_config " + rc->name(), "defined twice");
    if (!t) {
      reject(kRouteType, rc->name(), t.error());
      continue;
    }
    snap->routes.emplace(rc->name(), std::move(t.value()));
    origins.routes[rc->name()] = rc;
    kept.routes.push_back(rc);
  }

  for (auto& l : res.listeners) {
    std::optional<Listener> li;
    bool reused = false;
    if (prev) {
      auto it = prev->listeners.find(l->name());
      if (it != prev->listeners.end() && it->second.first == l) {
        if (it->second.second != Snapshot::Origins::kNotOurs) li = previous->listeners[it->second.second];
        reused = true;
        ++out.reused;
      }
    }
    if (!reused) {
      ++out.compiled;
      auto compiled = compile_listener(*l);
      if (!compiled) {
        reject(kListenerType, l->name(), compiled.error());
        continue;
      }
      li = std::move(*compiled);
    }
    if (!li) {  // not a MetaProtocol listener: not ours to serve
      origins.listeners[l->name()] = {l, Snapshot::Origins::kNotOurs};
      continue;
    }
    if (snap->listener_index.count(li->address)) {
      reject(kListenerType, l->name(),
             Error::invalid("listener " + l->name() + ": address " + li->address.str() +
                            " used by two listeners"));
      continue;
    }
    auto rt = snap->routes.find(li->route_name);
    li->routes = rt != snap->routes.end() ? rt->second : nullptr;
    origins.listeners[l->name()] = {l, snap->listeners.size()};
    snap->listener_index[li->address] = snap->listeners.size();
    snap->listeners.push_back(std::move(*li));
    kept.listeners.push_back(l);
  }

  snap->refused = out.rejects;
  out.snapshot = std::move(snap);
  return out;
}

Result<std::shared_ptr<const Snapshot>> build_snapshot(Resources res) {
  auto c = compile_snapshot(std::move(res), nullptr);
  if (!c.rejects.empty()) return Error::invalid(c.rejects.front().reason);
  return std::shared_ptr<const Snapshot>(std::move(c.snapshot));
}

}  // namespace metanode::xds
