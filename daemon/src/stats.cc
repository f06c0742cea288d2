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

void Histogram::observe_milli(uint64_t v) {
  size_t i = 0;
  while (i < std::size(kHistogramBounds) && double(v) > kHistogramBounds[i] * 1000) ++i;
  bucket[i].fetch_add(1, std::memory_order_relaxed);
  sum_milli.fetch_add(v, std::memory_order_relaxed);
}

void RequestSeries::record(Clock::duration took, size_t req, size_t resp) {
  requests.fetch_add(1, std::memory_order_relaxed);
  duration_ms.observe_milli(uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
  request_bytes.observe_milli(uint64_t(req) * 1000);
  response_bytes.observe_milli(uint64_t(resp) * 1000);
}

RequestSeries* StatsShard::request_series(const RequestLabels& l) {
  std::lock_guard<std::mutex> g(mu_);
  auto& p = requests_[l];
  if (!p) p = std::make_unique<RequestSeries>();
  return p.get();
}

std::vector<std::pair<RequestLabels, const RequestSeries*>> StatsShard::all_request_series() const {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<std::pair<RequestLabels, const RequestSeries*>> out;
  for (const auto& [k, v] : requests_) out.emplace_back(k, v.get());
  return out;
}

namespace {
// A series summed over the shards, for one scrape.
struct SeriesSum {
  uint64_t requests = 0;
  struct H {
    uint64_t bucket[kHistogramBuckets] = {};
    uint64_t sum_milli = 0;
  } hist[3];
};

void add(SeriesSum::H& into, const Histogram& h) {
  for (size_t i = 0; i < kHistogramBuckets; ++i) into.bucket[i] += h.bucket[i].load(std::memory_order_relaxed);
  into.sum_milli += h.sum_milli.load(std::memory_order_relaxed);
}

// Istio's labels, in Istio's names; what metanode does not know (no pod
// identity without --pods kubernetes) is "unknown", as Istio writes it.
// Always unknown here, as for Istio's source reporter without a peer's
// metadata exchange: destination_principal and destination_app (istiod's
// endpoint metadata does not carry them) and connection_security_policy
// (the source reporter never knows it).
std::string istio_labels(const RequestLabels& l) {
  const std::string& host = l.destination_service;
  auto dot = host.find('.');
  auto dot2 = dot == std::string::npos ? dot : host.find('.', dot + 1);
  std::string name = host.substr(0, dot);
  std::string ns = dot == std::string::npos ? "unknown" : host.substr(dot + 1, dot2 - dot - 1);
  auto known = [](const std::string& v) { return escape(v.empty() ? std::string("unknown") : v); };
  return "reporter=\"source\",source_workload=\"" + known(l.source_workload) +
         "\",source_workload_namespace=\"" + known(l.source_namespace) + "\",source_principal=\"" +
         known(l.source_principal) + "\",source_app=\"" + known(l.source_app) + "\",source_version=\"" +
         known(l.source_version) + "\",source_canonical_service=\"" + known(l.source_canonical_service) +
         "\",source_canonical_revision=\"" + known(l.source_canonical_revision) + "\",source_cluster=\"" +
         known(l.source_cluster) + "\","
         "destination_workload=\"" + known(l.destination_workload) + "\",destination_workload_namespace=\"" +
         escape(l.destination_workload_namespace.empty() ? ns : l.destination_workload_namespace) +
         "\",destination_service=\"" + escape(host) + "\",destination_service_name=\"" + escape(name) +
         "\",destination_service_namespace=\"" + escape(ns) + "\",destination_version=\"" +
         escape(l.destination_version) + "\",destination_principal=\"unknown\",destination_app=\"unknown\"" +
         ",destination_canonical_service=\"" + known(l.destination_canonical_service) +
         "\",destination_canonical_revision=\"" + known(l.destination_canonical_revision) +
         "\",destination_cluster=\"" + known(l.destination_cluster) + "\",request_protocol=\"" + escape(l.protocol) +
         "\",response_code=\"" + escape(l.response_code) + "\",response_flags=\"" +
         escape(l.response_flags) + "\",connection_security_policy=\"unknown\"";
}

void histogram(std::ostringstream& o, const char* name, const char* help, const std::map<RequestLabels, SeriesSum>& all,
               int which) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  for (const auto& [l, s] : all) {
    std::string labels = istio_labels(l);
    const auto& h = s.hist[which];
    uint64_t cum = 0;
    for (size_t i = 0; i < kHistogramBuckets; ++i) {
      cum += h.bucket[i];
      o << name << "_bucket{" << labels << ",le=\"";
      if (i < std::size(kHistogramBounds)) o << kHistogramBounds[i];
      else o << "+Inf";
      o << "\"} " << cum << "\n";
    }
    o << name << "_sum{" << labels << "} " << double(h.sum_milli) / 1000 << "\n"
      << name << "_count{" << labels << "} " << cum << "\n";
  }
}
}  // namespace

std::string render_prometheus(const std::vector<const StatsShard*>& shards,
                              const std::string& extra) {
  std::ostringstream o;
  std::map<RequestLabels, SeriesSum> req;
  for (const auto* s : shards)
    for (const auto& [k, v] : s->all_request_series()) {
      auto& sum = req[k];
      sum.requests += v->requests.load(std::memory_order_relaxed);
      add(sum.hist[0], v->duration_ms);
      add(sum.hist[1], v->request_bytes);
      add(sum.hist[2], v->response_bytes);
    }
  o << "# HELP istio_requests_total Requests, Istio's standard metric\n"
       "# TYPE istio_requests_total counter\n";
  for (const auto& [l, s] : req) o << "istio_requests_total{" << istio_labels(l) << "} " << s.requests << "\n";
  histogram(o, "istio_request_duration_milliseconds", "From the request decoded to its reply queued", req, 0);
  histogram(o, "istio_request_bytes", "Request message sizes, framing included", req, 1);
  histogram(o, "istio_response_bytes", "Reply message sizes, framing included", req, 2);
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
