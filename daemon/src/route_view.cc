#include "route_view.h"

#include <sstream>

#include "metanode/json.h"

namespace metanode::core {
namespace {

const char* kind_name(xds::AttributeMatcher::Kind k) {
  switch (k) {
    case xds::AttributeMatcher::Kind::kExact: return "exact";
    case xds::AttributeMatcher::Kind::kPrefix: return "prefix";
    case xds::AttributeMatcher::Kind::kSuffix: return "suffix";
    case xds::AttributeMatcher::Kind::kContains: return "contains";
    case xds::AttributeMatcher::Kind::kRegex: return "regex";
    case xds::AttributeMatcher::Kind::kPresent: return "present";
  }
  return "?";
}

std::string match_text(const xds::Route& r) {
  if (r.match.empty()) return "every request";
  std::string s;
  for (const auto& m : r.match) s += (s.empty() ? "" : " and ") + describe(m);
  return s;
}

// Every listener with its routes, in address order.
template <class F>
void each_listener(const xds::Snapshot* snap, F f) {
  if (!snap) return;
  for (const auto& [addr, i] : snap->listener_index) f(snap->listeners[i]);
}

}  // namespace

std::string describe(const xds::AttributeMatcher& m) {
  std::string s = m.name + " " + (m.invert ? "not " : "") + kind_name(m.kind);
  if (m.kind != xds::AttributeMatcher::Kind::kPresent) s += " '" + m.value + "'";
  if (m.ignore_case) s += " (any case)";
  return s;
}

std::string routes_text(const xds::Snapshot* snap) {
  std::ostringstream o;
  each_listener(snap, [&](const xds::Listener& l) {
    o << l.name << "  " << protocol_name(l.protocol) << "  " << l.service_host << "  routes " << l.route_name << "\n";
    if (!l.routes) {
      o << "  (route configuration not received yet)\n";
      return;
    }
    for (const auto& r : l.routes->routes) {
      o << "  " << (r.name.empty() ? "(unnamed)" : r.name) << ": " << match_text(r) << "\n";
      for (const auto& c : r.clusters)
        o << "    -> " << c.name << (r.clusters.size() > 1 ? " weight " + std::to_string(c.weight) : "")
          << (c.cluster ? "" : " (cluster not known)") << "\n";
      for (const auto& m : r.mirrors) o << "    mirror " << m.target.name << " " << double(m.per_million) / 10000 << "%\n";
      if (r.timeout.count()) o << "    timeout " << r.timeout.count() << " ms\n";
      if (r.retry.on_reset || r.retry.on_timeout || r.retry.on_error_reply)
        o << "    retries " << r.retry.num_retries << " on" << (r.retry.on_reset ? " reset" : "")
          << (r.retry.on_timeout ? " timeout" : "") << (r.retry.on_error_reply ? " error-reply" : "") << "\n";
    }
  });
  std::string s = o.str();
  return s.empty() ? "no listeners\n" : s;
}

std::string routes_json(const xds::Snapshot* snap) {
  std::ostringstream o;
  o << "{\"listeners\":[";
  bool first_l = true;
  each_listener(snap, [&](const xds::Listener& l) {
    o << (first_l ? "" : ",") << "{\"name\":" << json_string(l.name) << ",\"protocol\":" << json_string(std::string(protocol_name(l.protocol)))
      << ",\"service\":" << json_string(l.service_host) << ",\"route_config\":" << json_string(l.route_name)
      << ",\"routes\":";
    first_l = false;
    if (!l.routes) {
      o << "null}";
      return;
    }
    o << "[";
    for (size_t i = 0; i < l.routes->routes.size(); ++i) {
      const auto& r = l.routes->routes[i];
      o << (i ? "," : "") << "{\"name\":" << json_string(r.name) << ",\"match\":[";
      for (size_t j = 0; j < r.match.size(); ++j) o << (j ? "," : "") << json_string(describe(r.match[j]));
      o << "],\"clusters\":[";
      for (size_t j = 0; j < r.clusters.size(); ++j)
        o << (j ? "," : "") << "{\"name\":" << json_string(r.clusters[j].name)
          << ",\"weight\":" << r.clusters[j].weight << "}";
      o << "],\"timeout_ms\":" << r.timeout.count() << "}";
    }
    o << "]}";
  });
  o << "]}\n";
  return o.str();
}

}  // namespace metanode::core
