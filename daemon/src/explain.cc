#include "explain.h"

#include <cctype>
#include <cstdio>
#include <sstream>

#include "metanode/core/router.h"
#include "metanode/json.h"
#include "metanode/lb/load_balancer.h"
#include "route_view.h"

namespace metanode::core {
namespace {

std::string url_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(uint8_t(s[i + 1])) &&
               std::isxdigit(uint8_t(s[i + 2]))) {
      out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The decision and its reasons, rendered as text or JSON below.
struct Explained {
  bool redirected = false;
  std::string kernel;  // what connect4 does, and why
  const xds::Listener* listener = nullptr;
  struct RouteLine {
    std::string name;
    bool matched;
    std::string why;  // the first matcher that fails, for one that does not match
  };
  std::vector<RouteLine> routes;  // in order, up to the first that matches
  const xds::Route* route = nullptr;
  struct ClusterLine {
    std::string name;
    uint32_t weight;
    double percent;
    const xds::Cluster* cluster;  // null: named but not (yet) known
  };
  std::vector<ClusterLine> clusters;
  std::string outcome;
};

std::string failing_matcher(const xds::Route& r, const codecs::Metadata& md) {
  for (const auto& m : r.match) {
    const std::string* v = md.get(m.name);
    if (m.matches(v)) continue;
    std::string want = describe(m).substr(m.name.size() + 1);
    return "attribute " + m.name + ": wants " + want + ", request has " + (v ? "'" + *v + "'" : "none");
  }
  return {};
}

std::string kernel_decision(const ExplainQuery& q, const KernelView& k, bool& redirected) {
  redirected = false;
  if (!k.intercepting)
    return "no interception (--no-bpf): clients reach the daemon by dialling a listener's address";
  if (!k.services.count(q.dst)) return "direct: " + q.dst.str() + " is not a mesh service (not in mn_services)";
  for (const auto& [netns, port] : k.excluded)
    if (port == q.dst.port && (netns == 0 || (k.src_netns && netns == *k.src_netns)))
      return "direct: port " + std::to_string(port) + " is excluded" + (netns ? " for this pod" : "");
  if (k.src_netns) {
    std::string who = (k.src_pod.empty() ? "pod" : "pod " + k.src_pod) + " (netns cookie " +
                      std::to_string(*k.src_netns) + ")";
    auto it = k.pods.find(*k.src_netns);
    if (it != k.pods.end() && (it->second & 2)) return "direct: " + who + " opted out in mn_pods";
    if (it != k.pods.end() || k.all_pods) {
      redirected = true;
      return "redirected to the daemon: " + q.dst.str() + " is a mesh service and " + who + " is managed";
    }
    return "direct: " + who + " is not managed (not enrolled: no mn_pods entry)";
  }
  redirected = true;
  if (k.all_pods) return "redirected to the daemon for any pod (--pods all): " + q.dst.str() + " is a mesh service";
  size_t managed = 0;
  for (const auto& [c, f] : k.pods) managed += (f & 1) && !(f & 2);
  return "redirected to the daemon for managed pods only (" + std::to_string(managed) +
         " in mn_pods; give src=POD_IP to check one): " + q.dst.str() + " is a mesh service";
}

Explained explain(const ExplainQuery& q, const xds::Snapshot* snap, const KernelView& k) {
  Explained e;
  e.kernel = kernel_decision(q, k, e.redirected);
  if (k.intercepting && !e.redirected) {
    e.outcome = "the daemon never sees the connection";
    return e;
  }
  e.listener = snap ? snap->find_listener(q.dst) : nullptr;
  if (!e.listener) {
    e.outcome = "closed at accept: no listener for " + q.dst.str();
    return e;
  }
  if (!e.listener->routes) {
    e.outcome = "closed at accept: route configuration " + e.listener->route_name + " not received yet";
    return e;
  }
  for (const auto& r : e.listener->routes->routes) {
    bool m = matches_all(r.match, q.attrs);
    e.routes.push_back({r.name, m, m ? "" : failing_matcher(r, q.attrs)});
    if (m) {
      e.route = &r;
      break;
    }
  }
  if (!e.route) {
    e.outcome = "answered by the daemon: no route (response flag NR)";
    return e;
  }
  for (const auto& c : e.route->clusters)
    e.clusters.push_back({c.name, c.weight, e.route->total_weight ? 100.0 * c.weight / e.route->total_weight : 100.0,
                          c.cluster.get()});
  bool any = false;
  for (const auto& c : e.clusters) any = any || (c.cluster && !c.cluster->endpoints.empty());
  e.outcome = any ? "forwarded: a cluster by weight, then an endpoint by the cluster's load balancer (health and "
                    "ejections: /clusters)"
                  : "answered by the daemon: no endpoint (response flag UH)";
  return e;
}

}  // namespace

Result<ExplainQuery> parse_explain_query(const std::string& query) {
  ExplainQuery q;
  bool have_dst = false;
  std::istringstream in(query);
  for (std::string kv; std::getline(in, kv, '&');) {
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    std::string k = url_decode(kv.substr(0, eq)), v = eq == std::string::npos ? "" : url_decode(kv.substr(eq + 1));
    if (k == "dst") {
      auto ep = net::parse_endpoint(v);
      if (!ep) return Error::invalid("dst: '" + v + "' is not IPv4:PORT");
      q.dst = *ep;
      have_dst = true;
    } else if (k == "src") {
      auto a = net::parse_ipv4(v);
      if (!a) return Error::invalid("src: '" + v + "' is not an IPv4 address");
      q.src = *a;
    } else if (k.rfind("attr.", 0) == 0 && k.size() > 5) {
      q.attrs.set(k.substr(5), v);
    } else if (k == "format") {
      if (v != "json" && v != "text") return Error::invalid("format: '" + v + "' is not json or text");
      q.json = v == "json";
    } else {
      return Error::invalid("unknown parameter '" + k + "' (dst, src, attr.NAME, format)");
    }
  }
  if (!have_dst) return Error::invalid("dst=IP:PORT is required");
  return q;
}

std::string explain_text(const ExplainQuery& q, const xds::Snapshot* snap, const KernelView& k) {
  Explained e = explain(q, snap, k);
  std::ostringstream o;
  o << "connect to " << q.dst.str();
  if (q.src) o << " from " << net::ipv4_str(*q.src);
  o << "\nkernel:   " << e.kernel << "\n";
  if (e.listener)
    o << "listener: " << e.listener->name << " (" << protocol_name(e.listener->protocol) << ", service "
      << e.listener->service_host << ", routes " << e.listener->route_name << ")\n";
  for (const auto& r : e.routes)
    o << "route:    " << (r.name.empty() ? "(unnamed)" : r.name) << ": "
      << (r.matched ? "matches" : "no: " + r.why) << "\n";
  for (const auto& c : e.clusters) {
    char pct[16];
    std::snprintf(pct, sizeof(pct), "%.1f%%", c.percent);
    o << "cluster:  " << c.name << " weight " << c.weight << " (" << pct << ")";
    if (!c.cluster) {
      o << ": not known (yet)\n";
      continue;
    }
    o << ", " << lb::policy_name(c.cluster->lb) << ", " << c.cluster->endpoints.size() << " endpoints\n";
    for (const auto& ep : c.cluster->endpoints) o << "  endpoint " << ep.address.str() << " weight " << ep.weight << "\n";
  }
  if (e.route)
    for (const auto& m : e.route->mirrors)
      o << "mirror:   " << m.target.name << " (" << double(m.per_million) / 10000 << "% of requests)\n";
  o << "outcome:  " << e.outcome << "\n";
  return o.str();
}

std::string explain_json(const ExplainQuery& q, const xds::Snapshot* snap, const KernelView& k) {
  Explained e = explain(q, snap, k);
  std::ostringstream o;
  o << "{\"dst\":\"" << q.dst.str() << "\",\"src\":" << (q.src ? json_string(net::ipv4_str(*q.src)) : "null")
    << ",\"kernel\":{\"redirected\":" << (e.redirected ? "true" : "false") << ",\"why\":" << json_string(e.kernel)
    << "},\"listener\":";
  if (e.listener)
    o << "{\"name\":" << json_string(e.listener->name) << ",\"protocol\":" << json_string(std::string(protocol_name(e.listener->protocol)))
      << ",\"service\":" << json_string(e.listener->service_host)
      << ",\"route_config\":" << json_string(e.listener->route_name) << "}";
  else
    o << "null";
  o << ",\"routes\":[";
  for (size_t i = 0; i < e.routes.size(); ++i)
    o << (i ? "," : "") << "{\"name\":" << json_string(e.routes[i].name)
      << ",\"matched\":" << (e.routes[i].matched ? "true" : "false") << ",\"why\":" << json_string(e.routes[i].why)
      << "}";
  o << "],\"clusters\":[";
  for (size_t i = 0; i < e.clusters.size(); ++i) {
    const auto& c = e.clusters[i];
    o << (i ? "," : "") << "{\"name\":" << json_string(c.name) << ",\"weight\":" << c.weight
      << ",\"percent\":" << c.percent << ",\"known\":" << (c.cluster ? "true" : "false");
    if (c.cluster) {
      o << ",\"lb\":" << json_string(lb::policy_name(c.cluster->lb)) << ",\"endpoints\":[";
      for (size_t j = 0; j < c.cluster->endpoints.size(); ++j)
        o << (j ? "," : "") << "{\"address\":\"" << c.cluster->endpoints[j].address.str()
          << "\",\"weight\":" << c.cluster->endpoints[j].weight << "}";
      o << "]";
    }
    o << "}";
  }
  o << "],\"outcome\":" << json_string(e.outcome) << "}\n";
  return o.str();
}

}  // namespace metanode::core
