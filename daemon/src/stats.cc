#include "metanode/core/stats.h"

#include <sstream>

namespace metanode::core {
namespace {
const char* const kCounterNames[] = {
#define METANODE_NAME(n, h) #n,
    METANODE_COUNTERS(METANODE_NAME)
#undef METANODE_NAME
};
const char* const kCounterHelp[] = {
#define METANODE_HELP(n, h) h,
    METANODE_COUNTERS(METANODE_HELP)
#undef METANODE_HELP
};
const char* const kGaugeNames[] = {
#define METANODE_NAME(n, h) #n,
    METANODE_GAUGES(METANODE_NAME)
#undef METANODE_NAME
};
const char* const kGaugeHelp[] = {
#define METANODE_HELP(n, h) h,
    METANODE_GAUGES(METANODE_HELP)
#undef METANODE_HELP
};

std::string escape(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}
}  // namespace

const char* counter_name(Counter c) { return kCounterNames[int(c)]; }
const char* gauge_name(Gauge g) { return kGaugeNames[int(g)]; }

std::atomic<uint64_t>* StatsShard::request_counter(const RequestLabels& l) {
  std::lock_guard<std::mutex> g(mu_);
  auto& p = requests_[l];
  if (!p) p = std::make_unique<std::atomic<uint64_t>>(0);
  return p.get();
}

std::map<RequestLabels, uint64_t> StatsShard::request_counts() const {
  std::lock_guard<std::mutex> g(mu_);
  std::map<RequestLabels, uint64_t> out;
  for (const auto& [k, v] : requests_) out[k] = v->load(std::memory_order_relaxed);
  return out;
}

std::string render_prometheus(const std::vector<const StatsShard*>& shards,
                              const std::string& extra) {
  std::ostringstream o;
  std::map<RequestLabels, uint64_t> req;
  for (const auto* s : shards)
    for (const auto& [k, v] : s->request_counts()) req[k] += v;
  o << "# HELP istio_requests_total Requests by destination, Istio labels\n"
       "# TYPE istio_requests_total counter\n";
  for (const auto& [l, v] : req) {
    o << "istio_requests_total{reporter=\"source\",destination_service=\""
      << escape(l.destination_service) << "\",destination_service_name=\""
      << escape(l.destination_service.substr(0, l.destination_service.find('.')))
      << "\",destination_version=\"" << escape(l.destination_version)
      << "\",destination_cluster_name=\"" << escape(l.destination_cluster)
      << "\",request_protocol=\"" << escape(l.protocol) << "\",response_code=\""
      << escape(l.response) << "\"} " << v << "\n";
  }
  for (int i = 0; i < int(Counter::kCount); ++i) {
    uint64_t sum = 0;
    for (const auto* s : shards) sum += s->get(Counter(i));
    o << "# HELP metanode_" << kCounterNames[i] << "_total " << kCounterHelp[i] << "\n"
      << "# TYPE metanode_" << kCounterNames[i] << "_total counter\n"
      << "metanode_" << kCounterNames[i] << "_total " << sum << "\n";
  }
  for (int i = 0; i < int(Gauge::kCount); ++i) {
    int64_t sum = 0;
    for (const auto* s : shards) sum += s->get(Gauge(i));
    o << "# HELP metanode_" << kGaugeNames[i] << " " << kGaugeHelp[i] << "\n"
      << "# TYPE metanode_" << kGaugeNames[i] << " gauge\n"
      << "metanode_" << kGaugeNames[i] << " " << sum << "\n";
  }
  o << extra;
  return o.str();
}

}  // namespace metanode::core
